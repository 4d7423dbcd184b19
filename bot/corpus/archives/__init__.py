"""Importers for the archives platforms hand their users.

Each module reads one platform's download (a zip or its unpacked folder)
into threads whose last turn is the archive owner's (`common`);
`import_archive` turns those into the post dicts `launch.prepare_corpus`
reads, pseudonymized where asked, without duplicates (and, given a
language, without posts in others), with the counts of what was read
(`report` words them, and writes them as a page).
`KINDS` maps `--kind` to its module; every module has `KIND`, `NAME` (what
the archive is called in errors) and `read(archive, options)`.
"""

import collections
from typing import Dict, List, Optional, Tuple

from bot.corpus import pseudonyms
from bot.corpus.archives import (common, discord, facebook, mastodon,
                                 telegram, tumblr_export, twitter, whatsapp,
                                 wordpress)
from bot.corpus.archives import report as report_lib
from gpt2.errors import UserError

KINDS = {module.KIND: module for module in (
    tumblr_export, wordpress, twitter, mastodon, discord, facebook,
    telegram, whatsapp)}

# Skips that say --me may not be the name the archive gives its owner.
_REASONS_NOT_ME = (common.NO_OWN_TURN, common.BY_OTHERS)
DUPLICATES = "duplicates"


def _counted(counts: Dict[str, int]) -> str:
  return ", ".join(f"{n} {why}" for why, n in sorted(counts.items()))


def import_archive(kind: str, path: str, options: common.Options,
                   pseudonymize: Optional[bool] = None,
                   key_file: Optional[str] = None,
                   lang: Optional[str] = None
                   ) -> Tuple[List[dict], dict]:
  """(the post dicts, the report's counts) of the archive at `path`.

  `pseudonymize` None: only where the archive holds direct messages; the
  key is read from `key_file`, or made there. A thread met before (the same
  turns by the same people, case and spacing aside) is dropped, and so,
  given `lang` (ISO 639-1), is one whose own turn is in another language.
  """
  with common.Archive(path, options.max_file_bytes,
                      options.max_total_bytes) as archive:
    result = KINDS[kind].read(archive, options)
  if not result.threads:
    not_me = sum(result.skipped[r] for r in _REASONS_NOT_ME)
    hint = (f": is --me {options.me} your name as the archive writes it?"
            if not_me else "")
    skipped = _counted(result.skipped)
    raise UserError(f"{common.shown_path(path)} has nothing of --me "
                    f"{options.me}'s to import"
                    + (f" (skipped {skipped})" if skipped else "") + hint)
  threads = [t.thread for t in result.threads]
  if pseudonymize is None:
    pseudonymize = any(t.direct for t in result.threads)
  counts = pseudonyms.Counts()
  if pseudonymize:
    if key_file is None:
      raise ValueError("pseudonymizing needs a key file")
    threads, counts = pseudonyms.pseudonymize(
        threads, result.people, pseudonyms.load_key(key_file),
        keep=[options.me, *result.own_names], platform=kind)
  skipped = collections.Counter(result.skipped)
  other_language = report_lib.language_detector(lang) if lang else None
  kept, seen = [], set()
  for imported, thread in zip(result.threads, threads):
    key = tuple((turn.author.lower(), " ".join(turn.text.lower().split()))
                for turn in thread.turns)
    if key in seen:
      skipped[DUPLICATES] += 1
    elif other_language and other_language(thread.turns[-1].text):
      skipped[f"in another language than {lang}"] += 1
    else:
      seen.add(key)
      kept.append((imported.direct, thread))
  if not kept:
    raise UserError(f"{common.shown_path(path)}: every post was dropped "
                    f"({_counted(skipped)})")
  threads = [thread for _, thread in kept]
  own_words = [report_lib.words(t.turns[-1].text) for t in threads]
  counts_out = {
      "kind": kind, "posts": len(threads),
      "threads": sum(len(t.turns) > 1 for t in threads),
      "words": sum(own_words),
      "sources": report_lib.source_counts(
          [(direct, len(t.turns), n)
           for (direct, t), n in zip(kept, own_words)]),
      "lengths": report_lib.lengths(own_words),
      "lang": lang,
      "skipped": dict(sorted(skipped.items())),
      "kept_alone": dict(sorted(result.notes.items())),
      "pseudonymized": pseudonymize,
      "people_pseudonymized": counts.people,
      "names_replaced": counts.names,
      "pseudonym_key": key_file if pseudonymize else None}
  return [common.to_post(t, kind) for t in threads], counts_out


def summary(report: dict, out: str) -> str:
  """The line a run ends with: the report's counts in words (no file of
  the archive named: platforms name them after the people in them)."""
  line = (f"wrote {report['posts']} posts ({report['threads']} with several "
          f"turns; {report['words']} words of yours) to {out}")
  if report["skipped"]:
    line += f"; skipped {_counted(report['skipped'])}"
  if report["kept_alone"]:
    line += f"; kept alone {_counted(report['kept_alone'])}"
  if report["pseudonymized"]:
    line += (f"; pseudonymized {report['people_pseudonymized']} people "
             f"({report['names_replaced']} names replaced, key in "
             f"{report['pseudonym_key']})")
  else:
    line += "; names kept as they are (--pseudonymize replaces them)"
  return line
