"""Stable pseudonyms for the other people in an archive.

A model trained on one's direct messages should not learn, and later write,
one's friends' names. Every other person an archive names (the authors of
the other turns, the people mentioned or @-ed) gets a readable pseudonym
from a fixed list, chosen by an HMAC-SHA256 of the person's identity under a
random key kept beside the output (`OUT.pseudonym-key`, mode 0600). The same
person gets the same pseudonym throughout the archive and, the key being
reused, in every later import written beside it; without the key a
pseudonym says nothing of whom it stands for.

Replaced: turn authors exactly, and in the text every name and handle the
archive gave that person, at word boundaries and in any case (so `@bob`,
`Bob` and `https://bob.tumblr.com` all lose `bob`); the words of a person's
full name (`Alice` of `Alice Smith`) where they are written capitalized.
Never replaced: the archive owner's own names (`keep`).
"""

import dataclasses
import hashlib
import hmac
import os
import re
import secrets
from typing import Dict, Iterable, List, Optional, Set, Tuple

from gpt2.errors import UserError
from bot.tumblr.thread import ANONYMOUS, UNKNOWN_AUTHOR, Thread

KEY_SUFFIX = ".pseudonym-key"

# Short, readable and given to anyone; a number is added when two people
# draw the same one, or a drawn one is the real name of someone in the
# archive.
NAMES = ("Robin", "Sasha", "Jordan", "Morgan", "Riley", "Casey", "Quinn",
         "Avery", "Rowan", "Sage", "Emery", "Finley", "Harper", "Jules", "Kai",
         "Lane", "Marlow", "Noel", "Oakley", "Parker", "Reese", "Remy", "Sky",
         "Tatum", "Wren", "Ari", "Blair", "Cameron", "Dakota", "Eden",
         "Frankie", "Gray", "Hollis", "Indigo", "Jesse", "Kit", "Lennon",
         "Micah", "Nico", "Peyton", "River", "Shay", "Teagan", "Val", "Winter",
         "Zion", "Ellis", "Darcy")

_NOT_PEOPLE = {ANONYMOUS.lower(), UNKNOWN_AUTHOR.lower()}
_TAG = re.compile(r"(<[^>]*>)")
_HREF = re.compile(r'(href=")([^"]*)(")')
_KEY_LENGTH = 32  # bytes
# An @handle in text (not an e-mail address), and the @words that name no
# one (Discord's @everyone, and what an importer writes for an unknown one).
_HANDLE = re.compile(
    r"(?<![\w@])@([A-Za-z0-9_][\w.]*(?:@[\w-]+(?:\.[\w-]+)+)?)")
_NOT_HANDLES = {"everyone", "here", "someone", "role"}
# A word of a full name: capitalized letters (`Zoë`, `O'Neil`, `Jean-Luc`).
_NAME_WORD = re.compile(r"[^\W\d_][^\W\d_'’-]*(?:['’-][^\W\d_]+)*")
# Words that make a display name a phrase rather than a person's name.
_NOT_NAME_WORDS = {"the", "a", "an", "of", "and", "or", "in", "on", "my",
                   "your", "our", "not", "official", "team", "bot", "club"}


def key_path(out: str) -> str:
  return out + KEY_SUFFIX


def load_key(path: str) -> bytes:
  """The key in `path`, made (random, mode 0600) if there is none yet."""
  if os.path.exists(path):
    with open(path, encoding="ascii", errors="replace") as f:
      text = f.read().strip()
    try:
      key = bytes.fromhex(text)
    except ValueError:
      key = b""
    if len(key) != _KEY_LENGTH:
      raise UserError(f"{path} is not a pseudonym key ({2 * _KEY_LENGTH} hex "
                      "digits); move it away to make a new one (the "
                      "pseudonyms then change)")
    return key
  key = secrets.token_bytes(_KEY_LENGTH)
  descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
  with os.fdopen(descriptor, "w", encoding="ascii") as f:
    f.write(key.hex() + "\n")
  return key


class People:
  """The other people an archive names: an identity each (a platform's
  user id, or the handle where there is none), with every name and handle
  the archive gives them."""

  def __init__(self):
    self._names: Dict[str, Set[str]] = {}

  def add(self, identity: str, *names: Optional[str]):
    known = self._names.setdefault(identity, set())
    for name in names:
      name = " ".join((name or "").split())
      if name:
        known.add(name)

  def identities(self) -> List[str]:
    return sorted(self._names)

  def names(self, identity: str) -> Set[str]:
    return set(self._names.get(identity, ()))

  def all_names(self) -> Set[str]:
    return {n for names in self._names.values() for n in names}


@dataclasses.dataclass
class Counts:
  people: int = 0  # distinct people whose names were replaced
  names: int = 0  # names replaced, authors and text together


def _name_words(name: str) -> List[str]:
  """The words of a person's full name (`Alice Smith`: Alice, Smith), found
  alone in text too; none for a handle or a phrase (`the_cat`, `The Cat`)."""
  words = name.split()
  if not 2 <= len(words) <= 4 or not all(
      _NAME_WORD.fullmatch(w) and w[0].isupper() for w in words):
    return []
  if any(w.lower() in _NOT_NAME_WORDS for w in words):
    return []
  return [w for w in words if len(w) >= 3]


