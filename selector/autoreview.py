"""The autoreviewer's cut-offs: what the bot does with its P(reject), and
what they would have done on held-out decisions.

The autoreviewer is a binary head (selector/score.py) trained on the
operator's review decisions (bot/state.py, DECISION_LABELS): its calibrated
probability is P(the operator turns this post down). Three cut-offs
(config keys `autoreview.*`, 0 <= accept_below <= draft_above <=
reject_above <= 1) decide, for the post the bot chose:

  word-list hit, P < accept_below        published anyway
  word-list hit, P > reject_above        dropped (the job is skipped)
  word-list hit, in between              review, as without the autoreviewer
  no hit, P > draft_above                review (the autoreviewer holds it)
  no hit, P <= draft_above               as without the autoreviewer

A word-list hit is a reason to hold a post; the autoreviewer overrules it
only when it is sure either way. Without a hit, the autoreviewer alone can
hold a post for a person but never drops one: it learned from the posts
people reviewed, and a post no rule flagged is the least like them. Holds
for other reasons (a screened user, a long input, `review.all`) stand
whatever it says.
"""

import numpy as np

from gpt2.errors import UserError

CUTOFF_KEYS = ("accept_below", "draft_above", "reject_above")
PUBLISH, REVIEW, DROP, AS_BEFORE = "publish", "review", "drop", "as before"


def check_cutoffs(cutoffs) -> dict:
  """{key: float} from a config's `autoreview` block; one clear UserError
  when a value is missing, outside [0, 1] or out of order."""
  try:
    values = {k: float(cutoffs[k]) for k in CUTOFF_KEYS}
  except KeyError as e:
    raise UserError(f"config key autoreview.{e.args[0]} is missing") from None
  except (TypeError, ValueError):
    raise UserError("the autoreview.* cut-offs must be numbers, not "
                    f"{dict(cutoffs)}") from None
  for k, v in values.items():
    if not 0.0 <= v <= 1.0:
      raise UserError(f"autoreview.{k}={v} is not a probability in [0, 1]")
  a, d, r = (values[k] for k in CUTOFF_KEYS)
  if not a <= d <= r:
    raise UserError(
        "the autoreview cut-offs must be in order accept_below <= "
        f"draft_above <= reject_above; they are {a}, {d}, {r}")
  return values


def verdict(p_reject: float, word_list_hit: bool, cutoffs: dict) -> str:
  """PUBLISH, REVIEW, DROP or AS_BEFORE (the autoreviewer changes nothing)
  for a post with this P(reject); `cutoffs` from `check_cutoffs`."""
  p = float(p_reject)
  if word_list_hit:
    if p < cutoffs["accept_below"]:
      return PUBLISH
    if p > cutoffs["reject_above"]:
      return DROP
    return REVIEW
  return REVIEW if p > cutoffs["draft_above"] else AS_BEFORE


def cutoff_metrics(labels, probs, cutoffs: dict) -> dict:
  """What the cut-offs do to held-out decisions (1 = turned down, "bad";
  0 = accepted, "good"), on calibrated P(reject):

  draft_above: bad_caught (share of bad over it: held for a person),
    good_held (share of good over it: held needlessly);
  reject_above: bad_dropped, good_dropped (shares over it);
  accept_below: bad_published (share of bad under it: what a word-list hit
    lets through anyway, the false accepts), good_published (share of
    good under it: work the operator is spared).
  NaN where a split has no post of that label.
  """
  y = np.asarray(labels, np.float64) > 0.5
  p = np.asarray(probs, np.float64)
  share = lambda mask, rows: float(np.mean(mask[rows])) if rows.any() else (
      float("nan"))
  over_d, over_r = p > cutoffs["draft_above"], p > cutoffs["reject_above"]
  under_a = p < cutoffs["accept_below"]
  return {
      **{k: float(cutoffs[k]) for k in CUTOFF_KEYS},
      "n_bad": int(y.sum()), "n_good": int((~y).sum()),
      "bad_caught": share(over_d, y), "good_held": share(over_d, ~y),
      "bad_dropped": share(over_r, y), "good_dropped": share(over_r, ~y),
      "bad_published": share(under_a, y),
      "good_published": share(under_a, ~y),
  }


def describe(m: dict) -> str:
  """One line of `cutoff_metrics`, for logs."""
  pct = lambda x: "n/a" if np.isnan(x) else f"{x:.0%}"
  return (f"over draft_above {m['draft_above']:g}: {pct(m['bad_caught'])} of "
          f"{m['n_bad']} bad posts caught, {pct(m['good_held'])} of "
          f"{m['n_good']} good ones held; over reject_above "
          f"{m['reject_above']:g}: {pct(m['bad_dropped'])} of bad and "
          f"{pct(m['good_dropped'])} of good dropped; under accept_below "
          f"{m['accept_below']:g}: {pct(m['bad_published'])} of bad and "
          f"{pct(m['good_published'])} of good published anyway")
