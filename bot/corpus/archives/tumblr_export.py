"""Tumblr's own blog export (Settings, the blog, Export).

The zip Tumblr mails (`<blog>.zip`, or `<id>.zip` holding it) unpacks to
`posts/posts_index.html`, one HTML page a post in `posts/html/<id>.html`,
`media/` and the blog's messages (`messages/*.json`, or
`conversations.json`). A post page is the post's legacy HTML, reblogs in
Tumblr's nested-quote convention, then a footer:

    <body><p><a class="tumblr_blog" href="https://bob.tumblr.com/post/1">
    bob</a>:</p><blockquote><p>bob's post</p></blockquote><p>my comment</p>
    <div id="footer"><span id="timestamp"> December 1st, 2016 11:03pm </span>
    <span class="tag">a tag</span></div></body>

Read: each post's trail (who wrote which part, `bot.tumblr.legacy`), its
tags and time (written without a zone: taken as UTC); a reblog that adds
neither a comment nor a tag is skipped and counted. Messages are read
forgivingly (Tumblr has changed their layout): a conversation is an object
with `participants` and `messages`, each message naming its sender
(`participant`, `sender`, `blog_name` or `from`), its text (`message`,
`content`, `text` or NPF blocks) and time (`ts` or `timestamp`); each
conversation becomes threads (`common.conversation_threads`) and is
pseudonymized by default.
"""

import datetime
import hashlib
import html
import html.parser
import re
from typing import Dict, List, Optional, Tuple

from bot.corpus.archives import common
from bot.tumblr import fields, legacy, npf
from bot.tumblr.thread import COMMENTED, POSTED, Thread, Turn

KIND = "tumblr"
NAME = "a Tumblr blog export"
EXPECTED = "posts/html/<id>.html"

EMPTY_REBLOG = "reblogs that add nothing"
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


def _post(archive: common.Archive, name: str, options: common.Options,
          result: common.Result):
  page = _PostPage()
  page.feed(archive.read_text(name))
  page.close()
  pieces = legacy.split_reblog_html(page.content(), options.me)
  when = _footer_time(page.when)
  turns = []
  for i, (author, markup) in enumerate(pieces):
    text = common.text_of(common.html_blocks(markup))
    last = i == len(pieces) - 1
    if not last and not common.has_text(text) and turns:
      continue  # a reblog in the chain that added nothing
    if not last:
      common.record_people(result, KIND, [(author.lower(), (author,))],
                           options)
    turns.append(Turn(author, POSTED if not turns else COMMENTED, text,
                      tuple(page.tags) if last else (), when if last else None))
  own = turns[-1]
  if not common.has_text(own.text) and not own.tags:
    result.skipped[EMPTY_REBLOG if len(turns) > 1 else common.NO_TEXT] += 1
    return
  post_id = name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
  result.threads.append(common.Imported(
      Thread(tuple(turns), options.me, post_id)))


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


def read(archive: common.Archive, options: common.Options) -> common.Result:
  result = common.Result()
  posts = archive.glob("posts/html/*.html")
  has_messages = any(archive.glob(p) for p in _MESSAGE_FILES)
  if not posts and not has_messages:
    raise common.missing(archive, EXPECTED, NAME, KIND)
  for name in posts:
    _post(archive, name, options, result)
  _messages(archive, options, result)
  return result
