"""Tumblr's own blog export (Settings, the blog, Export).

The zip Tumblr mails (`<blog>.zip`, or `<id>.zip` holding it) unpacks to
`posts/posts_index.html`, one HTML page a post in `posts/html/<id>.html`,
answered asks in `posts/html/submissions/<id>.html`, `media/`, and the
blog's direct messages, one HTML page a conversation in
`conversations/convo_<id>_<blogA>_<blogB>.html` (tests/data/tumblr_export
has the layout, with made-up people). A post page is the post's legacy
HTML, reblogs in Tumblr's nested-quote convention (after a text post's
<h1> title, or inside a photo post's caption <div>, after its images),
then a footer:

    <body><h1></h1><p><a class="tumblr_blog" href="https://bob.tumblr.com/
    post/1">bob</a>:</p><blockquote><p>bob's post</p></blockquote><p>my
    comment</p><div id="footer"><span id="timestamp"> December 1st, 2016
    11:03pm </span><span class="tag">a tag</span></div></body>

Read: each post's trail (who wrote which part, `bot.tumblr.legacy`: each
quoted blog's turn under its name, what comes after the last quote the
owner's), its tags and time (written without a zone: taken as UTC; where a
page has several footers, the last is the post's). `[[MORE]]` (the read-more
cut) and "View On WordPress" (a cross-post's link) are not text. Skipped
and counted: a reblog that adds neither a comment nor a tag, and a post
whose own part is only links or only media. An answered ask's page holds
the question as escaped HTML inside its first <strong> (the asker's name,
"NAME asked:", before it; Anonymous where there is none) and the answer
after it: an ask turn and the owner's answer. A conversation page lists
its participants ("Blog Name: bob", "Blog ID: t:...") and then its
messages, newest first, each a `<span class="message-info">bob TEXT @
2021-09-20 11:29:43 GMT (1632137383)</span>` and the message's paragraphs
(a POSTREF message's a link to a post); each conversation becomes threads
(`common.conversation_threads`) and is pseudonymized by default. An older
JSON layout of messages (`messages/*.json`, `conversations.json`) is read
too, forgivingly.

Some exports (older ones, and some beside `posts/html/`) hold the posts in
one `posts/posts.xml`, Tumblr's API v1 XML:

    <tumblr version="1.0"><posts><post id="1" type="regular"
    unix-timestamp="1425106864" is_reblog="false" tumblelog="blog"
    state="published"><regular-title>...</regular-title><regular-body>the
    post's HTML, escaped</regular-body><tag>a tag</tag></post>...

(`photo-caption` and `photo-url`, `link-text`, `link-url` and
`link-description`, `quote-text` and `quote-source`, `video-caption`,
`audio-caption`, `conversation-text`, `question` and `answer` (as the API
v1 names it: not seen in a real export) for the other types.) A post is
read from it as from its page, the same HTML: its reblog chain split by its
attribution, its tags, its time (the file's Unix time).
A post that has a page in `posts/html/` is read from the page alone, so
nothing is read twice; an ask not answered (`state="submission"`, only a
`question`) is skipped and counted. The XML is parsed with `defusedxml`:
a document type (and so any entity) is refused.
"""

import datetime
import hashlib
import html
import html.parser
import re
import xml.etree.ElementTree as ElementTree
from typing import Dict, List, Optional, Set, Tuple

import defusedxml
from defusedxml import ElementTree as SafeElementTree

from bot.corpus.archives import common
from bot.tumblr import fields, html_subset, legacy, npf
from bot.tumblr.html_subset import Block
from bot.tumblr.thread import (ANONYMOUS, ASKED, COMMENTED, POSTED, RESPONDED,
                               Thread, Turn)
from gpt2.errors import UserError

KIND = "tumblr"
NAME = "a Tumblr blog export"
EXPECTED = ("posts/html/<id>.html, posts/posts.xml or "
            "conversations/<convo>.html")

EMPTY_REBLOG = "reblogs that add nothing"
LINK_ONLY = common.LINK_ONLY
MEDIA_ONLY = common.MEDIA_ONLY
UNREAD_MESSAGES = "messages not understood"
UNANSWERED = "asks not answered"
_POSTS_XML = "posts/posts.xml"
# Markers Tumblr writes into a post that are not its words.
_NOT_TEXT = ("[[more]]", "view on wordpress")
_WHEN = re.compile(r"([A-Za-z]+)\s+(\d{1,2})(?:st|nd|rd|th)?,?\s+(\d{4})"
                   r"(?:\s+(\d{1,2}):(\d{2})\s*([aApP][mM])?)?")
