"""Neue Post Format: content blocks to `Block`s and back, NPF posts to turns.

Reading is forgiving: the API's posts, tumblr-backup files and the examples
in Tumblr's NPF spec all pass through here, so a missing field, a block of a
type we do not know, or a layout that points past the content gives a
placeholder or is skipped, never an exception. Writing (`text_to_content`)
keeps within NPF's limits: at most 4096 code points a text block.
"""

import urllib.parse
from typing import Any, List, Optional, Sequence, Tuple

from bot.tumblr import fields, html_subset
from bot.tumblr.html_subset import Block, Format
from bot.tumblr.thread import (ANONYMOUS, ASKED, COMMENTED, POSTED, RESPONDED,
                               UNKNOWN_AUTHOR, Turn)

TEXT_BLOCK_LIMIT = 4096  # code points
MAX_BLOCKS = 1000

_SUBTYPES_READ = {
    "indented": html_subset.INDENTED,
    "quote": html_subset.INDENTED,
    "ordered-list-item": html_subset.ORDERED,
    "unordered-list-item": html_subset.UNORDERED,
}
_HEADINGS = ("heading1", "heading2")


def blog_name_from_url(url: Any) -> str:
  """`cyle` from https://cyle.tumblr.com or https://www.tumblr.com/cyle."""
  try:
    parts = urllib.parse.urlsplit(fields.string(url))
  except ValueError:
    return ""
  host = parts.netloc.lower().split(":")[0]
  if host in ("www.tumblr.com", "tumblr.com"):
    segments = [s for s in parts.path.split("/") if s]
    return segments[0].lstrip("@") if segments else ""
  if host.endswith(".tumblr.com"):
    return host[:-len(".tumblr.com")]
  return host


def blog_name(blog: Any, fallback: str = "") -> str:
  """The name in a short blog info object, else from its url."""
  if not isinstance(blog, dict):
    return fallback
  name = fields.string(blog.get("name")).strip()
  return name or blog_name_from_url(blog.get("url")) or fallback


# ---- content blocks to Blocks -----------------------------------------------


def _text_block(block: dict) -> Block:
  text = fields.string(block.get("text"))
  subtype = _SUBTYPES_READ.get(block.get("subtype"))
  indent = fields.integer(block.get("indent_level")) or 0
  formats = []
  for f in fields.dicts(block.get("formatting")):
    start, end = fields.integer(f.get("start")), fields.integer(f.get("end"))
    kind = f.get("type")
    if start is None or end is None:
      continue
    if kind in (html_subset.BOLD, html_subset.ITALIC):
      formats.append(Format(start, end, kind))
    elif kind in (html_subset.LINK, "mention"):
      url = f.get("url") if kind == html_subset.LINK else (
          (f.get("blog") or {}).get("url") if isinstance(f.get("blog"), dict)
          else None)
      url = html_subset.safe_url(url)
      if url:
        formats.append(Format(start, end, html_subset.LINK, url))
  if block.get("subtype") in _HEADINGS:
    formats.append(Format(0, len(text), html_subset.BOLD))
  return Block(text, subtype, indent, tuple(formats))


def _media_detail(*parts: Any) -> str:
  return " ".join(p for p in (fields.string(x).strip() for x in parts) if p)


def content_block_to_blocks(block: dict) -> List[Block]:
  """One NPF content block as Blocks; media become placeholders."""
  kind = block.get("type")
  if kind == "text":
    return [_text_block(block)]
  if kind == "image":
    alt_text = fields.string(block.get("alt_text"))
    # `ocr_text`: what the image says, written by bot.images.annotate.
    out = [html_subset.placeholder("image", alt_text,
                                   fields.string(block.get("ocr_text")))]
    if fields.string(block.get("caption")).strip():
      out.append(Block(fields.string(block.get("caption"))))
    return out
  if kind == "link":
    url = html_subset.safe_url(block.get("url"))
    title = (fields.string(block.get("title")).strip()
             or fields.string(block.get("url")).strip())
    out = []
    if title:
      out.append(Block(title, formatting=(
          (Format(0, len(title), html_subset.LINK, url),) if url else ())))
    if fields.string(block.get("description")).strip():
      out.append(Block(fields.string(block.get("description"))))
    return out
  if kind == "audio":
    title, artist = block.get("title"), block.get("artist")
    detail = _media_detail(title, "by" if fields.string(artist).strip()
                           else "", artist)
    return [html_subset.placeholder("audio", detail)]
  if kind == "video":
    return [html_subset.placeholder("video")]
  if kind == "paywall":
    return [html_subset.placeholder("paywall")]
  return [html_subset.placeholder("unsupported", fields.string(kind)[:40])]


