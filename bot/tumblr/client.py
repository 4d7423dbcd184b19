"""A careful Tumblr API client: pytumblr2 with timeouts, retries and limits.

`TumblrClient` keeps pytumblr2's endpoint methods (URL building, the `host`
argument that tests point at a local server, OAuth1 signing through
requests-oauthlib) and replaces its transport with one that
  - sets a timeout on every request and one consistent User-Agent;
  - retries 5xx answers and network errors with exponential backoff; a write
    that may have landed is retried only after `landed()` (given by the
    caller) says it did not, so a retry never posts twice;
  - on 429 waits for the reset the headers announce (`Retry-After`,
    `X-Ratelimit-*-Reset` of a spent window), up to `max_wait_s`, then tries
    again; a 429 that names no wait (real Tumblr's, with calls left) is
    backed off briefly and exponentially;
  - sends at most `calls_per_minute` requests a minute (Tumblr's per-IP
    limit, which no header counts);
  - turns error envelopes into `TumblrError` (status, message, subcodes).
It logs the method and path of each call, never query strings, headers or
keys (the consumer key travels as `api_key` in some query strings), and keeps
oauthlib, requests-oauthlib and urllib3, which log keys and tokens at DEBUG,
at INFO.

`ApiBudget` keeps what the rate-limit headers of the last answer said is
left of the consumer key's calls this hour and today
(`X-Ratelimit-Perhour-*`, `X-Ratelimit-Perday-*`) and Tumblr's clock (the
`Date` header): the client sends no request the budget does not have
(`BudgetExhausted`, instead of earning a 429), and the bot skips optional
work when the hour runs low.

`PostBudget` tracks the 250 posts a day cap from the bot's own ledger (the
state store) and the server's `/user/limits` when available, on Tumblr's
calendar day (in US Eastern time, bot.tumblr.post_day). Its tiers follow
the original's: normal with 25 or more posts left today; under 25 posts go
out spaced evenly over what is left of the day and fewer per pass; under 5
only answers to people (asks, replies, reblogs of the bot's posts) are
posted; at 0 it defers. A deferral is not a failure: the job stays pending
for a later pass, and so does a post Tumblr refuses for the cap (429 or
403.8023, `PostLimitReached`).
"""

import collections
import dataclasses
import email.utils
import json
import logging
import re
import time
from typing import Callable, Optional

import pytumblr2
import requests
from pytumblr2.request import TumblrRequest
from requests_oauthlib import OAuth1

from bot.tumblr import post_day

DEFAULT_HOST = "https://api.tumblr.com"
USER_AGENT = "tumblr-gpt2-jax-bot/0.1"
DAILY_POST_CAP = 250
PAGE_SIZE = 20  # posts a listing returns at most per request
_RESET_SLACK_S = 2.0
# Tumblr allows 300 API calls a minute per IP address (the API docs' rate
# limits section) and sends no header counting them: the client counts its
# own, keeping a margin for anything else on the machine (a scrape, the
# console).
CALLS_PER_MINUTE = 250
_MINUTE_S = 60.0
# The longest backoff after a 429 that says nothing of when to come back: a
# minute, the shortest window Tumblr limits.
_NO_HINT_CAP_S = 60.0
# How Tumblr says the day's posts are spent: 403 with subcode 8023 (the
# docs' NPF section) or 429 naming the limit (the rate limits section).
_POST_LIMIT_CODE = 8023
_POST_LIMIT_WORDS = re.compile(r"post(?:s|ing)? limit|posts? (?:per|a) day|"
                               r"daily post", re.IGNORECASE)

log = logging.getLogger("bot.tumblr.client")
# These log request URLs and OAuth parameters (keys and tokens) at DEBUG.
_CHATTY_LOGGERS = ("oauthlib", "requests_oauthlib", "urllib3")


