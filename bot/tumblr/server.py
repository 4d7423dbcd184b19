"""A local Tumblr API v2 server: real HTTP, real envelopes, an in-memory blog.

The tests, the demo (`launch.demo`) and anyone trying a dry run without a
Tumblr account point pytumblr or pytumblr2 (or `launch.run_bot
--config.tumblr_host=...`, `launch.scrape --api_host=...`) at it through the
clients' `host` argument; nothing is mocked and nothing leaves 127.0.0.1:

    server = TumblrServer(credentials)
    server.add_blog("frank", owned=True)
    server.add_post("frank", text="hello", tags=["greetings"])
    with server:
      client = pytumblr2.TumblrRestClient(*credentials.client_args(),
                                          host=server.url)
      client.posts("frank")

What it does like the real API:
- every response is `{"meta": {"status", "msg"}, "response": ...}`, errors
  add `"errors": [{"title", "code", "detail"}]`;
- requests are OAuth1 (HMAC-SHA1) signed and verified against the known
  consumer and token secrets (API-key routes also take `api_key=` alone);
  a bad signature, an unknown key or a replayed nonce is a 401;
- every response carries `X-Ratelimit-<Window>-{Limit,Remaining,Reset}`
  headers (Reset in seconds, as pytumblr2's `get_ratelimit_data` reads them);
  past a window's limit the answer is 429 with those headers and
  `Retry-After`. Windows are configurable (`RateLimit`), so tests can use
  one-second windows;
- published posts (new posts, reblogs, answers) are capped per calendar
  day in US Eastern time (250 by default): past it, 429 "Limit Exceeded"
  (or 403 with subcode 8023, `post_cap_status`); a queue holds 1000 posts
  (8022);
- NPF and legacy reading (`npf=true` or not) and writing (`/posts` and
  `/post`, `/post/edit`, `/post/reblog`, `/post/delete`); a new post keeps
  the `slug` it was given, or gets one from its first words;
- listings page as the API's do: `offset` (posts, queue, submissions),
  `before_id` (drafts), `before` with a `_links.next` (notifications).

Routes: blog info, posts (by id, type, tag, before/after, offset, sort),
single post fetch, queue, drafts, submissions (asks), notifications, notes
(`followed` says whether the user follows the noter), NPF create/reblog/edit
(with media uploads: a multipart request whose `json` part names uploaded
files by `identifier`; the files are then served at /media/NAME), legacy
create/edit/reblog/delete, user info, limits, following, follow, unfollow,
and dashboard. A blog that blocked the user (`block_user`) answers 403 with
"You do not have permission to view this blog" as the `response` string
(following it: 200, `followed` false).

Where real Tumblr does what its docs do not say, so does this server
(issue 40): notification items are typed `user_mention` (the mentioning
post in `target_post_id`, see `mention`) and `reblog`, whatever the `types`
filter names; notifications of one type on one post are rolled up unless
`rollups=false`, and full pages come without `_links` when
`notification_links` is False; 300 calls a minute per IP (`ip_limits`) and
`surprise_429s` answer 429 with calls left and no Retry-After; asks from a
sender flagged as spam (`flag_spam`) are left out of the submissions but
still notified; a deleted post (`remove_post`) answers 404; a draft, queued
post or ask gets a new id when it is published (`genesis_post_id` names the
old one, which answers 404); a post not created
in NPF (`legacy=True`) refuses NPF edits unless it is a legacy text post;
the daily post cap follows the calendar day in US Eastern time and answers
429 past it; content past the NPF spec's limits is refused with 400 and
empty text blocks at its ends are trimmed (`bot.tumblr.npf_limits`); an
edit refuses `state: "queued"`; a post fetched by id (`/posts/{id}`) names
its blog by `tumblelog_uuid` and has no `blog` or `state`; following a blog
that blocked the user answers 200 with `followed: false`; the notes'
`_links.next` carries only its cursor; the queue takes `limit` 1 to 20 only.
Responses carry
a `Date` header
from the server's clock, which its daily limits follow. Posts are stored in NPF; legacy responses are
converted from it (text and answer posts; media as placeholders).

For tests: `write_requests` counts the authenticated POST/PUT/DELETE
requests, `posts_served` counts how often each post id was returned,
`request_log` records (method, path, status), and `before_request`, if set,
is called in the handler thread before a request is handled (a test can
block there to simulate a slow or stuck API).
"""

import collections
import dataclasses
import datetime
import email.parser
import email.policy
import email.utils
import hashlib
import hmac
import http
import http.server
import json
import math
import re
import sys
import threading
import time
import urllib.parse
from typing import (Any, Callable, Dict, Iterable, List, Optional, Sequence,
                    Tuple)

from oauthlib.oauth1.rfc5849 import signature as oauth_signature
from oauthlib.oauth1.rfc5849 import utils as oauth_utils

from bot.tumblr import fields, html_subset, npf, npf_limits, post_day
from bot.tumblr.credentials import Credentials
from bot.tumblr.thread import ANONYMOUS

# Authentication levels of routes.
API_KEY = "api_key"  # OAuth1 or an api_key parameter
OAUTH = "oauth"  # OAuth1 with the user's token

PAGE_LIMIT = 20  # the most posts a page may hold
NOTES_PAGE = 50
QUEUE_LIMIT = 1000
_TIMESTAMP_SLACK_S = 300  # how far an OAuth timestamp may be from our clock
_FIRST_POST_ID = 700_000_000_000_000


@dataclasses.dataclass(frozen=True)
class RateLimit:
  """At most `limit` requests in each fixed window of `period_s` seconds.

  `name` is the window's header name: "Perhour" gives
  X-Ratelimit-Perhour-Limit, -Remaining and -Reset.
  """
  name: str
  limit: int
  period_s: float


# The real API's limits per consumer key.
DEFAULT_RATE_LIMITS = (RateLimit("Perhour", 1000, 3600.0),
                       RateLimit("Perday", 5000, 86400.0))
# Limits per IP address that send no headers: "300 API calls per minute, per
# IP address" (the API docs' rate limits section). Past one, Tumblr answers
# 429 "Limit Exceeded" while the per-key headers still show calls left, and
# without `Retry-After` (tumblr/docs issue #139).
DEFAULT_IP_LIMITS = (RateLimit("Perminute", 300, 60.0),)
# Notification types as the `types` filter names them, and the type real
# Tumblr gives the items it returns for them: asked for `mention_in_post`,
# the original bot received `user_mention` items (reading the mentioning
# post from `target_post_id`), and from 2022 reblogs of its posts as
# `reblog` (nostalgebraist-autoresponder, its notification handling).
ITEM_TYPES = {"mention_in_post": "user_mention",
              "reblog_with_content": "reblog", "reblog_naked": "reblog"}


class _Window:
  """A fixed window counter: starts at the first event, resets after it."""

  def __init__(self, limit: int, period_s: float):
    self.limit, self.period_s = limit, period_s
    self.start, self.count = None, 0

  def _roll(self, now: float):
    if self.start is None or now >= self.start + self.period_s:
      self.start, self.count = now, 0

  def remaining(self, now: float) -> int:
    self._roll(now)
    return max(0, self.limit - self.count)

  def reset_in(self, now: float) -> int:
    self._roll(now)
    return max(1, math.ceil(self.start + self.period_s - now))

  def reset_at(self, now: float) -> int:
    return int(now) + self.reset_in(now)

  def take(self, now: float) -> bool:
    """Counts one event if the window has room; False if it is full."""
    if self.remaining(now) <= 0:
      return False
    self.count += 1
    return True


