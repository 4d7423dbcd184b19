"""Replies to the bot's posts and reblogs of them that add a comment: both
are found in the blog's notifications.

- A reply (`reply`, also a mention in a reply) is answered by reblogging the
  post it was left on, quoting the reply. Payload: {"post": that post,
  "replier", "reply_text", "cost"}.
- A reblog with a comment (`reblog`, also a mention in a post) is answered
  by reblogging that reblog with a comment. Payload: {"post": the reblog,
  "replier": its author, "cost"}.
One reblog job per post, however the bot heard of it. Notifications are
read back to the newest one the last pass saw (the cursor is saved after
each item). A post that cannot be read (its blog blocked the bot, it was
deleted) skips its item with the reason, never the pass. `ask` items
record asks the inbox hides (Tumblr's spam filter), once per post id.

The original's rules: a reply is answered only if the bot follows the
replier, the replier is on `lists.auto_accept_repliers`, the bot wrote the
post and nobody reblogged it before the reply, or the reply starts with
@BOT; never a reply that tags someone else, never anything from an avoided
user, and a reblog only if it adds a comment. Eligible ones are taken
cheapest first by the original's cost (`base.reply_cost`: long threads and
very short texts cost more) and skipped over `replies.max_cost`.
"""

import logging
from typing import Optional

from bot import choice, text_format
from bot.jobs import asks
from bot.jobs.base import (Context, Desk, JobKind, new_post_plan, parent_of,
                           reply_cost)
from bot.records import Job, Plan
from bot.tumblr import fields, html_subset, npf
from bot.tumblr.client import TumblrError

log = logging.getLogger("bot.jobs.replies")

# Notification types that ask for an answer, and the job kind they make.
# Real Tumblr types its items unlike the `types` filter's names: the
# original bot (nostalgebraist-autoresponder, its notification handling)
# asked for `mention_in_post` and received `user_mention` items, the
# mentioning post in `target_post_id`, and from 2022 handled reblogs of its
# posts as `reblog`. The filter's names are kept: harmless if they come.
NOTIFICATION_KINDS = {"reply": "reply", "mention_in_reply": "reply",
                      "user_mention": "reblog", "reblog": "reblog",
                      "reblog_with_content": "reblog",
                      "mention_in_post": "reblog", "ask": "ask"}
# The meta key of the newest notification time seen.
_CURSOR = "notifications_since"


class Replies(JobKind):
  name = "reply"

  def priority(self, job: Job):
    return (job.payload.get("cost", 0.0), job.created)

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

  def priority(self, job: Job):
    return (job.payload.get("cost", 0.0), job.created)

  def context(self, job: Job, blog: str, now: float) -> Context:
    post = job.payload["post"]
    thread = text_format.post_to_thread(post)
    said = thread.turns[-1].text if thread.turns else ""
    author = npf.poster(post)
    return Context(job=job, prompt=text_format.reblog_prompt(thread, blog, now),
                   user_text=said, author=author,
                   shown=f"{author}: {html_subset.to_plain(said)}",
                   moves_mood=self.moves_mood)

  def others_text(self, ctx: Context) -> str:
    """A reblog carries its whole trail: every turn of the thread."""
    thread = text_format.post_to_thread(ctx.job.payload["post"])
    return "\n\n".join(t.text for t in thread.turns)

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
    # Saved after each item handled or skipped: an error that stops the
    # pass (a network failure) leaves its item to be read again next pass,
    # and never again those before it. The cursor's second is read again
    # (`since` is inclusive): items already recorded are passed over.
    stamp = float(note.get("timestamp") or 0)
    if since is None or stamp > since:
      desk.store.set_meta(_CURSOR, stamp)
      since = stamp


