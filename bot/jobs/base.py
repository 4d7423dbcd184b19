"""What every job kind shares: the desk it works at, its context record, and
the plans that reblog or create a post.

A job kind (`JobKind`) holds what is particular to one kind of job: how its
jobs are found and which are eligible (its module's `discover`, given a
`Desk`: the pass's client, store, lists and config), the order they are
taken in (`priority`), what needs no model (`immediate`: commands, spam
deletions), the prompt and what the user said (`context`), what must go to
a person (`review_reason`), what the model may veto before and after
writing (`prefilter`, `gate`), and the write request that posts the chosen
text (`plan`). The loop (bot.loop) runs the same pass for every kind.
"""

import dataclasses
import hashlib
import logging
import os
import random
import re
import signal
import unicodedata
from typing import Callable, Optional

from bot.filters import WordFilter
from bot.lists import Lists
from bot.records import CREATE, EDIT, REBLOG, Job, Parent, PassReport, Plan
from bot.state import Store
from bot.tumblr import npf
from bot.tumblr.client import RateLimited, TumblrClient, TumblrError
from gpt2.errors import UserError

# How Tumblr answers a request about a blog that blocked the user.
BLOCKED = "You do not have permission to view this blog"
# The followed blogs are listed again after this long.
_FOLLOWING_TTL_S = 6 * 3600

log = logging.getLogger("bot.jobs")

# Where the bot can be killed on purpose (config key `crash_at`, as
# "POINT" or "POINT:KIND"), to test that a restart neither loses a job nor
# posts it twice.
CRASH_POINTS = (
    "after_plan",    # the plan is stored, no write request sent
    "before_send",   # the job is marked sending, the request not yet sent
    "after_send",    # the API confirmed the post, the store does not know
    "after_accept",  # the operator's accepted draft is planned, not sent
)


@dataclasses.dataclass
class Desk:
  """What a job kind may use during one pass."""
  blog: str
  config: object  # the bot's ml_collections config (configs/bot.py)
  client: TumblrClient
  store: Store
  report: PassReport
  now: float
  dry_run: bool
  rng: random.Random
  lists: Lists = Lists()
  words: WordFilter = WordFilter.from_words(())  # the word list
  trace: Callable[[dict], None] = lambda entry: None
  model: object = None  # the generator and scorer (bot.ml)
  mood: object = None  # the pass's bot.mood_log.MoodLog
  queue_next: Optional[float] = None  # when the queue publishes next
  planned: list = dataclasses.field(default_factory=list)  # keys to carry out
  _following: Optional[set] = None

  def record(self, key: str, kind: str, payload: dict,
             user: Optional[str] = None) -> bool:
    """Records a job (once: a known key is left alone); True if new."""
    if self.store.record_job(key, kind, payload, user=user):
      self.report.new_jobs.append(key)
      return True
    return False

  def plan(self, key: str, plan: Plan) -> None:
    """Plans a job that needs no model (a deletion); the loop carries it
    out after discovery."""
    self.store.save_plan(key, plan)
    self.planned.append(key)

  def skip(self, key: str, kind: str, reason: str) -> None:
    """A recorded job the bot will not do: skipped, traced, reported."""
    log.info("%s: skipped: %s", key, reason)
    self.store.skip(key, reason)
    self.report.skipped.append(key)
    self.trace({"t": self.now, "job": key, "kind": kind, "skipped": reason,
                "dry_run": self.dry_run})

  def following(self) -> set:
    """The blogs the bot follows (listed again every few hours, or after
    the bot followed or unfollowed someone)."""
    if self._following is None:
      cached = self.store.get_meta("following")
      if cached and self.now - cached["t"] < _FOLLOWING_TTL_S:
        self._following = set(cached["names"])
      else:
        self._following = set(self.client.following())
        self.store.set_meta("following", {"t": self.now,
                                          "names": sorted(self._following)})
    return self._following

  def forget_following(self) -> None:
    self._following = None
    self.store.set_meta("following", None)

  def blog_posts(self, blog: str, **kw) -> Optional[list]:
    """`client.posts(blog, ...)`, or None if `blog` blocked the bot: the
    block is remembered and that blog is not queried again."""
    if self.store.is_blocked(blog):
      return None
    try:
      return self.client.posts(blog, **kw)
    except TumblrError as e:
      if e.status == 403 and BLOCKED.lower() in str(e).lower():
        log.info("%s blocked the bot; not querying it again", blog)
        self.store.mark_blocked(blog)
        return None
      raise

  def unreadable(self, e: TumblrError) -> Optional[str]:
    """Why one item cannot be read (a deleted post, a blog gone private),
    or None for errors that concern more than the item (keys, limits, a
    server or network failure), which stop the pass instead."""
    if isinstance(e, RateLimited) or e.status in (401, 429):
      return None
    if e.status == 404:
      return "not found: deleted, or its blog is gone"
    if 400 <= e.status < 500:
      return str(e)
    return None

  def crash_point(self, point: str, kind: str) -> None:
    """Kills the process here if the config says so (crash tests)."""
    target = self.config.crash_at
    if target and target in (point, f"{point}:{kind}"):
      log.warning("crash point %s (%s): killing the process", point, kind)
      logging.shutdown()
      os.kill(os.getpid(), signal.SIGKILL)


