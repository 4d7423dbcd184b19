"""Tune a generator on its operator's choices (Direct Preference
Optimization with LoRA adapters; see gpt2/dpo.py and
launch/tune_preferences.py).

  python -m launch.tune_preferences --config=configs/preferences.py \
      --config.model=runs/demo/model --config.data=bot.db \
      --workdir=runs/blog-tuned

The pairs come from the bot's state file (read only): each text the operator
turned down against the one they let through or wrote, and each candidate
sent from the console against those not sent. A fifth of the prompts are
held out to measure the tuning. Rank-16 adapters on every dense layer
(`--config.lora.rank=0` tunes the whole model instead), beta 0.1, and a
language-model loss on the corpus (`sft_weight`; the model's own training
data when it is a training workdir, else `--config.corpus=posts.jsonl`, else
the chosen texts) so the voice stays the blog's.
"""

from gpt2.dpo import default_config


def get_config(arg=None):
  del arg
  return default_config()
