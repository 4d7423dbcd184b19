"""Original posts: written to keep the queue at `queue_target` posts.

Each pass adds at most `queue_per_pass` jobs, counting the posts in the
queue and the original-post jobs not yet sent (a dry run, which queues
nothing, counts its own planned posts of the last day). Payload: {}.

A queued post is read when the queue publishes it, so it is written in the
mood projected to that time: after the last queued post's
`scheduled_publish_time`, by the usual gap between them (or, without those
times, `queue_interval_hours` a post in the queue).
"""

import uuid

from bot import text_format
from bot.jobs.base import Context, Desk, JobKind, new_post_plan
from bot.records import Job, Plan
from bot.tumblr import fields, npf


class Originals(JobKind):
  name = "original"
  post_state = "queue"
  answers = False

  def mood_time(self, job: Job, desk: Desk) -> float:
    return desk.queue_next or desk.now

  def context(self, job: Job, blog: str, now: float) -> Context:
    return Context(job=job, prompt=text_format.text_post_prompt(blog, now),
                   user_text="", author="", shown="(original post)",
                   moves_mood=False)

  def plan(self, ctx: Context, text: str, tags: list, state: str) -> Plan:
    return new_post_plan(ctx.job, npf.text_to_content(text), text, tags,
                         state, parent=None)


ORIGINAL = Originals()


def next_slot(times: list, queued: int, now: float,
              interval_hours: float) -> float:
  """When a post added to the queue now will be published."""
  if len(times) >= 2:
    gaps = sorted(b - a for a, b in zip(times[:-1], times[1:]))
    return max(times[-1] + gaps[len(gaps) // 2], now)
  if times:
    return max(times[-1] + interval_hours * 3600, now)
  return now + (queued + 1) * interval_hours * 3600


def discover(desk: Desk) -> None:
  if not desk.config.jobs.queue:
    return
  if desk.dry_run:
    day_ago = desk.now - 86400
    queued = sum(1 for j in desk.store.jobs(("dry_run",), kind=ORIGINAL.name)
                 if j.updated >= day_ago)
    times = []
  else:
    posts = desk.client.queue(desk.blog)
    queued = len(posts)
    times = sorted(t for t in (fields.integer(p.get("scheduled_publish_time"))
                               for p in posts) if t)
  desk.queue_next = next_slot(times, queued, desk.now,
                              float(desk.config.queue_interval_hours))
  pending = desk.store.count_jobs(("seen", "chosen", "sending"),
                                  kind=ORIGINAL.name)
  missing = int(desk.config.queue_target) - queued - pending
  for _ in range(max(0, min(missing, int(desk.config.queue_per_pass)))):
    desk.record(f"original:{uuid.uuid4().hex[:16]}", ORIGINAL.name, {})