def _alternation(names: Iterable[str]) -> str:
  ordered = sorted(set(names), key=lambda n: (-len(n), n))
  return "|".join(re.escape(n) for n in ordered)


class Pseudonymizer:
  """Replaces the names of `people` (but never those in `keep`)."""

  def __init__(self, people: People, key: bytes, keep: Iterable[str]):
    keep_lower = {k.lower() for k in keep if k}
    keep_words = {w for k in keep_lower for w in k.split()}
    self.counts = Counts()
    self._seen: Set[str] = set()
    # Identity of every name (case-folded), of every capitalized word of a
    # full name (as written), and the pseudonym of every identity.
    self._identity: Dict[str, str] = {}
    self._word_identity: Dict[str, str] = {}
    real = set(keep_lower)
    for identity in people.identities():
      for name in sorted(people.names(identity)):
        folded = name.lower()
        if len(folded) < 2 or folded in keep_lower or folded in _NOT_PEOPLE:
          continue
        self._identity.setdefault(folded, identity)
        real.add(folded)
        for word in _name_words(name):
          if word.lower() not in keep_words:
            self._word_identity.setdefault(word, identity)
            real.add(word.lower())
    self.pseudonym = self._assign(key, sorted(
        set(self._identity.values()) | set(self._word_identity.values())),
        real)
    self._names = (re.compile(
        r"(?<!\w)(%s)(?!\w)" % _alternation(self._identity), re.IGNORECASE)
                   if self._identity else None)
    self._words = (re.compile(
        r"(?<!\w)(%s)(?!\w)" % _alternation(self._word_identity))
                   if self._word_identity else None)

  @staticmethod
  def _assign(key: bytes, identities: List[str],
              real: Set[str]) -> Dict[str, str]:
    """A pseudonym each, drawn by keyed hash; in the order of the hashes,
    so who gets a number after a clash does not depend on input order."""
    digests = {i: hmac.new(key, i.encode("utf-8"), hashlib.sha256).digest()
               for i in identities}
    taken = set(real)
    out = {}
    for identity in sorted(identities, key=digests.get):
      digest = digests[identity]
      base = NAMES[int.from_bytes(digest[:8], "big") % len(NAMES)]
      name, number = base, 2 + int.from_bytes(digest[8:12], "big") % 98
      while name.lower() in taken:
        name = f"{base}{number}"
        number += 1
      taken.add(name.lower())
      out[identity] = name
    return out

  def _count(self, identity: str):
    self.counts.names += 1
    if identity not in self._seen:
      self._seen.add(identity)
      self.counts.people += 1

  def _replace(self, text: str) -> str:
    def by_name(match):
      identity = self._identity[match.group(1).lower()]
      self._count(identity)
      return self.pseudonym[identity]

    def by_word(match):
      identity = self._word_identity[match.group(1)]
      self._count(identity)
      return self.pseudonym[identity]

    if self._names is not None:
      text = self._names.sub(by_name, text)
    if self._words is not None:
      text = self._words.sub(by_word, text)
    return text

  def author(self, name: str) -> str:
    identity = self._identity.get(name.lower())
    if identity is None:
      return name
    self._count(identity)
    return self.pseudonym[identity]

  def text(self, text: str) -> str:
    """Canonical text (HTML subset) with the names replaced in its words
    and in its links' addresses, never in the tags themselves."""
    pieces = _TAG.split(text)
    for i, piece in enumerate(pieces):
      if i % 2 == 0:
        pieces[i] = self._replace(piece)
      else:
        pieces[i] = _HREF.sub(
            lambda m: m.group(1) + self._replace(m.group(2)) + m.group(3),
            piece)
    return "".join(pieces)

  def thread(self, thread: Thread) -> Thread:
    turns = tuple(dataclasses.replace(
        turn, author=self.author(turn.author), text=self.text(turn.text),
        tags=tuple(self._replace(t) for t in turn.tags))
                  for turn in thread.turns)
    return dataclasses.replace(thread, turns=turns)


def authors_as_people(threads: Iterable[Thread], people: People,
                      keep: Iterable[str], platform: str):
  """Adds every turn author and every `@handle` in the text that is not in
  `keep` to `people`: a net under the importers' own registering, so no
  other author or @-ed person is left out."""
  keep_lower = {k.lower() for k in keep if k}
  known = {n.lower() for n in people.all_names()}

  def add(name, *aliases):
    folded = name.lower()
    if (folded not in keep_lower and folded not in known
        and folded not in _NOT_PEOPLE and folded not in _NOT_HANDLES):
      people.add(f"{platform}:seen:{folded}", name, *(
          a for a in aliases if a.lower() not in keep_lower))
      known.add(folded)

  for thread in threads:
    for turn in thread.turns:
      add(turn.author)
      for match in _HANDLE.finditer(_TAG.sub(" ", turn.text)):
        handle = match.group(1).rstrip(".")
        if handle.split("@")[0].lower() not in keep_lower:  # not one's own
          add(handle, handle.split("@")[0])


def pseudonymize(threads: List[Thread], people: People, key: bytes,
                 keep: Iterable[str], platform: str
                 ) -> Tuple[List[Thread], Counts]:
  """The threads with every other person's names replaced."""
  keep = list(keep)
  authors_as_people(threads, people, keep, platform)
  pseudonymizer = Pseudonymizer(people, key, keep)
  out = [pseudonymizer.thread(t) for t in threads]
  return out, pseudonymizer.counts
