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

- an ask stored in the legacy format (`Plan.legacy`) is answered through
  the legacy `/post/edit` with `answer=`: Tumblr refuses an NPF edit of it;
- an answer or an edit changes a known post id: that post, in the planned
  state and with the planned text, is the one. Published, an ask, a draft
  or a queued post has a new id (its old one answers 404): the state's
  map from genesis to current id knows it, or the post that names the old
  id as its `genesis_post_id` is found among the blog's posts in the
  planned state (`current_post`), and the map learns it;
- a reblog or an original post is a new post: a post of the bot's with the
  plan's slug (recorded with the plan before the request) is the one; a
  post without that slug counts only if it has the planned parent (a
  reblog's parent id is required, an original post has none), the planned
  text, and is not a post another job of the bot's already made. So a
  short reply the bot wrote before ("lol") to the same post is never taken
  for this one.

`fit_plan` cuts a plan to what Tumblr accepts (its content block limits,
bot.tumblr.npf_limits) before it is stored and sent, saying what it cut.
"""

import dataclasses
import logging
import re
from typing import Callable, List, Optional, Tuple

from bot.records import (ANSWER, DELETE, EDIT, FOLLOW, REBLOG, UNFOLLOW,
                         Plan)
from bot.state import Store
from bot.tumblr import html_subset, npf, npf_limits
from bot.tumblr.client import TumblrClient

log = logging.getLogger("bot.posting")

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
    self.not_followed = set()  # keys of follow jobs Tumblr refused

  def send(self, plan: Plan, job_key: str) -> str:
    """Makes the plan's write request; returns the post's id."""
    c, blog = self.client, self.blog
    if plan.action in (DELETE, FOLLOW, UNFOLLOW):
      if plan.action == FOLLOW and not c.follow(plan.blog):
        # Blocked by it: Tumblr says 200, `followed` false (tumblr/docs
        # issue #69). Remembered as a block; the ask is still deleted.
        log.info("%s: %s blocked the bot; not followed", job_key, plan.blog)
        self.store.mark_blocked(plan.blog)
        self.not_followed.add(job_key)
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
    if plan.action in (ANSWER, EDIT) and plan.legacy:
      if plan.media:
        log.warning("%s: a legacy ask is answered by its text alone (its "
                    "media cannot go through /post/edit)", job_key)
      _, answer = npf.split_ask(plan.content, plan.layout)
      answer = [b for b in answer if not html_subset.is_placeholder(b)]
      return c.answer_legacy(blog, plan.post_id,
                             answer_html=html_subset.blocks_to_html(answer),
                             tags=plan.tags, state=plan.state, landed=landed)
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
      post = self.current_post(plan.post_id, plan.state)
      if post is None:
        return None
      if (content_text(post.get("content"), post.get("layout")) == want
          and self.in_state(post, plan.state)):
        return npf.post_id(post)
      return None
    posts = self._listing(plan.state)
    for post in posts:
      if plan.slug and post.get("slug") == plan.slug:
        return npf.post_id(post)
    for post in posts:
      if self._same_post(plan, post, want, job_key):
        return npf.post_id(post)
    return None

  def current_post(self, post_id: str, state: str = "published"
                   ) -> Optional[dict]:
    """The post first known as `post_id`, wherever publishing moved it:
    at that id; else at the id the state maps it to; else the post of the
    blog's listing for `state` whose `genesis_post_id` is `post_id` (the
    map learns it). None if it is nowhere: deleted, or not in `state`."""
    post = self.client.get_post(self.blog, post_id)
    if post is not None:
      return post
    current = self.store.current_post_id(post_id)
    if current is not None:
      return self.client.get_post(self.blog, current)
    if state not in _STATES:
      return None
    for post in self._listing(state):
      if npf.genesis_id(post) == str(post_id):
        self.store.map_post_id(post_id, npf.post_id(post))
        return post
    return None

  def in_state(self, post: dict, state: str) -> bool:
    """Whether `post` is in `state`. A post fetched by id
    (`client.get_post`) has no `state` (the API docs' fetch route), only
    `queued_state` when queued: then the listing where a post in `state`
    would be is asked. A missing state is never taken for published."""
    given = post.get("state")
    if given:
      return given in _STATES.get(state, (state,))
    if post.get("queued_state"):
      return state == "queue"
    if state not in _STATES:
      return False
    pid = npf.post_id(post)
    return any(npf.post_id(p) == pid for p in self._listing(state))

  def _listing(self, state: str) -> list:
    """The bot's posts in `state` where a post of a plan would be."""
    if state == "queue":
      return self.client.queue(self.blog)
    if state == "draft":
      return self.client.drafts(self.blog)
    return self.client.recent_posts(self.blog, _RECENT_POSTS)

  def _same_post(self, plan: Plan, post: dict, want: str,
                 job_key: str) -> bool:
    parent = str(post.get("parent_post_id") or "")
    if parent != (plan.parent.id if plan.parent else ""):
      return False
    if content_text(post.get("content"), post.get("layout")) != want:
      return False
    owner = self.store.post_owner(npf.post_id(post))
    return owner in (None, job_key)


def fit_plan(plan: Plan) -> Tuple[Plan, List[str]]:
  """The plan cut to what Tumblr accepts (bot.tumblr.npf_limits), and what
  was changed; an answer's ask blocks are left as they are. Its content
  is then what Tumblr will store, which `landed` compares with. Raises
  npf_limits.DoesNotFit when the ask alone is refused."""
  if not plan.content:
    return plan, []
  fixed = 0
  if plan.action in (ANSWER, EDIT):
    asks = [l for l in plan.layout or [] if l.get("type") == "ask"]
    fixed = max([i + 1 for l in asks for i in l.get("blocks") or []
                 if isinstance(i, int)], default=0)
  content, layout, changed = npf_limits.fit(plan.content, plan.layout or [],
                                            fixed)
  if content == plan.content and layout == (plan.layout or []):
    return plan, changed
  return dataclasses.replace(plan, content=content, layout=layout), changed


def _landed_response(landed: Callable[[], Optional[str]]):
  """Adapts `landed()` (a post id) to the client's retry check (a response)."""
  def check():
    post_id = landed()
    return None if post_id is None else {"id": post_id}
  return check