class _PostDay:
  """The daily post cap: at most `limit` in a calendar day in US Eastern
  time (bot.tumblr.post_day), the interface of `_Window`."""

  def __init__(self, limit: int):
    self.limit = limit
    self.day, self.count = None, 0

  def _roll(self, now: float):
    day = post_day.day_bounds(now)
    if day != self.day:
      self.day, self.count = day, 0

  def remaining(self, now: float) -> int:
    self._roll(now)
    return max(0, self.limit - self.count)

  def reset_at(self, now: float) -> int:
    self._roll(now)
    return int(self.day[1])

  def reset_in(self, now: float) -> int:
    return max(1, math.ceil(self.reset_at(now) - now))

  def take(self, now: float) -> bool:
    if self.remaining(now) <= 0:
      return False
    self.count += 1
    return True


class ApiError(Exception):
  """An error response: an HTTP status and, optionally, a Tumblr subcode.

  `as_response` sends the detail as the envelope's `response` string, with
  no `errors` list: how real Tumblr answers some refusals (a blog that
  blocked the user), which a client reading only `errors` misses.
  """

  def __init__(self, status: int, detail: str, code: int = 0,
               as_response: bool = False, titled: bool = False):
    super().__init__(detail)
    self.status, self.detail, self.code = status, detail, code
    self.as_response = as_response
    # The NPF create route's example error: the message is the `title`,
    # with the subcode and no `detail` (the API docs' errors and subcodes).
    self.titled = titled


# Real Tumblr's answer about a blog that blocked the user: the message is
# the value of `response` (the original bot, nostalgebraist-autoresponder,
# matched this string in `response`).
BLOCKED = "You do not have permission to view this blog"


def _blocked() -> ApiError:
  return ApiError(403, BLOCKED, 0, as_response=True)


def _bool(value: Any) -> bool:
  return str(value).lower() in ("true", "1", "yes", "on")


def _blog_uuid(name: str) -> str:
  return "t:" + hashlib.sha1(name.encode()).hexdigest()[:22]


def _gmt(timestamp: int) -> str:
  moment = datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc)
  return moment.strftime("%Y-%m-%d %H:%M:%S GMT")


def _parse_date(value: Any) -> Optional[int]:
  """An ISO 8601 or 'YYYY-MM-DD HH:MM:SS GMT' date as a timestamp."""
  text = fields.string(value).strip().replace(" GMT", "+00:00")
  if not text:
    return None
  try:
    moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
  except ValueError:
    raise ApiError(400, f"cannot read the date {value!r}", 8001) from None
  if moment.tzinfo is None:
    moment = moment.replace(tzinfo=datetime.timezone.utc)
  return int(moment.timestamp())


def _tags_param(value: Any) -> List[str]:
  """Tags as a comma-separated string (what clients send) or a list."""
  if isinstance(value, str):
    value = value.split(",")
  return list(fields.tags(value if isinstance(value, list) else []))


@dataclasses.dataclass
class _Blog:
  name: str
  title: str
  description: str
  owned: bool
  uuid: str = ""
  followers: int = 0
  notifications: List[dict] = dataclasses.field(default_factory=list)

  def short_info(self) -> dict:
    return {"name": self.name, "title": self.title,
            "url": f"https://{self.name}.tumblr.com/", "uuid": self.uuid,
            "description": self.description}


@dataclasses.dataclass
class _Post:
  """A post as stored: NPF content, layout and trail plus its metadata."""
  id: int
  blog: str
  state: str
  timestamp: int
  content: List[dict]
  layout: List[dict]
  trail: List[dict]
  tags: List[str]
  reblog_key: str
  parent: Optional[Tuple[str, int]] = None  # (blog, id) reblogged from
  notes: List[dict] = dataclasses.field(default_factory=list)
  slug: str = ""
  extra_note_count: int = 0
  genesis: Optional[int] = None  # its first id, once publishing changed it
  npf: bool = True  # created in NPF (else legacy: NPF edits refused)

  @property
  def is_ask(self) -> bool:
    return any(l.get("type") == "ask" for l in fields.dicts(self.layout))

  @property
  def note_count(self) -> int:
    return len(self.notes) + self.extra_note_count


def _slug(text: Any) -> str:
  """A permalink slug as Tumblr writes one: lowercase words joined by '-'."""
  words = re.findall(r"[a-z0-9]+", fields.string(text).lower())
  return "-".join(words)[:200].strip("-")


def _legacy_type(post: _Post) -> str:
  """The legacy type NPF's waterfall gives a post (see the NPF spec)."""
  root = post.trail[0] if post.trail else {"content": post.content,
                                           "layout": post.layout}
  if any(l.get("type") == "ask" for l in fields.dicts(root.get("layout"))):
    return "answer"
  kinds = [b.get("type") for b in fields.dicts(root.get("content"))]
  subtypes = [b.get("subtype") for b in fields.dicts(root.get("content"))]
  for block_type, legacy in (("video", "video"), ("image", "photo"),
                             ("audio", "audio")):
    if block_type in kinds:
      return legacy
  if "quote" in subtypes:
    return "quote"
  if subtypes.count("chat") > 1:
    return "chat"
  return "link" if "link" in kinds else "text"


def _quote_html(name: str, quoted: str) -> str:
  """`name`'s post quoted the legacy way, as a reblog's HTML shows it."""
  return (f'<p><a class="tumblr_blog" href="https://{name}.tumblr.com/">'
          f"{name}</a>:</p><blockquote>{quoted}</blockquote>")


def _content_html(content: Any, layout: Any = None) -> str:
  """NPF content (ask blocks left out) as legacy HTML."""
  _, body = npf.split_ask(content, layout)
  return html_subset.blocks_to_html(body)