def _layouts(layout: Any, kind: str) -> List[dict]:
  return [l for l in fields.dicts(layout) if l.get("type") == kind]


def _valid_indexes(indexes: Any, count: int) -> List[int]:
  out = []
  for i in indexes if isinstance(indexes, list) else []:
    i = fields.integer(i)
    if i is not None and 0 <= i < count and i not in out:
      out.append(i)
  return out


def _display_order(layout: Any, count: int) -> List[int]:
  """Content indexes in the order a `rows` layout shows them."""
  order = []
  for rows_layout in _layouts(layout, "rows")[:1]:
    if isinstance(rows_layout.get("display"), list):
      rows = [r.get("blocks") for r in fields.dicts(rows_layout["display"])]
    else:  # the older `rows: [[1, 0]]` spelling
      rows = rows_layout.get("rows") if isinstance(
          rows_layout.get("rows"), list) else []
    for row in rows:
      order += [i for i in _valid_indexes(row, count) if i not in order]
  # Blocks a layout leaves out are still shown, after the rest.
  return order + [i for i in range(count) if i not in order]


def split_ask(content: Any, layout: Any
             ) -> Tuple[Optional[Tuple[str, List[Block]]], List[Block]]:
  """((asker, ask blocks) or None, the other blocks) of one post's content."""
  blocks = fields.dicts(content)
  asks = _layouts(layout, "ask")
  ask_indexes = (_valid_indexes(asks[0].get("blocks"), len(blocks))
                 if asks else [])
  body = []
  for i in _display_order(layout, len(blocks)):
    if i not in ask_indexes:
      body += content_block_to_blocks(blocks[i])
  if not asks:
    return None, body
  attribution = asks[0].get("attribution")
  asker = ANONYMOUS
  if isinstance(attribution, dict):
    asker = (blog_name(attribution.get("blog"))
             or blog_name_from_url(attribution.get("url")) or ANONYMOUS)
  ask_blocks = []
  for i in ask_indexes:
    ask_blocks += content_block_to_blocks(blocks[i])
  return (asker, ask_blocks), body


def content_to_text(content: Any, layout: Any = None) -> str:
  """All of one post's content as canonical text (ask blocks first)."""
  ask, body = split_ask(content, layout)
  return html_subset.blocks_to_text((ask[1] if ask else []) + body)


# ---- NPF posts to turns -----------------------------------------------------


def _content_turns(content: Any, layout: Any, author: str, first: bool,
                   timestamp: Optional[int], tags: Tuple[str, ...],
                   always: bool) -> List[Turn]:
  """The turns one piece of content (a trail item or the post) adds."""
  ask, body = split_ask(content, layout)
  text = html_subset.blocks_to_text(body)
  turns = []
  if ask is not None:
    turns.append(Turn(ask[0], ASKED, html_subset.blocks_to_text(ask[1]),
                      timestamp=timestamp))
    if text or tags:
      turns.append(Turn(author, RESPONDED, text, tags, timestamp))
  elif text or tags or always:
    turns.append(Turn(author, POSTED if first else COMMENTED, text, tags,
                      timestamp))
  return turns


def post_turns(post: dict) -> List[Turn]:
  """The turns of an NPF post: its trail, oldest first, then its own content."""
  turns: List[Turn] = []
  for item in fields.dicts(post.get("trail")):
    author = (blog_name(item.get("blog"))
              or fields.string(item.get("broken_blog_name")).strip()
              or UNKNOWN_AUTHOR)
    post_info = item.get("post") if isinstance(item.get("post"), dict) else {}
    turns += _content_turns(item.get("content"), item.get("layout"), author,
                            not turns,
                            fields.timestamp(post_info.get("timestamp")), (),
                            always=True)
  author = (blog_name(post.get("blog"))
            or fields.string(post.get("blog_name")).strip() or UNKNOWN_AUTHOR)
  # A reblog that adds nothing but tags still says something with them.
  turns += _content_turns(post.get("content"), post.get("layout"), author,
                          not turns, fields.timestamp(post.get("timestamp")),
                          fields.tags(post.get("tags")), always=not turns)
  return turns


# ---- text to NPF content ----------------------------------------------------

_SUBTYPES_WRITTEN = {html_subset.INDENTED: "indented",
                     html_subset.ORDERED: "ordered-list-item",
                     html_subset.UNORDERED: "unordered-list-item"}


