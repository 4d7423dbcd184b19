"""Importers for the archives platforms hand their users.

Each module reads one platform's download (a zip or its unpacked folder)
into threads whose last turn is the archive owner's (`common`);
`import_archive` turns those into the post dicts `launch.prepare_corpus`
reads, pseudonymized where asked, with the counts of what was read.
`KINDS` maps `--kind` to its module; every module has `KIND`, `NAME` (what
the archive is called in errors) and `read(archive, options)`.
"""

from typing import Dict, List, Optional, Tuple

from bot.corpus import pseudonyms
from bot.corpus.archives import (common, discord, facebook, mastodon,
                                 tumblr_export, twitter, wordpress)
from gpt2.errors import UserError

KINDS = {module.KIND: module for module in (
    tumblr_export, wordpress, twitter, mastodon, discord, facebook)}

# Skips that say --me may not be the name the archive gives its owner.
_REASONS_NOT_ME = (common.NO_OWN_TURN, common.BY_OTHERS)


def _counted(counts: Dict[str, int]) -> str:
  return ", ".join(f"{n} {why}" for why, n in sorted(counts.items()))


def import_archive(kind: str, path: str, options: common.Options,
                   pseudonymize: Optional[bool] = None,
                   key_file: Optional[str] = None
                   ) -> Tuple[List[dict], dict]:
  """(the post dicts, the report's counts) of the archive at `path`.

  `pseudonymize` None: only where the archive holds direct messages; the
  key is read from `key_file`, or made there.
  """
  with common.Archive(path) as archive:
    result = KINDS[kind].read(archive, options)
  if not result.threads:
    not_me = sum(result.skipped[r] for r in _REASONS_NOT_ME)
    hint = (f": is --me {options.me} your name as the archive writes it?"
            if not_me else "")
    skipped = _counted(result.skipped)
    raise UserError(f"{path} has nothing of --me {options.me}'s to import"
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
  report = {
      "kind": kind, "posts": len(threads),
      "threads": sum(len(t.turns) > 1 for t in threads),
      "skipped": dict(sorted(result.skipped.items())),
      "kept_alone": dict(sorted(result.notes.items())),
      "pseudonymized": pseudonymize,
      "people_pseudonymized": counts.people,
      "names_replaced": counts.names,
      "pseudonym_key": key_file if pseudonymize else None}
  return [common.to_post(t, kind) for t in threads], report


def summary(report: dict, path: str, out: str) -> str:
  """The line a run ends with: the report's counts in words."""
  line = (f"wrote {report['posts']} posts ({report['threads']} with several "
          f"turns) from {path} to {out}")
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
