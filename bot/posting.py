"""Carrying out a plan through the API, and finding out whether it landed.

`Poster.send` makes the write request a `Plan` describes (answer an ask,
reblog, create, edit a draft, delete an ask, follow or unfollow the asker
and delete the ask) with the client's retries, uploading the plan's media
files with it; before a retry, and when a crashed pass left a job between
"about to post" and "posted", `Poster.landed` asks the API whether the post
is there:
- a deletion (and a follow or unfollow, which ends by deleting the ask)
  landed when the ask is gone; following twice is harmless, so a follow
  whose ask is still there is simply sent again;

- an answer or an edit changes a known post id: that post, in the planned
  state and with the planned text, is the one;
- a reblog or an original post is a new post: a post of the bot's with the
  plan's slug (recorded with the plan before the request) is the one; a
  post without that slug counts only if it has the planned parent (a
  reblog's parent id is required, an original post has none), the planned
  text, and is not a post another job of the bot's already made. So a
  short reply the bot wrote before ("lol") to the same post is never taken
  for this one.
"""

import re
from typing import Callable, Optional

from bot.records import (ANSWER, DELETE, EDIT, FOLLOW, REBLOG, UNFOLLOW,
                         Plan)
from bot.state import Store
from bot.tumblr import npf
from bot.tumblr.client import TumblrClient

# How the API may spell a plan's state on the post.
_STATES = {"published": ("published",), "queue": ("queue", "queued"),
           "draft": ("draft",)}
# Newest published posts searched for a new post after a crash.
_RECENT_POSTS = 60
_MEDIA_TYPES = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg",
                "gif": "image/gif"}


def plain(text: str) -> str:
  """Text for comparisons: tags stripped, whitespace collapsed, lowercased."""
  return " ".join(re.sub(r"<[^>]*>", " ", text or "").split()).lower()


def content_text(content, layout=None) -> str:
  return plain(npf.content_to_text(content or [], layout or []))


class Poster:
  """Sends plans for the bot's blog and reconciles them with the API."""

  def __init__(self, client: TumblrClient, store: Store, blog: str):
    self.client = client
    self.store = store
    self.blog = blog

  def send(self, plan: Plan, job_key: str) -> str:
    """Makes the plan's write request; returns the post's id."""
    c, blog = self.client, self.blog
    if plan.action in (DELETE, FOLLOW, UNFOLLOW):
      if plan.action == FOLLOW:
        c.follow(plan.blog)
      elif plan.action == UNFOLLOW:
        c.unfollow(plan.blog)
      if c.get_post(blog, plan.post_id) is not None:
        c.delete_post(blog, plan.post_id)
      return plan.post_id
    landed = _landed_response(lambda: self.landed(plan, job_key))
    media = {}
    for ident, path in plan.media.items():
      with open(path, "rb") as f:
        media[ident] = (_MEDIA_TYPES.get(path.rsplit(".", 1)[-1].lower(),
                                         "application/octet-stream"),
                        f.read())
    args = dict(content=plan.content, tags=plan.tags, state=plan.state,
                landed=landed, media=media or None)
    if plan.action in (ANSWER, EDIT):
      extra = None
      if plan.parent:
        extra = {"parent_tumblelog_uuid": plan.parent.uuid,
                 "parent_post_id": plan.parent.id,
                 "reblog_key": plan.parent.reblog_key}
      return c.edit_post(blog, plan.post_id, layout=plan.layout, extra=extra,
                         **args)
    if plan.action == REBLOG:
      p = plan.parent
      return c.reblog(blog, parent_uuid=p.uuid, parent_id=p.id,
                      reblog_key=p.reblog_key, slug=plan.slug, **args)
    return c.create_post(blog, layout=plan.layout or None, slug=plan.slug,
                         **args)

  def landed(self, plan: Plan, job_key: str) -> Optional[str]:
    """The id of the post `plan` made for `job_key`, if the API shows it."""
    if plan.action in (DELETE, FOLLOW, UNFOLLOW):
      gone = self.client.get_post(self.blog, plan.post_id) is None
      return plan.post_id if gone else None
    want = content_text(plan.content, plan.layout)
    if plan.action in (ANSWER, EDIT):
      post = self.client.get_post(self.blog, plan.post_id)
      if post is None:
        return None
      if (post.get("state", "published") in _STATES[plan.state]
          and content_text(post.get("content"), post.get("layout")) == want):
        return npf.post_id(post)
      return None
    if plan.state == "queue":
      posts = self.client.queue(self.blog)
    elif plan.state == "draft":
      posts = self.client.drafts(self.blog)
    else:
      posts = self.client.recent_posts(self.blog, _RECENT_POSTS)
    for post in posts:
      if plan.slug and post.get("slug") == plan.slug:
        return npf.post_id(post)
    for post in posts:
      if self._same_post(plan, post, want, job_key):
        return npf.post_id(post)
    return None

  def _same_post(self, plan: Plan, post: dict, want: str,
                 job_key: str) -> bool:
    parent = str(post.get("parent_post_id") or "")
    if parent != (plan.parent.id if plan.parent else ""):
      return False
    if content_text(post.get("content"), post.get("layout")) != want:
      return False
    owner = self.store.post_owner(npf.post_id(post))
    return owner in (None, job_key)


def _landed_response(landed: Callable[[], Optional[str]]):
  """Adapts `landed()` (a post id) to the client's retry check (a response)."""
  def check():
    post_id = landed()
    return None if post_id is None else {"id": post_id}
  return check
