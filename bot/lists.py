"""The operator's lists: people and posts the bot treats differently.

Each list is a text file (config keys `lists.*`), one entry a line, `#`
starts a comment; an empty key means an empty list, and a file that cannot
be read is one `error:` line.

  avoid_users           never answered, replied to, reblogged, mentioned or
                        tagged; their asks are skipped (and recorded)
  screened_users        everything for them goes to review (drafts)
  limited_users         answered at most once per `asks.limited_hours`
  avoid_tags            dashboard posts with one of these tags are never
                        reblogged
  no_reblog_ids         post ids never reblogged
  auto_accept_repliers  their replies to the bot's posts are answered
  drop_tags_containing  a generated tag containing one of these (or an
                        avoided user's name) is dropped
Names and tags are compared case-insensitively.
"""

import dataclasses
import re

from bot.filters import read_list

NAMES = ("avoid_users", "screened_users", "limited_users", "avoid_tags",
         "no_reblog_ids", "auto_accept_repliers", "drop_tags_containing")


@dataclasses.dataclass(frozen=True)
class Lists:
  avoid_users: frozenset = frozenset()
  screened_users: frozenset = frozenset()
  limited_users: frozenset = frozenset()
  avoid_tags: frozenset = frozenset()
  no_reblog_ids: frozenset = frozenset()
  auto_accept_repliers: frozenset = frozenset()
  drop_tags_containing: frozenset = frozenset()

  @classmethod
  def from_config(cls, cfg) -> "Lists":
    """Reads the files named by the config's `lists.*` keys."""
    return cls(**{name: frozenset(
        e.lower() for e in read_list(cfg.get(name, ""), f"lists.{name}"))
                  for name in NAMES})

  def avoided(self, *names) -> str:
    """The first of `names` on the avoid list, or ""."""
    return next((n for n in names if n and n.lower() in self.avoid_users), "")

  def tag_allowed(self, tag: str) -> bool:
    """Whether a generated tag may be used: no avoided user's name and no
    listed substring in it."""
    t = tag.lower()
    return not any(s in t for s in self.drop_tags_containing | self.avoid_users)

  def names_avoided_user(self, text: str) -> str:
    """An avoided user named in `text` as a word (with or without @)."""
    for name in self.avoid_users:
      if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text, re.I):
        return name
    return ""