_MESSAGE_FILES = ("messages/*.json", "messages/*/*.json", "messages.json",
                  "conversations.json")


class _PostPage(html.parser.HTMLParser):
  """A post page: its HTML without the footer, and the footer's time and
  tags."""

  def __init__(self):
    super().__init__(convert_charrefs=True)
    self.markup: List[str] = []  # all of it, where there is no <body>
    self.body: Optional[List[str]] = None
    self.tags: List[str] = []
    self.when = ""
    self._footer = 0  # depth of <div>s inside the footer
    self._span: Optional[str] = None  # "timestamp", "tag" or None
    self._text: List[str] = []

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    if self._footer:
      if tag == "div":
        self._footer += 1
      elif tag == "span":
        classes = (attrs.get("class") or "").split()
        self._span = ("timestamp" if attrs.get("id") == "timestamp"
                      else "tag" if "tag" in classes else None)
        self._text = []
      return
    if tag == "div" and attrs.get("id") == "footer":
      self._footer = 1
      self.tags, self.when = [], ""  # the last footer is the post's
    elif tag == "body":
      self.body = []
    else:
      self._add(self.get_starttag_text() or "")

  def handle_startendtag(self, tag, attrs):
    if not self._footer:
      self._add(self.get_starttag_text() or "")

  def handle_endtag(self, tag):
    if self._footer:
      if tag == "span" and self._span:
        text = " ".join("".join(self._text).split())
        if self._span == "timestamp":
          self.when = text
        elif text.lstrip("#"):
          self.tags.append(text.lstrip("#").strip())
        self._span = None
      elif tag == "div":
        self._footer -= 1
      return
    if tag != "body":
      self._add(f"</{tag}>")

  def handle_data(self, data):
    if self._footer:
      if self._span:
        self._text.append(data)
      return
    self._add(html.escape(data, quote=False))

  def _add(self, markup: str):
    (self.body if self.body is not None else self.markup).append(markup)

  def content(self) -> str:
    """The post's HTML: the body's, else the whole page's."""
    return "".join(self.body if self.body is not None else self.markup)


def _footer_time(text: str) -> Optional[int]:
  match = _WHEN.search(text)
  if not match:
    return None
  month, day, year, hour, minute, noon = match.groups()
  try:
    moment = datetime.datetime.strptime(f"{month} {day} {year}", "%B %d %Y")
  except ValueError:
    return None
  if hour is not None:
    hours = int(hour)
    if noon:
      hours = hours % 12 + (12 if noon.lower() == "pm" else 0)
    moment = moment.replace(hour=hours, minute=int(minute))
  return common.timestamp_of(moment)


def _page(archive: common.Archive, name: str) -> _PostPage:
  page = _PostPage()
  page.feed(archive.read_text(name))
  page.close()
  return page


def _without(block: Block, token: str) -> Block:
  """`block` with each `token` (case aside) cut out of it, ranges kept."""
  while True:
    at = block.text.lower().find(token)
    if at < 0:
      return block
    cut = len(token)
    formats = tuple(
        html_subset.Format(f.start - cut * (f.start >= at + cut),
                           f.end - cut * (f.end >= at + cut), f.type, f.url)
        for f in block.formatting)
    block = Block(block.text[:at] + block.text[at + cut:], block.subtype,
                  block.indent_level, formats)


def _blocks(markup: str) -> List[Block]:
  """The blocks of a post's HTML, without the markers that are not text."""
  out = []
  for block in common.html_blocks(markup):
    if block.text.strip().lower() in _NOT_TEXT:
      continue
    block = html_subset.normalize(_without(block, "[[more]]"))
    if block is not None:
      out.append(block)
  return out


def _too_deep(archive: common.Archive, name: str) -> UserError:
  return UserError(f"{archive.where(name)} is HTML nested deeper than "
                          f"{legacy.MAX_DEPTH} elements: not a post page")


def _post(archive: common.Archive, name: str, options: common.Options,
          result: common.Result):
  page = _page(archive, name)
  post_id = name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
  _add_post(archive, name, page.content(), tuple(page.tags),
            _footer_time(page.when), post_id, options, result)


