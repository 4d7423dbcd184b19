"""What Tumblr refuses in a post's NPF content, and fitting a post to it.

The NPF spec's "Content Block Limits" and "Ask/Answer limits" sections: at
most 30 image blocks, 10 link blocks, 100 inline links, 50 mentions and
1 MB of content a post; an `indent_level` of at most 7 (the "list item"
subtype section); only text blocks in an anonymous ask; an answer counts
its ask's blocks too. Empty text blocks at either end of the content are
trimmed, and the layout's block indexes shift with them (the spec's
"Leading and Trailing Empty Text Blocks").

`refusal` says what the API would refuse (the local server answers 400
with it); `fit` changes the bot's own blocks of a post until nothing is
refused, saying what it changed, so that a post goes out as it will be
stored and never as Tumblr would refuse it.
"""

import json
from typing import List, Optional, Sequence, Tuple

from bot.tumblr import fields

MAX_IMAGE_BLOCKS = 30
MAX_LINK_BLOCKS = 10
MAX_INLINE_LINKS = 100
MAX_MENTIONS = 50
MAX_CONTENT_BYTES = 1_000_000  # "the total post content size is limited to 1MB"
MAX_INDENT_LEVEL = 7


class DoesNotFit(ValueError):
  """The blocks the bot may not change (an ask's) are refused already."""


def content_bytes(content: Sequence[dict]) -> int:
  """The content's size as JSON in UTF-8, what the 1 MB limit counts."""
  return len(json.dumps(list(content), ensure_ascii=False,
                        separators=(",", ":")).encode("utf-8"))


def _formats(content: Sequence[dict], kind: str) -> int:
  return sum(1 for b in fields.dicts(content) for f in fields.dicts(
      b.get("formatting")) if f.get("type") == kind)


def _blocks(content: Sequence[dict], kind: str) -> int:
  return sum(1 for b in fields.dicts(content) if b.get("type") == kind)


def _anonymous_asks(layout: Sequence[dict]) -> List[dict]:
  return [l for l in fields.dicts(layout)
          if l.get("type") == "ask" and not l.get("attribution")]


def refusal(content: Sequence[dict], layout: Sequence[dict] = ()
            ) -> Optional[Tuple[str, int]]:
  """(what is wrong, the error subcode) if Tumblr refuses the post, else
  None. Subcode 8001: "an NPF JSON parameter is invalid"; 8016: "something
  invalid about the format of the answer content or layout" (the API
  docs' NPF create route)."""
  for kind, most, name in (("image", MAX_IMAGE_BLOCKS, "image blocks"),
                           ("link", MAX_LINK_BLOCKS, "link blocks")):
    n = _blocks(content, kind)
    if n > most:
      return f"{n} {name}: a post may have at most {most}", 8001
  for kind, most, name in (("link", MAX_INLINE_LINKS, "inline links"),
                           ("mention", MAX_MENTIONS, "mentions")):
    n = _formats(content, kind)
    if n > most:
      return f"{n} {name}: a post may have at most {most}", 8001
  for b in fields.dicts(content):
    level = b.get("indent_level")
    if level is not None and not (isinstance(level, int)
                                  and 0 <= level <= MAX_INDENT_LEVEL):
      return (f"indent_level {level!r}: at most {MAX_INDENT_LEVEL}", 8001)
  blocks = fields.dicts(content)
  for ask in _anonymous_asks(layout):
    for i in ask.get("blocks") or []:
      if isinstance(i, int) and 0 <= i < len(blocks) and (
          blocks[i].get("type") != "text"):
        return ("an anonymous ask may hold only text blocks, not "
                f"{blocks[i].get('type')!r}", 8016)
  size = content_bytes(content)
  if size > MAX_CONTENT_BYTES:
    return (f"the content is {size} bytes: a post may have at most "
            f"{MAX_CONTENT_BYTES}", 8001)
  return None


def _reindexed(layout: Sequence[dict], kept: Sequence[int]) -> List[dict]:
  """`layout` with block indexes renumbered for the content that keeps the
  old blocks `kept` (in order); indexes of dropped blocks are left out."""
  new = {old: i for i, old in enumerate(kept)}

  def remap(indexes):
    return [new[i] for i in indexes or [] if isinstance(i, int) and i in new]

  out = []
  for item in fields.dicts(layout):
    item = dict(item)
    if "blocks" in item:
      item["blocks"] = remap(item["blocks"])
    if isinstance(item.get("display"), list):
      item["display"] = [dict(row, blocks=remap(row.get("blocks")))
                         for row in fields.dicts(item["display"])]
    out.append(item)
  return out


def _empty_text(block: dict) -> bool:
  return block.get("type") == "text" and block.get("text") == ""


