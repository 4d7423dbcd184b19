"""What every job kind shares: the desk it works at, its context record, and
the plans that reblog or create a post.

A job kind (`JobKind`) holds what is particular to one kind of job: how its
jobs are found (`discover`, given a `Desk`: the pass's client, store and
config), the prompt and what the user said (`context`), and the write
request that posts the chosen text (`plan`). The loop (bot.loop) runs the
same pass for every kind.
"""

import dataclasses
import hashlib
import logging
import os
import random
import re
import signal
from typing import Optional

from bot.records import CREATE, EDIT, REBLOG, Job, Parent, PassReport, Plan
from bot.state import Store
from bot.tumblr import npf
from bot.tumblr.client import TumblrClient

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

  def record(self, key: str, kind: str, payload: dict,
             user: Optional[str] = None) -> None:
    """Records a job (once: a known key is left alone)."""
    if self.store.record_job(key, kind, payload, user=user):
      self.report.new_jobs.append(key)

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
  override `context` and `plan` (and `gate` to veto a winner)."""
  name = ""
  post_state = "published"  # where its posts go when nothing holds them

  def context(self, job: Job, blog: str, now: float) -> Context:
    raise NotImplementedError

  def plan(self, ctx: Context, text: str, tags: list, state: str) -> Plan:
    raise NotImplementedError

  def gate(self, winner, desk: Desk) -> Optional[str]:
    """A reason not to post the chosen candidate, or None (post it)."""
    del winner, desk
    return None


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
