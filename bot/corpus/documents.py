"""Training documents from scraped posts, with the original bot's filters.

A post becomes one document in the text format (`bot.text_format`) unless:
- most of its text was written by others (a reblog of someone's long post
  with a short comment teaches the voice of someone else): the blog's own
  share of the characters is below `min_own_fraction` (by default 0.5 for
  scraped posts; 0 for posts imported from an archive, whose documents
  carry `own_spans`, the spans of the text that are the owner's own words,
  so that training counts those alone and the rest is their context);
- it carries one of `drop_tags` (by default #quotes: quoted text is not the
  blog's voice either);
- it has no text at all, or is a duplicate of a document already written
  (same post id, or the same text).
"""

import collections
import dataclasses
import datetime
import hashlib
import re
from typing import (Dict, Iterable, Iterator, List, Mapping, Optional,
                    Sequence, Tuple)

from bot import text_format
from bot.tumblr.thread import Thread

_TAG = re.compile(r"<[^>]+>")

# Why posts were left out, as counted in `CorpusStats.dropped`.
NOT_OWN = "mostly written by others"

# `min_own_fraction` where none is given: a scraped post's (a reblog with a
# short comment is another blog's voice), and an archive post's (it carries
# its owner spans, so a short reply under a long message is trained on
# alone, the message its context).
SCRAPED_MIN_OWN_FRACTION = 0.5
ARCHIVE_MIN_OWN_FRACTION = 0.0
TAGGED = "tagged to drop"
EMPTY = "no text"
DUPLICATE = "duplicate"


def own_fraction(thread: Thread) -> float:
  """The share of the thread's characters written by the blog itself."""
  lengths = collections.Counter()
  for turn in thread.turns:
    lengths[turn.author] += len(_TAG.sub("", turn.text).strip())
  total = sum(lengths.values())
  return lengths[thread.blog_name] / total if total else 0.0


@dataclasses.dataclass(frozen=True)
class Document:
  text: str
  post_id: Optional[str]
  blog: str
  note_count: Optional[int]
  # [start, end) character spans of `text` that are the blog's own words
  # (archive posts); None: all of it counts.
  own_spans: Optional[List[Tuple[int, int]]] = None

  def to_json(self) -> Dict[str, object]:
    record = dataclasses.asdict(self)
    if self.own_spans is None:
      del record["own_spans"]
    else:
      record["own_spans"] = [list(span) for span in self.own_spans]
    return record


@dataclasses.dataclass
class CorpusStats:
  kept: int = 0
  dropped: collections.Counter = dataclasses.field(
      default_factory=collections.Counter)


def documents(posts: Iterable[dict], *,
              name_map: Optional[Mapping[str, str]] = None,
              min_own_fraction: Optional[float] = None,
              drop_tags: Sequence[str] = ("quotes",),
              tz: datetime.tzinfo = datetime.timezone.utc,
              stats: Optional[CorpusStats] = None) -> Iterator[Document]:
  """The documents of `posts` (post dicts, NPF or legacy) that pass.

  `min_own_fraction` None: `SCRAPED_MIN_OWN_FRACTION` for scraped posts,
  `ARCHIVE_MIN_OWN_FRACTION` for imported ones (`post["archive"]`); a
  value applies to both."""
  stats = stats if stats is not None else CorpusStats()
  dropped_tags = {t.lower().lstrip("#").strip() for t in drop_tags}
  seen_ids, seen_texts = set(), set()
  for post in posts:
    thread = text_format.post_to_thread(post)
    reason = None
    if thread.post_id is not None and thread.post_id in seen_ids:
      reason = DUPLICATE
    elif not any(_TAG.sub("", t.text).strip() for t in thread.turns):
      reason = EMPTY
    elif dropped_tags & {t.lower() for t in thread.tags}:
      reason = TAGGED
    archived = bool(post.get("archive"))
    least = min_own_fraction
    if least is None:
      least = (ARCHIVE_MIN_OWN_FRACTION if archived
               else SCRAPED_MIN_OWN_FRACTION)
    if reason is None and own_fraction(thread) < least:
      reason = NOT_OWN
    text, spans = "", None
    if reason is None:
      text, spans = text_format.format_thread_spans(thread, name_map, tz)
      if not archived:
        spans = None
      digest = hashlib.sha1(text.encode("utf-8")).digest()
      if digest in seen_texts:
        reason = DUPLICATE
      seen_texts.add(digest)
    if thread.post_id is not None:
      seen_ids.add(thread.post_id)
    if reason is not None:
      stats.dropped[reason] += 1
      continue
    stats.kept += 1
    yield Document(text, thread.post_id, thread.blog_name, thread.note_count,
                   spans)
