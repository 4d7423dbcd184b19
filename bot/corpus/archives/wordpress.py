"""WordPress's export (Tools, Export, All content): WXR, an RSS 2.0 file.

WordPress.org hands out the XML itself (`<site>.WordPress.YYYY-MM-DD.xml`);
WordPress.com a zip of one or more such files (`<site>.wordpress.YYYY-MM-DD.
000.xml`). Each `<item>` is a post, page, attachment or menu entry:

    <item><title>...</title><dc:creator>login</dc:creator>
      <content:encoded><![CDATA[the post's HTML]]></content:encoded>
      <wp:post_id>12</wp:post_id><wp:post_date_gmt>2020-01-02 03:04:05
      </wp:post_date_gmt><wp:post_type>post</wp:post_type>
      <wp:status>publish</wp:status>
      <category domain="post_tag" nicename="x">x</category>
      <wp:comment><wp:comment_id>3</wp:comment_id>
        <wp:comment_author>Bob</wp:comment_author>
        <wp:comment_date_gmt>...</wp:comment_date_gmt>
        <wp:comment_content>...</wp:comment_content>
        <wp:comment_approved>1</wp:comment_approved>
        <wp:comment_parent>0</wp:comment_parent>
        <wp:comment_user_id>0</wp:comment_user_id></wp:comment></item>

(`wp:` is `http://wordpress.org/export/1.2/`, 1.1 or 1.0 in older files;
WordPress.com writes `https://wordpress.org/export/1.2/`. WXR 1.0 tags a
post `<category domain="tag">`.)

Read: published posts by `--me` (its login or display name, from
`wp:author`), each with its title in bold and its tags and categories;
pages, attachments, drafts, password-protected posts, pingbacks and
comments not approved are skipped and counted. Comments are a tree: every
branch that holds a comment of `--me` becomes a thread, the post, the
comments down to the deepest of `--me`'s, each by its author. A comment is
`--me`'s by its user id where the file has `wp:author_id` (WordPress.com's
has none), by its author's e-mail address where it is one of `--me`'s
`wp:author_email`, or by its author's name being one of `--me`'s (the
login or display name of `--me`'s posts). The XML is parsed with
`defusedxml`: a document type (and so any entity) is refused wherever it
is in the file. Post content is stored as typed, without
`<p>`s: a blank line is a paragraph and a newline a line break (what
WordPress's `wpautop` does when it shows it); shortcodes such as
`[caption]` keep their text, `[gallery]` and `[embed]` become placeholders.
"""

import collections
import datetime
import email.utils
import re
import xml.etree.ElementTree as ElementTree
from typing import Dict, List, Optional

import defusedxml
from defusedxml import ElementTree as SafeElementTree

from bot.corpus.archives import common
from gpt2.errors import UserError

KIND = "wordpress"
NAME = "a WordPress export (WXR)"
EXPECTED = "WXR .xml file (Tools, Export)"

PAGE = "pages"
NOT_POST = "attachments and other items"
UNPUBLISHED = "drafts and private posts"
PROTECTED = "password-protected posts"
# The deepest reply chain read: a thread deeper is no one's conversation.
MAX_COMMENT_DEPTH = 500
UNAPPROVED = "comments not approved"
PINGBACK = "pingbacks and trackbacks"

_CONTENT = "{http://purl.org/rss/1.0/modules/content/}encoded"
_CREATOR = "{http://purl.org/dc/elements/1.1/}creator"
_WP = re.compile(r"\{https?://wordpress\.org/export/[\d.]+/\}")
_PARAGRAPH_TAG = re.compile(r"<p[\s>]", re.IGNORECASE)
_SPLIT_TAGS = re.compile(r"(<[^>]*>)")
_SHORTCODES = (
    (re.compile(r"\[gallery[^\]]*\]", re.I), '<img alt="">'),
    (re.compile(r"\[(?:embed|video|playlist)[^\]]*\].*?\[/\w+\]|"
                r"\[(?:video|playlist)[^\]]*\]", re.I | re.S), "<iframe>"),
    (re.compile(r"\[audio[^\]]*\](?:.*?\[/audio\])?", re.I | re.S), "<audio>"),
    (re.compile(r"\[/?caption[^\]]*\]", re.I), " "),
)
_NO_DATE = "0000-00-00 00:00:00"