def quiet_chatty_loggers() -> None:
  """Keeps the HTTP and OAuth libraries' loggers at INFO or above, so that no
  verbosity flag makes them log request URLs (the consumer key travels as
  `api_key` in some) or OAuth headers. Whatever talks to Tumblr calls it
  before its first request."""
  for name in _CHATTY_LOGGERS:
    logger = logging.getLogger(name)
    if logger.level < logging.INFO:
      logger.setLevel(logging.INFO)


class TumblrError(Exception):
  """An error answer from the API (or giving up on one)."""

  def __init__(self, status: int, message: str, subcodes=()):
    super().__init__(f"Tumblr API {status}: {message}")
    self.status = status
    self.message = message
    self.subcodes = tuple(subcodes)


class RateLimited(TumblrError):
  """A 429 whose reset is further away than the client will wait."""


class BudgetExhausted(RateLimited):
  """The hour's (or day's) API calls are spent: the request was not sent."""


class PostLimitReached(TumblrError):
  """Tumblr refused a post for the day's cap (429 or 403.8023): the job
  waits for a later pass; this is not the API rate limit."""


class PostCapDeferred(Exception):
  """Posting now would break (or rush into) the daily cap; try later."""


@dataclasses.dataclass
class ApiBudget:
  """API calls left, as the last answer's headers said, and Tumblr's clock.

  `windows` maps a header's window name ("Perhour", "Perday") to (calls
  left, unix time of its reset on our clock). `clock_offset` is Tumblr's
  clock minus ours, from the `Date` header.
  """
  windows: dict = dataclasses.field(default_factory=dict)
  clock_offset: float = 0.0

  def update(self, headers, now: float) -> None:
    for name, value in headers.items():
      lower = name.lower()
      if lower.startswith("x-ratelimit-") and lower.endswith("-remaining"):
        window = name[len("x-ratelimit-"):-len("-remaining")]
        reset = headers.get(name[:-len("remaining")] + "Reset",
                            headers.get(lower[:-len("remaining")] + "reset"))
        wait = reset_wait({"X-Ratelimit-W-Reset": reset}, now) or 0.0
        try:
          self.windows[window.lower()] = (int(value), now + wait)
        except ValueError:
          continue
    date = headers.get("Date")
    if date:
      try:
        tumblr = email.utils.parsedate_to_datetime(date).timestamp()
      except (TypeError, ValueError):
        return
      # Whole seconds only: ignore the header's rounding.
      if abs(tumblr - now - self.clock_offset) >= 2:
        self.clock_offset = tumblr - now

  def left(self, now: float) -> Optional[int]:
    """Calls left before the tightest window resets (None: unknown)."""
    counts = [n for n, reset_at in self.windows.values() if reset_at > now]
    return min(counts) if counts else None

  def reset_in(self, now: float) -> float:
    """Seconds until every spent window has reset."""
    return max((r - now for n, r in self.windows.values()
                if n <= 0 and r > now), default=0.0)


def _path_of(url: str) -> str:
  return url.split("?", 1)[0]


def _envelope(resp: requests.Response) -> dict:
  try:
    data = resp.json()
  except ValueError:
    data = None
  if not isinstance(data, dict) or "meta" not in data:
    return {"meta": {"status": resp.status_code, "msg": resp.reason},
            "response": {}}
  return data


def _error_from(data: dict, status: int) -> TumblrError:
  meta = data.get("meta", {})
  errors = data.get("errors") or []
  subcodes = [e.get("code") for e in errors if isinstance(e, dict)]
  detail = "; ".join(str(e.get("detail") or e.get("title"))
                     for e in errors if isinstance(e, dict))
  # Real Tumblr gives some refusals as a string `response` and no `errors`
  # ("You do not have permission to view this blog" for a blog that blocked
  # the user; the original bot, nostalgebraist-autoresponder, matched it
  # there).
  said = data.get("response")
  if isinstance(said, str) and said.strip() and not detail:
    detail = said.strip()
  msg = meta.get("msg", "error") + (f" ({detail})" if detail else "")
  return TumblrError(status, msg, subcodes)