def _record(desk: Desk, note: dict) -> None:
  kind = NOTIFICATION_KINDS.get(note.get("type"))
  sender = str(note.get("from_tumblelog_name") or "")
  if kind == asks.ASK.name:
    _record_ask(desk, note)
    return
  if kind is None or not sender or sender == desk.blog:
    return
  if kind == REPLY.name:
    blog = str(note.get("target_tumblelog_name") or desk.blog)
    post_id = note.get("target_post_id")
    text = str(note.get("reply_text") or "")
    note_id = note.get("id") or f"{sender}:{post_id}:{note.get('timestamp')}"
    key = f"reply:{note_id}"
  else:
    blog, text = sender, ""
    # A mention's item names the mentioning post in `target_post_id`; a
    # reblog's names the reblog in `post_id` (its `target_post_id` is the
    # bot's own post).
    post_id = note.get("target_post_id" if note.get("type") == "user_mention"
                       else "post_id")
    key = f"reblog:{post_id}"
    if note.get("type") == "reblog" and not str(
        note.get("added_text", "-")).strip():
      return  # a reblog without a comment: not worth a call
  if not post_id or desk.store.job(key) is not None:
    return
  payload = {"replier": sender, "reply_text": text,
             "timestamp": fields.integer(note.get("timestamp")) or 0}
  try:
    posts = desk.blog_posts(blog, id=str(post_id), npf=True)
    unread = (f"{blog} blocked the bot" if posts is None
              else None if posts else f"post {blog}/{post_id} is gone")
  except TumblrError as e:
    # One unreadable post skips its item, never the pass.
    why = desk.unreadable(e)
    if why is None:
      raise
    unread = f"post {blog}/{post_id} cannot be read: {why}"
  if unread is not None:
    desk.record(key, kind, dict(payload, post={}), sender)
    desk.skip(key, kind, unread)
    return
  payload["post"] = posts[0]
  thread = text_format.post_to_thread(posts[0])
  if kind == REPLY.name:
    payload["cost"] = reply_cost(len(thread.turns) + 1, text)
  else:
    comment = thread.turns[-1].text if thread.turns else ""
    payload["cost"] = reply_cost(len(thread.turns), comment)
  desk.record(key, kind, payload, sender)
  reason = (_reply_reason(desk, payload) if kind == REPLY.name
            else _reblog_reason(desk, payload))
  max_cost = float(desk.config.replies.max_cost)
  if reason is None and payload["cost"] > max_cost:
    reason = f"cost {payload['cost']:g} is over replies.max_cost {max_cost:g}"
  if reason is not None:
    desk.skip(key, kind, reason)


def _record_ask(desk: Desk, note: dict) -> None:
  """An ask found by its notification: Tumblr leaves asks from senders it
  flags as spam out of the inbox (`/posts/submission`) but still notifies
  them. Recorded by post id, as the inbox's are, so it is answered once
  however it was found."""
  if not desk.config.jobs.asks:
    return
  post_id = note.get("target_post_id") or note.get("post_id")
  if not post_id or desk.store.job(f"ask:{post_id}") is not None:
    return
  try:
    post = desk.client.get_post(desk.blog, str(post_id))
  except TumblrError as e:
    why = desk.unreadable(e)
    if why is None:
      raise
    log.info("ask %s cannot be read: %s", post_id, why)
    return
  # Gone or answered since (by a person, in Tumblr): nothing to do.
  if post is None or not npf.is_ask(post) or not _unanswered(post):
    return
  asks.record(desk, post)


def _unanswered(ask: dict) -> bool:
  """Whether an ask fetched by its id still waits for an answer. The
  fetch has no `state` (the API docs' `/posts/{post-id}`): an ask that
  waits holds its own blocks and nothing else, and is not queued."""
  if ask.get("state"):
    return ask["state"] == "submission"
  if ask.get("queued_state"):
    return False
  asked, answer = npf.split_ask(ask.get("content"), ask.get("layout"))
  return bool(asked) and not answer


def _reply_reason(desk: Desk, p: dict) -> Optional[str]:
  """Why a reply is not answered, or None."""
  replier, text, bot = p["replier"], p["reply_text"], desk.blog
  if desk.lists.avoided(replier):
    return f"{replier} is on the avoid list"
  others = [m for m in choice.mentions(text) if m != bot.lower()]
  if others:
    return f"the reply tags someone else (@{others[0]})"
  if text.lstrip().lower().startswith(f"@{bot.lower()}"):
    return None
  if desk.lists.auto_accepts(replier):
    return None
  if replier in desk.following():
    return None
  post = p["post"]
  if npf.poster(post) == bot and not fields.dicts(post.get("trail")):
    reblogs = desk.client.notes(bot, npf.post_id(post), "reblogs_with_tags")
    if not any((fields.integer(n.get("timestamp")) or 0) < p["timestamp"]
               for n in reblogs):
      return None
    return (f"not answered: the bot does not follow {replier}, and the post "
            f"was reblogged before the reply")
  return (f"not answered: the bot does not follow {replier}, and did not "
          f"write the post")


def _reblog_reason(desk: Desk, p: dict) -> Optional[str]:
  """Why a reblog of the bot's post is not answered, or None."""
  post = p["post"]
  who = desk.lists.avoided(p["replier"], *npf.trail_blogs(post))
  if who:
    return f"{who} is on the avoid list"
  if not npf.content_to_text(post.get("content"), post.get("layout")).strip():
    return "a reblog without a comment"
  return None