def _add_post(archive: common.Archive, name: str, markup: str,
              tags: Tuple[str, ...], when: Optional[int], post_id: str,
              options: common.Options, result: common.Result):
  """A post's HTML as turns: each quoted blog's, then the owner's."""
  try:
    pieces = legacy.split_reblog_html(markup, options.me)
  except legacy.TooDeep:
    raise _too_deep(archive, name) from None
  turns, own_blocks = [], []
  for i, (author, part) in enumerate(pieces):
    blocks = _blocks(part)
    text = common.text_of(blocks)
    last = i == len(pieces) - 1
    if not last and not common.has_text(text) and turns:
      continue  # a reblog in the chain that added nothing
    if not last:
      common.record_people(result, KIND, [(author.lower(), (author,))],
                           options)
    else:
      own_blocks = blocks
    turns.append(Turn(author, POSTED if not turns else COMMENTED, text,
                      tags if last else (), when if last else None))
  own = turns[-1]
  if not common.has_text(own.text) and not own.tags:
    result.skipped[EMPTY_REBLOG if len(turns) > 1 else common.NO_TEXT] += 1
    return
  nothing_of_its_own = common.only_links_or_media(own_blocks)
  if nothing_of_its_own:
    result.skipped[nothing_of_its_own] += 1
    return
  result.threads.append(common.Imported(
      Thread(tuple(turns), options.me, post_id)))


_ASKED = re.compile(r"([\w.-]+)\s+(?:asked|sent)\s*:?\s*$", re.IGNORECASE)
_STRONG = re.compile(r"<strong>(.*?)</strong>", re.DOTALL)
_MARKUP = re.compile(r"<[^>]*>")


def _submission(archive: common.Archive, name: str, options: common.Options,
                result: common.Result):
  """An answered ask: the question (escaped HTML in the first <strong>) by
  its asker, then the owner's answer."""
  page = _page(archive, name)
  content = page.content()
  match = _STRONG.search(content)
  if match is None:
    result.skipped[common.NO_TEXT] += 1
    return
  # The page escapes the question's own HTML once more.
  question = common.text_of(_blocks(html.unescape(
      _MARKUP.sub("", match.group(1)))))
  before = html.unescape(_MARKUP.sub(" ", content[:match.start()]))
  asked_by = _ASKED.search(before)
  asker = asked_by.group(1) if asked_by else ANONYMOUS
  answer_blocks = _blocks(content[match.end():])
  answer = common.text_of(answer_blocks)
  if not common.has_text(question) or not common.has_text(answer):
    result.skipped[common.NO_TEXT] += 1
    return
  if asker != ANONYMOUS:
    common.record_people(result, KIND, [(asker.lower(), (asker,))], options)
  when = _footer_time(page.when)
  post_id = name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
  result.threads.append(common.Imported(Thread((
      Turn(asker, ASKED, question, (), when),
      Turn(options.me, RESPONDED, answer, tuple(page.tags), when)),
      options.me, post_id)))


# ---- messages ---------------------------------------------------------------


def _name(value) -> str:
  if isinstance(value, dict):
    return (npf.blog_name(value) or fields.string(value.get("blog_name"))
            or fields.string(value.get("uuid")))
  return fields.string(value)


def _seconds(value) -> Optional[int]:
  number = fields.integer(value)
  if number is None:
    return common.iso_timestamp(value)
  return number // 1000 if number > 10**11 else number


def _conversations(data) -> List[dict]:
  if isinstance(data, dict) and isinstance(data.get("conversations"), list):
    return fields.dicts(data["conversations"])
  if isinstance(data, dict) and isinstance(data.get("messages"), list):
    return [data]
  return [c for c in fields.dicts(data) if isinstance(c.get("messages"),
                                                      list)]


def _message(item: dict, names: Dict[str, str]) -> Tuple[str, str,
                                                          Optional[int]]:
  sender = ""
  for key in ("participant", "sender", "blog_name", "from", "author"):
    sender = _name(item.get(key))
    if sender:
      break
  sender = names.get(sender, sender) or "unknown"
  text = ""
  for key in ("message", "content", "text", "body"):
    value = item.get(key)
    if isinstance(value, list):
      text = npf.content_to_text(value)
    elif isinstance(value, str):
      text = common.text_of(common.plain_blocks(value))
    if text:
      break
  when = next((_seconds(item.get(k)) for k in ("ts", "timestamp", "created",
                                               "date") if item.get(k)), None)
  return sender, text, when


