"""A small safe subset of HTML: paragraphs, bold, italic, links, lists, quotes.

Everything tumblr says in HTML (legacy bodies, answers, trail items) and
everything NPF says in text blocks is reduced to a list of `Block`s: NPF-like
text blocks whose `subtype` is None (a paragraph), "indented" (a quote) or an
ordered/unordered list item, with `indent_level` for nesting and formatting
ranges of three kinds only: bold, italic and http(s)/mailto links. Media and
anything else become short placeholder paragraphs such as `[image]`.

Blocks are written two ways:

- `blocks_to_text`: the canonical form used inside the generator's text
  format. Top-level paragraphs are plain lines separated by a blank line;
  inline formatting is `<b>`, `<i>`, `<a href="...">`; quotes and lists are
  `<blockquote>`, `<ul>`/`<ol>` with `<li>` items, one item a line:

      Shopping list:

      <ul><li><b>Sword</b></li>
      <li>Candy</li></ul>

      <blockquote>a quote

      and its <i>second</i> paragraph</blockquote>

  Only `&` that would start an entity and `<` that would start a tag are
  escaped, so ordinary text stays as it was typed (`a < b`, `AT&T`, emoji).
  `text_to_blocks` reads this form back (blank lines are paragraph breaks,
  a single newline is a line break), and for any blocks
  `blocks_to_text(text_to_blocks(blocks_to_text(b))) == blocks_to_text(b)`.
- `blocks_to_html`: ordinary HTML with `<p>` paragraphs, for legacy posts.

`html_to_blocks` reads any HTML the way a browser would collapse its
whitespace, never raising on malformed markup.
"""

import dataclasses
import html
import html.parser
import re
import urllib.parse
from typing import Iterable, List, Optional, Sequence, Tuple

BOLD = "bold"
ITALIC = "italic"
LINK = "link"
FORMAT_TYPES = (LINK, BOLD, ITALIC)  # also the order tags open in

INDENTED = "indented"
ORDERED = "ordered-list-item"
UNORDERED = "unordered-list-item"
MAX_INDENT = 7  # NPF's deepest nesting
_LIST_SUBTYPES = (ORDERED, UNORDERED)
_BLANK_LINE = re.compile(r"\n[ \t]*\n\s*")  # a paragraph break in text

# Placeholders stand in for content the text format cannot carry.
PLACEHOLDER_KINDS = ("image", "video", "audio", "embed", "paywall",
                     "unsupported")
_PLACEHOLDER = re.compile(
    r"\[(?:%s)(?:(?:: | \| )[^\n]*)?\]" % "|".join(PLACEHOLDER_KINDS))

_SAFE_SCHEMES = ("http", "https", "mailto")


@dataclasses.dataclass(frozen=True)
class Format:
  """An inline formatting range over code points [start, end), as in NPF."""
  start: int
  end: int
  type: str
  url: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Block:
  """One paragraph, quote paragraph or list item."""
  text: str
  subtype: Optional[str] = None
  indent_level: int = 0
  formatting: Tuple[Format, ...] = ()


def placeholder(kind: str, detail: str = "", text: str = "") -> Block:
  """A paragraph that stands in for media: `[image]`, `[audio: Song]`, and
  with the text an image shows `[image: ALT | text: WHAT IT SAYS]` or
  `[image | text: WHAT IT SAYS]` (its lines joined by " / ")."""
  detail = " ".join(detail.split()).replace("]", ")")
  text = " / ".join(" ".join(line.split()) for line in text.splitlines()
                    if line.strip()).replace("]", ")")
  inner = kind + (f": {detail}" if detail else "")
  if text:
    inner += f" | text: {text}"
  return Block(f"[{inner}]")


def is_placeholder(block: Block) -> bool:
  return _PLACEHOLDER.fullmatch(block.text) is not None