def trim_empty_ends(content: Sequence[dict], layout: Sequence[dict] = ()
                    ) -> Tuple[List[dict], List[dict]]:
  """The content without empty text blocks at its ends, and the layout
  with its indexes shifted to match, as Tumblr stores a post."""
  content = list(content)
  start, end = 0, len(content)
  while start < end and _empty_text(content[start]):
    start += 1
  while end > start and _empty_text(content[end - 1]):
    end -= 1
  if (start, end) == (0, len(content)):
    return content, list(layout)
  return content[start:end], _reindexed(layout, range(start, end))


def _cut_text(block: dict, length: int) -> dict:
  """A text block cut to its first `length` code points."""
  out = dict(block, text=block["text"][:length])
  formats = []
  for f in fields.dicts(block.get("formatting")):
    if (fields.integer(f.get("start")) or 0) < length:
      formats.append(dict(f, end=min(fields.integer(f.get("end")) or 0,
                                     length)))
  if formats:
    out["formatting"] = formats
  else:
    out.pop("formatting", None)
  return out


def _drop_formats(blocks: List[dict], kind: str, over: int) -> None:
  """Removes the last `over` inline formats of `kind` (the text stays)."""
  for i in range(len(blocks) - 1, -1, -1):
    if over <= 0:
      return
    formats = fields.dicts(blocks[i].get("formatting"))
    keep = []
    for f in reversed(formats):
      if over > 0 and f.get("type") == kind:
        over -= 1
      else:
        keep.append(f)
    blocks[i] = dict(blocks[i], formatting=keep[::-1])
    if not keep:
      del blocks[i]["formatting"]


def fit(content: Sequence[dict], layout: Sequence[dict], fixed: int = 0
        ) -> Tuple[List[dict], List[dict], List[str]]:
  """(content, layout, what was changed): the post trimmed as Tumblr
  stores it and cut to its limits. The first `fixed` blocks (an answer's
  ask) are not the bot's to change; an answer's limits count them too.
  Over the limits, the bot's last image and link blocks are left out, its
  last inline links and mentions lose their formatting, indents deeper
  than 7 are made 7, and its text is cut from the end to fit 1 MB.
  Raises DoesNotFit when the fixed blocks alone are refused."""
  changed: List[str] = []
  content = list(content)
  ask = content[:fixed]
  if refusal(ask, layout) is not None:
    raise DoesNotFit(refusal(ask, layout)[0])
  # The bot's blocks with their places in `content`, for the layout.
  own = list(enumerate(content))[fixed:]

  def blocks():
    return ask + [b for _, b in own]

  for kind, most, name in (("image", MAX_IMAGE_BLOCKS, "image blocks"),
                           ("link", MAX_LINK_BLOCKS, "link blocks")):
    over = _blocks(blocks(), kind) - most
    if over > 0:
      drop = [i for i, b in own if b.get("type") == kind][-over:]
      own = [(i, b) for i, b in own if i not in drop]
      changed.append(f"{over} {name} left out (Tumblr allows {most})")
  for kind, most, name in (("link", MAX_INLINE_LINKS, "inline links"),
                           ("mention", MAX_MENTIONS, "mentions")):
    over = _formats(blocks(), kind) - most
    if over > 0:
      mine = [b for _, b in own]
      _drop_formats(mine, kind, over)
      own = [(i, b) for (i, _), b in zip(own, mine)]
      changed.append(f"{over} {name} made plain text (Tumblr allows {most})")
  deep = [i for i, b in own
          if (fields.integer(b.get("indent_level")) or 0) > MAX_INDENT_LEVEL]
  if deep:
    own = [(i, dict(b, indent_level=MAX_INDENT_LEVEL) if i in deep else b)
           for i, b in own]
    changed.append(f"{len(deep)} blocks indented {MAX_INDENT_LEVEL} deep, "
                   "the most Tumblr allows")
  before = sum(len(b.get("text") or "") for _, b in own)
  while own and content_bytes(blocks()) > MAX_CONTENT_BYTES:
    i, last = own[-1]
    rest = content_bytes(blocks()[:-1] + [dict(last, text="")])
    room = MAX_CONTENT_BYTES - rest
    if last.get("type") != "text" or not last.get("text") or room <= 0:
      own.pop()
      continue
    # The most code points whose JSON fits in `room` bytes (an escaped
    # character takes several).
    low, high = 0, len(last["text"])
    while low < high:
      mid = (low + high + 1) // 2
      if content_bytes([{"t": last["text"][:mid]}]) - 10 <= room:
        low = mid
      else:
        high = mid - 1
    own[-1] = (i, _cut_text(last, low))
    if not low:
      own.pop()
  after = sum(len(b.get("text") or "") for _, b in own)
  if after < before:
    changed.append(f"text cut from {before} to {after} characters to fit "
                   f"Tumblr's {MAX_CONTENT_BYTES} bytes a post")
  layout = _reindexed(layout, list(range(fixed)) + [i for i, _ in own])
  trimmed, layout = trim_empty_ends(blocks(), layout)
  problem = refusal(trimmed, layout)
  if problem is not None:
    raise DoesNotFit(problem[0])
  return trimmed, layout, changed
