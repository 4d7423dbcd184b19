"""Stable pseudonyms for the other people in an archive.

A model trained on one's direct messages should not learn, and later write,
one's friends' names. Every other person an archive names (the authors of
the other turns, the people mentioned or @-ed) gets a readable pseudonym
from a fixed list, chosen by an HMAC-SHA256 of the person's identity under a
random key kept beside the output (`OUT.pseudonym-key`, mode 0600). The same
person gets the same pseudonym throughout the archive and, the key being
reused, in every later import written beside it; without the key a
pseudonym says nothing of whom it stands for.

Replaced: turn authors, and in the text (and tags) every name and handle
the archive gave that person as a reader would see it: in any case, in
full-width or look-alike letters, with zero-width characters inside
(compared in `bot.filters.normalize`d form), as a whole word or as a part
of a handle or hashtag between `_`, `.` or `-` (`#bob_smith_fan`), a
handle with or without its discriminator (`sora_k#0`, `sora_k`) and a full
name with or without its spaces (`Bob Smith`, `bobsmith`, `bob_smith`);
the words of a person's full name (`Bob` of `Bob Smith`), in any case
unless the word is also a common word (`Will`, `May`: then only
capitalized). In an address only a handle that is a path segment
(`/@bob`, `/bob/status/1`) or a blog's subdomain (`bob.tumblr.com`) is
replaced; the rest of an address is left as it is (`www.ftrain.com`).
Never replaced: the archive owner's own names (`keep`), wherever they are
written, even where one of their words is another person's name.
"""

import dataclasses
import hashlib
import hmac
import os
import re
import secrets
import stat
import urllib.parse
from typing import Dict, Iterable, List, Optional, Set, Tuple

from bot.filters import normalize
from bot.tumblr.thread import ANONYMOUS, UNKNOWN_AUTHOR, Thread
from gpt2.errors import UserError

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

# What platforms write where they no longer know who it was (Discord's
# data package, DiscordChatExporter): no one's name.
_NOT_PEOPLE = {ANONYMOUS.lower(), UNKNOWN_AUTHOR.lower(),
               "unknown participant", "deleted user", "unknown user"}
_TAG = re.compile(r"(<[^>]*>)")
_HREF = re.compile(r'(href=")([^"]*)(")')
# An address in text (the one `bot.corpus.archives.common` links).
_URL = re.compile(r"(https?://[^\s<>\"]+)")
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
# Words of names that are common words too: replaced only where they are
# written capitalized, so "I will" keeps its "will" beside a friend Will Ng.
_COMMON_WORDS = {
    "will", "may", "mark", "grace", "joy", "hope", "faith", "rose", "june",
    "april", "august", "bill", "pat", "sue", "art", "rich", "summer", "dawn",
    "eve", "ray", "max", "frank", "jack", "young", "long", "little", "white",
    "black", "brown", "green", "king", "page", "bell", "hall", "wood",
    "stone", "day", "rice", "hunt", "cook", "fox", "lane", "park", "price",
    "ward", "miles", "chase", "reed", "sky", "river", "sandy", "penny",
    "holly", "ivy", "iris", "lily", "daisy", "ruby", "pearl", "amber",
    "angel", "dean", "drew", "gene", "glen", "guy", "jay", "kit", "happy",
    "major", "moon", "star", "snow", "storm", "rain", "love", "hero",
    "smith", "baker", "miller", "carter", "taylor", "hunter", "cash",
    # short forms of given names (`_GIVEN_NAMES`) that are words too
    "rob", "nick", "chuck", "don", "dot", "harry", "sally", "patty", "peg",
    "hal", "ted", "ned", "meg", "jess", "ken", "deb", "trish", "kitty",
    "willy", "hank", "paddy", "teddy"}
