"""Every post of a blog to JSONL: once each, incrementally, resumably.

The output has one post a line, exactly as the API returned it (NPF, with
note counts). Beside it, `<out>.state.json` records how far each blog's scrape
got, so that:

- a first run pages from the newest post back to the oldest (`before=`);
- a run that was interrupted continues where the last saved page ended;
- once the whole blog is in, later runs ask only for posts newer than the
  newest one seen (`after=`, oldest first).

Each page is appended and flushed before the state moves past it, and the
ids already in the file are skipped, so an interruption at any point
neither loses nor duplicates a post (a line cut off by a crash is dropped on
the next run and its page fetched again). On HTTP 429 the scraper waits for
the reset the rate-limit headers give, then asks again.
"""

import dataclasses
import glob
import json
import os
import sys
import time
import urllib.parse
from typing import Callable, Dict, Iterable, List, Optional, Set

import pytumblr2
import requests
import tqdm
from pytumblr2.request import TumblrRequest

from atomic_files import atomic_write
from bot.tumblr import fields
from bot.tumblr.client import quiet_chatty_loggers
from bot.tumblr.errors import UserError

PAGE_SIZE = 20  # the API's largest page
_SERVER_ERROR_RETRIES = 5
_DEFAULT_WAIT_S = 60  # when a 429 names no reset at all


def post_id(post: dict) -> Optional[str]:
  value = post.get("id_string") or post.get("id")
  return str(value) if value is not None else None