def safe_url(url: object) -> Optional[str]:
  """`url` if it is an http(s) or mailto link, with tumblr's redirect undone."""
  if not isinstance(url, str):
    return None
  url = url.strip()
  try:
    parts = urllib.parse.urlsplit(url)
  except ValueError:
    return None
  # NPF wraps outgoing links in tumblr redirects; keep where they point.
  if parts.netloc == "t.umblr.com" and parts.path == "/redirect":
    target = urllib.parse.parse_qs(parts.query).get("z")
    if target:
      return safe_url(target[0])
  if parts.netloc == "href.li" and parts.query:
    return safe_url(urllib.parse.unquote(parts.query))
  if parts.scheme.lower() not in _SAFE_SCHEMES:
    return None
  return url


# ---- canonical blocks -------------------------------------------------------


def _merge_formats(formats: Iterable[Format],
                   length: int) -> Tuple[Format, ...]:
  """Clips ranges to the text and joins overlapping ranges of the same kind."""
  by_kind = {}
  for f in formats:
    start, end = max(0, f.start), min(length, f.end)
    if start < end:
      by_kind.setdefault((f.type, f.url), []).append((start, end))
  merged = []
  for (kind, url), ranges in by_kind.items():
    ranges.sort()
    start, end = ranges[0]
    for s, e in ranges[1:]:
      if s <= end:
        end = max(end, e)
      else:
        merged.append(Format(start, end, kind, url))
        start, end = s, e
    merged.append(Format(start, end, kind, url))
  merged.sort(key=lambda f: (f.start, -f.end, FORMAT_TYPES.index(f.type),
                             f.url or ""))
  return tuple(merged)


def normalize(block: Block) -> Optional[Block]:
  """The canonical form of `block`: trimmed, merged ranges; None if empty."""
  stripped = block.text.strip()
  if not stripped:
    return None
  lead = len(block.text) - len(block.text.lstrip())
  shifted = (dataclasses.replace(f, start=f.start - lead, end=f.end - lead)
             for f in block.formatting)
  return Block(stripped, block.subtype,
               min(max(block.indent_level, 0), MAX_INDENT),
               _merge_formats(shifted, len(stripped)))


def _slice(block: Block, start: int, end: int) -> Block:
  """The part [start, end) of a block, with its ranges."""
  formats = tuple(
      Format(max(f.start, start) - start, min(f.end, end) - start, f.type,
             f.url)
      for f in block.formatting if f.start < end and f.end > start)
  return dataclasses.replace(block, text=block.text[start:end],
                             formatting=formats)


def canonical_blocks(blocks: Iterable[Block]) -> List[Block]:
  """Normalized blocks, a paragraph with blank lines split in several."""
  out = []
  for block in blocks:
    pieces = [block]
    if block.subtype not in _LIST_SUBTYPES:
      bounds = [0]
      for match in _BLANK_LINE.finditer(block.text):
        bounds += [match.start(), match.end()]
      bounds.append(len(block.text))
      pieces = [_slice(block, a, b) for a, b in zip(bounds[::2], bounds[1::2])]
    out += [b for b in map(normalize, pieces) if b is not None]
  return out


def split_long_blocks(blocks: Sequence[Block], limit: int) -> List[Block]:
  """Splits blocks longer than `limit` code points, at whitespace if it can."""
  out = []
  for block in blocks:
    text = block.text
    start = 0
    while start < len(text):
      end = len(text)
      if end - start > limit:
        window = text[start:start + limit + 1]
        cut = max(window.rfind(" "), window.rfind("\n"))
        end = start + (cut if cut > 0 else limit)
        end = min(end, start + limit)
      out.append(_slice(block, start, end))
      start = end
  return out


# ---- writing ----------------------------------------------------------------

_CHARREF = re.compile(r"&[^\t\n\f <&]{0,33}")
_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")


def _escape_minimal(text: str) -> str:
  """Escapes only what an HTML parser would not read back as plain text."""

  def amp(match):
    ref = match.group(0)
    return "&amp;" + ref[1:] if html.unescape(ref) != ref else ref

  return _TAG_START.sub("&lt;", _CHARREF.sub(amp, text))