def _post_limit(data: dict) -> bool:
  """Whether an error answer is the daily post cap's: subcode 8023 (the
  docs' NPF section), or a 429 whose message speaks of the post limit (the
  docs' rate limits section: per-day limits answer 429 "Limit Exceeded",
  whose message "should indicate what limit you've hit")."""
  error = _error_from(data, 0)
  return (_POST_LIMIT_CODE in error.subcodes
          or bool(_POST_LIMIT_WORDS.search(str(error))))


def reset_wait(headers, now: float) -> Optional[float]:
  """Seconds a 429 asks us to wait, from its headers (None if it does not say).

  `Retry-After` wins; otherwise the reset of every X-Ratelimit bucket that is
  exhausted (remaining 0), or of the buckets that do not say what remains.
  Buckets with calls left are no hint: real Tumblr sends 429 while they
  still show calls left, for a limit no header shows (300 calls a minute
  per IP; tumblr/docs issue #139), and their resets (the hour's) are not
  what to wait for. A reset that looks like a unix time is turned into a
  delay.
  """
  def seconds(value):
    try:
      v = float(value)
    except (TypeError, ValueError):
      return None
    return max(0.0, v - now) if v > 1e9 else max(0.0, v)

  retry_after = seconds(headers.get("Retry-After"))
  if retry_after is not None:
    return retry_after
  resets, exhausted = [], []
  for name, value in headers.items():
    lower = name.lower()
    if lower.startswith("x-ratelimit-") and lower.endswith("-reset"):
      s = seconds(value)
      if s is None:
        continue
      remaining = headers.get(name[:-len("reset")] + "Remaining",
                              headers.get(lower[:-len("reset")] + "remaining"))
      if remaining is None:
        resets.append(s)
      elif str(remaining).strip() == "0":
        exhausted.append(s)
  if exhausted:
    return max(exhausted)
  if resets:
    return min(resets)
  return None


class _Transport(TumblrRequest):
  """pytumblr2's request object, routed through `TumblrClient.send`."""

  def __init__(self, client: "TumblrClient"):
    # Deliberately not calling TumblrRequest.__init__: the client owns the
    # OAuth signer and the session.
    self.host = client.host
    self.consumer_key = client.consumer_key
    self.headers = {"User-Agent": client.user_agent}
    self.last_response_headers = None
    self._client = client

  def get(self, url, params):
    return self._client.send("GET", url, params=params)

  def delete(self, url, params):
    return self._client.send("DELETE", url, params=params)

  def post(self, url, params={}, files=[]):  # pylint: disable=dangerous-default-value
    if files or params.get("media_sources"):
      raise NotImplementedError("media goes through TumblrClient's `media`")
    return self._client.send("POST", url, json_body=params)

  def put(self, url, params={}, files=[]):  # pylint: disable=dangerous-default-value
    if files or params.get("media_sources"):
      raise NotImplementedError("media goes through TumblrClient's `media`")
    return self._client.send("PUT", url, json_body=params)


