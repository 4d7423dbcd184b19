"""Dashboard posts: a few new posts of the blogs the bot follows, reblogged
with a comment when the selector and a coin agree (`choice.reblog_gate`).

What the poster wrote does not move the mood (they did not write to the
bot). Payload: {"post": the dashboard post}. A post that is also a reblog
job (someone reblogged the bot) is left to that job.
"""

from typing import Optional

from bot import choice
from bot.jobs.base import Desk
from bot.jobs.replies import Reblogs
from bot.tumblr import npf

# The meta key of the newest dashboard post id seen.
_CURSOR = "dashboard_since_id"


class Dashboard(Reblogs):
  name = "dashboard"
  moves_mood = False

  def gate(self, winner, desk: Desk) -> Optional[str]:
    c = desk.config.choice
    ok, why = choice.reblog_gate(winner,
                                 min_selector=float(c.reblog_min_selector),
                                 gate_prob=float(c.reblog_gate_prob),
                                 rng=desk.rng)
    return None if ok else f"reblog gate: {why}"


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
    desk.record(f"dash:{pid}", DASHBOARD.name, {"post": post},
                npf.poster(post))
    taken += 1
  if newest is not None and newest != since:
    desk.store.set_meta(_CURSOR, newest)