class TumblrServer:
  """The server and its in-memory state; see the module docstring."""

  def __init__(self, credentials: Credentials, *,
               user_name: str = "operator",
               rate_limits: Sequence[RateLimit] = DEFAULT_RATE_LIMITS,
               ip_limits: Sequence[RateLimit] = DEFAULT_IP_LIMITS,
               posts_per_day: int = 250,
               post_limit_period_s: Optional[float] = None,
               clock: Callable[[], float] = time.time):
    self.credentials = credentials
    self.user_name = user_name
    self.clock = clock
    self.rate_limits = tuple(rate_limits)
    self._windows = [_Window(r.limit, r.period_s) for r in self.rate_limits]
    self._ip_windows = [_Window(r.limit, r.period_s) for r in ip_limits]
    # Modes where the fake behaves as real Tumblr does beyond its docs:
    # the next `surprise_429s` requests answer 429 with calls left and no
    # Retry-After (tumblr/docs issue #139); with `notification_links` False,
    # full notification pages come without `_links` (tumblr/docs issue #43).
    self.surprise_429s = 0
    self.notification_links = True
    self._spam_senders: set = set()  # askers whose asks the inbox hides
    # The post cap's day is the calendar day in US Eastern time; with
    # `post_limit_period_s`, a window of that many seconds from the first
    # post instead (this fake before issue 40; tests of a short day). Past
    # it, 429 "Limit Exceeded" as the API docs' rate limits section says of
    # per-day limits (and the original bot saw: "HTTP 429 on any limit");
    # `post_cap_status` 403 answers 403 with subcode 8023 as the docs' NPF
    # section says instead.
    self._post_window = (_PostDay(posts_per_day)
                         if post_limit_period_s is None
                         else _Window(posts_per_day, post_limit_period_s))
    self.post_cap_status = 429
    self._lock = threading.RLock()
    self._blogs: Dict[str, _Blog] = {}
    self._posts: Dict[int, _Post] = {}
    self._following: List[str] = []
    self._blocked_by: set = set()  # blogs that blocked the user
    self.media: Dict[str, Tuple[str, bytes]] = {}  # name: (type, bytes)
    self._next_id = _FIRST_POST_ID
    self._nonces: Dict[Tuple[str, str], float] = {}
    self.write_requests = 0
    self.posts_served = collections.Counter()
    self.request_log: List[Tuple[str, str, int]] = []
    self.before_request: Optional[Callable[[str, str], None]] = None
    self._httpd: Optional[http.server.ThreadingHTTPServer] = None
    self._thread: Optional[threading.Thread] = None

  # ---- lifecycle ------------------------------------------------------------

  def start(self) -> "TumblrServer":
    handler = type("Handler", (_Handler,), {"app": self})
    self._httpd = _HTTPServer(("127.0.0.1", 0), handler)
    self._thread = threading.Thread(target=self._httpd.serve_forever,
                                    kwargs={"poll_interval": 0.05},
                                    name="tumblr-server", daemon=True)
    self._thread.start()
    return self

  def close(self):
    if self._httpd is not None:
      self._httpd.shutdown()
      self._httpd.server_close()
      self._thread.join()
      self._httpd = None

  def __enter__(self) -> "TumblrServer":
    return self if self._httpd is not None else self.start()

  def __exit__(self, *exc):
    self.close()

  @property
  def url(self) -> str:
    """The `host` to give the clients, e.g. http://127.0.0.1:40123."""
    if self._httpd is None:
      raise RuntimeError("the server is not started")
    host, port = self._httpd.server_address[:2]
    return f"http://{host}:{port}"

  # ---- seeding and inspecting (used by tests) -------------------------------

  def add_blog(self, name: str, *, title: str = "", description: str = "",
               owned: bool = False, followers: int = 0) -> dict:
    """A blog; `owned` blogs belong to the authenticated user."""
    with self._lock:
      blog = _Blog(name, title or name, description, owned, _blog_uuid(name),
                   followers)
      self._blogs[name] = blog
      return blog.short_info()

  def follow(self, name: str):
    """The user follows `name`: its posts appear on the dashboard."""
    with self._lock:
      self._blog(name)
      if name not in self._following:
        self._following.append(name)

  def following(self) -> List[str]:
    with self._lock:
      return list(self._following)

  def block_user(self, blog: str):
    """`blog` blocks the user: reading it answers 403, as Tumblr does."""
    with self._lock:
      self._blog(blog)
      self._blocked_by.add(blog)

  def flag_spam(self, sender: str):
    """Tumblr flags `sender` as a spammer: their asks are left out of
    `/posts/submission` but still arrive as `ask` notifications."""
    with self._lock:
      self._spam_senders.add(sender)

  def remove_post(self, post_id: int):
    """The post is deleted by its author (fetching it then answers 404);
    notifications about it stay, as Tumblr's do."""
    with self._lock:
      del self._posts[self._post(post_id).id]

  def mention(self, blog: str, from_blog: str, text: str) -> int:
    """`from_blog` posts `text` mentioning `blog`, and `blog` gets the
    `user_mention` item real Tumblr sends, the post in `target_post_id`."""
    post_id = self.add_post(from_blog, text=text)
    self.add_notification(blog, "user_mention", from_blog=from_blog,
                          target_post_id=post_id,
                          target_tumblelog_name=from_blog)
    return post_id

  def add_post(self, blog: str, content: Optional[List[dict]] = None, *,
               text: Optional[str] = None, layout: Sequence[dict] = (),
               trail: Sequence[dict] = (), tags: Iterable[str] = (),
               timestamp: Optional[int] = None, state: str = "published",
               note_count: int = 0, legacy: bool = False) -> int:
    """Stores a post; `text` (canonical text) is a shortcut for `content`.
    A `legacy` post was not created in NPF."""
    if text is not None:
      content = npf.text_to_content(text)
    with self._lock:
      post = self._new_post(blog, list(content or []), list(layout),
                            list(trail), list(tags), state,
                            timestamp if timestamp is not None
                            else int(self.clock()))
      post.extra_note_count = note_count
      post.npf = not legacy
      return post.id

  def add_ask(self, blog: str, question: str, asker: Optional[str] = None,
              timestamp: Optional[int] = None, legacy: bool = False) -> int:
    """An ask (plain text) waiting in `blog`'s submissions; None is anon.
    A `legacy` ask is stored in the legacy format (an older ask, or one
    from a theme's ask page): it can be answered only by `/post/edit`."""
    content = npf.blocks_to_content(html_subset.plain_to_blocks(question))
    post_id = self.add_post(blog, content,
                            layout=npf.ask_layout(len(content), asker),
                            state="submission", timestamp=timestamp,
                            legacy=legacy)
    self.add_notification(blog, "ask", from_blog=asker or ANONYMOUS,
                          target_post_id=post_id)
    return post_id

  def reblog(self, blog: str, parent_id: int, text: str = "",
             tags: Iterable[str] = (), timestamp: Optional[int] = None) -> int:
    """A published reblog of `parent_id` by `blog` adding `text`."""
    with self._lock:
      parent = self._post(parent_id)
      post = self._new_post(blog, npf.text_to_content(text), [],
                            self._trail_after(parent), list(tags),
                            "published",
                            timestamp if timestamp is not None
                            else int(self.clock()))
      post.parent = (parent.blog, parent.id)
      self._note(parent, "reblog", blog, added_text=text, post_id=post.id,
                 tags=list(tags))
      return post.id

  def add_note(self, post_id: int, note_type: str, from_blog: str,
               text: str = "") -> dict:
    """A like, reply or reblog note on a post (and its notification)."""
    with self._lock:
      post = self._post(post_id)
      extra = {"reply_text": text} if note_type == "reply" else {}
      return self._note(post, note_type, from_blog, **extra)

  def add_notification(self, blog: str, notification_type: str, *,
                       from_blog: str = "",
                       target_post_id: Optional[int] = None, **extra) -> dict:
    with self._lock:
      item = {"id": f"n{len(self._blogs[blog].notifications) + 1}",
              "type": notification_type, "timestamp": int(self.clock()),
              "unread": True, "target_tumblelog_name": blog,
              "from_tumblelog_name": from_blog}
      if target_post_id is not None:
        item["target_post_id"] = str(target_post_id)
      item.update(extra)
      self._blog(blog).notifications.append(item)
      return dict(item)

  def posts(self, blog: str, state: str = "published",
            npf_format: bool = True) -> List[dict]:
    """A blog's posts in `state` as the API shows them, newest first."""
    with self._lock:
      return [self._render(p, npf_format) for p in self._select(blog, state)]

  def post(self, post_id: int, npf_format: bool = True) -> dict:
    """The post by its current id, or by its genesis id (a test's handle on
    an ask or draft it seeded, whatever publishing made of it)."""
    with self._lock:
      return self._render(self._post(self.current_id(post_id)), npf_format)

  def current_id(self, post_id: int) -> int:
    """The current id of the post whose id (or genesis id) is `post_id`."""
    with self._lock:
      post_id = fields.integer(post_id)
      for post in self._posts.values():
        if post_id in (post.id, post.genesis):
          return post.id
      raise ApiError(404, f"post {post_id} not found", 0)

  # ---- state helpers (callers hold the lock) --------------------------------

  def _blog(self, identifier: str) -> _Blog:
    name = identifier
    if name.endswith(".tumblr.com"):
      name = name[:-len(".tumblr.com")]
    if name in self._blogs:
      return self._blogs[name]
    for blog in self._blogs.values():
      if blog.uuid == identifier:
        return blog
    raise ApiError(404, f"blog {identifier} not found", 0)

  def _post(self, post_id: Any, blog: Optional[_Blog] = None) -> _Post:
    post = self._posts.get(fields.integer(post_id))
    if post is None or (blog is not None and post.blog != blog.name):
      raise ApiError(404, f"post {post_id} not found", 0)
    return post

  def _own_blog(self, identifier: str) -> _Blog:
    blog = self._blog(identifier)
    if not blog.owned:
      raise ApiError(403, f"you cannot post to {blog.name}", 0)
    return blog

  def _new_post(self, blog: str, content, layout, trail, tags, state,
                timestamp) -> _Post:
    self._blog(blog)
    self._next_id += 1
    post = _Post(self._next_id, blog, state, timestamp, content, layout,
                 trail, tags,
                 hashlib.sha1(str(self._next_id).encode()).hexdigest()[:8])
    self._posts[post.id] = post
    return post

  def _new_id(self, post: _Post) -> None:
    """A published draft, queued post or ask gets a new id; the old one
    answers 404 from then on, and the post shows it as `genesis_post_id`
    to its owner (the API docs' posts fields: the genesis id "is different
    than its current ID if that post had been drafted, queued, or
    scheduled, and is now published... You cannot use this ID to look up
    the post after it has been published"; the original bot,
    nostalgebraist-autoresponder, kept a genesis-to-current id map)."""
    del self._posts[post.id]
    post.genesis = post.genesis or post.id
    self._next_id += 1
    post.id = self._next_id
    self._posts[post.id] = post

  def _select(self, blog: str, *states: str) -> List[_Post]:
    name = self._blog(blog).name
    posts = [p for p in self._posts.values()
             if p.blog == name and p.state in states]
    return sorted(posts, key=lambda p: (p.timestamp, p.id), reverse=True)

  def _trail_after(self, parent: _Post) -> List[dict]:
    """The trail a reblog of `parent` carries: parent's trail plus parent."""
    item = {"post": {"id": str(parent.id), "timestamp": parent.timestamp},
            "blog": self._blogs[parent.blog].short_info(),
            "content": parent.content, "layout": parent.layout}
    return list(parent.trail) + ([item] if parent.content else [])

  def _note(self, post: _Post, note_type: str, from_blog: str,
            **extra) -> dict:
    note = {"type": note_type, "timestamp": int(self.clock()),
            "blog_name": from_blog, "blog_uuid": _blog_uuid(from_blog),
            "blog_url": f"https://{from_blog}.tumblr.com/", "followed": False}
    note.update({k: v for k, v in extra.items() if v not in ("", None)})
    post.notes.append(note)
    if post.blog in self._blogs and self._blogs[post.blog].owned:
      kind, details = note_type, {}
      if note_type == "reply":
        details = {"reply_text": extra.get("reply_text", "")}
      elif note_type == "reblog":
        # Real Tumblr types every reblog item `reblog`, comment or not (see
        # ITEM_TYPES); `added_text` is empty for a reblog without one.
        kind = "reblog"
        details = {"added_text": extra.get("added_text", ""),
                   "post_id": str(extra.get("post_id", "")),
                   "post_tags": extra.get("tags", [])}
      self.add_notification(post.blog, kind, from_blog=from_blog,
                            target_post_id=post.id, **details)
    return dict(note)

  # ---- rendering posts ------------------------------------------------------

  def _render(self, post: _Post, npf_format: bool) -> dict:
    blog = self._blogs[post.blog]
    out = {
        "object_type": "post", "blog_name": blog.name,
        "blog": blog.short_info(), "id": post.id, "id_string": str(post.id),
        "post_url": f"https://{blog.name}.tumblr.com/post/{post.id}",
        "slug": post.slug, "date": _gmt(post.timestamp),
        "timestamp": post.timestamp,
        "state": {"queue": "queued"}.get(post.state, post.state),
        "format": "html", "reblog_key": post.reblog_key,
        "tags": list(post.tags), "note_count": post.note_count,
        "original_type": "note" if _legacy_type(post) == "answer"
                         else "regular",
    }
    if post.genesis is not None and blog.owned:  # shown to the owner only
      out["genesis_post_id"] = str(post.genesis)
    if post.parent is not None:
      parent_blog, parent_id = post.parent
      out.update({
          "parent_post_url":
              f"https://{parent_blog}.tumblr.com/post/{parent_id}",
          "reblogged_from_id": str(parent_id),
          "reblogged_from_name": parent_blog,
          "parent_post_id": str(parent_id),
          "parent_tumblelog_uuid": _blog_uuid(parent_blog),
      })
    if npf_format:
      out.update({"type": "blocks", "is_blocks_post_format": post.npf,
                  "content": post.content, "layout": post.layout,
                  "trail": post.trail})
    else:
      out.update(self._legacy_fields(post))
    return json.loads(json.dumps(out))  # a copy the caller may change

  def _legacy_fields(self, post: _Post) -> dict:
    """The legacy type-specific fields (text or answer; media as text)."""
    entries = []  # (blog name, post id, html, is this post's own content)
    for item in post.trail:
      name = (npf.blog_name(item.get("blog"))
              or fields.string(item.get("broken_blog_name")))
      item_post = item.get("post") if isinstance(item.get("post"), dict) else {}
      entries.append((name, item_post.get("id"),
                      _content_html(item.get("content"), item.get("layout")),
                      False))
    own_html = _content_html(post.content, post.layout)
    if post.content or not entries:
      entries.append((post.blog, post.id, own_html, True))
    trail = [{"blog": {"name": name, "active": True},
              "post": {"id": str(item_id)}, "content_raw": markup,
              "content": markup, "is_root_item": i == 0,
              "is_current_item": own}
             for i, (name, item_id, markup, own) in enumerate(entries)]
    # Older legacy posts nest the trail in their HTML; write it that way too.
    body, quoted = "", None
    for name, _, markup, own in entries:
      if own:
        continue
      if quoted is not None:
        body = _quote_html(quoted, body)
      body, quoted = body + markup, name
    body = (_quote_html(quoted, body) if quoted is not None else "") + (
        own_html if entries[-1][3] else "")
    out = {"type": _legacy_type(post), "trail": trail,
           "reblog": {"comment": own_html, "tree_html": ""}}
    if out["type"] == "answer":
      root = post.trail[0] if post.trail else {"content": post.content,
                                               "layout": post.layout}
      ask, _ = npf.split_ask(root.get("content"), root.get("layout"))
      asker = ask[0] if ask else ANONYMOUS
      out.update({
          "asking_name": asker,
          "asking_url": (None if asker == ANONYMOUS
                         else f"https://{asker}.tumblr.com/"),
          "question": html_subset.blocks_to_html(ask[1] if ask else []),
          "answer": body})
    else:
      out.update({"title": None, "body": body})
    return out

  # ---- request handling -----------------------------------------------------

  def handle(self, method: str, path: str, query: str, headers, body: bytes
            ) -> Tuple[int, dict, Dict[str, str]]:
    """One request: (status, JSON body, extra headers)."""
    if self.before_request is not None:
      self.before_request(method, path)
    extra_headers: Dict[str, str] = {}
    try:
      with self._lock:
        route, groups = self._route(method, path)
        params, files = self._params(query, headers, body)
        self._authenticate(method, path, query, headers, body, route.auth,
                           params)
        now = self.clock()
        ip_full = [w for w in self._ip_windows if not w.take(now)]
        if ip_full or self.surprise_429s > 0:
          # Calls left in the headers and no Retry-After: the limit hit is
          # one the headers do not show (tumblr/docs issue #139).
          self.surprise_429s = max(0, self.surprise_429s - 1)
          extra_headers = self._rate_limit_headers(now)
          raise ApiError(429, "Limit Exceeded", 0)
        full = [w for w in self._windows if w.remaining(now) <= 0]
        if full:
          extra_headers = self._rate_limit_headers(now)
          extra_headers["Retry-After"] = str(max(w.reset_in(now) for w in full))
          raise ApiError(429, "Limit Exceeded: too many API calls", 0)
        for window in self._windows:
          window.take(now)
        extra_headers = self._rate_limit_headers(now)
        if method != "GET":
          self.write_requests += 1
        blog = groups.get("blog")
        if blog is not None and self._blog(blog).name in self._blocked_by:
          raise _blocked()
        if files:
          params["_files"] = files
        response = getattr(self, "_api_" + route.handler)(params, **groups)
        status = 201 if route.handler in _CREATING else 200
        return status, _envelope(status, response), extra_headers
    except ApiError as e:
      return e.status, _error_envelope(e), extra_headers
    except Exception as e:  # pylint: disable=broad-except
      # What the real API does with a request it chokes on; the test sees it.
      error = ApiError(500, f"server error: {type(e).__name__}: {e}")
      return 500, _error_envelope(error), extra_headers

  def _route(self, method: str, path: str):
    allowed = False
    for route in _ROUTES:
      match = route.pattern.fullmatch(path)
      if match:
        if route.method == method:
          return route, {k: v for k, v in match.groupdict().items()
                         if v is not None}
        allowed = True
    if allowed:
      raise ApiError(405, f"{method} is not allowed on {path}")
    raise ApiError(404, f"no route {path}")

  @staticmethod
  def _params(query: str, headers, body: bytes) -> Tuple[dict, dict]:
    """Query and body parameters (list parameters, `a[0]=` or `a[]=`,
    joined) and the files of a multipart request: {name: (type, bytes)}.
    A multipart body's `json` part holds the parameters (NPF uploads)."""
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    content_type = (headers.get("Content-Type") or "").lower()
    params: Dict[str, Any] = {}
    files: Dict[str, Tuple[str, bytes]] = {}
    if body and content_type.startswith("multipart/form-data"):
      message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
          b"Content-Type: " + headers.get("Content-Type").encode() +
          b"\r\n\r\n" + body)
      for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        data = part.get_payload(decode=True) or b""
        if name == "json":
          body, content_type = data, "application/json"
        elif name:
          files[name] = (part.get_content_type(), data)
      if content_type != "application/json":
        body = b""
    if body and "json" in content_type:
      try:
        decoded = json.loads(body)
      except ValueError:
        raise ApiError(400, "the request body is not JSON", 8001) from None
      if not isinstance(decoded, dict):
        raise ApiError(400, "the request body is not a JSON object", 8001)
      params.update(decoded)
    elif body:
      try:
        text = body.decode("utf-8")
      except UnicodeDecodeError:
        raise ApiError(400, "the request body is not UTF-8") from None
      pairs += urllib.parse.parse_qsl(text, keep_blank_values=True)
    for key, value in pairs:
      list_key = re.fullmatch(r"(\w+)\[\d*\]", key)
      if list_key:
        params.setdefault(list_key.group(1), []).append(value)
      else:
        params[key] = value
    return params, files

  # ---- authentication and limits --------------------------------------------

  def _authenticate(self, method, path, query, headers, body, level, params):
    authorization = headers.get("Authorization") or ""
    if not authorization.startswith("OAuth "):
      if level == API_KEY and params.get("api_key") == (
          self.credentials.consumer_key):
        return
      raise ApiError(401, "Not authorized: an OAuth1 signature is required"
                     if level == OAUTH else "Not authorized: no api_key")
    try:
      oauth = {k: oauth_utils.unescape(v) for k, v in
               oauth_utils.parse_authorization_header(authorization)}
    except ValueError:
      raise ApiError(401, "Not authorized: unreadable OAuth header") from None
    if oauth.get("oauth_consumer_key") != self.credentials.consumer_key:
      raise ApiError(401, "Not authorized: unknown consumer key")
    if oauth.get("oauth_signature_method") != "HMAC-SHA1":
      raise ApiError(401, "Not authorized: only HMAC-SHA1 signatures")
    token = oauth.get("oauth_token", "")
    if token and token != self.credentials.oauth_token:
      raise ApiError(401, "Not authorized: unknown token")
    if level == OAUTH and not token:
      raise ApiError(401, "Not authorized: this route needs a user token")
    content_type = (headers.get("Content-Type") or "").lower()
    form_body = (body.decode("utf-8", "replace")
                 if body and "application/x-www-form-urlencoded" in content_type
                 else None)
    signed = oauth_signature.collect_parameters(
        uri_query=query, body=form_body,
        headers={"Authorization": authorization}, exclude_oauth_signature=True)
    base = oauth_signature.signature_base_string(
        method, oauth_signature.base_string_uri(
            f"http://{headers.get('Host', '127.0.0.1')}{path}"),
        oauth_signature.normalize_parameters(signed))
    expected = oauth_signature.sign_hmac_sha1(
        base, self.credentials.consumer_secret,
        self.credentials.oauth_secret if token else "")
    if not hmac.compare_digest(expected, oauth.get("oauth_signature", "")):
      raise ApiError(401, "Not authorized: the OAuth signature does not match")
    now = self.clock()
    stamp = fields.integer(oauth.get("oauth_timestamp"))
    if stamp is None or abs(now - stamp) > _TIMESTAMP_SLACK_S:
      raise ApiError(401, "Not authorized: the OAuth timestamp is too far off")
    nonce = (oauth.get("oauth_nonce", ""), str(stamp))
    if nonce in self._nonces:
      raise ApiError(401, "Not authorized: the OAuth nonce was used before")
    self._nonces = {k: t for k, t in self._nonces.items()
                    if now - t <= 2 * _TIMESTAMP_SLACK_S}
    self._nonces[nonce] = now

  def _rate_limit_headers(self, now: float) -> Dict[str, str]:
    headers = {}
    for limit, window in zip(self.rate_limits, self._windows):
      prefix = f"X-Ratelimit-{limit.name}"
      headers[f"{prefix}-Limit"] = str(limit.limit)
      headers[f"{prefix}-Remaining"] = str(window.remaining(now))
      headers[f"{prefix}-Reset"] = str(window.reset_in(now))
    return headers

  def _publish(self, post: _Post, state: str):
    """Sets a post's state, counting it against the daily cap if published."""
    now = self.clock()
    if state == "published" and post.state != "published":
      if not self._post_window.take(now):
        raise ApiError(self.post_cap_status,
                       "You have reached your daily post limit "
                       f"({self._post_window.limit}); it resets in "
                       f"{self._post_window.reset_in(now)} s",
                       8023 if self.post_cap_status == 403 else 0)
      if post.state != "new":  # a draft, queued post or ask goes out now
        post.timestamp = int(now)
        self._new_id(post)
    if state == "queue" and post.state != "queue":
      queued = sum(1 for p in self._posts.values()
                   if p.blog == post.blog and p.state == "queue")
      if queued >= QUEUE_LIMIT:
        raise ApiError(403, f"the queue is full ({QUEUE_LIMIT} posts)", 8022)
    post.state = state

  # ---- reading routes -------------------------------------------------------

  def _page(self, posts: List[_Post], params: dict, npf_default: bool
           ) -> List[dict]:
    offset = max(0, fields.integer(params.get("offset")) or 0)
    limit = fields.integer(params.get("limit")) or PAGE_LIMIT
    limit = min(max(limit, 1), PAGE_LIMIT)
    use_npf = _bool(params["npf"]) if "npf" in params else npf_default
    page = posts[offset:offset + limit]
    self.posts_served.update(p.id for p in page)
    return [self._render(p, use_npf) for p in page]

  def _api_blog_info(self, params, blog):
    info = self._blog(blog)
    published = self._select(info.name, "published")
    response = dict(info.short_info(), posts=len(published),
                    updated=published[0].timestamp if published else 0,
                    ask=True, ask_anon=True, followers=info.followers)
    return {"blog": response}

  # pylint: disable-next=redefined-builtin
  def _api_posts(self, params, blog, type=None):
    info = self._blog(blog)
    posts = self._select(info.name, "published")
    if "id" in params:
      posts = [self._post(params["id"], info)]
      if posts[0].state != "published":
        raise ApiError(404, f"post {params['id']} not found")
    if type:
      posts = [p for p in posts if _legacy_type(p) == type]
    tags = params.get("tag")
    for tag in [tags] if isinstance(tags, str) else (tags or []):
      posts = [p for p in posts if tag.lower() in (t.lower() for t in p.tags)]
    before = fields.integer(params.get("before"))
    after = fields.integer(params.get("after"))
    if before is not None:
      posts = [p for p in posts if p.timestamp < before]
    if after is not None:
      posts = [p for p in posts if p.timestamp > after]
    if params.get("sort") == "asc":
      posts.reverse()
    page = self._page(posts, params, npf_default=False)
    response = {"blog": self._api_blog_info({}, blog)["blog"], "posts": page,
                "total_posts": len(posts)}
    offset = max(0, fields.integer(params.get("offset")) or 0)
    if offset + len(page) < len(posts):
      query = {k: v for k, v in params.items()
               if k in ("limit", "tag", "npf", "sort", "before", "after")}
      query["offset"] = offset + len(page)
      response["_links"] = {"next": {
          "type": "api", "method": "GET",
          "href": f"/v2/blog/{info.name}/posts", "query_params": query}}
    return response

  def _api_fetch_post(self, params, blog, post_id):
    post = self._post(post_id, self._blog(blog))
    self.posts_served[post.id] += 1
    rendered = self._render(post, params.get("post_format", "npf") != "legacy")
    # The fetch route's documented fields name the blog by
    # `tumblelog_uuid` and have no `blog` or `state`; a queued post says so
    # by `queued_state` (the API docs' `/posts/{post-id}` fetch response).
    rendered.pop("blog", None)
    state = rendered.pop("state")
    rendered["tumblelog_uuid"] = _blog_uuid(post.blog)
    if state == "queued":
      rendered["queued_state"] = "queued"
    return rendered

  def _api_queue(self, params, blog):
    limit = fields.integer(params.get("limit"))
    if "limit" in params and not (limit is not None and 1 <= limit <= 20):
      # "The number of results to return: 1–20, inclusive" (the API docs'
      # `/posts/queue`).
      raise ApiError(400, f"limit {params['limit']!r}: 1 to 20", 0)
    posts = sorted(self._select(self._own_blog(blog).name, "queue"),
                   key=lambda p: p.id)
    return {"posts": self._page(posts, params, npf_default=False)}

  def _api_drafts(self, params, blog):
    posts = self._select(self._own_blog(blog).name, "draft")
    before_id = fields.integer(params.get("before_id"))
    if before_id:
      posts = [p for p in posts if p.id < before_id]
    return {"posts": self._page(posts, {**params, "offset": 0},
                                npf_default=False)}

  def _api_submissions(self, params, blog):
    posts = self._select(self._own_blog(blog).name, "submission")
    # Tumblr leaves asks from senders it flags as spam out of the inbox;
    # their `ask` notifications still come.
    posts = [p for p in posts
             if (npf.split_ask(p.content, p.layout)[0] or [None])[0]
             not in self._spam_senders]
    return {"posts": self._page(posts, params, npf_default=False)}

  def _api_notifications(self, params, blog):
    items = sorted(self._own_blog(blog).notifications,
                   key=lambda n: n["timestamp"], reverse=True)
    before = fields.integer(params.get("before"))
    if before is not None:
      items = [n for n in items if n["timestamp"] < before]
    types = params.get("types")
    if types:
      types = [types] if isinstance(types, str) else types
      types = set(types) | {ITEM_TYPES.get(t, t) for t in types}
      items = [n for n in items if n["type"] in types]
    if _bool(params.get("rollups", True)):
      items = _rolled_up(items)
    page = [dict(n) for n in items[:PAGE_LIMIT]]
    response = {"notifications": page}
    if len(items) > len(page) and self.notification_links:
      response["_links"] = {"next": {
          "type": "api", "method": "GET",
          "href": f"/v2/blog/{blog}/notifications",
          "query_params": {"before": page[-1]["timestamp"]}}}
    return response

  def _api_notes(self, params, blog):
    post = self._post(params.get("id"), self._blog(blog))
    mode = params.get("mode", "all")
    notes = sorted(post.notes, key=lambda n: n["timestamp"], reverse=True)
    conversational = [n for n in notes if n["type"] == "reply"
                      or (n["type"] == "reblog" and n.get("added_text"))]
    rollup = [n for n in notes if n not in conversational]
    selected = {
        "likes": [n for n in notes if n["type"] == "like"],
        "conversation": conversational,
        "rollup": [n for n in notes if n["type"] in ("like", "reblog")],
        "reblogs_with_tags": [n for n in notes if n["type"] == "reblog"],
    }.get(mode, notes)
    before = fields.integer(params.get("before_timestamp"))
    if before is not None:
      selected = [n for n in selected if n["timestamp"] < before]
    page = [dict(n, followed=n["blog_name"] in self._following)
            for n in selected[:NOTES_PAGE]]
    response = {"notes": page, "total_notes": len(selected),
                "total_likes": sum(n["type"] == "like" for n in notes),
                "total_reblogs": sum(n["type"] == "reblog" for n in notes)}
    if mode == "conversation":
      response["rollup_notes"] = [dict(n) for n in rollup]
    if len(selected) > len(page):
      response["_links"] = {"next": {
          "type": "api", "method": "GET", "href": f"/v2/blog/{blog}/notes",
          # Only the cursor: a client that takes these for its whole
          # query loses `id` and `mode` (issue 40, item 10).
          "query_params": {"before_timestamp": page[-1]["timestamp"]}}}
    return response

  def _api_dashboard(self, params):
    names = set(self._following) | {b.name for b in self._blogs.values()
                                     if b.owned}
    posts = sorted((p for p in self._posts.values()
                    if p.blog in names and p.state == "published"),
                   key=lambda p: (p.timestamp, p.id), reverse=True)
    since_id = fields.integer(params.get("since_id"))
    if since_id:
      posts = [p for p in posts if p.id > since_id]
    if params.get("type"):
      posts = [p for p in posts if _legacy_type(p) == params["type"]]
    return {"posts": self._page(posts, params, npf_default=False)}

  def _api_user_info(self, params):
    blogs = [dict(b.short_info(), primary=i == 0, followers=b.followers,
                  type="public", tweet="N", admin=True)
             for i, b in enumerate(b for b in self._blogs.values() if b.owned)]
    return {"user": {"name": self.user_name, "likes": 0,
                     "following": len(self._following),
                     "default_post_format": "html", "blogs": blogs}}

  def _api_user_following(self, params):
    offset = max(0, fields.integer(params.get("offset")) or 0)
    limit = min(max(fields.integer(params.get("limit")) or 20, 1), 20)
    names = self._following[offset:offset + limit]
    return {"total_blogs": len(self._following),
            "blogs": [self._blogs[n].short_info() for n in names]}

  def _followed_blog(self, params) -> _Blog:
    url = fields.string(params.get("url"))
    name = npf.blog_name_from_url(url) or url
    if not name:
      raise ApiError(400, "'url' is required", 0)
    return self._blog(name)

  def _api_user_follow(self, params):
    blog = self._followed_blog(params)
    if blog.name in self._blocked_by:
      # Not an error: 200 with `followed` false (tumblr/docs issue #69).
      return {"blog": blog.short_info(), "followed": False}
    if blog.name not in self._following:
      self._following.append(blog.name)
    return {"blog": blog.short_info(), "followed": True}

  def _api_user_unfollow(self, params):
    blog = self._followed_blog(params)
    if blog.name in self._following:
      self._following.remove(blog.name)
    return {}

  def _api_user_limits(self, params):
    now = self.clock()
    posts = self._post_window
    return {"user": {"posts": {
        "description": "the number of posts you can publish per day",
        "limit": posts.limit, "remaining": posts.remaining(now),
        "reset_at": posts.reset_at(now)}}}

  # ---- writing routes -------------------------------------------------------

  def _npf_params(self, params) -> Tuple[List[dict], List[dict]]:
    content, layout = params.get("content", []), params.get("layout", [])
    if isinstance(content, str) or isinstance(layout, str):
      try:  # form-encoded requests carry JSON strings
        content = json.loads(content) if isinstance(content, str) else content
        layout = json.loads(layout) if isinstance(layout, str) else layout
      except ValueError:
        raise ApiError(400, "'content' must be an array", 8001) from None
    if not isinstance(content, list) or not all(
        isinstance(b, dict) and isinstance(b.get("type"), str)
        for b in content):
      raise ApiError(400, "'content' must be an array of blocks", 8001)
    if not isinstance(layout, list):
      raise ApiError(400, "'layout' must be an array", 8001)
    if len(content) > npf.MAX_BLOCKS:
      raise ApiError(400, f"more than {npf.MAX_BLOCKS} content blocks", 8001)
    for block in content:
      text = block.get("text", "")
      if block["type"] == "text" and (not isinstance(text, str)
                                      or len(text) > npf.TEXT_BLOCK_LIMIT):
        raise ApiError(400, "a text block is longer than "
                       f"{npf.TEXT_BLOCK_LIMIT} characters", 8001)
    return [self._uploaded(b, params.get("_files") or {})
            for b in content], layout

  @staticmethod
  def _as_stored(content: List[dict], layout: List[dict]
                 ) -> Tuple[List[dict], List[dict]]:
    """A post's content and layout as Tumblr keeps them: empty text blocks
    at the ends trimmed, the layout's indexes shifted (the NPF spec's
    "Leading and Trailing Empty Text Blocks"); refused with 400 past the
    spec's content block limits and ask limits (bot.tumblr.npf_limits), in
    the error shape of the API docs' NPF create route."""
    content, layout = npf_limits.trim_empty_ends(content, layout)
    problem = npf_limits.refusal(content, layout)
    if problem is not None:
      raise ApiError(400, problem[0], problem[1], titled=True)
    return content, layout

  def _uploaded(self, block: dict, files: dict) -> dict:
    """A media block whose media name an uploaded file (`identifier`) gets
    the file's URL on this server, as Tumblr's media hosts serve them."""
    if block.get("type") not in ("image", "video", "audio"):
      return block
    media = block.get("media")
    items = media if isinstance(media, list) else [media]
    out = []
    for item in items:
      if isinstance(item, dict) and item.get("identifier"):
        upload = files.get(item["identifier"])
        if upload is None:
          raise ApiError(400, f"no upload for media identifier "
                         f"{item['identifier']!r}", 8001)
        kind, data = upload
        name = (f"{hashlib.sha1(data).hexdigest()[:16]}."
                f"{kind.split('/')[-1]}")
        self.media[name] = (kind, data)
        item = {k: v for k, v in item.items() if k != "identifier"}
        item.update(url=f"{self.url}/media/{name}", type=kind)
      out.append(item)
    return dict(block, media=out if isinstance(media, list) else out[0])

  @staticmethod
  def _state(params, default="published") -> str:
    state = params.get("state") or default
    state = {"queued": "queue"}.get(state, state)
    if state not in ("published", "draft", "queue", "private"):
      raise ApiError(400, f"unknown post state {state!r}", 8001)
    return state

  def _api_create_post(self, params, blog):
    info = self._own_blog(blog)
    content, layout = self._as_stored(*self._npf_params(params))
    trail, parent = [], None
    if params.get("parent_post_id") is not None:
      parent = self._posts.get(fields.integer(params["parent_post_id"]))
      if (parent is None or parent.reblog_key != params.get("reblog_key")
          or _blog_uuid(parent.blog) != params.get("parent_tumblelog_uuid")):
        raise ApiError(400, "the reblog parent post cannot be found", 8002)
      if not _bool(params.get("hide_trail", False)):
        trail = self._trail_after(parent)
    elif not content:
      raise ApiError(400, "a new post needs 'content'", 8001)
    post = self._create(info.name, content, layout, trail, params, parent)
    return {"id": str(post.id), "state": post.state,
            "display_text": f"Posted to {info.name}."}

  def _create(self, blog: str, content, layout, trail, params,
              parent: Optional[_Post]) -> _Post:
    state = self._state(params)
    timestamp = _parse_date(params.get("date")) or int(self.clock())
    post = self._new_post(blog, content, layout, trail,
                          _tags_param(params.get("tags")), "new", timestamp)
    post.slug = _slug(params.get("slug")) or _slug(
        html_subset.blocks_to_text(npf.split_ask(content, layout)[1]))
    try:
      self._publish(post, state)
    except ApiError:
      del self._posts[post.id]
      raise
    if parent is not None:
      post.parent = (parent.blog, parent.id)
      self._note(parent, "reblog", blog, post_id=post.id,
                 added_text=html_subset.blocks_to_text(
                     npf.split_ask(content, layout)[1]),
                 tags=post.tags)
    return post

  def _api_edit_post(self, params, blog, post_id):
    post = self._post(post_id, self._own_blog(blog))
    if params.get("state") == "queued":
      # Creating takes "queued" for "queue"; an edit refuses it
      # (tumblr/docs issue #58).
      raise ApiError(400, "invalid post state 'queued': use 'queue'", 8001,
                     titled=True)
    if not post.npf and _legacy_type(post) != "text":
      # The API docs' NPF edit route: "you can only edit posts in NPF if
      # they were originally created in NPF, or are legacy text posts".
      raise ApiError(400, "this post was not created in NPF: edit it "
                     "with /post/edit", 8001)
    content, layout = self._npf_params(params)
    if post.is_ask and not any(l.get("type") == "ask" for l in layout):
      # An answer may send only its own blocks; the ask stays in front.
      asks = [l for l in post.layout if l.get("type") == "ask"]
      count = len(asks[0].get("blocks", [])) if asks else 0
      content = post.content[:count] + content
      layout = [dict(asks[0])] + [l for l in layout if l.get("type") != "ask"]
    content, layout = self._as_stored(content, layout)
    self._publish(post, self._state(params, default=(
        "published" if post.state == "submission" else post.state)))
    post.content, post.layout = content, layout
    if "tags" in params:
      post.tags = _tags_param(params["tags"])
    return {"id": str(post.id)}

  def _api_legacy_create(self, params, blog):
    info = self._own_blog(blog)
    content = _legacy_content(params)
    post = self._create(info.name, content, [], [], params, None)
    post.npf = False
    return {"id": post.id}

  def _api_legacy_edit(self, params, blog):
    post = self._post(params.get("id"), self._own_blog(blog))
    if post.is_ask:
      answer = npf.blocks_to_content(html_subset.html_to_blocks(
          fields.string(params.get("answer"))))
      asks = [l for l in post.layout if l.get("type") == "ask"]
      count = len(asks[0].get("blocks", [])) if asks else 0
      new_content = post.content[:count] + answer
    else:
      new_content = _legacy_content(params) if (
          {"body", "title", "quote", "url", "caption"} & params.keys()
      ) else post.content
    self._publish(post, self._state(params, default=(
        "published" if post.state == "submission" else post.state)))
    post.content = new_content
    if "tags" in params:
      post.tags = _tags_param(params["tags"])
    return {"id": post.id}

  def _api_legacy_reblog(self, params, blog):
    info = self._own_blog(blog)
    parent = self._posts.get(fields.integer(params.get("id")))
    if parent is None or parent.reblog_key != params.get("reblog_key"):
      raise ApiError(400, "the reblog parent post cannot be found", 8002)
    content = npf.blocks_to_content(html_subset.html_to_blocks(
        fields.string(params.get("comment"))))
    post = self._create(info.name, content, [], self._trail_after(parent),
                        params, parent)
    post.npf = False
    return {"id": post.id}

  def _api_delete_post(self, params, blog):
    post = self._post(params.get("id"), self._own_blog(blog))
    del self._posts[post.id]
    return {"id": post.id}