# Common English given names with their usual short forms, written for this
# project; a person's given name matches every form of every group it is in,
# both ways (`Bob` finds `Robert` and `Bobby`, `Robert` finds `Bob`).
_GIVEN_NAMES = (
    "robert rob bob bobby robbie bert", "william will bill billy willy "
    "willie liam", "elizabeth liz lizzie beth betty eliza libby betsy",
    "richard rich rick ricky richie", "james jim jimmy jamie",
    "john johnny jon", "jonathan jon jonny", "michael mike mikey mick mickey",
    "thomas tom tommy", "joseph joe joey", "charles charlie chuck",
    "christopher chris kit", "daniel dan danny", "matthew matt matty",
    "anthony tony", "andrew andy drew", "edward eddie ned ted teddy",
    "steven stephen steve stevie", "benjamin ben benny", "samuel sam sammy",
    "samantha sam sammy", "alexander alex", "alexandra alex lexi",
    "nicholas nick nicky", "patrick pat paddy", "timothy tim timmy",
    "kenneth ken kenny", "gregory greg", "jeffrey jeff", "peter pete",
    "david dave davey", "frederick fred freddie freddy", "henry hank harry",
    "harold harry hal", "lawrence larry", "gerald gerry jerry",
    "raymond ray", "ronald ron ronnie", "donald don donnie", "douglas doug",
    "leonard len lenny", "katherine catherine kathryn kate katie kathy "
    "cathy kat kitty", "margaret maggie meg peggy peg marge margie",
    "jennifer jen jenny", "rebecca becky becca", "susan sue susie suzy",
    "patricia pat patty trish", "deborah deb debbie", "dorothy dot dottie",
    "victoria vicky tori", "jessica jess jessie", "abigail abby",
    "christine christina chris tina", "sarah sally")
# What joins the parts of a handle or a name as people write it.
_SEPARATORS = r"[\s._\-]"
# A handle's discriminator (Discord's `#1234`, and `#0` since 2023).
_DISCRIMINATOR = re.compile(r"#\d{1,4}$")
# Not a letter or digit (`_` is a separator here, not a letter).
_EDGE_BEFORE, _EDGE_AFTER = r"(?<![^\W_])", r"(?![^\W_])"


def key_path(out: str) -> str:
  return out + KEY_SUFFIX


def load_key(path: str) -> bytes:
  """The key in `path`, made (random, mode 0600) if there is none yet."""
  if os.path.exists(path):
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
      raise UserError(f"{path} can be read by others (mode {mode:o}): the "
                      "key tells who every pseudonym is; chmod 600 it and "
                      "run again")
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


def _given_name(name: str) -> Optional[str]:
  """The given name of a person's name: the first word of a full name, or
  a one-word name written as a name (`Bob`, not `bob` or `the_cat`)."""
  words = _name_words(name)
  if words:
    return name.split()[0] if words[0] == name.split()[0] else None
  single = name.strip()
  if (_NAME_WORD.fullmatch(single) and single[0].isupper()
      and single.lower() not in _NOT_NAME_WORDS):
    return single
  return None


def _nicknames(given: str) -> Set[str]:
  """The other forms people call someone named `given` (normalized): the
  forms of `_GIVEN_NAMES` groups holding it, and its pet forms made the
  English way from a name of 3 or 4 letters, the last consonant doubled
  before -y/-ie (`Bob`: `bobby`, `bobbie`; `Jack`: `jacky`, `jackie`).
  Never shorter than 3 letters."""
  folded = normalize(given)
  forms = set()
  for group in _GIVEN_NAMES:
    members = group.split()
    if folded in members:
      forms.update(members)
  # Only a short name makes a pet form so (`Robert` makes no `Roberty`).
  if re.fullmatch(r"[a-z]{3,4}", folded):
    vowels = "aeiou"
    last, before = folded[-1], folded[-2]
    if last not in vowels + "yw" and before in vowels and (
        folded[-3] not in vowels):
      stem = folded + last  # bob -> bobb
    elif last not in vowels + "y" and before not in vowels:
      stem = folded  # jack, ann, matt
    else:
      stem = None
    if stem:
      forms.update((stem + "y", stem + "ie"))
  forms.discard(folded)
  return {f for f in forms if len(f) >= 3}


def _key(name: str) -> str:
  """A name as it is looked up: normalized, its separators gone (so
  `Bob Smith`, `bob_smith` and `ＢＯＢＳＭＩＴＨ` are one key)."""
  return re.sub(_SEPARATORS, "", normalize(name))


