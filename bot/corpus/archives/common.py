"""What the archive importers share.

- `Archive`: a platform's download read where it lies, a zip or a tar
  (never extracted) or the folder it unpacks to, or one bare file
  (WordPress.org hands out its XML as is). Files are found by the path the
  platform writes, whatever folder the download wraps them in.
- Text: HTML and plain text to the canonical text of the generator's format
  (`bot.tumblr.html_subset`): links kept as links, mentions and hashtags as
  plain `@name` / `#tag`, media as the `[image]` placeholders; Facebook's
  mojibake undone.
- Threads: what an importer reads (posts, comments, messages) as
  `bot.tumblr.thread.Thread`s whose last turn is the archive owner's, and
  those as the NPF post dicts `launch.prepare_corpus` reads.

How a conversation becomes threads (`conversation_threads`): messages in a
row by one author are one turn; a silence longer than `gap_seconds` starts
a new session; a session is cut into threads that end on one of the owner's
turns, each of at most `max_turns` turns (others' messages after the owner's
last turn teach nothing and are left out). A thread keeps its latest
`max_turns` turns, however little of them the owner wrote: a three-word
reply keeps the long message it answers as its context (the documents mark
the owner's words, and training counts those alone). With a
`min_own_fraction` above 0, a thread keeps instead the longest run of its
latest turns in which the owner wrote at least that share of the
characters; where even the one turn answered outweighs the owner's answer,
the thread is skipped and counted.
"""

import collections
import dataclasses
import datetime
import fnmatch
import json
import os
import re
import tarfile
import zipfile
import zlib
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

from bot.corpus import documents
from bot.corpus.pseudonyms import People
from bot.tumblr import html_subset, npf
from bot.tumblr.html_subset import Block, Format
from bot.tumblr.thread import ASKED, COMMENTED, POSTED, Thread, Turn
from gpt2.errors import UserError

# Why something read was not written, as counted in `Result.skipped`.
NO_OWN_TURN = "conversations where --me wrote nothing"
MOSTLY_OTHERS = "threads mostly written by others"
NO_TEXT = "items with no text"
BY_OTHERS = "posts by someone else"
LINK_ONLY = "link-only posts"
MEDIA_ONLY = "media-only posts"


# ---- the archive ------------------------------------------------------------

# File names that carry another person's name, and the part of each that may
# be shown: DiscordChatExporter's `Direct Messages - Bob [555].json`, Tumblr's
# `convo_<id>_<blogA>_<blogB>.html`, WhatsApp's `WhatsApp Chat with Bob.txt`
# (and its `WhatsApp Chat - Bob.zip`), Facebook's `inbox/bob_1234567/`.
_NAMED_FILES = (
    (re.compile(r"^(.+? - ).+( \[\d+\](?:\.\w+)?)$"), r"\1…\2"),
    (re.compile(r"^(convo_[^_]+_).+(\.html?)$", re.IGNORECASE), r"\1…\2"),
    (re.compile(r"^(.*?WhatsApp ).+?((?:\.\w{2,4})?)$", re.IGNORECASE),
     r"\1…\2"),
    (re.compile(r"^[^/_]+(_\d{5,})$"), r"…\1"),
)


def shown_path(path: str) -> str:
  """`path` as an error line may show it: every part of it that a platform
  names after a person cut to `…` (the rest kept, to find the file by)."""
  parts = re.split(r"([/\\])", path)
  for i, part in enumerate(parts):
    for pattern, replacement in _NAMED_FILES:
      if pattern.match(part):
        parts[i] = pattern.sub(replacement, part)
        break
  return "".join(parts)



# What one file of an archive, and all of them together, may unpack to: a
# zip bomb (300 KB that inflates to 300 MB) is refused before it is in memory.
# The files read are text (media are never read); a user can raise both.
MAX_FILE_BYTES = 256 * 2**20
MAX_TOTAL_BYTES = 2 * 2**30
# The zip methods Python inflates (Deflate64, say, it does not).
_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2,
                zipfile.ZIP_LZMA)


