"""Original posts: written to keep the queue at `queue_target` posts.

Each pass adds at most `queue_per_pass` jobs, counting the posts in the
queue and the original-post jobs not yet sent (a dry run, which queues
nothing, counts its own planned posts of the last day). Payload: {}.
"""

import uuid

from bot import text_format
from bot.jobs.base import Context, Desk, JobKind, new_post_plan
from bot.records import Job, Plan
from bot.tumblr import npf


class Originals(JobKind):
  name = "original"
  post_state = "queue"
  answers = False

  def context(self, job: Job, blog: str, now: float) -> Context:
    return Context(job=job, prompt=text_format.text_post_prompt(blog, now),
                   user_text="", author="", shown="(original post)",
                   moves_mood=False)

  def plan(self, ctx: Context, text: str, tags: list, state: str) -> Plan:
    return new_post_plan(ctx.job, npf.text_to_content(text), text, tags,
                         state, parent=None)


ORIGINAL = Originals()


def discover(desk: Desk) -> None:
  if not desk.config.jobs.queue:
    return
  if desk.dry_run:
    day_ago = desk.now - 86400
    queued = sum(1 for j in desk.store.jobs(("dry_run",), kind=ORIGINAL.name)
                 if j.updated >= day_ago)
  else:
    queued = len(desk.client.queue(desk.blog))
  pending = desk.store.count_jobs(("seen", "chosen", "sending"),
                                  kind=ORIGINAL.name)
  missing = int(desk.config.queue_target) - queued - pending
  for _ in range(max(0, min(missing, int(desk.config.queue_per_pass)))):
    desk.record(f"original:{uuid.uuid4().hex[:16]}", ORIGINAL.name, {})