def _escape_full(text: str) -> str:
  return html.escape(text, quote=False).replace("\n", "<br>")


def _open_tag(f: Format) -> str:
  if f.type == LINK:
    return f'<a href="{html.escape(f.url or "", quote=True)}">'
  return "<b>" if f.type == BOLD else "<i>"


def _close_tag(f: Format) -> str:
  return {LINK: "</a>", BOLD: "</b>", ITALIC: "</i>"}[f.type]


def _inline(block: Block, escape) -> str:
  """The block's text with its ranges as properly nested tags."""
  text, formats = block.text, block.formatting
  if not formats:
    return escape(text)
  points = sorted({0, len(text)} | {f.start for f in formats}
                  | {f.end for f in formats})
  out, open_formats = [], []
  for p, q in zip(points, points[1:]):
    active = [f for f in formats if f.start <= p and q <= f.end]
    # Close back to the first open tag that no longer applies.
    keep = 0
    while keep < len(open_formats) and open_formats[keep] in active:
      keep += 1
    out.extend(_close_tag(f) for f in reversed(open_formats[keep:]))
    del open_formats[keep:]
    # The longest-running range opens outermost, so it is opened only once.
    for f in sorted((f for f in active if f not in open_formats),
                    key=lambda f: (-f.end, FORMAT_TYPES.index(f.type))):
      out.append(_open_tag(f))
      open_formats.append(f)
    out.append(escape(text[p:q]))
  out.extend(_close_tag(f) for f in reversed(open_formats))
  return "".join(out)


_CONTAINER_TAG = {INDENTED: "blockquote", ORDERED: "ol", UNORDERED: "ul"}


def _container_path(block: Block, stack: List[str]) -> List[str]:
  """The quote/list elements `block` sits in, reusing the open outer ones."""
  tag = _CONTAINER_TAG.get(block.subtype)
  if tag is None:
    return []
  outer = stack[:block.indent_level]
  outer += [tag] * (block.indent_level - len(outer))
  return outer + [tag]


def _render(blocks: Sequence[Block], escape, text_mode: bool) -> str:
  out: List[str] = []
  stack: List[str] = []
  previous = None
  for block in blocks:
    path = _container_path(block, stack)
    common = 0
    while (common < min(len(stack), len(path))
           and stack[common] == path[common]):
      common += 1
    body = _inline(block, escape)
    if block.subtype in _LIST_SUBTYPES:
      body = f"<li>{body}</li>"
    elif not text_mode:
      body = f"<p>{body}</p>"
    if previous is not None:
      out.append("".join(f"</{t}>" for t in reversed(stack[common:])))
      if text_mode:
        both_items = (previous.subtype in _LIST_SUBTYPES
                      and block.subtype in _LIST_SUBTYPES)
        out.append("\n" if both_items else "\n\n")
    out.append("".join(f"<{t}>" for t in path[common:]) + body)
    stack, previous = path, block
  out.append("".join(f"</{t}>" for t in reversed(stack)))
  return "".join(out)


def blocks_to_text(blocks: Iterable[Block]) -> str:
  """The canonical text of `blocks` (see the module docstring)."""
  return _render(canonical_blocks(blocks), _escape_minimal, text_mode=True)


def blocks_to_html(blocks: Iterable[Block]) -> str:
  """Ordinary HTML for `blocks`, with `<p>` paragraphs (legacy posts)."""
  return _render(canonical_blocks(blocks), _escape_full, text_mode=False)


# ---- reading ----------------------------------------------------------------

_INLINE_TAGS = {"b": BOLD, "strong": BOLD, "i": ITALIC, "em": ITALIC}
_HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")
_BREAKING_TAGS = ("p", "div", "figure", "figcaption", "pre", "hr", "tr",
                  "table", "section", "article", "header", "footer", "dl",
                  "dt", "dd", "address", "details", "summary", "caption")