class Archive:
  """A zip, a tar (Mastodon's `.tar.gz`), an unpacked folder, or one file,
  read without extracting anything, each file read up to `max_file_bytes`
  and all of them up to `max_total_bytes`."""

  def __init__(self, path: str, max_file_bytes: int = MAX_FILE_BYTES,
               max_total_bytes: int = MAX_TOTAL_BYTES):
    self.path = path
    self.max_file_bytes = max_file_bytes
    self.max_total_bytes = max_total_bytes
    self._read_total = 0
    self._zip: Optional[zipfile.ZipFile] = None
    self._tar: Optional[tarfile.TarFile] = None
    if not os.path.exists(path):
      raise UserError(f"--archive {shown_path(path)} does not exist")
    try:
      if os.path.isdir(path):
        names = []
        for root, dirs, files in os.walk(path):
          dirs.sort()
          names += [os.path.relpath(os.path.join(root, name), path)
                    .replace(os.sep, "/") for name in sorted(files)]
        self._names = names
      elif zipfile.is_zipfile(path):
        self._zip = zipfile.ZipFile(path)
        self._names = sorted(n for n in self._zip.namelist()
                             if not n.endswith("/"))
      elif tarfile.is_tarfile(path):
        self._tar = tarfile.open(path, "r:*")
        self._members = {
            m.name[2:] if m.name.startswith("./") else m.name: m
            for m in self._tar.getmembers() if m.isfile()}
        self._names = sorted(self._members)
      elif path.lower().endswith((".zip", ".tar", ".tar.gz", ".tgz")):
        raise UserError(f"{shown_path(path)} is not a readable zip or tar "
                        "file (a download cut short?)")
      else:
        self._names = [os.path.basename(path)]
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as e:
      raise UserError(f"{shown_path(path)} is not a readable archive "
                      f"({e})") from None

  def close(self):
    for opened in (self._zip, self._tar):
      if opened is not None:
        opened.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  @property
  def names(self) -> List[str]:
    return list(self._names)

  def glob(self, pattern: str) -> List[str]:
    """The files whose last path segments match `pattern` segment by
    segment (case-insensitive), in whatever folders the download nests
    them: `data/tweets.js` finds `twitter-2024-01-02-ab12/data/tweets.js`."""
    wanted = pattern.lower().split("/")
    out = []
    for name in self._names:
      parts = name.lower().split("/")
      if len(parts) >= len(wanted) and all(
          fnmatch.fnmatchcase(p, w)
          for p, w in zip(parts[-len(wanted):], wanted)):
        out.append(name)
    return out

  def first(self, *patterns: str) -> Optional[str]:
    for pattern in patterns:
      found = self.glob(pattern)
      if found:
        return found[0]
    return None

  def _open(self, name: str):
    """(a binary stream of `name`, the size its header declares or None)."""
    if self._zip is not None:
      info = self._zip.getinfo(name)
      if info.flag_bits & 0x1:
        raise UserError(f"{self.where(name)} is encrypted: unpack the "
                        "archive with its password and give the folder")
      if info.compress_type not in _ZIP_METHODS:
        raise UserError(f"{self.where(name)} is compressed in a way Python "
                        f"cannot read (method {info.compress_type}): unpack "
                        "the archive with another tool and give the folder")
      return self._zip.open(info), info.file_size
    if self._tar is not None:
      member = self._members[name]
      stream = self._tar.extractfile(member)
      if stream is None:
        raise KeyError(name)
      return stream, member.size
    file = (os.path.join(self.path, *name.split("/"))
            if os.path.isdir(self.path) else self.path)
    return open(file, "rb"), os.path.getsize(file)

  def _too_big(self, name: str, total: bool) -> UserError:
    if total:
      return UserError(
          f"{self.where(name)}: the archive's files unpack to more than "
          f"{self.max_total_bytes // 2**20} MiB in all (--max_total_mb "
          "raises the cap)")
    return UserError(
        f"{self.where(name)} unpacks to more than "
        f"{self.max_file_bytes // 2**20} MiB (--max_file_mb raises the cap)")

  def read_bytes(self, name: str) -> bytes:
    """The file's bytes, read in pieces so that one past the caps is
    refused before it is all in memory."""
    try:
      stream, declared = self._open(name)
      with stream:
        room = self.max_total_bytes - self._read_total
        if declared is not None and declared > self.max_file_bytes:
          raise self._too_big(name, total=False)
        if declared is not None and declared > room:
          raise self._too_big(name, total=True)
        pieces, size = [], 0
        while True:
          piece = stream.read(1 << 20)
          if not piece:
            break
          size += len(piece)
          # The header may lie about the size: count what comes out.
          if size > self.max_file_bytes:
            raise self._too_big(name, total=False)
          if size > room:
            raise self._too_big(name, total=True)
          pieces.append(piece)
      self._read_total += size
      return b"".join(pieces)
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error,
            tarfile.TarError, KeyError, RuntimeError,
            NotImplementedError) as e:
      raise UserError(f"{self.where(name)} cannot be read ({e})") from None

  def read_text(self, name: str) -> str:
    data = self.read_bytes(name)
    try:
      return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
      raise UserError(f"{self.where(name)} is not UTF-8 text (byte "
                      f"{e.start})") from None

  def read_json(self, name: str, text: Optional[str] = None):
    try:
      return json.loads(self.read_text(name) if text is None else text)
    except RecursionError:
      raise UserError(f"{self.where(name)} is JSON nested too deeply to "
                      "read") from None
    except ValueError as e:
      where = (f" at line {e.lineno}" if isinstance(e, json.JSONDecodeError)
               else "")
      raise UserError(f"{self.where(name)} is not JSON{where}") from None

  def where(self, name: str) -> str:
    """How an error names a file of the archive."""
    if (self._zip is None and self._tar is None
        and not os.path.isdir(self.path)):
      return shown_path(self.path)
    return f"{shown_path(self.path)}: {shown_path(name)}"


