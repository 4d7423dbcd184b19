"""Autoreviewer head: would the operator turn this post down? See issue 16.

  python -m launch.train_selector --config=configs/autoreviewer.py \
      --config.model=MODEL_DIR --config.data=bot.db \
      --workdir=heads/autoreviewer

The same architecture, training, splits, Platt calibration and bag-of-words
baseline as the selector (configs/selector.py); its label 1 is "turned
down". Data (config.data):
  the bot's state (an SQLite file, config.data_format "state"; "auto" knows
    it by its header): every review decision of the operator's, in the
    console or by tags on Tumblr's drafts (bot/state.py DECISION_LABELS):
    retried, rejected or a deleted draft = 1; accepted, edited or not, or a
    draft published on Tumblr = 0. The text is the bot's candidate, read by
    the generator after its prompt, as the sampler wrote it;
  or labelled JSONL {"text", "label", optional "prompt"}, as the selector's.

`autoreview.*` are the cut-offs `metrics.json` reports on (the share of bad
posts caught and of good ones held, on the test split); the bot reads its
own copy (configs/bot.py, the same defaults) and bot/loop.py applies them
as selector/autoreview.py says.
"""

import ml_collections

from configs import selector


def cutoffs() -> ml_collections.ConfigDict:
  """The cut-offs on the calibrated P(reject), 0 <= accept_below <=
  draft_above <= reject_above <= 1.

  A word-list hit under accept_below is published anyway, over
  reject_above dropped; any post over draft_above waits for review. The
  defaults are a starting point, not measured on a blog: 0.15 publishes a
  hit only when the head is fairly sure, 0.6 drops one only when rejection
  is the likelier outcome. Set them from `metrics.json` (bad_published,
  good_held, good_dropped) once a blog has a few hundred decisions.
  """
  return ml_collections.ConfigDict(dict(
      accept_below=0.15, draft_above=0.35, reject_above=0.6))


def get_config(arg=None):
  c = selector.base_config("autoreviewer")
  c.autoreview = cutoffs()
  if arg == "tiny":
    c = selector.tiny(c)
  elif arg:
    raise ValueError(f"unknown config variant {arg!r}; use :tiny or nothing")
  return c
