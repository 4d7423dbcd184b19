"""Trains a selector, sentiment or autoreviewer head on a frozen
generator's activations.

  python -m launch.train_selector --config=configs/selector.py \
      --config.model=MODEL_DIR --config.data=posts.jsonl \
      --workdir=heads/selector
  python -m launch.train_selector --config=configs/sentiment.py \
      --config.model=MODEL_DIR --config.data=texts.jsonl \
      --workdir=heads/sentiment
  python -m launch.train_selector --config=configs/autoreviewer.py \
      --config.model=MODEL_DIR --config.data=bot.db \
      --workdir=heads/autoreviewer

Writes WORKDIR/metrics.json (test-split metrics, beside a bag-of-words
baseline's; an autoreviewer's also at its cut-offs) and WORKDIR/head/; a
reused workdir resumes. `selector.score.Heads.load(heads)` then loads the
heads under `heads/`.
"""

import json
import sys

from absl import flags, logging
from ml_collections import config_flags

from bot.corpus.head_examples import train_from_config
from gpt2.errors import UserError
from launch import common
from selector import autoreview

config_flags.DEFINE_config_file("config", None, "a configs/*.py file",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "where the run, its checkpoints and the "
                    "trained head go (reused: resumed)")


def main(argv):
  del argv
  config = flags.FLAGS.config
  workdir = flags.FLAGS.workdir
  if config is None:
    raise UserError("--config is required (configs/selector.py, "
                    "configs/sentiment.py or configs/autoreviewer.py)")
  if not workdir:
    raise UserError("--workdir is required")
  logging.set_verbosity(logging.INFO)
  result = train_from_config(config, workdir, progress=sys.stderr.isatty())
  print(json.dumps(result, indent=2, sort_keys=True))
  if "cutoffs" in result:
    print("at the cut-offs, on the held-out decisions: " +
          autoreview.describe(result["cutoffs"]))


if __name__ == "__main__":
  common.run(main)
