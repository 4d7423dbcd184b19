r"""Compile the train step ahead of time for a TPU-shaped mesh; print its memory.

    python -m launch.compile_check --config=configs/gpt2_1558m_tpuv3.py
    python -m launch.compile_check --config=configs/gpt2_1558m_tpuv3.py --json
    python -m launch.compile_check --config=configs/gpt2_1558m_lora.py \
        --devices=1
    python -m launch.compile_check --config=configs/llama32_1b_lora.py \
        --devices=1
    python -m launch.compile_check --config=configs/llama31_8b_int8_lora.py \
        --devices=1 --device_gib=24

Shows without a TPU that a config fits: the train step (gradient
accumulation, Adam, sharding) is lowered with abstract inputs
(`jax.ShapeDtypeStruct`s carrying their shardings, so no parameter is ever
allocated) for a mesh of `--devices` simulated CPU devices (8: a TPU v3-8),
compiled, and `compiled.memory_analysis()` gives the bytes one device needs:
arguments + outputs - donated aliases + temporaries + code. A LoRA config's
step is compiled with its frozen base model as an argument (in
`model.param_dtype`, or as int8 codes with `lora.base_weights=int8`), so
the base counts once and its gradient never. A
Llama-family config names its shape in `model.size` (one of
`gpt2.llama.PRESETS`, e.g. Llama-3.2-1B), so nothing is downloaded.

The CPU compiler is not the TPU's or the GPU's; its numbers are close, not
identical, and err high: it keeps some bf16 temporaries in float32, and for
a base stored in bfloat16 it hoists a float32 copy of every layer's weights
out of the layer loop (its matmuls take float32), which an accelerator's
bf16 matmuls never make.
"""

import os
import sys

# Before JAX is imported: N host devices on the CPU backend.
_DEVICES = 8
for _i, _arg in enumerate(sys.argv):
  if _arg.startswith("--devices="):
    _DEVICES = int(_arg.split("=", 1)[1])
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = " ".join(
    [f for f in os.environ.get("XLA_FLAGS", "").split()
     if not f.startswith("--xla_force_host_platform_device_count")] +
    [f"--xla_force_host_platform_device_count={_DEVICES}"])

import json  # pylint: disable=g-import-not-at-top,wrong-import-position
import time  # pylint: disable=g-import-not-at-top,wrong-import-position

from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position

from gpt2.errors import UserError  # pylint: disable=g-import-not-at-top,wrong-import-position
from launch import common  # pylint: disable=g-import-not-at-top,wrong-import-position
# The same --config flag as launch.finetune.
from launch.finetune import CONFIG  # pylint: disable=g-import-not-at-top,wrong-import-position

flags.DEFINE_integer("devices", 8, "Simulated devices (8 = a TPU v3-8).")
_JSON = flags.DEFINE_bool("json", False, "Print one JSON object only.")
_LIMIT = flags.DEFINE_float("device_gib", 16.0,
                            "Memory of one device, for the verdict (GiB).")

GIB = 1 << 30


def compile_train_step(config, devices=None) -> dict:
  """Lowers and compiles the config's train step; returns its memory use."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from gpt2 import sharding, train  # pylint: disable=import-outside-toplevel
  train.check_config(config)
  model_config = train.model_config_for(config,
                                        train.default_vocab_size(config))
  mesh = sharding.make_mesh(dict(config.mesh), devices)
  train.check_batch_fits_mesh(config, mesh)
  steps = train.build_steps(model_config, config, mesh)
  batch = jax.ShapeDtypeStruct(
      (config.accumulate, config.batch_size, config.seq_len), jnp.int32,
      sharding=steps.batch_sharding)
  start = time.perf_counter()
  compiled = steps.train.lower(steps.abstract_state, batch,
                               steps.abstract_base).compile()
  seconds = time.perf_counter() - start
  mem = compiled.memory_analysis()
  per_device = (mem.argument_size_in_bytes + mem.output_size_in_bytes -
                mem.alias_size_in_bytes + mem.temp_size_in_bytes +
                mem.generated_code_size_in_bytes)
  return {
      "per_device_bytes": int(per_device),
      "devices": int(mesh.size),
      "argument_bytes": int(mem.argument_size_in_bytes),
      "output_bytes": int(mem.output_size_in_bytes),
      "alias_bytes": int(mem.alias_size_in_bytes),
      "temp_bytes": int(mem.temp_size_in_bytes),
      "mesh": dict(mesh.shape),
      "params": model_config.num_params(),
      "trained_params": int(sum(
          x.size for x, label in zip(
              jax.tree.leaves(steps.abstract_state["params"]),
              jax.tree.leaves(steps.labels)) if label == train.TRAIN)),
      "compile_seconds": round(seconds, 1),
  }


def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
  config = common.load_config(CONFIG)
  report = compile_train_step(config)
  if _JSON.value:
    print(json.dumps({"per_device_bytes": report["per_device_bytes"],
                      "devices": report["devices"]}))
    return
  c = config
  fits = report["per_device_bytes"] <= _LIMIT.value * GIB
  trained = f"{report['trained_params'] / 1e6:.1f}M trained"
  if c.lora.rank:
    base = ("int8 blocks" if c.lora.base_weights == "int8" else
            c.model.param_dtype)
    trained = (f"LoRA rank {c.lora.rank} on {c.lora.targets}: {trained}, "
               f"the base in {base}")
  print(f"model: {c.model.size} ({report['params'] / 1e6:.0f}M params, "
        f"{trained}), batch {c.batch_size} x {c.seq_len} tokens x "
        f"{c.accumulate} accumulated, mesh {report['mesh']}")
  for name in ("argument", "output", "alias", "temp"):
    print(f"  {name:>9}: {report[name + '_bytes'] / GIB:7.2f} GiB")
  print(f"per device: {report['per_device_bytes'] / GIB:.2f} GiB of "
        f"{_LIMIT.value:g} GiB -> {'fits' if fits else 'DOES NOT FIT'} "
        f"(compiled in {report['compile_seconds']} s)")


if __name__ == "__main__":
  common.run(main)