class TumblrClient:
  """Tumblr API v2 for the bot. `credentials` has the four OAuth1 fields."""

  def __init__(self, credentials, *, host: str = DEFAULT_HOST,
               timeout_s: float = 30.0, max_retries: int = 4,
               backoff_s: float = 1.0, max_wait_s: float = 900.0,
               max_rate_waits: int = 5, user_agent: str = USER_AGENT,
               calls_per_minute: int = CALLS_PER_MINUTE,
               pace_clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], None] = time.sleep,
               clock: Callable[[], float] = time.time):
    quiet_chatty_loggers()
    self.host = host.rstrip("/")
    self.consumer_key = credentials.consumer_key
    self.user_agent = user_agent
    self.timeout_s = timeout_s
    self.max_retries = max_retries
    self.backoff_s = backoff_s
    self.max_wait_s = max_wait_s
    self.max_rate_waits = max_rate_waits
    self.calls_per_minute = calls_per_minute
    # Send times in the last minute, on a clock of elapsed time: the bot's
    # clock may be fixed (a replayed pass) and Tumblr's minute is real.
    self._pace_clock = pace_clock
    self._recent = collections.deque()
    self._sleep = sleep
    self._clock = clock
    self._session = requests.Session()
    self._auth = OAuth1(credentials.consumer_key,
                        client_secret=credentials.consumer_secret,
                        resource_owner_key=credentials.oauth_token,
                        resource_owner_secret=credentials.oauth_secret)
    self.api = pytumblr2.TumblrRestClient(
        credentials.consumer_key, credentials.consumer_secret,
        credentials.oauth_token, credentials.oauth_secret, host=self.host)
    self.api.request = _Transport(self)
    self.writes = 0            # write requests sent (POST/PUT/DELETE)
    self.waits = []            # seconds waited on 429s, for the report
    self.budget = ApiBudget()  # calls left, from the rate-limit headers
    # A bot.tumblr.recording.Recorder keeps every exchange (--record_api).
    self.recorder = None

  def __repr__(self):
    return f"TumblrClient(host={self.host!r})"

  # -- transport -----------------------------------------------------------

  def send(self, method: str, path: str, *, params=None, json_body=None,
           media: Optional[dict] = None,
           landed: Optional[Callable[[], Optional[dict]]] = None) -> dict:
    """One API call with retries; returns the envelope's `response`.

    For writes, `landed()` is asked before a retry whether the previous try
    took effect; if it returns a response, that is returned instead.
    `media` ({identifier: (content type, bytes)}) makes the request the
    API's multipart upload: the JSON body in a `json` part, each file in a
    part named by the identifier its NPF block gives. A request the API
    budget has no call left for is not sent (`BudgetExhausted`).
    """
    url = self.host + path
    write = method != "GET"
    attempt, rate_waits = 0, 0
    while True:
      if write and attempt > 0 and landed is not None:
        found = landed()
        if found is not None:
          log.info("%s %s: an earlier try had landed", method,
                   _path_of(path))
          return found
      now = self._clock()
      left = self.budget.left(now)
      if left is not None and left <= 0:
        # Spent: wait for the reset as for a 429, without earning one.
        wait = self.budget.reset_in(now)
        if wait > self.max_wait_s:
          raise BudgetExhausted(429, f"rate limited ahead of time: the API "
                                f"budget is spent until its reset in "
                                f"{wait:.0f}s; not sending {method} "
                                f"{_path_of(path)}")
        log.warning("%s %s: API budget spent, waiting %.1fs for the reset",
                    method, _path_of(path), wait)
        self.waits.append(wait)
        self._sleep(wait)
        self.budget.windows.clear()  # the next answer says afresh
        continue
      self._pace()
      if write:
        self.writes += 1
      body = {"json": json_body}
      if media:
        body = {"files": [("json", (None, json.dumps(json_body),
                                    "application/json"))] +
                [(ident, (ident, data, kind))
                 for ident, (kind, data) in media.items()]}
      try:
        resp = self._session.request(
            method, url, params=params or None,
            headers={"User-Agent": self.user_agent}, auth=self._auth,
            timeout=self.timeout_s, allow_redirects=False, **body)
      except requests.RequestException as e:
        attempt += 1
        log.warning("%s %s: %s (try %d of %d)", method, _path_of(path),
                    type(e).__name__, attempt, self.max_retries + 1)
        if attempt > self.max_retries:
          raise TumblrError(0, f"network error on {method} {_path_of(path)}:"
                            f" {type(e).__name__}") from None
        self._sleep(self.backoff_s * 2 ** (attempt - 1))
        continue
      finally:
        # Counted when it is done, which is after Tumblr counted it: a
        # minute timed from the send could end before Tumblr's does.
        self._recent.append(self._pace_clock())
      self.api.request.last_response_headers = resp.headers
      self.budget.update(resp.headers, self._clock())
      status = resp.status_code
      if self.recorder is not None:
        self.recorder.add(method, _path_of(path), params, json_body, status,
                          resp.headers, _envelope(resp))
      log.debug("%s %s -> %d", method, _path_of(path), status)
      if status == 429 and write and _post_limit(_envelope(resp)):
        # The day's posts, not the API's calls: waiting seconds or the
        # hour's reset would not help; the caller defers the job.
        error = _error_from(_envelope(resp), status)
        raise PostLimitReached(status, error.message, error.subcodes)
      if status == 429:
        wait = reset_wait(resp.headers, self._clock())
        if wait is None:
          # No hint (calls left, no Retry-After): back off briefly and
          # exponentially rather than sleep to the hour's reset.
          wait = min(self.backoff_s * 2 ** rate_waits, _NO_HINT_CAP_S)
        rate_waits += 1
        if wait > self.max_wait_s or rate_waits > self.max_rate_waits:
          raise RateLimited(429, f"rate limited on {method} "
                            f"{_path_of(path)}; reset in {wait:.0f}s")
        log.warning("%s %s: 429, waiting %.1fs for the reset", method,
                    _path_of(path), wait)
        self.waits.append(wait)
        self._sleep(wait)
        if write:
          # A 429 means the write did not happen: no need to ask `landed`.
          attempt = 0
        continue
      data = _envelope(resp)
      if status >= 500:
        attempt += 1
        log.warning("%s %s: %d (try %d of %d)", method, _path_of(path),
                    status, attempt, self.max_retries + 1)
        if attempt > self.max_retries:
          raise _error_from(data, status)
        self._sleep(self.backoff_s * 2 ** (attempt - 1))
        continue
      if status >= 400:
        error = _error_from(data, status)
        if _POST_LIMIT_CODE in error.subcodes:
          raise PostLimitReached(status, error.message, error.subcodes)
        raise error
      return data.get("response", {})

  def _pace(self) -> None:
    """Waits, if need be, so that no more than `calls_per_minute` requests
    go out in any minute: the per-IP limit has no header to warn of it.
    (The request is counted when it is done, by the caller.)"""
    now = self._pace_clock()
    while self._recent and self._recent[0] <= now - _MINUTE_S:
      self._recent.popleft()
    if len(self._recent) >= self.calls_per_minute > 0:
      wait = self._recent[0] + _MINUTE_S - now
      log.info("%d calls in the last minute: waiting %.1fs",
               len(self._recent), wait)
      self.waits.append(wait)
      self._sleep(wait)
      self._recent.popleft()

  # -- reads ---------------------------------------------------------------

  # Listings are read page by page, up to `max_pages` pages.

  def submissions(self, blog: str, max_pages: int = 5) -> list:
    """Asks (and other submissions) waiting for an answer, newest first."""
    posts = []
    for _ in range(max_pages):
      page = self.api.submission(blog, offset=len(posts), npf=True).get(
          "posts", [])
      posts += page
      if len(page) < PAGE_SIZE:
        break
    return posts

  def notifications(self, blog: str, since: Optional[float] = None,
                    max_pages: int = 10) -> list:
    """The blog's activity, newest first, back to timestamp `since` (items
    at `since` included), one item per event.

    Asks `rollups=false`: the API rolls up similar items by default (the
    docs' `rollups` parameter), and a rolled-up item keeps one sender of
    several. Follows `_links.next`; a full page without `_links` (which
    real Tumblr sends, tumblr/docs issue #43) is followed too, with
    `before` its oldest item's timestamp plus one and the items already
    seen left out, so an item sharing the page boundary's second is kept.
    """
    items, seen, params = [], set(), {}
    for _ in range(max_pages):
      data = self.api.notifications(blog, rollups="false", **params)
      page = [n for n in data.get("notifications", []) if isinstance(n, dict)]
      fresh = [n for n in page if _item_key(n) not in seen]
      seen.update(_item_key(n) for n in fresh)
      items += [n for n in fresh
                if since is None or float(n.get("timestamp") or 0) >= since]
      following = _next_query(data)
      oldest = min((float(n.get("timestamp") or 0) for n in page),
                   default=None)
      if oldest is None or not fresh or (since is not None and oldest < since):
        break
      if following is not None:
        params = {"before": following.get("before", oldest)}
      elif len(page) >= PAGE_SIZE:
        params = {"before": int(oldest) + 1}
      else:
        break
    return items

  def drafts(self, blog: str, max_pages: int = 50) -> list:
    """The blog's drafts, newest first, following `before_id`."""
    posts, params = [], {}
    for _ in range(max_pages):
      page = self.api.drafts(blog, npf=True, **params).get("posts", [])
      posts += page
      if len(page) < PAGE_SIZE:
        break
      params = {"before_id": min(int(p["id"]) for p in page)}
    return posts

  def notes(self, blog: str, post_id: str, mode: str = "all",
            max_pages: int = 5) -> list:
    """A post's notes, newest first (see the API's `mode`s)."""
    notes, params = [], {"id": str(post_id), "mode": mode}
    for _ in range(max_pages):
      data = self.send("GET", f"/v2/blog/{_blog_id(blog)}/notes",
                       params=params)
      notes += data.get("notes", [])
      following = _next_query(data)
      if following is None or not data.get("notes"):
        break
      # Real Tumblr's `_links.next` carries the cursor alone: `id` and
      # `mode` are kept (issue 40, item 10).
      params = {**params, **following}
    return notes

  def dashboard(self, since_id: Optional[str] = None, limit: int = 20) -> list:
    kw = {"limit": limit, "npf": True}
    if since_id:
      kw["since_id"] = since_id
    return self.api.dashboard(**kw).get("posts", [])

  def queue(self, blog: str, limit: int = 50) -> list:
    """The first `limit` queued posts, a page of at most 20 at a time: the
    route takes `limit` 1 to 20 only (the API docs' `/posts/queue`)."""
    posts = []
    while len(posts) < limit:
      size = min(PAGE_SIZE, limit - len(posts))
      page = self.api.queue(blog, npf=True, limit=size,
                            offset=len(posts)).get("posts", [])
      posts += page
      if len(page) < size:
        break
    return posts

  def posts(self, blog: str, **kw) -> list:
    return self.api.posts(blog, **kw).get("posts", [])

  def recent_posts(self, blog: str, count: int = 60) -> list:
    """The blog's newest `count` published posts (NPF), a page at a time."""
    posts = []
    while len(posts) < count:
      limit = min(PAGE_SIZE, count - len(posts))
      page = self.posts(blog, offset=len(posts), npf=True, limit=limit)
      posts += page
      if len(page) < limit:
        break
    return posts

  def get_post(self, blog: str, post_id: str) -> Optional[dict]:
    """The post in NPF with its state, or None if it does not exist."""
    try:
      return self.send("GET", f"/v2/blog/{_blog_id(blog)}/posts/{post_id}")
    except TumblrError as e:
      if e.status == 404:
        return None
      raise

  def user_limits(self) -> Optional[dict]:
    """`/user/limits`, or None where the server does not have it."""
    try:
      return self.send("GET", "/v2/user/limits").get("user")
    except TumblrError as e:
      if e.status in (404, 405, 501):
        return None
      raise

  def user_info(self) -> dict:
    return self.send("GET", "/v2/user/info").get("user", {})

  def following(self, max_pages: int = 250) -> list:
    """The names of the blogs the user follows."""
    names = []
    for _ in range(max_pages):
      page = self.send("GET", "/v2/user/following",
                       params={"offset": len(names), "limit": PAGE_SIZE}
                       ).get("blogs", [])
      names += [str(b.get("name")) for b in page if isinstance(b, dict)]
      if len(page) < PAGE_SIZE:
        break
    return names

  # -- writes --------------------------------------------------------------

  def create_post(self, blog: str, *, content: list, tags=(),
                  state: str = "published", layout=None, slug: str = "",
                  media: Optional[dict] = None, landed=None) -> str:
    body = {"content": content, "state": state, "tags": ",".join(tags)}
    if layout:
      body["layout"] = layout
    if slug:
      body["slug"] = slug
    resp = self.send("POST", f"/v2/blog/{_blog_id(blog)}/posts",
                     json_body=body, media=media, landed=landed)
    return str(resp.get("id") or resp.get("id_string"))

  def edit_post(self, blog: str, post_id: str, *, content: list, tags=(),
                state: str = "published", layout=None, landed=None,
                media: Optional[dict] = None,
                extra: Optional[dict] = None) -> str:
    body = {"content": content, "state": state, "tags": ",".join(tags),
            **(extra or {})}
    if layout is not None:
      body["layout"] = layout
    resp = self.send("PUT", f"/v2/blog/{_blog_id(blog)}/posts/{post_id}",
                     json_body=body, media=media, landed=landed)
    return str(resp.get("id") or resp.get("id_string") or post_id)

  def answer_legacy(self, blog: str, post_id: str, *, answer_html: str,
                    tags=(), state: str = "published", landed=None) -> str:
    """Answers an ask stored in the legacy format through `/post/edit` with
    `answer=` (HTML), as the original bot (nostalgebraist-autoresponder)
    did: Tumblr refuses an NPF edit of a post not created in NPF, unless it
    is a legacy text post (the API docs' NPF edit route)."""
    body = {"id": str(post_id), "answer": answer_html, "state": state,
            "tags": ",".join(tags)}
    resp = self.send("POST", f"/v2/blog/{_blog_id(blog)}/post/edit",
                     json_body=body, landed=landed)
    return str(resp.get("id") or resp.get("id_string") or post_id)

  def reblog(self, blog: str, *, parent_uuid: str, parent_id: str,
             reblog_key: str, content: list, tags=(),
             state: str = "published", slug: str = "",
             media: Optional[dict] = None, landed=None) -> str:
    body = {"content": content, "state": state, "tags": ",".join(tags),
            "parent_tumblelog_uuid": parent_uuid,
            "parent_post_id": str(parent_id), "reblog_key": reblog_key}
    if slug:
      body["slug"] = slug
    resp = self.send("POST", f"/v2/blog/{_blog_id(blog)}/posts",
                     json_body=body, media=media, landed=landed)
    return str(resp.get("id") or resp.get("id_string"))

  def follow(self, blog: str) -> bool:
    """Follows `blog`; False if Tumblr did not (a blog that blocked the
    user answers 200 with `followed` false, tumblr/docs issue #69)."""
    resp = self.send("POST", "/v2/user/follow",
                     json_body={"url": f"https://{blog}.tumblr.com/"})
    return not (isinstance(resp, dict) and resp.get("followed") is False)

  def unfollow(self, blog: str) -> None:
    self.send("POST", "/v2/user/unfollow",
              json_body={"url": f"https://{blog}.tumblr.com/"})

  def delete_post(self, blog: str, post_id: str) -> None:
    self.send("POST", f"/v2/blog/{_blog_id(blog)}/post/delete",
              json_body={"id": str(post_id)})


