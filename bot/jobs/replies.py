"""Replies to the bot's posts and reblogs of them that add a comment: both
are found in the blog's notifications.

- A reply (`reply`, also a mention in a reply) is answered by reblogging the
  post it was left on, quoting the reply. Payload: {"post": that post,
  "replier", "reply_text"}.
- A reblog with a comment (`reblog`, also a mention in a post) is answered
  by reblogging that reblog with a comment. Payload: {"post": the reblog,
  "replier": its author}.
One reblog job per post, however the bot heard of it. Notifications are
read back to the newest one the last pass saw.
"""

import logging

from bot import text_format
from bot.jobs.base import Context, Desk, JobKind, new_post_plan, parent_of
from bot.records import Job, Plan
from bot.tumblr import npf

log = logging.getLogger("bot.jobs.replies")

# Notification types that ask for an answer, and the job kind they make.
NOTIFICATION_KINDS = {"reply": "reply", "mention_in_reply": "reply",
                      "reblog_with_content": "reblog",
                      "mention_in_post": "reblog"}
# The meta key of the newest notification time seen.
_CURSOR = "notifications_since"


class Replies(JobKind):
  name = "reply"

  def context(self, job: Job, blog: str, now: float) -> Context:
    p = job.payload
    thread = text_format.post_to_thread(p["post"])
    return Context(job=job, prompt=text_format.reply_prompt(
        thread, p["replier"], p["reply_text"], blog, now),
                   user_text=p["reply_text"], author=p["replier"],
                   shown=f"{p['replier']}: {p['reply_text']}",
                   moves_mood=True)

  def plan(self, ctx: Context, text: str, tags: list, state: str) -> Plan:
    p = ctx.job.payload
    quoted = npf.text_to_content(f"@{p['replier']}: {p['reply_text']}")
    for block in quoted:
      block["subtype"] = "indented"
    return new_post_plan(ctx.job, quoted + npf.text_to_content(text), text,
                         tags, state, parent_of(p["post"]))


class Reblogs(JobKind):
  """Reblogs of the bot's posts with a comment, and dashboard posts."""
  name = "reblog"
  moves_mood = True

  def context(self, job: Job, blog: str, now: float) -> Context:
    post = job.payload["post"]
    thread = text_format.post_to_thread(post)
    said = thread.turns[-1].text if thread.turns else ""
    author = npf.poster(post)
    return Context(job=job, prompt=text_format.reblog_prompt(thread, blog, now),
                   user_text=said, author=author, shown=f"{author}: {said}",
                   moves_mood=self.moves_mood)

  def plan(self, ctx: Context, text: str, tags: list, state: str) -> Plan:
    return new_post_plan(ctx.job, npf.text_to_content(text), text, tags,
                         state, parent_of(ctx.job.payload["post"]))


REPLY = Replies()
REBLOG = Reblogs()


def discover(desk: Desk) -> None:
  if not desk.config.jobs.notifications:
    return
  since = desk.store.get_meta(_CURSOR)
  notes = desk.client.notifications(desk.blog, since=since)
  for note in reversed(notes):  # oldest first
    _record(desk, note)
  newest = max((float(n.get("timestamp") or 0) for n in notes), default=None)
  if newest is not None and (since is None or newest > since):
    desk.store.set_meta(_CURSOR, newest)


def _record(desk: Desk, note: dict) -> None:
  kind = NOTIFICATION_KINDS.get(note.get("type"))
  sender = str(note.get("from_tumblelog_name") or "")
  if kind is None or not sender or sender == desk.blog:
    return
  if kind == REPLY.name:
    blog = str(note.get("target_tumblelog_name") or desk.blog)
    post_id = note.get("target_post_id")
    text = str(note.get("reply_text") or "")
    note_id = note.get("id") or f"{sender}:{post_id}:{note.get('timestamp')}"
    key = f"reply:{note_id}"
  else:
    blog, post_id, text = sender, note.get("post_id"), ""
    key = f"reblog:{post_id}"
  if not post_id or desk.store.job(key) is not None:
    return
  posts = desk.client.posts(blog, id=str(post_id), npf=True)
  if not posts:
    log.info("%s: post %s/%s is gone", key, blog, post_id)
    return
  desk.record(key, kind, {"post": posts[0], "replier": sender,
                          "reply_text": text}, sender)