def _legacy_content(params: dict) -> List[dict]:
  """NPF content for the fields of a legacy create/edit request."""
  kind = params.get("type", "text")
  blocks: List[html_subset.Block] = []
  if kind == "text":
    title = fields.string(params.get("title")).strip()
    if title:
      blocks.append(html_subset.Block(title, formatting=(
          html_subset.Format(0, len(title), html_subset.BOLD),)))
    body = fields.string(params.get("body"))
    blocks += (html_subset.plain_to_blocks(body)
               if params.get("format") == "markdown"
               else html_subset.html_to_blocks(body))
  elif kind == "quote":
    blocks = [html_subset.Block(b.text, html_subset.INDENTED, 0, b.formatting)
              for b in html_subset.html_to_blocks(
                  fields.string(params.get("quote")))]
    blocks += html_subset.html_to_blocks(fields.string(params.get("source")))
  elif kind == "chat":
    blocks = html_subset.plain_to_blocks(
        fields.string(params.get("conversation")).replace("\n", "\n\n"))
  content = npf.blocks_to_content(blocks)
  if kind == "link":
    content = [{"type": "link", "url": fields.string(params.get("url")),
                "title": fields.string(params.get("title"))}]
    content += npf.blocks_to_content(html_subset.html_to_blocks(
        fields.string(params.get("description"))))
  elif kind in ("photo", "video", "audio"):
    media_key = {"photo": "source", "video": "embed",
                 "audio": "external_url"}[kind]
    block_type = {"photo": "image"}.get(kind, kind)
    media = {"url": fields.string(params.get(media_key))}
    block = ({"type": "image", "media": [media]} if kind == "photo"
             else {"type": block_type, "url": media["url"],
                   "provider": "tumblr"})
    content = [block] + npf.blocks_to_content(html_subset.html_to_blocks(
        fields.string(params.get("caption"))))
  if not content:
    raise ApiError(400, f"a legacy {kind} post needs its content", 8001)
  return content