class PostStore:
  """A JSONL file of posts, each once, and the scrape state beside it."""

  def __init__(self, path: str):
    self.path = path
    self.state_path = path + ".state.json"
    self.ids: Set[str] = set()
    self.count_by_blog: Dict[str, int] = {}
    self.state: Dict[str, dict] = {}
    self._load()

  def _load(self):
    directory = os.path.dirname(os.path.abspath(self.path))
    if not os.path.isdir(directory):
      raise UserError(f"the folder of --out {self.path} does not exist")
    if not os.path.exists(self.path):
      return  # a state without its posts file describes nothing
    good_bytes, unterminated = 0, False
    with open(self.path, "rb") as f:
      for line in f:
        try:
          post = json.loads(line)
        except ValueError:
          if not line.endswith(b"\n"):
            break  # the last line was cut off mid-write; fetched again
          raise UserError(f"{self.path} has a line that is not JSON "
                          f"(byte {good_bytes}); is it a posts file?") from None
        good_bytes += len(line)
        unterminated = not line.endswith(b"\n")
        if isinstance(post, dict) and post_id(post):
          self._remember(post)
    if good_bytes < os.path.getsize(self.path):
      with open(self.path, "r+b") as f:
        f.truncate(good_bytes)
    if unterminated:  # a whole post whose newline never made it to disk
      with open(self.path, "ab") as f:
        f.write(b"\n")
    if os.path.exists(self.state_path):
      try:
        with open(self.state_path, encoding="utf-8") as f:
          self.state = json.load(f)
      except ValueError:
        self.state = {}  # a torn state only costs pages fetched again

  def _remember(self, post: dict):
    self.ids.add(post_id(post))
    blog = blog_of(post)
    self.count_by_blog[blog] = self.count_by_blog.get(blog, 0) + 1

  def append(self, posts: Iterable[dict]) -> List[dict]:
    """Writes the posts not already stored; returns them."""
    new = []
    for post in posts:
      if isinstance(post, dict) and post_id(post) and (
          post_id(post) not in self.ids):
        new.append(post)
        self._remember(post)
    if new or not os.path.exists(self.path):
      with open(self.path, "a", encoding="utf-8") as f:
        for post in new:
          f.write(json.dumps(post, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return new

  def save_state(self):
    with atomic_write(self.state_path) as f:
      json.dump(self.state, f)


def blog_of(post: dict) -> str:
  blog = post.get("blog")
  name = blog.get("name") if isinstance(blog, dict) else None
  return fields.string(name or post.get("blog_name")) or "unknown"


# ---- talking to the API -----------------------------------------------------


def _reset_seconds(headers) -> int:
  """Seconds until the exhausted rate-limit window resets, from headers."""
  headers = headers or {}
  waits = []
  for key, value in headers.items():
    if key.lower().startswith("x-ratelimit-") and key.lower().endswith(
        "-remaining") and fields.integer(value) == 0:
      reset = headers.get(key[:-len("remaining")] + "Reset") or headers.get(
          key[:-len("remaining")] + "reset")
      if fields.integer(reset) is not None:
        waits.append(fields.integer(reset))
  if not waits and fields.integer(headers.get("Retry-After")) is not None:
    waits.append(fields.integer(headers.get("Retry-After")))
  return max(waits) if waits else _DEFAULT_WAIT_S


def _error_status(response) -> Optional[int]:
  """The HTTP status of an error envelope pytumblr2 handed back, else None."""
  if isinstance(response, dict) and isinstance(response.get("meta"), dict):
    status = fields.integer(response["meta"].get("status"))
    if status is not None and status >= 400:
      return status
  return None


def _error_detail(response: dict) -> str:
  for error in fields.dicts(response.get("errors")):
    if fields.string(error.get("detail")):
      return error["detail"]
  return fields.string(response["meta"].get("msg"))


class Api:
  """API calls that wait out 429s and turn refusals into one-line errors."""

  def __init__(self, client, host: str,
               sleep: Callable[[float], None] = time.sleep,
               report: Callable[[str], None] = None):
    self.client, self.host, self.sleep = client, host, sleep
    self.report = report or (lambda message: tqdm.tqdm.write(
        message, file=sys.stderr))
    self.requests = 0
    self.rate_limit_waits = 0

  def call(self, what: str, method: str, *args, **kwargs) -> dict:
    failures = 0
    while True:
      self.requests += 1
      try:
        response = getattr(self.client, method)(*args, **kwargs)
      except requests.RequestException as e:
        raise UserError(f"cannot reach the Tumblr API at {self.host}: "
                        f"{type(e).__name__}") from None
      status = _error_status(response)
      if status is None:
        return response
      if status == 429:
        wait = _reset_seconds(self.client.request.last_response_headers)
        self.rate_limit_waits += 1
        self.report(f"rate limited by the Tumblr API; waiting {wait} s for "
                    "the limit to reset")
        self.sleep(wait)
        continue
      if status in (401, 403):
        raise UserError(f"the Tumblr API at {self.host} refused the "
                        f"credentials ({status}: {_error_detail(response)}); "
                        "check the consumer key/secret and OAuth token")
      if status == 404:
        raise UserError(f"{what} not found on {self.host} (404)")
      if status >= 500 and failures < _SERVER_ERROR_RETRIES:
        failures += 1
        self.sleep(2 ** failures)
        continue
      raise UserError(f"the Tumblr API answered {status} for {what}: "
                      f"{_error_detail(response)}")


class _ReadTransport(TumblrRequest):
  """pytumblr2's transport with a timeout on every request.

  The scraper only reads: a write is refused here rather than sent through
  pytumblr2's own methods, which would wait for an answer for ever.
  """

  def __init__(self, credentials, host: str, timeout_s: float):
    super().__init__(*credentials.client_args(), host=host)
    self.timeout_s = timeout_s

  def get(self, url, params):
    # The query as pytumblr2 builds it, so the OAuth signature is the same.
    url = self.host + url
    if params:
      url += "?" + urllib.parse.urlencode(params)
    return self.json_parse(requests.get(
        url, allow_redirects=False, headers=self.headers, auth=self.oauth,
        timeout=self.timeout_s))

  def _refuse(self, *args, **kwargs):
    raise NotImplementedError("the scraper only reads from the Tumblr API")

  post = put = delete = _refuse


def make_client(credentials, host: str, timeout_s: float = 30.0):
  """A pytumblr2 client for `host` (https://api.tumblr.com or a local one)
  whose every request gives up after `timeout_s` seconds without an answer.

  The HTTP and OAuth libraries are kept from logging keys, as for the bot's
  client (`bot.tumblr.client.quiet_chatty_loggers`).
  """
  quiet_chatty_loggers()
  client = pytumblr2.TumblrRestClient(*credentials.client_args(), host=host)
  client.request = _ReadTransport(credentials, host, timeout_s)
  return client


# ---- scraping ---------------------------------------------------------------


@dataclasses.dataclass
class ScrapeResult:
  new_posts: int
  total_posts: int  # of this blog, in the file
  requests: int
  rate_limit_waits: int


def scrape_blog(api: Api, blog: str, out_path: str, *,
                progress: bool = True,
                on_page: Optional[Callable[[List[dict]], None]] = None
               ) -> ScrapeResult:
  """Appends `blog`'s posts not yet in `out_path` to it.

  `on_page` is called with each page's new posts after they are stored (a
  caller can report, or stop the scrape, there).
  """
  blog = blog.strip().lower()
  if blog.endswith(".tumblr.com"):
    blog = blog[:-len(".tumblr.com")]
  store = PostStore(out_path)
  store.append([])  # an empty blog still gets its (empty) file
  requests_before = api.requests
  waits_before = api.rate_limit_waits
  info = api.call(f"blog {blog}", "blog_info", blog).get("blog", {})
  state = store.state.setdefault(blog, {"before": None, "backfill_done": False,
                                        "newest": None})
  known = store.count_by_blog.get(blog, 0)
  bar = tqdm.tqdm(total=max(fields.integer(info.get("posts")) or 0, known),
                  initial=known, unit="post", desc=blog, disable=not progress,
                  file=sys.stderr)
  new_count = 0

  def fetch(**params):
    """(the page's posts, those not stored before, their timestamps)."""
    nonlocal new_count
    page = api.call(f"blog {blog}", "posts", blog, limit=PAGE_SIZE, npf=True,
                    notes_info=True, reblog_info=True, **params)
    posts = [p for p in fields.dicts(page.get("posts"))
             if fields.integer(p.get("timestamp")) is not None]
    new = store.append(posts)
    new_count += len(new)
    bar.total = max(bar.total, store.count_by_blog.get(blog, 0))
    bar.update(len(new))
    stamps = [int(p["timestamp"]) for p in posts]
    if stamps:
      state["newest"] = max(stamps + [state["newest"] or 0])
    return posts, new, stamps

  try:
    # Newest to oldest until the blog's first post.
    while not state["backfill_done"]:
      before = {} if state["before"] is None else {"before": state["before"]}
      posts, new, stamps = fetch(**before)
      if not posts:
        state["backfill_done"] = True
      else:
        # Ask again from the oldest second seen, so posts sharing it are not
        # skipped; once it gives nothing new, move past it.
        state["before"] = min(stamps) + 1 if new else min(stamps)
      store.save_state()
      if on_page:
        on_page(new)
    # Then anything newer than the newest post seen.
    after = (state["newest"] or 0) - 1
    while True:
      posts, new, stamps = fetch(after=after, sort="asc")
      store.save_state()
      if on_page:
        on_page(new)
      if not posts:
        break
      after = max(stamps) - 1 if new else max(stamps)
  finally:
    bar.close()
  return ScrapeResult(new_count, store.count_by_blog.get(blog, 0),
                      api.requests - requests_before,
                      api.rate_limit_waits - waits_before)


def import_tumblr_backup(folder: str, out_path: str) -> ScrapeResult:
  """Adds the posts of a tumblr-backup output folder (its `json/`) to out."""
  json_dir = os.path.join(folder, "json")
  if not os.path.isdir(json_dir):
    json_dir = folder
  if not os.path.isdir(json_dir):
    raise UserError(f"tumblr-backup folder {folder} does not exist")
  paths = sorted(glob.glob(os.path.join(json_dir, "*.json")))
  if not paths:
    raise UserError(f"no tumblr-backup posts (*.json) in {json_dir}")
  posts = []
  for path in paths:
    try:
      with open(path, encoding="utf-8") as f:
        post = json.load(f)
    except (OSError, ValueError, UnicodeDecodeError) as e:
      tqdm.tqdm.write(f"skipping {path}: {type(e).__name__}", file=sys.stderr)
      continue
    if isinstance(post, dict) and post_id(post):
      posts.append(post)
  posts.sort(key=lambda p: fields.integer(p.get("timestamp")) or 0,
             reverse=True)
  store = PostStore(out_path)
  new = store.append(posts)
  blogs = {blog_of(p) for p in posts}
  return ScrapeResult(len(new), sum(store.count_by_blog.get(b, 0)
                                    for b in blogs), 0, 0)
