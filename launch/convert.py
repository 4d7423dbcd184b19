r"""Converts a GPT-2 or a Llama-family model between checkpoint kinds.

  python -m launch.convert --src DIR --dst DIR [--to ours|hf|peft]
  python -m launch.convert --src DIR --dst DIR --quantize=int8

`--src` is any directory `gpt2.weights.load_model` reads: Hugging Face
(config.json + model.safetensors / pytorch_model.bin), OpenAI's TensorFlow
release (hparams.json + model.ckpt.*), ours (model.json + params/), or a
training run's workdir (its newest checkpoint; a LoRA run's adapters merged
into its base). `--to hf` writes a directory
`transformers.GPT2LMHeadModel.from_pretrained` loads; `--to ours` (the
default) writes our orbax format; `--to peft` writes a LoRA run's adapters,
unmerged, as a PEFT adapter directory (adapter_config.json,
adapter_model.safetensors) that `peft.PeftModel.from_pretrained` puts on the
base's `GPT2LMHeadModel`. A Llama-family model (Llama 3.x, Qwen2.5,
SmolLM2, Mistral) goes the same ways: `--to hf` writes what
`transformers.AutoModelForCausalLM.from_pretrained` loads, and its PEFT
adapters go on the base's `q_proj` ... `down_proj`. Tokenizer files go
along. `--quantize=int8`
(with `--to ours`) stores the blocks' matmul weights as int8 codes with a
scale per output channel, a quarter of their bytes: every command loads it
(as the dequantized float32 weights), and decoding with `weights=int8`
(gpt2.int8) quantizes it back to exactly those codes.
"""

import os

from absl import flags

from gpt2 import weights
from gpt2.errors import UserError
from launch import common

_SRC = flags.DEFINE_string("src", None, "Model directory to read.",
                           required=True)
_DST = flags.DEFINE_string("dst", None, "Directory to write.", required=True)
_TO = flags.DEFINE_enum("to", "ours", ["ours", "hf", "peft"], "Kind to write.")
_QUANTIZE = flags.DEFINE_enum("quantize", "", ["", "int8"], "Store the "
                              "matmul weights as int8 (with --to ours).")


def main(argv):
  del argv
  if os.path.abspath(_SRC.value) == os.path.abspath(_DST.value):
    raise UserError("--dst must differ from --src (converting in place could "
                    "lose the source)")
  if _QUANTIZE.value and _TO.value != "ours":
    raise UserError(f"--quantize=int8 writes our format; --to={_TO.value} "
                    "holds float weights only")
  if _TO.value == "peft":
    lora = weights.load_adapters(_SRC.value)
    if lora is None:
      raise UserError(
          f"--to=peft writes a LoRA run's adapters, but {_SRC.value} is no "
          "LoRA run's workdir (one trained with config.lora.rank > 0); "
          "--to=hf writes any model")
    weights.export_peft(_DST.value, lora)
    c = lora.config
    print(f"wrote peft adapters (rank {c.lora_rank} on "
          f"{', '.join(c.lora_targets)}, {c.n_layer} layers) for the base "
          f"{lora.base} from {_SRC.value} to {_DST.value}")
    return
  model = weights.load_model(_SRC.value)
  if _TO.value == "hf":
    weights.export_hf(_DST.value, model.config, model.params, model.tokenizer)
  else:
    weights.save_model(_DST.value, model.config, model.params, model.tokenizer,
                       quantize=_QUANTIZE.value)
  print(f"wrote {_TO.value} model{' (int8)' if _QUANTIZE.value else ''} ({model.config.n_layer} layers, "
        f"{model.config.num_params() / 1e6:.1f}M parameters) from "
        f"{model.kind} {_SRC.value} to {_DST.value}")


if __name__ == "__main__":
  common.run(main)
