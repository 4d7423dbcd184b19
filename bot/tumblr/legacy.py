"""Legacy (pre-NPF) posts to turns.

A legacy post keeps its content in type-specific HTML fields (`body`,
`caption`, `answer`, ...). Who wrote what in a reblog comes from the legacy
`trail` list when the API or tumblr-backup gave one, and otherwise from the
nested-blockquote convention older posts use in their HTML:

    <p><a class="tumblr_blog" href="...">bob</a>:</p>
    <blockquote>bob's post, which may itself quote someone</blockquote>
    <p>the reblogger's comment</p>
"""

import html
import html.parser
from typing import List, Optional, Tuple, Union

from bot.tumblr import fields, html_subset
from bot.tumblr.html_subset import Block
from bot.tumblr.npf import blog_name
from bot.tumblr.thread import (ANONYMOUS, ASKED, COMMENTED, POSTED, RESPONDED,
                               UNKNOWN_AUTHOR, Turn)


def _lead_blocks(post: dict) -> List[Block]:
  """What a post of each legacy type shows above its caption."""
  kind = post.get("type")
  if kind == "text" and fields.string(post.get("title")).strip():
    title = fields.string(post["title"]).strip()
    return [Block(title, formatting=(
        html_subset.Format(0, len(title), html_subset.BOLD),))]
  if kind == "photo":
    photos = fields.dicts(post.get("photos")) or [{}]
    return [html_subset.placeholder("image", fields.string(p.get("caption")))
            for p in photos]
  if kind == "quote":
    quoted = html_subset.html_to_blocks(fields.string(post.get("text")))
    quote = [html_subset.Block(b.text, html_subset.INDENTED, 0, b.formatting)
             for b in quoted]
    return quote + html_subset.html_to_blocks(fields.string(post.get("source")))
  if kind == "link":
    url = html_subset.safe_url(post.get("url"))
    title = (fields.string(post.get("title")).strip()
             or fields.string(post.get("url")).strip())
    out = []
    if title:
      out.append(Block(title, formatting=(
          (html_subset.Format(0, len(title), html_subset.LINK, url),)
          if url else ())))
    return out + html_subset.html_to_blocks(fields.string(post.get("excerpt")))
  if kind == "chat":
    lines = []
    for line in fields.dicts(post.get("dialogue")):
      label = fields.string(line.get("label")).strip()
      phrase = fields.string(line.get("phrase"))
      lines.append(Block(f"{label} {phrase}".strip()))
    if not lines:
      lines = html_subset.plain_to_blocks(fields.string(post.get("body")))
    title = fields.string(post.get("title")).strip()
    return ([Block(title)] if title else []) + lines
  if kind == "audio":
    track = fields.string(post.get("track_name")).strip()
    artist = fields.string(post.get("artist")).strip()
    detail = f"{track} by {artist}" if artist else track
    return [html_subset.placeholder("audio", detail)]
  if kind == "video":
    return [html_subset.placeholder("video")]
  return []


def _caption_html(post: dict) -> str:
  """The HTML the post's author (and rebloggers) wrote under the lead."""
  if post.get("type") == "chat":
    return ""  # a chat's body is its dialogue, already in the lead
  for field in ("body", "caption", "description", "answer"):
    if isinstance(post.get(field), str):
      return post[field]
  return ""


# ---- the nested-blockquote reblog convention --------------------------------

_VOID = ("br", "img", "hr", "input", "meta", "link", "wbr", "source", "track",
         "area", "col", "embed", "param", "base")
Node = Union[str, "_Element"]


class _Element:

  def __init__(self, tag: str, attrs: List[Tuple[str, Optional[str]]]):
    self.tag, self.attrs, self.children = tag, attrs, []

  def to_html(self) -> str:
    attrs = "".join(f' {k}="{html.escape(v or "", quote=True)}"'
                    for k, v in self.attrs)
    inner = "".join(_to_html(c) for c in self.children)
    if self.tag in _VOID:
      return f"<{self.tag}{attrs}>"
    return f"<{self.tag}{attrs}>{inner}</{self.tag}>"

  def text(self) -> str:
    return "".join(c if isinstance(c, str) else c.text()
                   for c in self.children)


def _to_html(node: Node) -> str:
  if isinstance(node, str):
    return html.escape(node, quote=False)
  return node.to_html()


# Deeper than this the tree is refused: walking it would overflow Python's
# stack (a page of 3,000 nested <div>s), and no reblog chain is this deep.
MAX_DEPTH = 200


class TooDeep(ValueError):
  """HTML nested deeper than `MAX_DEPTH` elements."""


class _TreeBuilder(html.parser.HTMLParser):
  """A forgiving element tree: a stray end tag is ignored, an unclosed
  element is closed when an enclosing one ends."""

  def __init__(self):
    super().__init__(convert_charrefs=True)
    self.root = _Element("", [])
    self._stack = [self.root]

  def handle_starttag(self, tag, attrs):
    element = _Element(tag, attrs)
    self._stack[-1].children.append(element)
    if tag not in _VOID:
      if len(self._stack) > MAX_DEPTH:
        raise TooDeep(f"HTML nested deeper than {MAX_DEPTH} elements")
      self._stack.append(element)

  def handle_endtag(self, tag):
    for i in range(len(self._stack) - 1, 0, -1):
      if self._stack[i].tag == tag:
        del self._stack[i:]
        return

  def handle_data(self, data):
    self._stack[-1].children.append(data)


