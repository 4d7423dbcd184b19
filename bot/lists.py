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
Names and tags are compared in `bot.filters.normalize`d form (case, full-
width letters, invisible characters and look-alike letters folded), in the
list and in the text alike. A name may be written as the blog's name, with
an `@`, or as its address (`https://www.tumblr.com/eve`,
`eve.tumblr.com`); a tag without its `#` (which starts a comment). An entry that is still
not a blog name (a custom domain, a name with spaces) matches nobody: the
bot says so in one warning line when it starts.
"""

import dataclasses
import logging
import re

from bot.filters import normalize, read_list

log = logging.getLogger("bot.lists")

# The lists of people (the others are tags and post ids).
_PEOPLE = ("avoid_users", "screened_users", "limited_users",
           "auto_accept_repliers")
# A blog's address: NAME.tumblr.com, or tumblr.com/NAME (also the older
# tumblr.com/blog/view/NAME), with or without the scheme, www and a path.
_ADDRESS = re.compile(
    r"(?:https?://)?(?:www\.)?(?:"
    r"tumblr\.com/(?:blog/(?:view/)?)?(?P<path>[a-z0-9-]+)"
    r"|(?P<host>[a-z0-9-]+)\.tumblr\.com)(?:[/?#].*)?")
# What Tumblr allows in a blog's name.
_BLOG_NAME = re.compile(r"[a-z0-9-]{1,32}")


def blog_name(entry: str) -> str:
  """The blog an entry or a name in a post means, normalized: `@eve`,
  `https://eve.tumblr.com/` and `ｅｖｅ` are all `eve`."""
  name = normalize(entry).strip().lstrip("@")
  address = _ADDRESS.fullmatch(name)
  if address:
    name = address.group("path") or address.group("host")
  return name


def _entries(name: str, path: str) -> frozenset:
  """The entries of list `name` in the form they are compared in."""
  found = set()
  for entry in read_list(path, f"lists.{name}"):
    if name in _PEOPLE:
      value = blog_name(entry)
      if not _BLOG_NAME.fullmatch(value):
        log.warning("lists.%s: %r is not a Tumblr blog's name or address; "
                    "it matches nobody", name, entry)
    elif name == "no_reblog_ids":
      value = entry.strip()
    else:  # tags and parts of tags
      value = normalize(entry).strip()
    if value:
      found.add(value)
  return frozenset(found)

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
    return cls(**{name: _entries(name, cfg.get(name, "")) for name in NAMES})

  def avoided(self, *names) -> str:
    """The first of `names` on the avoid list, or ""."""
    return next((n for n in names if n and blog_name(n) in self.avoid_users),
                "")

  def screened(self, name: str) -> bool:
    return bool(name) and blog_name(name) in self.screened_users

  def limited(self, name: str) -> bool:
    return bool(name) and blog_name(name) in self.limited_users

  def auto_accepts(self, name: str) -> bool:
    return bool(name) and blog_name(name) in self.auto_accept_repliers

  def tag_allowed(self, tag: str) -> bool:
    """Whether a generated tag may be used: no avoided user's name and no
    listed substring in it."""
    t = normalize(tag)
    return not any(s in t for s in self.drop_tags_containing | self.avoid_users)

  def names_avoided_user(self, text: str) -> str:
    """An avoided user named in `text` as a word (with or without @)."""
    return _named(text, self.avoid_users)

  def names_screened_user(self, text: str) -> str:
    """A screened user named in `text` as a word (with or without @)."""
    return _named(text, self.screened_users)


def _named(text: str, names: frozenset) -> str:
  """The first of `names` that `text` names as a word, or ""."""
  if not names or not text:
    return ""
  folded = normalize(text)
  for name in sorted(names):
    if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", folded):
      return name
  return ""