_SKIPPED_TAGS = ("script", "style", "head", "title", "noscript", "template",
                 "svg", "math", "select", "textarea")
_MEDIA_TAGS = {"img": "image", "video": "video", "audio": "audio",
               "iframe": "embed", "embed": "embed", "object": "embed"}
_WHITESPACE = re.compile(r"[ \t\n\r\f\v]+")


class _BlockParser(html.parser.HTMLParser):
  """Turns HTML (or the canonical text form) into a list of `Block`s."""

  def __init__(self, text_mode: bool):
    super().__init__(convert_charrefs=True)
    self.text_mode = text_mode
    self.blocks: List[Block] = []
    self._parts: List[str] = []
    self._length = 0
    self._formats: List[Format] = []
    # Open inline ranges: [type, url, start, tag that opened it].
    self._open: List[list] = []
    # Open quote/list containers, each [tag, inside an <li>]; the first entry
    # stands for the top level.
    self._containers: List[list] = [["", False]]
    self._skip_depth = 0
    self._skip_tag = ""
    self._pre_depth = 0

  # -- the block being built --

  def _push(self, text: str):
    if text:
      self._parts.append(text)
      self._length += len(text)

  def _last_char(self) -> str:
    return self._parts[-1][-1] if self._parts else ""

  def _context(self) -> Tuple[Optional[str], int]:
    tag, in_item = self._containers[-1]
    depth = len(self._containers) - 1
    if tag in ("ol", "ul"):
      return (ORDERED if tag == "ol" else UNORDERED), depth - 1
    if in_item:  # an <li> outside any list
      return UNORDERED, depth
    if tag == "blockquote":
      return INDENTED, depth - 1
    return None, 0

  def _flush(self):
    text = "".join(self._parts)
    formats = list(self._formats)
    for entry in self._open:
      formats.append(Format(entry[2], self._length, entry[0], entry[1]))
      entry[2] = 0  # ranges still open continue in the next block
    self._parts, self._length, self._formats = [], 0, []
    subtype, indent = self._context()
    block = normalize(Block(text, subtype, indent, tuple(formats)))
    if block is not None:
      self.blocks.append(block)

  def _add_placeholder(self, kind: str, detail: str = ""):
    self._flush()
    subtype, indent = self._context()
    self.blocks.append(dataclasses.replace(
        placeholder(kind, detail), subtype=subtype,
        indent_level=min(indent, MAX_INDENT)))

  # -- inline ranges --

  def _open_format(self, kind: str, url: Optional[str], tag: str):
    self._open.append([kind, url, self._length, tag])

  def _close_format(self, tags: Sequence[str]):
    for i in range(len(self._open) - 1, -1, -1):
      kind, url, start, tag = self._open[i]
      if tag in tags:
        self._formats.append(Format(start, self._length, kind, url))
        del self._open[i]
        return

  # -- containers --

  def _open_container(self, tag: str):
    self._flush()
    self._containers.append([tag, False])

  def _close_container(self, tag: str):
    for i in range(len(self._containers) - 1, 0, -1):
      if self._containers[i][0] == tag:
        self._flush()
        del self._containers[i:]
        return

  # -- HTMLParser callbacks --

  def handle_starttag(self, tag, attrs):
    if self._skip_depth:
      if tag == self._skip_tag:
        self._skip_depth += 1
      return
    attrs = dict(attrs)
    if tag in _SKIPPED_TAGS:
      self._skip_tag, self._skip_depth = tag, 1
    elif tag in _INLINE_TAGS:
      self._open_format(_INLINE_TAGS[tag], None, tag)
    elif tag == "a":
      url = safe_url(attrs.get("href"))
      if url:
        self._open_format(LINK, url, "a")
    elif tag in _HEADINGS:
      self._flush()
      self._open_format(BOLD, None, "h")
    elif tag == "br":
      if not self.text_mode and self._last_char() == " ":
        self._parts[-1] = self._parts[-1][:-1]
        self._length -= 1
      self._push("\n")
    elif tag in ("blockquote", "ul", "ol"):
      self._open_container(tag)
    elif tag == "li":
      self._flush()
      self._containers[-1][1] = True
    elif tag in _MEDIA_TAGS:
      self._add_placeholder(_MEDIA_TAGS[tag], attrs.get("alt") or "")
      if tag in ("video", "audio", "object"):
        self._skip_tag, self._skip_depth = tag, 1
    elif tag in _BREAKING_TAGS:
      self._flush()
      if tag == "pre":
        self._pre_depth += 1
    elif tag == "td" or tag == "th":
      self._push(" ")

  def handle_endtag(self, tag):
    if self._skip_depth:
      if tag == self._skip_tag:
        self._skip_depth -= 1
      return
    if tag in _INLINE_TAGS:
      self._close_format(
          [t for t, kind in _INLINE_TAGS.items() if kind == _INLINE_TAGS[tag]])
    elif tag == "a":
      self._close_format(["a"])
    elif tag in _HEADINGS:
      self._close_format(["h"])
      self._flush()
    elif tag in ("blockquote", "ul", "ol"):
      self._close_container(tag)
    elif tag == "li":
      self._flush()
      self._containers[-1][1] = False
    elif tag in _BREAKING_TAGS:
      self._flush()
      if tag == "pre":
        self._pre_depth = max(0, self._pre_depth - 1)

  def handle_data(self, data):
    if self._skip_depth or not data:
      return
    tag, in_item = self._containers[-1]
    if tag in ("ol", "ul") and not in_item:
      if not data.strip():
        return  # whitespace between list items
      self._containers[-1][1] = True  # text loose in a list: an item
      in_item = True
    if self.text_mode:
      data = data.replace("\r\n", "\n")
      if in_item:
        self._push(data)
        return
      pieces = _BLANK_LINE.split(data)
      self._push(pieces[0])
      for piece in pieces[1:]:
        self._flush()
        self._push(piece)
    elif self._pre_depth:
      self._push(data)
    else:
      data = _WHITESPACE.sub(" ", data)
      if self._last_char() in ("", " ", "\n"):
        data = data.lstrip(" ")
      self._push(data)

  def close(self):
    super().close()
    for entry in list(self._open):
      self._formats.append(Format(entry[2], self._length, entry[0], entry[1]))
    self._open = []
    self._flush()