@dataclasses.dataclass
class Context:
  """One job made ready for the generator."""
  job: Job
  prompt: str  # the text the generator continues
  user_text: str  # what the user said ("" for original posts)
  author: str  # whom the bot answers ("" for original posts)
  shown: str  # the prompt as a reader of the feed sees it
  moves_mood: bool  # whether what the user said forces the mood
  user_sentiment: Optional[float] = None


class JobKind:
  """What is particular to one kind of job. Subclasses set `name` and
  override `context` and `plan`, and the other hooks where they differ."""
  name = ""
  post_state = "published"  # where its posts go when nothing holds them
  answers = True  # an answer to someone (posted even when posts run low)

  def priority(self, job: Job):
    """Sort key: the jobs of a kind are taken in this order (oldest first)."""
    return job.created

  def immediate(self, job: Job, desk: Desk) -> Optional[Plan]:
    """A plan that needs no model (a command, say), or None."""
    del job, desk
    return None

  def context(self, job: Job, blog: str, now: float) -> Context:
    raise NotImplementedError

  def mood_time(self, job: Job, desk: Desk) -> float:
    """When the post will be read: the mood of that time chooses it."""
    del job
    return desk.now

  def review_reason(self, ctx: Context, desk: Desk) -> Optional[str]:
    """Why this job's post must wait for a person (a draft), or None."""
    if desk.lists.screened(ctx.job.user):
      return f"{ctx.job.user} is a screened user"
    limit = int(desk.config.asks.review_chars)
    if len(ctx.user_text) > limit:
      return f"the input is over {limit} characters"
    return others_hold(self.others_text(ctx), ctx.author, desk)

  def others_text(self, ctx: Context) -> str:
    """What others wrote that this job's post carries when published (the
    ask it answers, the reply it quotes): screened like the bot's own."""
    return ctx.user_text

  def screen_others(self, ctx: Context, desk: Desk) -> Optional[str]:
    """A reason never to answer, from what others wrote (`others_veto`)."""
    return others_veto(self.others_text(ctx), ctx.author, desk)

  def prefilter(self, ctx: Context, desk: Desk) -> Optional[str]:
    """A reason not to write for this job at all, or None."""
    del ctx, desk
    return None

  def plan(self, ctx: Context, text: str, tags: list, state: str) -> Plan:
    raise NotImplementedError

  def gate(self, winner, ctx: Context, desk: Desk) -> Optional[str]:
    """A reason not to post the chosen candidate, or None (post it)."""
    del winner, ctx, desk
    return None


# ---- what others wrote ------------------------------------------------------

OTHERS_HITS = ("skip", "draft")