def _item_key(item: dict) -> tuple:
  """What tells one notification from another: its id, else its fields."""
  if item.get("id"):
    return ("id", str(item["id"]))
  return tuple(sorted((k, str(v)) for k, v in item.items()))


def _next_query(data: dict) -> Optional[dict]:
  """The query of a listing's `_links.next`, or None on the last page."""
  link = ((data.get("_links") or {}).get("next") or {})
  query = link.get("query_params")
  return dict(query) if isinstance(query, dict) else None


def _blog_id(blog: str) -> str:
  """Blog names as pytumblr2 sends them (`name.tumblr.com`)."""
  return blog if "." in blog else blog + ".tumblr.com"


@dataclasses.dataclass(frozen=True)
class Tier:
  """How freely the bot posts, by the posts left today."""
  name: str
  share: float  # of jobs.max_per_pass taken per pass
  answers_only: bool  # only answers to people (no queue, no dashboard)


@dataclasses.dataclass
class PostBudget:
  """The daily posting cap, spent more carefully as it runs low.

  `used_since(t)` counts the bot's posts since t (the state store's ledger,
  our clock); `last_post()` is the time of its last one. `server` is what
  `/user/limits` said about posts, if anything ({"remaining", "reset_at"},
  on Tumblr's clock); `tumblr_offset()` is Tumblr's clock minus ours. The
  day is Tumblr's calendar day.
  """
  used_since: Callable[[float], int]
  last_post: Callable[[], Optional[float]]
  cap: int = DAILY_POST_CAP
  slowdown_below: int = 25
  answers_only_below: int = 5
  clock: Callable[[], float] = time.time
  server: Optional[dict] = None
  tumblr_offset: Callable[[], float] = lambda: 0.0

  def day_bounds(self, now: float) -> tuple:
    """Start and end of the cap's day on our clock: the calendar day in US
    Eastern time on Tumblr's clock (bot.tumblr.post_day), ending at the
    server's reset when it names one."""
    offset = self.tumblr_offset()
    start, end = post_day.day_bounds(now + offset)
    start, end = start - offset, end - offset
    reset_at = (self.server or {}).get("reset_at")
    if reset_at and float(reset_at) - offset > now:
      end = float(reset_at) - offset
      # The reset is in whole seconds: a post made in the second the day
      # began still counts.
      start = post_day.day_bounds(end - 1 + offset)[0] - offset
      start -= _RESET_SLACK_S
    return start, end

  def remaining(self, now: Optional[float] = None) -> int:
    now = self.clock() if now is None else now
    start, _ = self.day_bounds(now)
    left = self.cap - self.used_since(start)
    server_left = (self.server or {}).get("remaining")
    if server_left is not None:
      left = min(left, int(server_left))
    return max(0, left)

  def tier(self, now: Optional[float] = None) -> Tier:
    left = self.remaining(now)
    if left <= 0:
      return Tier("stopped", 0.0, True)
    if left < self.answers_only_below:
      return Tier(f"{left} posts left today: answers only", 0.42, True)
    if left < self.slowdown_below:
      return Tier(f"{left} posts left today: slower", 0.62, False)
    return Tier("normal", 1.0, False)

  def check(self) -> None:
    """Raises PostCapDeferred unless a post may go out now."""
    now = self.clock()
    left = self.remaining(now)
    if left <= 0:
      raise PostCapDeferred(f"daily cap of {self.cap} posts reached")
    if left > self.slowdown_below:
      return
    _, end = self.day_bounds(now)
    spacing = (end - now) / left
    last = self.last_post()
    if last is not None and now - last < spacing:
      raise PostCapDeferred(
          f"near the daily cap ({left} left): spacing posts "
          f"{spacing:.0f}s apart, next in {spacing - (now - last):.0f}s")

  def spent(self) -> None:
    """Counts one post against the server's view until it is refreshed."""
    if self.server and self.server.get("remaining") is not None:
      self.server["remaining"] = int(self.server["remaining"]) - 1


def post_limits(limits: Optional[dict]) -> Optional[dict]:
  """The posts entry of `/user/limits` ({"remaining", "reset_at", ...})."""
  if not limits:
    return None
  for name in ("posts", "posts_per_day", "post"):
    if isinstance(limits.get(name), dict):
      return dict(limits[name])
  return None