def missing(archive: Archive, expected: str, kind_name: str,
            kind: str) -> UserError:
  """The one-line error for an archive that lacks its kind's file."""
  return UserError(f"{shown_path(archive.path)} has no {expected}: not "
                   f"{kind_name} (--kind={kind})")


def malformed(archive: Archive, name: str, expected: str, kind_name: str,
              kind: str) -> UserError:
  return UserError(f"{archive.where(name)} is not {expected}: not "
                   f"{kind_name} (--kind={kind})")


# ---- text -------------------------------------------------------------------

_TAG = re.compile(r"<[^>]+>")
_URL = re.compile(r"https?://[^\s<>\"]+")
_URL_TAIL = ".,;:!?)]}'\""
_LEADING_MENTIONS = re.compile(r"^(?:@[\w.-]+(?:@[\w.-]+)?[\s,]*)+")
_MEDIA_EXTENSIONS = {
    "image": ("jpg", "jpeg", "png", "gif", "webp", "heic", "bmp", "avif"),
    "video": ("mp4", "mov", "webm", "m4v", "mkv", "avi"),
    "audio": ("mp3", "ogg", "m4a", "wav", "opus", "flac", "aac"),
}


def fix_mojibake(value):
  """Facebook's JSON writes UTF-8 bytes as one `\\u00XX` escape each
  (`\\u00c3\\u00a9` for é): every string that reads back as UTF-8 that
  way is mended, in lists and dicts too; any other string is left as is."""
  if isinstance(value, str):
    try:
      return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
      return value
  if isinstance(value, list):
    return [fix_mojibake(v) for v in value]
  if isinstance(value, dict):
    return {fix_mojibake(k): fix_mojibake(v) for k, v in value.items()}
  return value


def _linked(block: Block) -> Block:
  """`block` with every bare http(s) address in it made a link."""
  formats = list(block.formatting)
  for match in _URL.finditer(block.text):
    url = match.group(0).rstrip(_URL_TAIL)
    start = match.start()
    end = start + len(url)
    covered = any(f.type == html_subset.LINK and f.start < end
                  and start < f.end for f in block.formatting)
    if url and not covered and html_subset.safe_url(url):
      formats.append(Format(start, end, html_subset.LINK, url))
  return dataclasses.replace(block, formatting=tuple(formats))


