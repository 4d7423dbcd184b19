"""Word-list screening: a hit sends a post to drafts for a person to review.

The list is a text file, one word or phrase per line (`#` starts a comment).
Each entry is matched case-insensitively and in the spellings people use to
get past a plain list:
  - leetspeak: every letter also matches its usual stand-ins (a: 4 @,
    e: 3, i: 1 ! |, o: 0, s: 5 $, t: 7 +, ...);
  - spaced or dotted out: "b a d", "b.a.d", "b-a-d";
  - no-space variants of phrases: "bad word" also matches "badword";
  - stretched letters: "baaad".
An entry only matches as a whole word (not "class" for "ass"), so ordinary
text does not end in the drafts.

Entries and texts are both compared in `normalize`d form, so the spellings
that look the same to a reader match too: full-width letters, accents, a
zero-width space or soft hyphen inside a word, Cyrillic or Greek letters
that look Latin.
"""

import dataclasses
import os
import logging
import re
import unicodedata
from typing import Optional, Sequence

from gpt2.errors import UserError

log = logging.getLogger("bot.filters")

# Letters of other scripts drawn like a Latin letter (lowercase: `normalize`
# casefolds first, so the capitals of Cyrillic and Greek come here too).
_LOOKALIKES = str.maketrans({
    # Cyrillic
    "а": "a", "в": "b", "с": "c", "ԁ": "d", "е": "e", "һ": "h", "н": "h",
    "і": "i", "ј": "j", "к": "k", "ӏ": "l", "м": "m", "о": "o", "р": "p",
    "ԛ": "q", "ѕ": "s", "т": "t", "ԝ": "w", "х": "x", "у": "y",
    # Greek
    "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v",
    "ο": "o", "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "ω": "w",
    # Latin letters that are not a-z but look like them
    "ı": "i", "ɑ": "a", "ɡ": "g", "ȷ": "j",
})
# Characters dropped before comparing: combining marks (accents, once NFKD
# has split them off their letters) and invisible format characters (zero
# width spaces and joiners, the soft hyphen, direction marks).
_DROPPED = {"Mn", "Me", "Cf"}


def normalize(text: str) -> str:
  """`text` as the word list and the operator's lists compare it: the
  compatibility forms folded (full-width letters, ligatures), accents and
  invisible characters removed, letters of other scripts that look Latin
  folded to it, case folded. For matching only: never shown or posted."""
  split = unicodedata.normalize("NFKD", text)
  kept = "".join(ch for ch in split
                 if unicodedata.category(ch) not in _DROPPED)
  return unicodedata.normalize("NFKC", kept).casefold().translate(
      _LOOKALIKES)


# Stand-ins per letter, beyond the letter itself.
_LEET = {
    "a": "4@^", "b": "8", "c": "(<", "e": "3", "g": "9", "i": "1!|",
    "l": "1|", "o": "0", "s": "5$", "t": "7+", "z": "2",
}
# What may sit between the letters of a spelled-out word.
_GAP = r"[\s.\-_*'\"~]*"


def _letter(ch: str) -> str:
  chars = ch + _LEET.get(ch, "")
  return "[" + "".join(re.escape(c) for c in chars) + "]+"


def _entry_pattern(entry: str) -> str:
  letters = [c for c in entry.lower() if not c.isspace()]
  return _GAP.join(_letter(c) for c in letters)


def read_list(path: Optional[str], what: str) -> list:
  """The entries of a list file: one a line, `#` starts a comment, blank
  lines skipped. An empty path is an empty list; an unreadable file is a
  UserError naming `what` (the config key) and the path."""
  if not path:
    return []
  try:
    with open(os.path.expanduser(path), encoding="utf-8") as f:
      lines = f.read().splitlines()
  except OSError as e:
    raise UserError(f"{what} {path}: cannot read it ({e.strerror})") from None
  return [e for e in (line.split("#", 1)[0].strip() for line in lines) if e]


@dataclasses.dataclass(frozen=True)
class WordFilter:
  """A compiled word list: `hits(text)` lists the entries found in text."""
  entries: tuple
  _pattern: Optional[re.Pattern] = dataclasses.field(default=None,
                                                     compare=False)

  @classmethod
  def from_words(cls, words: Sequence[str]) -> "WordFilter":
    entries = []
    for word in words:
      entry = normalize(word).strip()
      if not any(c.isalnum() for c in entry):
        # Nothing a text could be matched against: said once, at start.
        if word.strip():
          log.warning("word list: %r has no letter or digit; it matches "
                      "nothing", word.strip())
        continue
      if entry not in entries:
        entries.append(entry)
    if not entries:
      return cls(entries=(), _pattern=None)
    # Longest first, so a phrase wins over a word inside it. Every entry is
    # its own group so a hit names the entry it came from.
    ordered = sorted(entries, key=len, reverse=True)
    body = "|".join(f"(?P<w{i}>{_entry_pattern(e)})"
                    for i, e in enumerate(ordered))
    # Whole words only: no letter right before or after the match.
    pattern = re.compile(rf"(?<![a-z])(?:{body})(?![a-z])", re.IGNORECASE)
    return cls(entries=tuple(ordered), _pattern=pattern)

  @classmethod
  def from_file(cls, path: Optional[str]) -> "WordFilter":
    """Reads a word list; an empty path means no list (nothing is filtered)."""
    return cls.from_words(read_list(path, "word list"))

  def hits(self, text: str) -> list:
    """The list entries that occur in `text` (each at most once)."""
    if self._pattern is None or not text:
      return []
    found = []
    for m in self._pattern.finditer(normalize(text)):
      entry = self.entries[int(m.lastgroup[1:])]
      if entry not in found:
        found.append(entry)
    return found