def _rolled_up(items: List[dict]) -> List[dict]:
  """Notifications (newest first) with those of one type on one post rolled
  up into one item: `rollups` defaults to true (the API docs' notifications
  endpoint), so replies and reblogs arrive grouped unless a client asks
  `rollups=false`. The docs do not show a rolled-up item; here it is the
  newest of its group with `rollup_count`, the others' senders and texts
  gone (what a client that does not ask `rollups=false` loses)."""
  groups: Dict[Tuple[str, str], dict] = {}
  out = []
  for item in items:
    target = item.get("target_post_id")
    if target is None or item["type"] == "ask":
      out.append(item)
      continue
    group = groups.get((item["type"], target))
    if group is None:
      groups[(item["type"], target)] = group = dict(item, rollup_count=1)
      out.append(group)
    else:
      group["rollup_count"] += 1
  return out


def _envelope(status: int, response: Any) -> dict:
  return {"meta": {"status": status, "msg": http.HTTPStatus(status).phrase},
          "response": response}


def _error_envelope(error: ApiError) -> dict:
  phrase = ("Limit Exceeded" if error.status == 429
            else http.HTTPStatus(error.status).phrase)
  if error.as_response:
    return {"meta": {"status": error.status, "msg": phrase},
            "response": error.detail}
  detail = ({"title": error.detail, "code": error.code} if error.titled
            else {"title": phrase, "code": error.code, "detail": error.detail})
  return {"meta": {"status": error.status, "msg": phrase}, "response": [],
          "errors": [detail]}