def _unlinked_handles(block: Block) -> Block:
  """Mentions and hashtags as plain `@name` and `#tag`: a link to a
  profile or a tag page says nothing a reader of the text needs."""
  def is_handle(f: Format) -> bool:
    shown = block.text[f.start:f.end].strip()
    return f.type == html_subset.LINK and shown[:1] in ("@", "#")

  kept = tuple(f for f in block.formatting if not is_handle(f))
  return dataclasses.replace(block, formatting=kept)


def strip_leading_mentions(blocks: List[Block]) -> List[Block]:
  """A reply's `@bob @carol ` at its start (the platform's addressing,
  hidden or greyed out where it is read) taken off its first paragraph."""
  if not blocks:
    return blocks
  first = blocks[0]
  match = _LEADING_MENTIONS.match(first.text)
  if not match:
    return blocks
  cut = match.end()
  rest = html_subset.normalize(Block(
      first.text[cut:], first.subtype, first.indent_level,
      tuple(Format(max(f.start, cut) - cut, f.end - cut, f.type, f.url)
            for f in first.formatting if f.end > cut)))
  return ([rest] if rest else []) + list(blocks[1:])


def html_blocks(markup: str) -> List[Block]:
  return [_unlinked_handles(_linked(b))
          for b in html_subset.html_to_blocks(markup)]


def plain_blocks(text: str) -> List[Block]:
  """Blocks of plain text: blank lines part paragraphs, addresses are
  links."""
  return [_linked(b) for b in html_subset.plain_to_blocks(text)]


def text_of(blocks: Iterable[Block]) -> str:
  return html_subset.blocks_to_text(blocks)


def join_texts(texts: Iterable[str]) -> str:
  """Canonical texts one after another, as the paragraphs of one text."""
  return html_subset.canonical_text(
      "\n\n".join(t for t in texts if has_text(t)))


def media_kind(name: str, media_type: str = "") -> str:
  """`image`, `video` or `audio` for a file name or MIME type, else
  `embed`."""
  major = media_type.split("/")[0].lower()
  if major in _MEDIA_EXTENSIONS:
    return major
  extension = name.lower().rsplit("?", 1)[0].rsplit(".", 1)[-1]
  for kind, extensions in _MEDIA_EXTENSIONS.items():
    if extension in extensions:
      return kind
  return "embed"


def media_block(kind: str, alt_text: str = "") -> Block:
  return html_subset.placeholder(kind, alt_text)


def bold_title(title: str) -> List[Block]:
  title = " ".join(title.split())
  if not title:
    return []
  return [Block(title, formatting=(Format(0, len(title), html_subset.BOLD),))]


def _is_link(block: Block) -> bool:
  return any(f.type == html_subset.LINK and f.start == 0
             and f.end >= len(block.text) for f in block.formatting)


def only_links_or_media(blocks: Sequence[Block]) -> Optional[str]:
  """`MEDIA_ONLY` where every block is a placeholder, `LINK_ONLY` where
  every one is that or a whole link (nothing of one's own words), else
  None."""
  if not blocks:
    return None
  if all(html_subset.is_placeholder(b) for b in blocks):
    return MEDIA_ONLY
  if all(html_subset.is_placeholder(b) or _is_link(b) for b in blocks):
    return LINK_ONLY
  return None


def has_text(text: str) -> bool:
  """Whether canonical text says anything (tags aside)."""
  return bool(_TAG.sub("", text).strip())


def timestamp_of(moment: Optional[datetime.datetime]) -> Optional[int]:
  if moment is None:
    return None
  if moment.tzinfo is None:
    moment = moment.replace(tzinfo=datetime.timezone.utc)
  return int(moment.timestamp())


def iso_timestamp(value) -> Optional[int]:
  """Unix seconds of an ISO 8601 time (`2020-01-02T03:04:05.678+00:00`,
  `...Z`, `2020-01-02 03:04:05`), UTC where it names no zone."""
  if not isinstance(value, str) or not value.strip():
    return None
  try:
    return timestamp_of(datetime.datetime.fromisoformat(value.strip()))
  except ValueError:
    return None


