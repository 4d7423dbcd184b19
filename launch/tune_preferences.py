"""Tune a generator on the operator's choices (issue: a bot that learns
from its operator), measured before and after.

    python -m launch.tune_preferences --config=configs/preferences.py \\
        --config.model=runs/demo/model --config.data=bot.db \\
        --workdir=runs/blog-tuned

Reads the preference pairs from the bot's state (bot.corpus.preferences;
the file is only read), holds out the pairs of a fifth of the prompts, and
tunes with DPO (gpt2.dpo) the generator --config.model names: a GPT-2 or a
Llama-family model (Llama 3.x, Qwen2.5, SmolLM2), by its directory,
training workdir or Hub name. Before and after, on the held-out pairs and
prompts, it measures the preference accuracy, reward margin, KL to the
starting model, held-out language-model loss, and the share of candidates
sampled with the bot's settings (`sampling.n` per prompt) that say a phrase
the operator turned down (`--config.phrases="a phrase,another"`, or the
word pairs found in turned-down texts and in no chosen one). WORKDIR gets
metrics.json ({"before", "after"}), metrics.jsonl and checkpoints; a reused
--workdir resumes. The tuned model is WORKDIR: every command takes it
(`--config.model=runs/blog-tuned`), and the model it started from is left
as it was.
"""

import json

from absl import flags
from ml_collections import config_flags

from gpt2.errors import UserError
from launch import common

CONFIG = config_flags.DEFINE_config_file(
    "config", None, "A preference-tuning config, e.g. configs/preferences.py.")
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Where the tuned model, its checkpoints and metrics go; "
    "a workdir that holds this run is resumed.")


def summary_line(result: dict, pairs: int, prompts: int, n: int) -> str:
  before, after = result["before"], result["after"]

  def change(key, fmt):
    return f"{fmt.format(before[key])} -> {fmt.format(after[key])}"

  parts = [f"preference accuracy {change('preference_accuracy', '{:.2f}')}",
           f"reward margin {change('reward_margin', '{:.2f}')}"]
  if before.get("turned_down_rate") is not None:
    parts.append(f"turned-down phrases in "
                 f"{change('turned_down_rate', '{:.1%}')} of candidates")
  rise = after["lm_loss"] / before["lm_loss"] - 1
  parts.append(f"LM loss {change('lm_loss', '{:.3f}')} ({rise:+.1%})")
  return (f"held out ({pairs} pairs; {prompts} prompts x {n} candidates): "
          + ", ".join(parts))


def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
  config = common.load_config(CONFIG, "configs/preferences.py")
  if not _WORKDIR.value:
    raise UserError("--workdir is required")
  # pylint: disable=import-outside-toplevel
  from bot.corpus import preferences
  from gpt2 import dpo
  dpo.check(config)
  pairs, counts = preferences.read_pairs(config.data)
  preferences.check_enough(pairs, config.data, config.min_pairs)
  train, test = preferences.split(pairs, config.test_fraction)
  phrases = ([p.strip() for p in config.phrases.split(",") if p.strip()]
             or preferences.turned_down_phrases(train))
  test_prompts = list(dict.fromkeys(p.prompt for p in test))
  test_prompts = test_prompts[:config.eval_prompts]
  print(f"{counts['pairs']} pairs over {counts['prompts']} prompts in "
        f"{config.data}: {len(train)} to tune on, {len(test)} held out; "
        f"phrases counted: {', '.join(phrases) or 'none found'}", flush=True)
  result = dpo.tune(config, _WORKDIR.value,
                    [(p.prompt, p.chosen, p.rejected) for p in train],
                    [(p.prompt, p.chosen, p.rejected) for p in test],
                    preferences.sampled_share(config, test_prompts, phrases),
                    info={"phrases": phrases, "pairs": counts,
                          "train_pairs": len(train), "test_pairs": len(test),
                          "test_prompts": len(test_prompts)})
  if result["preempted"]:
    print(json.dumps({"steps": result["steps"], "preempted": True}))
    raise SystemExit(143)
  print(summary_line(result, len(test), len(test_prompts),
                     config.sampling.n))
  print(json.dumps({"workdir": _WORKDIR.value, "steps": result["steps"],
                    "phrases": phrases, "before": result["before"],
                    "after": result["after"]}))


if __name__ == "__main__":
  common.run(main)