@dataclasses.dataclass(frozen=True)
class _Route:
  method: str
  pattern: "re.Pattern"
  handler: str
  auth: str


def _routes(*table) -> Tuple[_Route, ...]:
  return tuple(_Route(method, re.compile(pattern.replace(
      "{blog}", r"(?P<blog>[^/]+)")), handler, auth)
               for method, pattern, handler, auth in table)


# Most specific first: /posts/queue before /posts/{type}.
_ROUTES = _routes(
    ("GET", "/v2/blog/{blog}/info/?", "blog_info", API_KEY),
    ("GET", "/v2/blog/{blog}/posts/queue/?", "queue", OAUTH),
    ("GET", "/v2/blog/{blog}/posts/draft/?", "drafts", OAUTH),
    ("GET", "/v2/blog/{blog}/posts/submission/?", "submissions", OAUTH),
    ("GET", r"/v2/blog/{blog}/posts/(?P<post_id>\d+)/?", "fetch_post", OAUTH),
    ("PUT", r"/v2/blog/{blog}/posts/(?P<post_id>\d+)/?", "edit_post", OAUTH),
    ("GET", "/v2/blog/{blog}/posts(?:/(?P<type>[a-z]+))?/?", "posts", API_KEY),
    ("POST", "/v2/blog/{blog}/posts/?", "create_post", OAUTH),
    ("POST", "/v2/blog/{blog}/post/?", "legacy_create", OAUTH),
    ("POST", "/v2/blog/{blog}/post/edit/?", "legacy_edit", OAUTH),
    ("POST", "/v2/blog/{blog}/post/reblog/?", "legacy_reblog", OAUTH),
    ("POST", "/v2/blog/{blog}/post/delete/?", "delete_post", OAUTH),
    ("GET", "/v2/blog/{blog}/notifications/?", "notifications", OAUTH),
    ("GET", "/v2/blog/{blog}/notes/?", "notes", API_KEY),
    ("GET", "/v2/user/info/?", "user_info", OAUTH),
    ("GET", "/v2/user/limits/?", "user_limits", OAUTH),
    ("GET", "/v2/user/following/?", "user_following", OAUTH),
    ("POST", "/v2/user/follow/?", "user_follow", OAUTH),
    ("POST", "/v2/user/unfollow/?", "user_unfollow", OAUTH),
    ("GET", "/v2/user/dashboard/?", "dashboard", OAUTH),
)
_CREATING = ("create_post", "legacy_create", "legacy_reblog")