# ---- what an importer gives back ---------------------------------------------


@dataclasses.dataclass(frozen=True)
class Imported:
  """One thread to write; `direct` where it comes from direct messages."""
  thread: Thread
  direct: bool = False


@dataclasses.dataclass
class Result:
  """What an importer read: the threads, the other people named in them,
  the owner's own names there (never pseudonymized), and counts."""
  threads: List[Imported] = dataclasses.field(default_factory=list)
  people: People = dataclasses.field(default_factory=People)
  own_names: Set[str] = dataclasses.field(default_factory=set)
  skipped: collections.Counter = dataclasses.field(
      default_factory=collections.Counter)
  notes: collections.Counter = dataclasses.field(
      default_factory=collections.Counter)


@dataclasses.dataclass(frozen=True)
class Options:
  me: str
  gap_seconds: int = 2 * 3600
  max_turns: int = 10
  min_own_fraction: float = 0.0
  max_file_bytes: int = MAX_FILE_BYTES  # `Archive`'s caps
  max_total_bytes: int = MAX_TOTAL_BYTES

  def is_me(self, *names: Optional[str], also: Iterable[str] = ()) -> bool:
    """Whether any of `names` is the owner's (`--me` or one of `also`)."""
    mine = {self.me.lower()} | {a.lower() for a in also if a}
    return any(n and n.strip().lower() in mine for n in names)


# ---- threads ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Said:
  """One turn before it has a kind: who, what (canonical text), when."""
  author: str
  text: str
  timestamp: Optional[int] = None
  own: bool = False


def single_post(options: Options, text: str, timestamp: Optional[int],
                post_id: str, tags: Sequence[str] = (),
                direct: bool = False) -> Imported:
  """A post of the owner's alone."""
  return Imported(Thread((Turn(options.me, POSTED, text, tuple(tags),
                               timestamp),), options.me, post_id), direct)


def _thread(turns: Sequence[Said], options: Options, post_id: str,
            tags: Sequence[str]) -> Thread:
  built = []
  for i, said in enumerate(turns):
    last = i == len(turns) - 1
    built.append(Turn(options.me if said.own else said.author,
                      POSTED if i == 0 else COMMENTED, said.text,
                      tuple(tags) if last else (), said.timestamp))
  return Thread(tuple(built), options.me, post_id)


def thread_of(turns: Sequence[Said], options: Options, post_id: str,
              skipped: collections.Counter, tags: Sequence[str] = (),
              direct: bool = False) -> Optional[Imported]:
  """The thread of `turns` (the last one the owner's), cut to its longest
  run of latest turns that keeps the owner's share (`min_own_fraction`; 0,
  the default, keeps the latest `max_turns`); None (counted) where none
  does."""
  assert turns and turns[-1].own, "a thread ends on the owner's turn"
  for start in range(max(0, len(turns) - options.max_turns), len(turns)):
    thread = _thread(turns[start:], options, post_id, tags)
    if documents.own_fraction(thread) >= options.min_own_fraction:
      if len(thread.turns) == 1 and len(turns) > 1:
        break  # an answer without what it answers
      return Imported(thread, direct)
  skipped[MOSTLY_OTHERS] += 1
  return None


@dataclasses.dataclass(frozen=True)
class Message:
  """One message of a conversation, as an importer reads it."""
  author: str
  text: str
  timestamp: Optional[int]
  own: bool
  id: Optional[str] = None
  reply_to: Optional[str] = None  # the id of the message it answers