def check_others_hits(config) -> str:
  """`review.others_hits`, or a UserError naming the allowed values."""
  value = str(config.review.get("others_hits", "skip"))
  if value not in OTHERS_HITS:
    raise UserError(f"config key review.others_hits is {value!r}: use "
                    + " or ".join(repr(v) for v in OTHERS_HITS))
  return value


def _whose(author: str) -> str:
  return f"what {author or 'the anonymous asker'} wrote"


def others_veto(text: str, author: str, desk: Desk) -> Optional[str]:
  """Why what others wrote (`text`, by `author`) must never be posted, or
  None: it names a user on the avoid list, or (`review.others_hits` =
  "skip") it hits the word list."""
  if not text:
    return None
  named = desk.lists.names_avoided_user(text)
  if named:
    return f"{_whose(author)} names {named}, who is on the avoid list"
  if check_others_hits(desk.config) == "skip":
    hits = desk.words.hits(text)
    if hits:
      return f"{_whose(author)} hits the word list ({', '.join(hits)})"
  return None


def others_hold(text: str, author: str, desk: Desk) -> Optional[str]:
  """Why an answer carrying what others wrote must wait for a person, or
  None: it names a screened user, or (`review.others_hits` = "draft") it
  hits the word list."""
  if not text:
    return None
  named = desk.lists.names_screened_user(text)
  if named:
    return f"{_whose(author)} names {named}, a screened user"
  hits = desk.words.hits(text)
  if hits:  # "skip" vetoed it before it was written
    return f"{_whose(author)} hits the word list ({', '.join(hits)})"
  return None


_ZERO_WIDTH = {"Mn", "Me", "Cf"}  # joiners, variation selectors, marks


def word_count(text: str) -> int:
  """Words, counted width-aware: each wide character (CJK, emoji and other
  symbols) counts 2, zero-width ones 0, and any other run between spaces 1."""
  text = re.sub(r"<[^>]*>|\[[^\]]*\]", " ", text)  # markup and placeholders
  count = 0
  for token in text.split():
    narrow = False
    for ch in token:
      if unicodedata.category(ch) in _ZERO_WIDTH:
        continue
      if (unicodedata.east_asian_width(ch) in ("W", "F")
          or unicodedata.category(ch) == "So"):
        count += 2
      elif ch.isalnum():
        narrow = True
    count += narrow
  return count


def reply_cost(posts_in_thread: int, text: str) -> float:
  """The original's cost of answering: +1 a post in the thread, -0.1 a word
  (the first 50), +6 under 4 words and +10 more for one word or none."""
  words = word_count(text)
  cost = posts_in_thread - 0.1 * min(words, 50)
  if words < 4:
    cost += 6
  if words <= 1:
    cost += 10
  return round(cost, 2)


# ---- plans ---------------------------------------------------------------------


_SLUG_WORDS = re.compile(r"[a-z0-9]+")


def slug_for(job_key: str, text: str) -> str:
  """The permalink slug of a new post: its first words, as Tumblr makes
  one, and a suffix from the job key that tells the bot's post apart from
  any other with the same words."""
  words = _SLUG_WORDS.findall(text.lower())[:6]
  suffix = hashlib.sha256(job_key.encode()).hexdigest()[:8]
  return "-".join(words + [suffix])


def parent_of(post: dict) -> Parent:
  return Parent(id=npf.post_id(post), uuid=npf.poster_uuid(post),
                reblog_key=str(post.get("reblog_key") or ""),
                blog=npf.poster(post))


def new_post_plan(job: Job, content: list, text: str, tags: list, state: str,
                  parent: Optional[Parent]) -> Plan:
  """A reblog of `parent` (or, without one, an original post) that adds
  `content`; a job that already made a draft edits that draft instead."""
  if job.post_id:
    # A retried draft: the new answer replaces the draft in place.
    return Plan(action=EDIT, state=state, text=text, tags=tags,
                content=content, layout=[], post_id=job.post_id,
                parent=parent)
  return Plan(action=REBLOG if parent else CREATE, state=state, text=text,
              tags=tags, content=content, layout=[], parent=parent,
              slug=slug_for(job.key, text))
