r"""Converts a GPT-2 between checkpoint kinds.

  python -m launch.convert --src DIR --dst DIR [--to ours|hf]

`--src` is any directory `gpt2.weights.load_model` reads: Hugging Face
(config.json + model.safetensors / pytorch_model.bin), OpenAI's TensorFlow
release (hparams.json + model.ckpt.*), ours (model.json + params/), or a
training run's workdir (its newest checkpoint). `--to hf` writes a directory
`transformers.GPT2LMHeadModel.from_pretrained` loads; `--to ours` (the
default) writes our orbax format. Tokenizer files go along.
"""

import os

from absl import flags

from gpt2 import weights
from gpt2.errors import UserError
from launch import common

_SRC = flags.DEFINE_string("src", None, "Model directory to read.",
                           required=True)
_DST = flags.DEFINE_string("dst", None, "Directory to write.", required=True)
_TO = flags.DEFINE_enum("to", "ours", ["ours", "hf"], "Kind to write.")


def main(argv):
  del argv
  if os.path.abspath(_SRC.value) == os.path.abspath(_DST.value):
    raise UserError("--dst must differ from --src (converting in place could "
                    "lose the source)")
  model = weights.load_model(_SRC.value)
  if _TO.value == "hf":
    weights.export_hf(_DST.value, model.config, model.params, model.tokenizer)
  else:
    weights.save_model(_DST.value, model.config, model.params, model.tokenizer)
  print(f"wrote {_TO.value} model ({model.config.n_layer} layers, "
        f"{model.config.num_params() / 1e6:.1f}M parameters) from "
        f"{model.kind} {_SRC.value} to {_DST.value}")


if __name__ == "__main__":
  common.run(main)
