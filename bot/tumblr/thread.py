"""The thread model: one tumblr post as an ordered list of turns.

A post on tumblr is a conversation: an ask and its answer, or a root post and
the reblogs that added comments to it. Both the NPF and the legacy API
formats are parsed into this one model (see `bot.text_format`), and the
generator's text format is written from it.
"""

import dataclasses
from typing import Optional, Tuple

# What a turn is, as the text format names it.
ASKED = "asked"  # an ask sent to a blog
RESPONDED = "responded"  # the answer to the ask just before it
POSTED = "posted"  # the root of a thread that did not start with an ask
COMMENTED = "commented"  # anything a reblog or a reply added later
KINDS = (ASKED, RESPONDED, POSTED, COMMENTED)

# The author of an ask sent without a blog name.
ANONYMOUS = "Anonymous"
# The author of a trail item whose blog is gone and unnamed.
UNKNOWN_AUTHOR = "unknown"


@dataclasses.dataclass(frozen=True)
class Turn:
  """One author's contribution to a thread.

  `text` is in the HTML subset of `bot.tumblr.html_subset` (its canonical form).
  `tags` and `timestamp` are those of the post the turn was written in, when
  known: the API gives tags only for the post itself, not for trail items.
  """
  author: str
  kind: str
  text: str
  tags: Tuple[str, ...] = ()
  timestamp: Optional[int] = None

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"turn kind {self.kind!r} is not one of {KINDS}")


@dataclasses.dataclass(frozen=True)
class Thread:
  """A post as a conversation; the last turn is the post's own content."""
  turns: Tuple[Turn, ...]
  blog_name: str = UNKNOWN_AUTHOR
  post_id: Optional[str] = None
  note_count: Optional[int] = None

  @property
  def tags(self) -> Tuple[str, ...]:
    return self.turns[-1].tags if self.turns else ()

  @property
  def timestamp(self) -> Optional[int]:
    return self.turns[-1].timestamp if self.turns else None