def conversation_threads(messages: Sequence[Message], options: Options,
                         id_prefix: str, result: Result,
                         direct: bool = False):
  """Adds the threads of one conversation to `result` (see the module
  docstring for how it is cut)."""
  ordered = sorted(enumerate(messages),
                   key=lambda p: (p[1].timestamp or 0, p[0]))
  messages = [m for _, m in ordered if has_text(m.text)]
  by_id = {m.id: m for m in messages if m.id}
  if not messages:
    return
  if not any(m.own for m in messages):
    result.skipped[NO_OWN_TURN] += 1
    return
  sessions: List[List[Message]] = [[]]
  for message in messages:
    previous = sessions[-1][-1] if sessions[-1] else None
    if (previous is not None and message.timestamp is not None
        and previous.timestamp is not None
        and message.timestamp - previous.timestamp > options.gap_seconds):
      sessions.append([])
    sessions[-1].append(message)

  def turns_of(session):
    turns: List[Tuple[Message, List[Message]]] = []
    for message in session:
      if turns and turns[-1][0].author == message.author and (
          turns[-1][0].own == message.own):
        turns[-1][1].append(message)
      else:
        turns.append((message, [message]))
    return [group for _, group in turns]

  def said(group):
    return Said(group[0].author, join_texts(m.text for m in group),
                group[-1].timestamp, group[0].own)

  def emit(chunk):
    # Named by its last message, the owner's: one thread ends on each.
    post_id = f"{id_prefix}-{chunk[-1][-1].id or len(result.threads)}"
    imported = thread_of([said(g) for g in chunk], options, post_id,
                         result.skipped, direct=direct)
    if imported is not None:
      result.threads.append(imported)

  for session in sessions:
    chunk: List[List[Message]] = []
    for group in turns_of(session):
      answered = next((by_id.get(m.reply_to) for m in group if m.reply_to),
                      None)
      in_chunk = {m.id for g in chunk for m in g}
      if (group[0].own and answered is not None and not answered.own
          and answered.id not in in_chunk):
        chunk.append([answered])  # the message answered, from further up
      chunk.append(group)
      if group[0].own and len(chunk) >= options.max_turns:
        emit(chunk)
        chunk = []
    own = [i for i, g in enumerate(chunk) if g[0].own]
    if own:
      emit(chunk[:own[-1] + 1])


# ---- threads to post dicts --------------------------------------------------


def _content(text: str) -> List[dict]:
  return npf.blocks_to_content(html_subset.text_to_blocks(text))


def to_post(thread: Thread, kind: str) -> dict:
  """The thread as an NPF post dict: earlier turns in its trail, the last
  turn its own content (`bot.text_format.post_to_thread` reads it back)."""
  earlier, last = thread.turns[:-1], thread.turns[-1]
  content, layout = _content(last.text), []
  if earlier and earlier[-1].kind == ASKED:
    # An answered ask: the question is the post's own, marked as an ask.
    asked = _content(earlier[-1].text)
    content, layout = asked + content, npf.ask_layout(len(asked),
                                                      earlier[-1].author)
    earlier = earlier[:-1]
  trail = []
  for turn in earlier:
    trail.append({"blog": {"name": turn.author},
                  "post": {"timestamp": turn.timestamp},
                  "content": _content(turn.text), "layout": []})
  return {"id": thread.post_id, "blog_name": thread.blog_name,
          "blog": {"name": thread.blog_name}, "timestamp": last.timestamp,
          "tags": list(last.tags), "content": content,
          "layout": layout, "trail": trail, "archive": kind}


def own_self_threads(posts: Sequence[Tuple[str, Optional[str]]]
                     ) -> List[List[str]]:
  """Groups of post ids joined by replies to one's own posts (a thread
  written as several posts), each group in the order given. `posts` is
  (id, id of the post it replies to) in time order."""
  own = {post_id for post_id, _ in posts}
  root: Dict[str, str] = {}

  def find(post_id):
    while root.get(post_id, post_id) != post_id:
      post_id = root[post_id]
    return post_id

  for post_id, parent in posts:
    root.setdefault(post_id, post_id)
    if parent in own:
      root[find(post_id)] = find(parent)
  groups: Dict[str, List[str]] = {}
  for post_id, _ in posts:
    groups.setdefault(find(post_id), []).append(post_id)
  return list(groups.values())


def record_people(result: Result, platform: str,
                  who: Iterable[Tuple[str, Sequence[str]]],
                  options: Options):
  """Registers other people: (identity, names) pairs; the owner's skipped."""
  for identity, names in who:
    if identity and not options.is_me(*names, also=result.own_names):
      result.people.add(f"{platform}:{identity}", *names)