def _forms(name: str) -> List[str]:
  """The normalized forms of a name or handle to look for: as given, and a
  handle without its `@`, its discriminator or its server."""
  forms = {normalize(" ".join(name.split()))}
  for form in list(forms):
    bare = _DISCRIMINATOR.sub("", form.lstrip("@~"))
    forms.add(bare)
    if "@" in bare.strip("@"):
      forms.add(bare.split("@")[0])
  return [f for f in forms if len(_key(f)) >= 2]


def _normalized(text: str) -> Tuple[str, List[int]]:
  """`text` in `normalize`d form, and for each of its characters the index
  of the character of `text` it came from."""
  if text.isascii():
    return text.lower(), list(range(len(text)))
  out, where = [], []
  for i, ch in enumerate(text):
    folded = normalize(ch)
    out.append(folded)
    where += [i] * len(folded)
  return "".join(out), where


class _Matcher:
  """Finds names (normalized forms) in text, as a reader would see them."""

  def __init__(self, forms: Iterable[str]):
    parts = []
    for form in sorted(set(forms), key=lambda f: (-len(f), f)):
      pieces = [re.escape(p) for p in re.split(_SEPARATORS + "+", form) if p]
      if pieces:
        parts.append((_SEPARATORS + "?").join(pieces))
    self._pattern = (re.compile(f"{_EDGE_BEFORE}(?:{'|'.join(parts)})"
                                f"{_EDGE_AFTER}") if parts else None)

  def spans(self, text: str, protected=()) -> List[Tuple[int, int, str]]:
    """(start, end, key) in `text` of every name found outside the
    `protected` spans."""
    if self._pattern is None or not text:
      return []
    folded, where = _normalized(text)
    out = []
    for match in self._pattern.finditer(folded):
      start, end = where[match.start()], where[match.end() - 1] + 1
      if not any(s < end and start < e for s, e, *_ in protected):
        out.append((start, end, re.sub(_SEPARATORS, "", match.group(0))))
    return out


def _alternation(names: Iterable[str]) -> str:
  ordered = sorted(set(names), key=lambda n: (-len(n), n))
  return "|".join(re.escape(n) for n in ordered)