def _parse(markup: str, text_mode: bool) -> List[Block]:
  if not isinstance(markup, str) or not markup:
    return []
  parser = _BlockParser(text_mode)
  parser.feed(markup)
  parser.close()
  return parser.blocks


def html_to_blocks(markup: str) -> List[Block]:
  """Blocks from HTML as tumblr stores it (whitespace collapses)."""
  return _parse(markup, text_mode=False)


def text_to_blocks(text: str) -> List[Block]:
  """Blocks from the canonical text form (newlines are meaningful)."""
  return _parse(text, text_mode=True)


def plain_to_blocks(text: str) -> List[Block]:
  """Blocks from plain text with no markup at all (e.g. a reply's text)."""
  if not isinstance(text, str):
    return []
  paragraphs = _BLANK_LINE.split(text.replace("\r\n", "\n"))
  return [b for b in (normalize(Block(p)) for p in paragraphs) if b]


def html_to_text(markup: str) -> str:
  """HTML reduced to the canonical text form."""
  return blocks_to_text(html_to_blocks(markup))


def canonical_text(text: str) -> str:
  """Text in the subset rewritten to its one canonical spelling."""
  return blocks_to_text(text_to_blocks(text))


def to_plain(text: str) -> str:
  """Canonical text as a reader sees it: no markup, entities unescaped,
  paragraphs separated by a blank line."""
  return "\n\n".join(b.text for b in text_to_blocks(text))