def _messages(archive: common.Archive, options: common.Options,
              result: common.Result):
  files = sorted({n for p in _MESSAGE_FILES for n in archive.glob(p)})
  for name in files:
    for number, conversation in enumerate(_conversations(
        archive.read_json(name))):
      names: Dict[str, str] = {}
      participants = conversation.get("participants")
      for person in participants if isinstance(participants, list) else []:
        who = _name(person)
        if isinstance(person, dict) and fields.string(person.get("uuid")):
          names[person["uuid"]] = who
        if who and who != options.me:
          common.record_people(result, KIND, [(who.lower(), (who,))],
                               options)
      messages = []
      for item in fields.dicts(conversation.get("messages")):
        sender, text, when = _message(item, names)
        if sender != options.me:
          common.record_people(result, KIND, [(sender.lower(), (sender,))],
                               options)
        messages.append(common.Message(sender, text, when,
                                       options.is_me(sender)))
      # Hashed: an id may be made of the participants' names.
      conversation_id = hashlib.sha256(str(
          conversation.get("id") or conversation.get("conversation_id")
          or f"{name}/{number}").encode("utf-8")).hexdigest()[:12]
      common.conversation_threads(
          messages, options, f"{KIND}-messages-{conversation_id}",
          result, direct=True)


_MESSAGE_INFO = re.compile(
    r"(?P<name>\S+)\s+(?P<type>[A-Z][A-Z_]*)\s+@\s+(?P<date>[\d-]+ [\d:]+)"
    r"\s+GMT\s+\((?P<epoch>\d+)\)")
_PARTICIPANT = re.compile(r"Blog Name:\s*(\S+)")


class _ConversationPage(html.parser.HTMLParser):
  """A conversation page: the text above its first message (the
  participants), and each message's info line and markup."""

  def __init__(self):
    super().__init__(convert_charrefs=True)
    self.header: List[str] = []
    self.messages: List[Tuple[str, List[str]]] = []  # (info, markup)
    self._info: Optional[List[str]] = None  # inside a message-info span

  def handle_starttag(self, tag, attrs):
    classes = (dict(attrs).get("class") or "").split()
    if tag == "span" and "message-info" in classes:
      self._info = []
    elif self._info is None and self.messages:
      self.messages[-1][1].append(self.get_starttag_text() or "")
    elif tag in ("p", "br", "div", "li", "tr"):
      self.header.append("\n")

  def handle_startendtag(self, tag, attrs):
    if self._info is None and self.messages:
      self.messages[-1][1].append(self.get_starttag_text() or "")

  def handle_endtag(self, tag):
    if self._info is not None:
      if tag == "span":
        self.messages.append((" ".join("".join(self._info).split()), []))
        self._info = None
    elif self.messages:
      self.messages[-1][1].append(f"</{tag}>")

  def handle_data(self, data):
    if self._info is not None:
      self._info.append(data)
    elif self.messages:
      self.messages[-1][1].append(html.escape(data, quote=False))
    else:
      self.header.append(data)


def _conversation(archive: common.Archive, name: str,
                  options: common.Options, result: common.Result):
  page = _ConversationPage()
  page.feed(archive.read_text(name))
  page.close()
  for who in _PARTICIPANT.findall("".join(page.header)):
    if not options.is_me(who):
      common.record_people(result, KIND, [(who.lower(), (who,))], options)
  messages = []
  for number, (info, markup) in enumerate(page.messages):
    match = _MESSAGE_INFO.fullmatch(info)
    if match is None:
      result.skipped[UNREAD_MESSAGES] += 1
      continue
    sender = match.group("name")
    if not options.is_me(sender):
      common.record_people(result, KIND, [(sender.lower(), (sender,))],
                           options)
    messages.append(common.Message(
        sender, common.text_of(_blocks("".join(markup))),
        int(match.group("epoch")), options.is_me(sender), str(number)))
  # Hashed: the file is named after the participants.
  conversation_id = hashlib.sha256(
      name.rsplit("/", 1)[-1].encode("utf-8")).hexdigest()[:12]
  # The page is newest first; conversation_threads puts them in time order.
  common.conversation_threads(messages[::-1], options,
                              f"{KIND}-messages-{conversation_id}", result,
                              direct=True)


