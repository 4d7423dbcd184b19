"""Fine-tune (or train from scratch) a GPT-2; resumes a reused --workdir.

    python -m launch.finetune --config=configs/gpt2_tiny.py --workdir=/tmp/tiny
    python -m launch.finetune --config=configs/gpt2_tiny.py \\
        --workdir=/tmp/tiny \\
        --config.data=docs.jsonl --config.total_steps=500
    # Two-stage fine-tune: a big corpus, then one blog.
    python -m launch.finetune --config=configs/gpt2_124m.py \\
        --workdir=runs/big \\
        --config.init=models/gpt2 --config.data=big_corpus/
    python -m launch.finetune --config=configs/gpt2_124m.py \\
        --workdir=runs/blog \\
        --config.init=runs/big --config.data=blog.jsonl

The workdir gets the checkpoints, metrics.jsonl, TensorBoard events, the
tokenizer and run.json; `gpt2.weights.load_model(workdir)` loads its newest
checkpoint. `--config.export_hf=DIR` writes a Hugging Face model at the end.
SIGTERM saves a checkpoint and exits with status 143, so a supervisor (see
launch/tpu_vm.sh) can start it again; it resumes where it stopped.
"""

import json
import logging
import re
import sys

from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

from gpt2.errors import UserError
from launch import common

CONFIG = config_flags.DEFINE_config_file(
    "config", None, "A training config file, e.g. configs/gpt2_tiny.py.")
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Where checkpoints and logs go (local or gs://); "
    "a workdir that holds a run is resumed.")


class _QuietLibraries(logging.Filter):
  """Drops orbax's and tensorstore's INFO chatter (~30 lines a save)."""

  def filter(self, record):
    return record.levelno >= logging.WARNING or not any(
        part in record.pathname for part in ("/orbax/", "/tensorstore/"))


def main(argv):
  absl_logging.get_absl_handler().addFilter(_QuietLibraries())
  if len(argv) > 1:
    raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
  config = load_config()
  if not _WORKDIR.value:
    raise UserError("--workdir is required")
  from gpt2 import train  # pylint: disable=import-outside-toplevel
  summary = train.train_and_evaluate(config, _WORKDIR.value)
  print(json.dumps(summary))
  if summary["preempted"]:
    sys.exit(143)


def _config_override_error(error: Exception, argv) -> str:
  """One line for a `--config.key=...` naming a key the config lacks."""
  text = str(error)
  named = re.search(r'instead of \\*"(\w+)', text)
  key = named.group(1) if named else (re.findall(r"\w+", text) or [text])[0]
  hint = re.search(r'Did you mean \\*"(\w+)', text)
  flags_given = [a.split("=")[0] for a in argv[1:]
                 if a.startswith("--config.")]
  flag = next((f for f in flags_given
               if re.search(rf"\.{re.escape(key)}(\.|$)", f)), None)
  line = f"{flag}: " if flag else ""
  line += f"the config has no key {key!r}"
  if hint:
    line += f" (did you mean {hint.group(1)!r}?)"
  return line


def _config_file_error(error: Exception, argv) -> str:
  path = next((a.split("=", 1)[1] for a in argv[1:]
               if a.startswith("--config=")), "?")
  if isinstance(error, SyntaxError):
    reason = f"{error.msg} at line {error.lineno}"
  else:
    reason = str(error).strip().splitlines()[-1].strip()
  return f"--config={path}: cannot load the config file ({reason})"


def load_config():
  """The --config value; a file that failed to load is a UserError here.

  (ml_collections defers that failure to the first use of the config.)
  """
  config = CONFIG.value
  if config is None:
    raise UserError("--config is required, e.g. --config=configs/gpt2_tiny.py")
  try:
    config.keys()
  except OSError as e:
    raise UserError(_config_file_error(e, sys.argv)) from e
  return config


def run_with_config(main_fn) -> None:
  """`common.run(main_fn)`; config flag mistakes also get one line.

  ml_collections raises for an unknown `--config.key` or a config file that
  cannot be loaded while absl parses flags, before `main` runs, so
  `common.run` alone would print a traceback.
  """
  started = []

  def guarded(argv):
    started.append(True)
    return main_fn(argv)

  try:
    common.run(guarded)
  except (AttributeError, KeyError, OSError, SyntaxError) as e:
    if started:
      raise
    describe = (_config_file_error if isinstance(e, (OSError, SyntaxError))
                else _config_override_error)
    print(f"error: {describe(e, sys.argv)}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  run_with_config(main)