class Pseudonymizer:
  """Replaces the names of `people` (but never those in `keep`)."""

  def __init__(self, people: People, key: bytes, keep: Iterable[str]):
    keep = [k for k in keep if k]
    keep_keys = {_key(f) for k in keep for f in _forms(k)}
    keep_words = {normalize(w) for k in keep for w in k.split()}
    # The owner's pet forms are theirs: never another person's.
    keep_nicknames = keep_words | {
        n for k in keep if _given_name(k) for n in _nicknames(_given_name(k))}
    self._keep = _Matcher(f for k in keep for f in _forms(k))
    self._keep_keys = keep_keys
    self.counts = Counts()
    self._seen: Set[str] = set()
    # The identity of every name's key, of every word of a full name (the
    # common words apart, matched as written), and each one's pseudonym.
    self._identity: Dict[str, str] = {}
    self._common_words: Dict[str, str] = {}
    forms = []
    real = set(keep_keys)
    # Identities the archive gives one name (a user id, and the handle an
    # @mention names them by) are one person.
    owner: Dict[str, str] = {}
    alias: Dict[str, str] = {}

    def find(identity):
      while identity in alias:
        identity = alias[identity]
      return identity

    for identity in people.identities():
      for name in sorted(people.names(identity)):
        for form in _forms(name):
          first = find(owner.setdefault(_key(form), identity))
          if first != find(identity):
            alias[find(identity)] = first
    for identity in people.identities():
      person = find(identity)
      for name in sorted(people.names(identity)):
        if name.lower() in _NOT_PEOPLE:
          continue
        for form in _forms(name):
          if _key(form) not in keep_keys:
            self._identity.setdefault(_key(form), person)
            forms.append(form)
            real.add(_key(form))
        given = _given_name(name)
        nicknames = [w.capitalize() for w in sorted(_nicknames(given))
                     if w not in keep_nicknames] if given else []
        for word in _name_words(name) + nicknames:
          folded = normalize(word)
          if folded in keep_words or _key(word) in keep_keys:
            continue
          if folded in _COMMON_WORDS:
            self._common_words.setdefault(word, person)
          else:
            self._identity.setdefault(_key(word), person)
            forms.append(folded)
          real.add(_key(word))
    self._names = _Matcher(forms)
    self._words = (re.compile(
        r"(?<!\w)(%s)(?!\w)" % _alternation(self._common_words))
                   if self._common_words else None)
    self.pseudonym = self._assign(key, sorted(
        set(self._identity.values()) | set(self._common_words.values())),
        real)

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

  def _words_text(self, text: str) -> str:
    """Names found in words of `text` (not an address) replaced."""
    protected = self._keep.spans(text)
    found = [(s, e, self._identity[k]) for s, e, k in
             self._names.spans(text, protected) if k in self._identity]
    if self._words is not None:
      for match in self._words.finditer(text):
        s, e = match.span()
        if not any(a < e and s < b for a, b, *_ in protected + found):
          found.append((s, e, self._common_words[match.group(1)]))
    out, at = [], 0
    for start, end, identity in sorted(found):
      if start < at:
        continue
      self._count(identity)
      out += [text[at:start], self.pseudonym[identity]]
      at = end
    return "".join(out) + text[at:]

  def _handle(self, piece: str) -> str:
    """A piece of an address: replaced where all of it (an `@` or `~`
    before it aside) is a person's handle."""
    bare = piece.lstrip("@~")
    identity = self._identity.get(_key(bare)) if bare else None
    if identity is None or _key(bare) != re.sub(_SEPARATORS, "",
                                                normalize(bare)):
      return piece
    self._count(identity)
    return piece[:len(piece) - len(bare)] + self.pseudonym[identity]

  def _address(self, url: str) -> str:
    """An address with only a person's handle in it replaced: a path
    segment, or the subdomain a platform gives a blog."""
    try:
      parts = urllib.parse.urlsplit(url)
    except ValueError:
      return url
    labels = parts.netloc.split(".")
    if len(labels) >= 3 and labels[0].lower() != "www":
      labels[0] = self._handle(labels[0])
    path = "/".join(self._handle(p) for p in parts.path.split("/"))
    return urllib.parse.urlunsplit(
        (parts.scheme, ".".join(labels), path, parts.query, parts.fragment))

  def _replace(self, text: str) -> str:
    pieces = _URL.split(text)
    return "".join(self._address(p) if i % 2 else self._words_text(p)
                   for i, p in enumerate(pieces))

  def author(self, name: str) -> str:
    if _key(name) in self._keep_keys:
      return name
    identity = self._identity.get(_key(name))
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
            lambda m: m.group(1) + self._address(m.group(2)) + m.group(3),
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
  other author or @-ed person is left out. An `@` before a name already
  known (one's own `@Delta Whiskey`, a friend's `@Bob Smith`) is that
  name, not a handle of its own."""
  keep = [k for k in keep if k]
  keep_keys = {_key(f) for k in keep for f in _forms(k)}
  names = people.all_names()
  known = {_key(n) for n in names} | {
      _key(w) for n in names for w in _name_words(n)}
  covered = _Matcher([f for k in keep for f in _forms(k)]
                     + [f for n in names for f in _forms(n)])

  def add(name, *aliases):
    folded = name.lower()
    if (_key(name) not in keep_keys and _key(name) not in known
        and folded not in _NOT_PEOPLE and folded not in _NOT_HANDLES):
      people.add(f"{platform}:seen:{folded}", name, *(
          a for a in aliases if _key(a) not in keep_keys))
      known.add(_key(name))

  for thread in threads:
    for turn in thread.turns:
      add(turn.author)
      text = _TAG.sub(" ", turn.text)
      spans = covered.spans(text)
      for match in _HANDLE.finditer(text):
        handle = match.group(1).rstrip(".")
        start = match.start(1)
        if any(s <= start < e for s, e, _ in spans):
          continue
        if _key(handle.split("@")[0]) not in keep_keys:  # not one's own
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