def _pack_paragraphs(blocks: Sequence[Block]) -> List[Block]:
  """Joins neighbouring plain paragraphs with blank lines, up to the limit."""
  packed: List[Block] = []
  for block in blocks:
    last = packed[-1] if packed else None
    if (last is not None and last.subtype is None and block.subtype is None
        and len(last.text) + 2 + len(block.text) <= TEXT_BLOCK_LIMIT):
      shift = len(last.text) + 2
      packed[-1] = Block(
          last.text + "\n\n" + block.text, None, 0,
          last.formatting + tuple(Format(f.start + shift, f.end + shift,
                                         f.type, f.url)
                                  for f in block.formatting))
    else:
      packed.append(block)
  return packed


def blocks_to_content(blocks: Sequence[Block]) -> List[dict]:
  """NPF text blocks for `blocks`, each within the 4096 code point limit.

  A post of more than NPF's 1000 blocks has its paragraphs packed several to
  a block (blank lines between them), which reads back the same.
  """
  blocks = html_subset.split_long_blocks(blocks, TEXT_BLOCK_LIMIT)
  if len(blocks) > MAX_BLOCKS:
    blocks = _pack_paragraphs(blocks)
  content = []
  for block in blocks:
    entry = {"type": "text", "text": block.text}
    if block.subtype in _SUBTYPES_WRITTEN:
      entry["subtype"] = _SUBTYPES_WRITTEN[block.subtype]
    if block.indent_level:
      entry["indent_level"] = block.indent_level
    if block.formatting:
      entry["formatting"] = [
          dict({"start": f.start, "end": f.end, "type": f.type},
               **({"url": f.url} if f.type == html_subset.LINK else {}))
          for f in block.formatting]
    content.append(entry)
  if len(content) > MAX_BLOCKS:
    raise ValueError(f"{len(content)} content blocks is more than NPF's "
                     f"{MAX_BLOCKS}")
  return content


def text_to_content(text: str) -> List[dict]:
  """NPF content for canonical text; media placeholders are dropped."""
  blocks = html_subset.text_to_blocks(text)
  return blocks_to_content(
      [b for b in blocks if not html_subset.is_placeholder(b)])


def ask_layout(ask_block_count: int, asker: Optional[str]) -> List[dict]:
  """The `layout` marking the first blocks of a post as an ask."""
  layout = {"type": "ask", "blocks": list(range(ask_block_count))}
  if asker and asker != ANONYMOUS:
    layout["attribution"] = {"type": "blog",
                             "url": f"https://{asker}.tumblr.com/",
                             "blog": {"name": asker}}
  return [layout]


# ---- reading a post's identity ------------------------------------------------


def post_id(post: dict) -> str:
  """A post's id as a string (the API gives `id_string` and a number)."""
  return str(post.get("id_string") or post.get("id"))


def genesis_id(post: dict) -> str:
  """The id a post had first, as a string: publishing a draft, a queued
  post or an ask gives it a new id and keeps the first in
  `genesis_post_id`; a post never moved has none (its own id)."""
  return str(post.get("genesis_post_id") or post_id(post))


def is_legacy(post: dict) -> bool:
  """Whether the post is stored in the legacy format: the API says so by
  `is_blocks_post_format` false (absent: taken as NPF). Tumblr edits such a
  post in NPF only if it is a legacy text post (the API docs' NPF edit
  route); an ask in it is answered through the legacy `/post/edit`."""
  return post.get("is_blocks_post_format") is False


def poster(post: dict) -> str:
  """The name of the blog the post is on."""
  return (blog_name(post.get("blog")) or fields.string(post.get("blog_name"))
          ).strip()


def poster_uuid(post: dict) -> str:
  blog = post.get("blog") if isinstance(post.get("blog"), dict) else {}
  return str(blog.get("uuid") or post.get("tumblelog_uuid") or
             post.get("blog_uuid") or "")


def is_ask(post: dict) -> bool:
  """Whether a post is an ask (NPF ask layout, or a legacy answer post)."""
  return (any(l.get("type") == "ask" for l in fields.dicts(post.get("layout")))
          or post.get("type") == "answer")


def trail_blogs(post: dict) -> List[str]:
  """The blogs of a post's trail, oldest first (the original poster first)."""
  return [blog_name(t.get("blog"), fields.string(t.get("broken_blog_name")))
          for t in fields.dicts(post.get("trail"))]


def root_poster(post: dict) -> str:
  """Who wrote the post at the root of a reblog chain (the poster if none)."""
  trail = trail_blogs(post)
  return trail[0] if trail else poster(post)


def all_blocks(post: dict) -> List[dict]:
  """Every content block of a post: its trail's, then its own."""
  out = []
  for item in fields.dicts(post.get("trail")):
    out += fields.dicts(item.get("content"))
  return out + fields.dicts(post.get("content"))
