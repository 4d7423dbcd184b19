"""Fine-tune (or train from scratch) a GPT-2 or a Llama-family model;
resumes a reused --workdir.

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
    # A Llama-family checkpoint (Llama 3.x, Qwen2.5, SmolLM2), with LoRA.
    python -m launch.finetune --config=configs/llama32_1b_lora.py \
        --workdir=runs/blog-llama --config.data=blog.jsonl

The workdir gets the checkpoints, metrics.jsonl, TensorBoard events, the
tokenizer and run.json; `gpt2.weights.load_model(workdir)` loads its newest
checkpoint. `--config.export_hf=DIR` writes a Hugging Face model at the end.
SIGTERM saves a checkpoint and exits with status 143, so a supervisor (see
launch/tpu_vm.sh) can start it again; it resumes where it stopped.

Several processes train one model when each is started with the same flags
and its own --process_id (process 0 hosts the coordinator):

    python -m launch.finetune --config=... --workdir=W \
        --coordinator_address=10.0.0.1:8476 --num_processes=2 --process_id=0
    python -m launch.finetune --config=... --workdir=W \
        --coordinator_address=10.0.0.1:8476 --num_processes=2 --process_id=1

Every process waits up to --initialization_timeout seconds (300) for the
others to arrive, then stops with an error line naming any that did not.
Each reads only its rows of every batch; the mesh spans all their devices;
process 0 writes metrics.jsonl and TensorBoard; all write their shards of
one orbax checkpoint. SIGTERM to any one makes all save the same step and
exit 143. On a TPU pod slice use --config.distributed=true instead (JAX reads
the processes from the platform; launch/tpu_vm.sh does it).
"""

import json
import sys

from absl import flags
from ml_collections import config_flags

from gpt2.errors import UserError
from launch import common

CONFIG = config_flags.DEFINE_config_file(
    "config", None, "A training config file, e.g. configs/gpt2_tiny.py.")
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Where checkpoints and logs go (local or gs://); "
    "a workdir that holds a run is resumed.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT of process 0, for a run over "
    "several processes (jax.distributed.initialize).")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "How many processes train together.")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "This process's index, 0 .. num_processes - 1.")
_INIT_TIMEOUT = flags.DEFINE_float(
    "initialization_timeout", 300.0, "Seconds every process of a run over "
    "several processes waits for the others to arrive; one that has not by "
    "then is named in an error line.")


def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
  config = common.load_config(CONFIG)
  if not _WORKDIR.value:
    raise UserError("--workdir is required")
  # pylint: disable=import-outside-toplevel
  from gpt2 import distributed, train
  if (_COORDINATOR.value or _NUM_PROCESSES.value or
      _PROCESS_ID.value is not None or config.distributed):
    distributed.start(_COORDINATOR.value, _NUM_PROCESSES.value,
                      _PROCESS_ID.value, timeout_s=_INIT_TIMEOUT.value)
  summary = train.train_and_evaluate(config, _WORKDIR.value)
  print(json.dumps(summary))
  if summary["preempted"]:
    sys.exit(143)


if __name__ == "__main__":
  common.run(main)
