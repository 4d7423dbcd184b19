"""Tune a generator on its operator's choices (Direct Preference
Optimization with LoRA adapters; see gpt2/dpo.py and
launch/tune_preferences.py).

  python -m launch.tune_preferences --config=configs/preferences.py \
      --config.model=runs/demo/model --config.data=bot.db \
      --workdir=runs/blog-tuned

The pairs come from the bot's state file (read only): each text the operator
turned down against the one they let through or wrote, and each candidate
sent from the console against those not sent. A fifth of the prompts are
held out to measure the tuning. Rank-16 adapters on every dense layer of
the model's family (GPT-2's, or a Llama's, Qwen2's or SmolLM2's
projections; `--config.lora.targets=q_proj,v_proj` names some,
`--config.lora.rank=0` tunes the whole model instead), beta 0.1, and a
language-model loss on the corpus (`sft_weight`; the model's own training
data when it is a training workdir, else `--config.corpus=posts.jsonl`, else
the chosen texts) so the voice stays the blog's.

`--config=configs/preferences.py:1558m` is sized for GPT-2 1.5B (or a LoRA
run on it) on one 16 GB GPU, as configs/gpt2_1558m_lora.py is: the base in
bfloat16, rematerialised blocks, 2 pairs per micro-batch accumulated 4
times. It has not been run on a GPU here; the peak memory is not measured.
"""

from gpt2.dpo import default_config


def get_config(arg=None):
  c = default_config()
  if arg == "1558m":
    c.numerics.dtype = "bfloat16"
    c.numerics.param_dtype = "bfloat16"
    c.numerics.remat = True
    c.batch_size = 2
    c.sft_batch_size = 2
    c.accumulate = 4
  elif arg:
    raise ValueError(f"configs/preferences.py takes no argument or "
                     f"'1558m', not {arg!r}")
  return c