def _wp_all(element, name: str) -> list:
  """The `wp:name` children, whatever the export's version."""
  out = []
  for child in element:
    version = _WP.match(child.tag)
    if version and child.tag[version.end():] == name:
      out.append(child)
  return out


def _wp(element, name: str) -> str:
  """The text of the first `wp:name` child."""
  found = _wp_all(element, name)
  return (found[0].text or "").strip() if found else ""


def _text(element, tag: str) -> str:
  child = element.find(tag)
  return (child.text or "") if child is not None else ""


def autop(content: str) -> str:
  """Stored post content as the HTML WordPress shows: shortcodes replaced,
  and, where the content has no `<p>`s of its own, its newlines as breaks
  (a blank line then parts paragraphs)."""
  for pattern, replacement in _SHORTCODES:
    content = pattern.sub(replacement, content)
  if _PARAGRAPH_TAG.search(content):
    return content
  pieces = _SPLIT_TAGS.split(content.replace("\r\n", "\n"))
  in_pre = 0
  for i, piece in enumerate(pieces):
    if i % 2:
      lowered = piece.lower()
      in_pre += lowered.startswith("<pre") - lowered.startswith("</pre")
    elif not in_pre:
      pieces[i] = piece.replace("\n", "<br>")
  return "".join(pieces)


def _gmt(value: str) -> Optional[int]:
  if not value or value.strip() == _NO_DATE:
    return None
  try:
    return common.timestamp_of(datetime.datetime.strptime(
        value.strip(), "%Y-%m-%d %H:%M:%S"))
  except ValueError:
    return None


def _published(item) -> Optional[int]:
  when = _gmt(_wp(item, "post_date_gmt"))
  if when is None:
    try:
      when = common.timestamp_of(
          email.utils.parsedate_to_datetime(_text(item, "pubDate")))
    except (TypeError, ValueError):
      pass
  return when


def _parse(archive: common.Archive, name: str):
  data = archive.read_bytes(name)
  try:
    # A WXR file has no document type: one (and the entities it could
    # declare, a billion laughs) is refused wherever it is in the file.
    return SafeElementTree.fromstring(data, forbid_dtd=True)
  except defusedxml.DTDForbidden:
    raise common.malformed(archive, name, "WXR (it declares a document "
                           "type, which WordPress never writes)", NAME,
                           KIND) from None
  except (ElementTree.ParseError, defusedxml.DefusedXmlException) as e:
    raise common.malformed(archive, name, f"well-formed XML ({e})", NAME,
                           KIND) from None


def read(archive: common.Archive, options: common.Options) -> common.Result:
  result = common.Result()
  names = [n for n in archive.names if n.lower().endswith(".xml")]
  if not names:
    raise common.missing(archive, EXPECTED, NAME, KIND)
  channels = []
  for name in names:
    root = _parse(archive, name)
    channel = root.find("channel")
    if root.tag != "rss" or channel is None or not any(
        _WP.match(c.tag) for c in channel):
      raise common.malformed(
          archive, name, "an RSS file with wp: elements (WordPress's WXR)",
          NAME, KIND)
    channels.append(channel)

  # Who is --me: a login or a display name, with its user id.
  authors: Dict[str, str] = {}  # login -> display name
  mine = _Mine()
  for channel in channels:
    for author in _wp_all(channel, "author"):
      login, display = _wp(author, "author_login"), _wp(
          author, "author_display_name")
      authors[login] = display or login
      if options.is_me(login, display):
        result.own_names.update(n for n in (login, display) if n)
        if _wp(author, "author_id"):
          mine.ids.add(_wp(author, "author_id"))
        if _wp(author, "author_email"):
          mine.emails.add(_wp(author, "author_email").lower())
      elif login:
        common.record_people(result, KIND, [(f"user:{login}",
                                             (login, display))], options)

  for channel, name in zip(channels, names):
    for item in channel.findall("item"):
      _read_item(item, authors, mine, options, result, archive.where(name))
  return result


class _Mine:
  """How `--me`'s comments are known: user ids and e-mail addresses."""

  def __init__(self):
    self.ids, self.emails = set(), set()