# ---- posts/posts.xml -------------------------------------------------------


def _xml_posts(archive: common.Archive, name: str):
  """The `<post>` elements of a posts.xml."""
  data = archive.read_bytes(name)
  try:
    # Tumblr writes no document type: one (and the entities it could
    # declare) is refused.
    root = SafeElementTree.fromstring(data, forbid_dtd=True)
  except defusedxml.DTDForbidden:
    raise common.malformed(archive, name, "Tumblr's posts XML (it declares "
                           "a document type, which Tumblr never writes)",
                           NAME, KIND) from None
  except (ElementTree.ParseError, defusedxml.DefusedXmlException) as e:
    raise common.malformed(archive, name, f"well-formed XML ({e})", NAME,
                           KIND) from None
  posts = root.find("posts") if root.tag == "tumblr" else None
  if posts is None:
    raise common.malformed(archive, name, "Tumblr's posts XML (<tumblr>"
                           "<posts><post>...)", NAME, KIND)
  return posts.findall("post")


def _element(post, tag: str) -> str:
  return post.findtext(tag) or ""


def _xml_markup(post) -> str:
  """A post's HTML as its page shows it (media before the caption)."""
  kind = post.get("type", "")
  if kind == "photo":
    url = _element(post, "photo-url")
    image = f'<p><img src="{html.escape(url)}"/></p>' if url else ""
    return image + _element(post, "photo-caption")
  if kind == "link":
    url, shown = _element(post, "link-url"), _element(post, "link-text")
    link = (f'<p><a href="{html.escape(url)}">'
            f"{html.escape(shown or url, quote=False)}</a></p>" if url
            else "")
    return link + _element(post, "link-description")
  if kind == "quote":
    source = _element(post, "quote-source")
    return (f"<blockquote>{_element(post, 'quote-text')}</blockquote>"
            + (f"<p>{source}</p>" if source else ""))
  if kind == "conversation":
    return "".join(f"<p>{html.escape(line, quote=False)}</p>" for line in
                   _element(post, "conversation-text").splitlines()
                   if line.strip())
  if kind in ("video", "audio"):
    return f"<p><{kind}></{kind}></p>" + _element(post, f"{kind}-caption")
  title = _element(post, "regular-title")
  return ((f"<h1>{html.escape(title, quote=False)}</h1>" if title else "")
          + _element(post, "regular-body"))


def _xml(archive: common.Archive, name: str, paged: Set[str],
         options: common.Options, result: common.Result):
  for post in _xml_posts(archive, name):
    post_id = post.get("id", "")
    if post_id in paged:
      continue  # read from its page
    tags = tuple(t.text.strip().lstrip("#") for t in post.findall("tag")
                 if t.text and t.text.strip().lstrip("#"))
    when = fields.integer(post.get("unix-timestamp"))
    if post.get("type") == "answer":
      question = common.text_of(_blocks(_element(post, "question")))
      answer = common.text_of(_blocks(_element(post, "answer")))
      if not common.has_text(answer):
        result.skipped[UNANSWERED] += 1
      elif common.has_text(question):
        result.threads.append(common.Imported(Thread((
            Turn(ANONYMOUS, ASKED, question, (), when),
            Turn(options.me, RESPONDED, answer, tags, when)), options.me,
            post_id)))
      else:
        result.skipped[common.NO_TEXT] += 1
      continue
    _add_post(archive, name, _xml_markup(post), tags, when, post_id, options,
              result)


def read(archive: common.Archive, options: common.Options) -> common.Result:
  result = common.Result()
  posts = archive.glob("posts/html/*.html")
  asks = archive.glob("posts/html/submissions/*.html")
  conversations = archive.glob("conversations/*.html")
  has_messages = any(archive.glob(p) for p in _MESSAGE_FILES)
  in_xml = archive.glob(_POSTS_XML)
  if not (posts or asks or conversations or has_messages or in_xml):
    raise common.missing(archive, EXPECTED, NAME, KIND)
  for name in posts:
    _post(archive, name, options, result)
  for name in asks:
    _submission(archive, name, options, result)
  paged = {n.rsplit("/", 1)[-1].rsplit(".", 1)[0] for n in posts + asks}
  for name in in_xml:
    _xml(archive, name, paged, options, result)
  for name in conversations:
    _conversation(archive, name, options, result)
  _messages(archive, options, result)
  return result