def _attribution(node: Node) -> Optional[str]:
  """`bob` if node is `<p><a class="tumblr_blog">bob</a>:</p>`."""
  if isinstance(node, str) or node.tag != "p":
    return None
  links = [c for c in node.children if not isinstance(c, str)]
  rest = "".join(c for c in node.children if isinstance(c, str)).strip()
  if (len(links) == 1 and links[0].tag == "a" and rest == ":"
      and "tumblr_blog" in (dict(links[0].attrs).get("class") or "")):
    return links[0].text().strip() or None
  return None


def _significant(nodes: List[Node]) -> List[Node]:
  return [n for n in nodes if not (isinstance(n, str) and not n.strip())]


def _find_chain(nodes: List[Node]
                ) -> Optional[Tuple[List[Node], str, "_Element", List[Node]]]:
  """(what comes before, the quoted blog, its blockquote, what comes after)
  of the first `<p><a class="tumblr_blog">bob</a>:</p><blockquote>` among
  `nodes`, looking inside wrapping <div>s (a photo post's caption div);
  None if there is none."""
  for i, node in enumerate(nodes):
    if isinstance(node, str):
      continue
    quoted = _attribution(node)
    if quoted:
      rest = _significant(nodes[i + 1:])
      if (rest and not isinstance(rest[0], str)
          and rest[0].tag == "blockquote"):
        j = nodes.index(rest[0], i + 1)
        return nodes[:i], quoted, rest[0], nodes[j + 1:]
    elif node.tag == "div":
      inside = _find_chain(node.children)
      if inside:
        before, quoted, quote, after = inside
        return (nodes[:i] + before, quoted, quote, after + nodes[i + 1:])
  return None


def _split_reblogs(nodes: List[Node], author: str) -> List[Tuple[str, str]]:
  """[(author, html)] oldest first, unwrapping quoted reblogs. What comes
  before the first attribution (a text post's <h1> title, a photo post's
  <p><img></p>) is the original post's and goes to the oldest piece."""
  chain = _find_chain(nodes)
  if chain is None:
    return [(author, "".join(_to_html(n) for n in nodes))]
  before, quoted_author, quote, after = chain
  pieces = _split_reblogs(quote.children, quoted_author)
  lead = "".join(_to_html(n) for n in before)
  pieces[0] = (pieces[0][0], lead + pieces[0][1])
  return pieces + [(author, "".join(_to_html(n) for n in after))]


def split_reblog_html(markup: str, author: str) -> List[Tuple[str, str]]:
  builder = _TreeBuilder()
  builder.feed(markup)
  builder.close()
  return _split_reblogs(builder.root.children, author)


# ---- legacy posts to turns --------------------------------------------------


def post_turns(post: dict) -> List[Turn]:
  """The turns of a legacy post, oldest first."""
  author = blog_name(post.get("blog")) or fields.string(
      post.get("blog_name")).strip() or UNKNOWN_AUTHOR
  timestamp = fields.timestamp(post.get("timestamp"))
  tags = fields.tags(post.get("tags"))
  is_answer = post.get("type") == "answer"

  # [(author, html, is this post's own item)], oldest first.
  items = []
  trail = [t for t in fields.dicts(post.get("trail"))
           if isinstance(t.get("content_raw"), str)
           or isinstance(t.get("content"), str)]
  if trail:
    for t in trail:
      markup = t.get("content_raw")
      if not isinstance(markup, str):
        markup = t.get("content")
      items.append((blog_name(t.get("blog"), UNKNOWN_AUTHOR), markup,
                    bool(t.get("is_current_item"))))
  else:
    pieces = split_reblog_html(_caption_html(post), author)
    items = [(a, m, i == len(pieces) - 1) for i, (a, m) in enumerate(pieces)]

  turns = []
  if is_answer:
    asker = fields.string(post.get("asking_name")).strip() or ANONYMOUS
    question = fields.string(post.get("question"))
    turns.append(Turn(asker, ASKED, html_subset.html_to_text(question),
                      timestamp=timestamp))
  lead = _lead_blocks(post)
  for i, (item_author, markup, is_own) in enumerate(items):
    blocks = html_subset.html_to_blocks(markup)
    if i == 0:
      blocks = lead + blocks
    text = html_subset.blocks_to_text(blocks)
    if not text and not is_own and i > 0:
      continue
    if i == 0:
      kind = RESPONDED if is_answer else POSTED
    else:
      kind = COMMENTED
    own = is_own and i == len(items) - 1
    if kind == RESPONDED and not text and not (own and tags):
      continue  # an ask not answered yet
    turns.append(Turn(item_author, kind, text, tags if own else (),
                      timestamp if own else None))
  owns_last = bool(items) and items[-1][2]
  if not owns_last and (tags or not turns):
    # A reblog that adds nothing but tags still says something with them.
    turns.append(Turn(author, COMMENTED if turns else POSTED, "", tags,
                      timestamp))
  return turns