def _read_item(item, authors: Dict[str, str], mine: _Mine,
               options: common.Options, result: common.Result, where: str):
  post_type = _wp(item, "post_type")
  if post_type == "page":
    result.skipped[PAGE] += 1
    return
  if post_type != "post":
    result.skipped[NOT_POST] += 1
    return
  if _wp(item, "status") != "publish":
    result.skipped[UNPUBLISHED] += 1
    return
  if _wp(item, "post_password"):
    result.skipped[PROTECTED] += 1
    return
  creator = _text(item, _CREATOR).strip()
  own_post = options.is_me(creator, authors.get(creator),
                           also=result.own_names)
  if own_post:  # the names --me's comments are signed with, too
    result.own_names.update(n for n in (creator, authors.get(creator)) if n)
  post_id = _wp(item, "post_id") or _text(item, "guid")
  tags = [" ".join((c.text or "").split()) for c in item.findall("category")
          if c.get("domain") in ("post_tag", "category", "tag")
          and (c.text or "").strip() and c.get("nicename") != "uncategorized"]
  tags = list(dict.fromkeys(tags))
  text = common.text_of(common.bold_title(_text(item, "title")) +
                        common.html_blocks(autop(_text(item, _CONTENT))))
  when = _published(item)
  if own_post:
    if common.has_text(text):
      result.threads.append(common.single_post(
          options, text, when, f"{KIND}-{post_id}", tags))
    else:
      result.skipped[common.NO_TEXT] += 1
  post_turn = common.Said(authors.get(creator) or creator or "unknown", text,
                          when, own_post)

  comments: Dict[str, common.Said] = {}
  parents: Dict[str, str] = {}
  children = collections.defaultdict(list)
  for comment in _wp_all(item, "comment"):
    if _wp(comment, "comment_type") in ("pingback", "trackback"):
      result.skipped[PINGBACK] += 1
      continue
    if _wp(comment, "comment_approved") != "1":
      result.skipped[UNAPPROVED] += 1
      continue
    comment_id = _wp(comment, "comment_id")
    author = " ".join(_wp(comment, "comment_author").split()) or "Anonymous"
    own = (_wp(comment, "comment_user_id") in mine.ids
           or _wp(comment, "comment_author_email").lower() in mine.emails
           or options.is_me(author, also=result.own_names))
    if not own:
      common.record_people(result, KIND, [(f"comment:{author.lower()}",
                                           (author,))], options)
    comments[comment_id] = common.Said(
        author, common.text_of(common.html_blocks(autop(
            _wp(comment, "comment_content")))),
        _gmt(_wp(comment, "comment_date_gmt")), own)
    parents[comment_id] = _wp(comment, "comment_parent") or "0"
  for comment_id, parent in parents.items():
    # A reply to a comment not kept (not approved) hangs from the post.
    children[parent if parent in comments else "0"].append(comment_id)

  def branches() -> List[List[str]]:
    """The paths down to a comment of --me's with none of theirs below
    (walked without recursion: a chain may be deep)."""
    out: List[List[str]] = []
    # (path, whether a path of --me's was found below) per open comment.
    stack = [(["0"], iter(children.get("0", ())), [False])]
    while stack:
      path, pending, found = stack[-1]
      child = next(pending, None)
      if child is not None:
        if len(path) > MAX_COMMENT_DEPTH:
          raise UserError(f"{where}: a comment thread nested deeper than "
                          f"{MAX_COMMENT_DEPTH} replies (post {post_id}): "
                          f"not {NAME} this importer reads")
        stack.append((path + [child], iter(children.get(child, ())),
                      [False]))
        continue
      stack.pop()
      if not found[0] and len(path) > 1 and comments[path[-1]].own:
        out.append(path[1:])
        found[0] = True
      if found[0] and stack:
        stack[-1][2][0] = True
    return out

  for path in branches():
    imported = common.thread_of(
        [post_turn] + [comments[c] for c in path], options,
        f"{KIND}-{post_id}-comment-{path[-1]}", result.skipped)
    if imported is not None:
      result.threads.append(imported)
  if not own_post and not any(c.own for c in comments.values()):
    result.skipped[common.BY_OTHERS] += 1
