"""Dashboard posts: a few new posts of the blogs the bot follows, reblogged
with a comment when every rule agrees.

The original's rules, in order, each traced when it says no:
- never (config keys `dashboard.*`, `lists.*`): a video, more than
  `max_images` images, the bot anywhere in the trail, an avoided user as
  poster or in the trail, a tag on `lists.avoid_tags`, a post id on
  `lists.no_reblog_ids`, `max_notes_without_comment` notes or more on a post
  that adds no comment, an original poster the bot does not follow, no text;
- the model: the generator's probability that the bot is the next to
  comment on this thread, over its probability on a neutral one, must reach
  `author_gate` (checked before any candidate is written);
- after writing: the selector and a coin agree (`choice.reblog_gate`), and
  the bot's comment must raise the selector's score above the post's own
  (the post as it would be reblogged without a comment).
What the poster wrote does not move the mood (they did not write to the
bot). Payload: {"post": the dashboard post}. A post that is also a reblog
job (someone reblogged the bot) is left to that job.
"""

import math
from typing import Optional

from bot import choice, text_format
from bot.filters import normalize
from bot.jobs.base import Context, Desk
from bot.jobs.replies import Reblogs
from bot.tumblr import fields, npf
from bot.tumblr.thread import POSTED, Thread, Turn

# The meta key of the newest dashboard post id seen.
_CURSOR = "dashboard_since_id"
# The neutral thread the author gate compares with.
_NEUTRAL = Thread((Turn("someone", POSTED, "hello, tumblr"),), "someone")


def never_reason(post: dict, desk: Desk) -> Optional[str]:
  """Why a dashboard post is never reblogged, or None."""
  d, lists, bot = desk.config.dashboard, desk.lists, desk.blog
  blocks = npf.all_blocks(post)
  trail = npf.trail_blogs(post)
  if any(b.get("type") == "video" for b in blocks):
    return "a video"
  images = sum(b.get("type") == "image" for b in blocks)
  if images > int(d.max_images):
    return f"{images} images (more than {int(d.max_images)})"
  if bot in trail:
    return "the bot is in the trail"
  who = lists.avoided(npf.poster(post), *trail)
  if who:
    return f"{who} is on the avoid list"
  tags = {normalize(t).strip() for t in fields.tags(post.get("tags"))}
  if tags & lists.avoid_tags:
    return f"tagged #{sorted(tags & lists.avoid_tags)[0]} (lists.avoid_tags)"
  if npf.post_id(post) in lists.no_reblog_ids:
    return "the post id is on lists.no_reblog_ids"
  notes = fields.integer(post.get("note_count")) or 0
  comment = npf.content_to_text(post.get("content"), post.get("layout"))
  if notes >= int(d.max_notes_without_comment) and not comment.strip():
    return f"{notes} notes and no comment"
  root = npf.root_poster(post)
  if root not in desk.following() and root != npf.poster(post):
    return f"the bot does not follow the original poster {root}"
  if not any(b.get("type") == "text" and fields.string(b.get("text")).strip()
             for b in blocks):
    return "no text"
  return None


class Dashboard(Reblogs):
  name = "dashboard"
  moves_mood = False
  answers = False

  def prefilter(self, ctx: Context, desk: Desk) -> Optional[str]:
    gate = float(desk.config.dashboard.author_gate)
    if gate <= 0:
      return None
    neutral = text_format.reblog_prompt(_NEUTRAL, desk.blog, desk.now)
    splits = [text_format.next_author_split(p, desk.blog)
              for p in (ctx.prompt, neutral)]
    here, usual = desk.model.logprob([s[0] for s in splits],
                                     [s[1] for s in splits])
    ratio = math.exp(here - usual)
    if ratio < gate:
      return (f"author gate: the generator gives the bot {ratio:.2f} of its "
              f"odds on a neutral post to comment next (< {gate:g})")
    return None

  def gate(self, winner, ctx: Context, desk: Desk) -> Optional[str]:
    c = desk.config.choice
    ok, why = choice.reblog_gate(winner,
                                 min_selector=float(c.reblog_min_selector),
                                 gate_prob=float(c.reblog_gate_prob),
                                 rng=desk.rng)
    if not ok:
      return f"reblog gate: {why}"
    if winner.selector is None:
      return None
    from bot.ml import Sample  # pylint: disable=import-outside-toplevel
    prompt, text = text_format.own_turn_split(
        text_format.post_to_thread(ctx.job.payload["post"]))
    ((alone, _, _),) = desk.model.score([Sample(raw=text, prompt=prompt)])
    if alone is not None and winner.selector <= alone:
      return (f"the comment's selector {winner.selector:.3f} does not beat "
              f"the post alone ({alone:.3f})")
    return None


DASHBOARD = Dashboard()


def discover(desk: Desk) -> None:
  if not desk.config.jobs.dashboard:
    return
  since = desk.store.get_meta(_CURSOR)
  newest, taken = since, 0
  for post in desk.client.dashboard(since_id=since):
    pid = npf.post_id(post)
    if newest is None or int(pid) > int(newest):
      newest = pid
    if (npf.poster(post) == desk.blog or not post.get("reblog_key")
        or desk.store.job(f"reblog:{pid}") is not None):
      continue
    if taken >= int(desk.config.jobs.dashboard_per_pass):
      break
    key = f"dash:{pid}"
    if desk.record(key, DASHBOARD.name, {"post": post}, npf.poster(post)):
      taken += 1
      reason = never_reason(post, desk)
      if reason:
        desk.skip(key, DASHBOARD.name, reason)
  if newest is not None and newest != since:
    desk.store.set_meta(_CURSOR, newest)