class _HTTPServer(http.server.ThreadingHTTPServer):
  daemon_threads = True

  def handle_error(self, request, client_address):
    # A client that went away mid-request (a killed scraper) is not news.
    if not isinstance(sys.exc_info()[1], ConnectionError):
      super().handle_error(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
  """Hands each request to the `TumblrServer` it belongs to (`app`)."""
  app: TumblrServer
  server_version = "LocalTumblr/1"

  def date_time_string(self, timestamp=None):
    # Tumblr's clock, which its daily limits follow, is the app's clock.
    return email.utils.formatdate(
        self.app.clock() if timestamp is None else timestamp, usegmt=True)

  def _serve_media(self, name: str) -> None:
    """An uploaded file, as a media host serves it (no authentication)."""
    with self.app._lock:  # pylint: disable=protected-access
      kind, data = self.app.media.get(name, ("", None))
    if data is None:
      self.send_error(404)
      return
    self.send_response(200)
    self.send_header("Content-Type", kind)
    self.send_header("Content-Length", str(len(data)))
    self.end_headers()
    self.wfile.write(data)

  def _serve(self):
    path, _, query = self.path.partition("?")
    if self.command == "GET" and path.startswith("/media/"):
      self._serve_media(path[len("/media/"):])
      return
    length = int(self.headers.get("Content-Length") or 0)
    body = self.rfile.read(length) if length else b""
    status, payload, headers = self.app.handle(self.command, path, query,
                                               self.headers, body)
    data = json.dumps(payload).encode("utf-8")
    # Logged before the answer goes out: a client that has its answer must
    # find its request in the log (afterwards, a test could read it first).
    with self.app._lock:  # pylint: disable=protected-access
      self.app.request_log.append((self.command, path, status))
    self.send_response(status, payload["meta"]["msg"])
    self.send_header("Content-Type", "application/json; charset=utf-8")
    self.send_header("Content-Length", str(len(data)))
    for key, value in headers.items():
      self.send_header(key, value)
    self.end_headers()
    self.wfile.write(data)

  do_GET = do_POST = do_PUT = do_DELETE = _serve

  def log_message(self, format, *args):  # pylint: disable=redefined-builtin
    pass  # tests read request_log instead of stderr
