r"""The GPU benchmark: one command, one table (under 8 minutes on an H100).

  python -m bench.gpu                # on a GPU: the table below, bfloat16
  python -m bench.gpu --json         # one JSON object
  python -m bench.gpu --smoke        # tiny shapes, any device (a CPU: ~1 min)

Rows, all in bfloat16 with random weights:
- sampling, GPT-2 124M and 1558M at batch 1, 8 and 64 (a 128-token prompt,
  `--new_tokens` new ones, top-p 0.95, one `gpt2.sampling.sample` call as
  the bot makes, on the reference model's decoding, which a GPU takes and
  --smoke takes on a CPU too): tokens/s, and the fraction of the HBM
  roofline: tokens/s
  over the most a step could do reading every weight and the KV cache once
  at the datasheet's HBM bandwidth (`bench.common.step_bytes`). Targets:
  1558M at batch 8 >= 0.7.
- sampling 1558M at batch 1 and 8 with `weights="int8"` (job
  `sampling-int8`): the blocks' weights int8 per output channel, widened
  inside the program where XLA fuses the conversion into the matmul
  (gpt2.sampling's reference path); its roofline counts one byte a weight.
- the same two jobs for the Llama family at Llama-3.2-1B's shape (the base
  of configs/llama32_1b_lora.py: grouped-query attention, its roofline
  counting the key/value heads' cache only), at batch 1, 8 and 64 and
  (int8) 1 and 8. Its peers, transformers and CTranslate2, are
  `bench.sampling --family llama`'s rows, on a CPU.
- a training step of 124M and 355M (1024-token windows, Adam, every
  parameter trained, `gpt2.train`'s jitted step): tokens/s and MFU, model
  FLOP/s (6 N + 12 L T C per token) over the datasheet's dense bfloat16
  peak. Target: 124M >= 40%.
- the LoRA train step of 1558M as `configs/gpt2_1558m_lora.py` sets it
  (rank 16 on the four dense layers, the frozen base stored in bfloat16,
  rematerialised blocks, 4 x 1024 tokens): tokens/s, MFU (4 N + 6 A +
  12 L T C per token: no weight gradient of the base) and the device's peak
  memory. It runs first, so that the peak is its own.
- each row's compile seconds: the first call's extra time (sampling) or the
  first step's (training).

On a device the datasheet table (`bench.common.GPU_DATASHEETS`) does not
know, the peak and bandwidth are measured in the run (a float32 matmul, a
large copy) and the table says so.
"""

import json
import time

from absl import app
from absl import flags
import numpy as np

from bench.common import copy_bandwidth, flops_per_token, gpu_datasheet
from bench.common import load_average, measured_matmul_flops, model_config
from bench.common import sample_ours, step_bytes, train_ours

_SMOKE = flags.DEFINE_boolean(
    "smoke", False, "Tiny shapes (the tiny preset, short runs) to check the "
    "code path on any device, a CPU included.")
_NEW = flags.DEFINE_integer("new_tokens", 128, "Tokens each row writes.")
_JSON = flags.DEFINE_boolean("json", False, "Print one JSON object.")

# (family, size, batch sizes) sampled, and (size, batch, seq_len) trained.
# The Llama's size is configs/llama32_1b_lora.py's `model.size`.
SAMPLING = (("gpt2", "124M", (1, 8, 64)), ("gpt2", "1558M", (1, 8, 64)),
            ("llama", "Llama-3.2-1B", (1, 8, 64)))
TRAINING = (("124M", 16, 1024), ("355M", 8, 1024))
LORA_TRAINING = (("1558M", 4, 1024),)
PROMPT = 128
SMOKE_SAMPLING = (("gpt2", "tiny", (1, 8)), ("llama", "tiny", (1, 8)))
INT8_SAMPLING = (("gpt2", "1558M", (1, 8)), ("llama", "Llama-3.2-1B", (1, 8)))
SMOKE_INT8_SAMPLING = (("gpt2", "tiny", (1,)), ("llama", "tiny", (1,)))
SMOKE_TRAINING = (("tiny", 4, 64),)
SMOKE_LORA_TRAINING = (("tiny", 4, 64),)
SMOKE_PROMPT = 64
# configs/gpt2_1558m_lora.py's adapters and numerics.
LORA = dict(lora_rank=16, lora_alpha=32.0, lora_dropout=0.05,
            lora_targets=("attn.c_attn", "attn.c_proj", "mlp.c_fc",
                          "mlp.c_proj"),
            param_dtype="bfloat16", remat=True)


def device_bounds() -> dict:
  """The device's peak FLOP/s and memory bandwidth, and where they come
  from."""
  import jax  # pylint: disable=import-outside-toplevel
  kind = jax.devices()[0].device_kind
  sheet = gpu_datasheet(kind)
  if sheet:
    return {"device": kind, "peak_flops": sheet[1], "bandwidth": sheet[2],
            "source": f"{sheet[0]} datasheet (bf16 dense, HBM)"}
  return {"device": kind, "peak_flops": measured_matmul_flops(),
          "bandwidth": copy_bandwidth(256),
          "source": "measured here (f32 matmul, copy)"}


def sampling_rows(bounds: dict, plan, prompt_len: int, new: int,
                  weights: str = "float32") -> list:
  import jax  # pylint: disable=import-outside-toplevel
  from gpt2 import family as family_lib  # pylint: disable=import-outside-toplevel
  rows = []
  for family, size, batches in plan:
    config = model_config(family, size, dtype="bfloat16",
                          param_dtype="bfloat16")
    params = family_lib.of(config).init_params(config, jax.random.PRNGKey(0))
    prompt = np.random.RandomState(0).randint(
        0, config.vocab_size - 1, prompt_len).tolist()
    for batch in batches:
      row = sample_ours(config, params, prompt, batch, new, repeats=1,
                        decoding="reference", weights=weights)
      roofline = bounds["bandwidth"] / step_bytes(
          config, batch, prompt_len, new,
          1 if weights == "int8" else 0) * batch
      job = "sampling" if weights == "float32" else f"sampling-{weights}"
      rows.append({"job": job, "family": family, "size": size,
                   "batch": batch,
                   "tokens_per_s": row["tokens_per_s"],
                   "roofline_fraction": row["tokens_per_s"] / roofline,
                   "compile_s": row["compile_s"]})
    del params
  return rows


def training_rows(bounds: dict, plan, steps: int, lora=None) -> list:
  """Training rows; with `lora` (GPT2Config fields), LoRA ones."""
  from gpt2.model import GPT2Config  # pylint: disable=import-outside-toplevel
  rows = []
  for size, batch, seq_len in plan:
    config = GPT2Config.preset(size, vocab_size=50257, dtype="bfloat16",
                               n_positions=max(seq_len, 64), **(lora or {}))
    tokens = np.random.default_rng(0).integers(
        0, config.vocab_size, (batch, seq_len)).astype(np.int32)
    run = train_ours(config, tokens, warmup=2, steps=steps)
    seconds = run["step_seconds"]
    row = {
        "job": "lora" if lora else "training", "family": "gpt2",
        "size": size, "batch": batch,
        "tokens_per_s": batch * seq_len / seconds,
        "mfu": flops_per_token(config, seq_len) * batch * seq_len / seconds /
               bounds["peak_flops"],
        "compile_s": max(0.0, run["first_step_seconds"] - seconds)}
    if lora:
      row["peak_bytes"] = run["peak_bytes"]
    rows.append(row)
  return rows


def main(argv):
  del argv
  start = time.perf_counter()
  bounds = device_bounds()
  smoke = _SMOKE.value
  new = min(_NEW.value, 16) if smoke else _NEW.value
  prompt = SMOKE_PROMPT if smoke else PROMPT
  steps = 2 if smoke else 10
  # First, so that the device's peak memory after it is this step's.
  lora_rows = training_rows(
      bounds, SMOKE_LORA_TRAINING if smoke else LORA_TRAINING, steps, LORA)
  rows = sampling_rows(bounds, SMOKE_SAMPLING if smoke else SAMPLING, prompt,
                       new)
  rows += sampling_rows(bounds, SMOKE_INT8_SAMPLING if smoke else
                        INT8_SAMPLING, prompt, new, "int8")
  rows += training_rows(bounds, SMOKE_TRAINING if smoke else TRAINING, steps)
  rows += lora_rows
  report = {**bounds, "rows": rows, "new_tokens": new,
            "prompt_tokens": prompt, "smoke": smoke,
            "seconds": time.perf_counter() - start,
            "load_average": load_average()}
  if _JSON.value:
    print(json.dumps(report))
    return
  print(f"{bounds['device']}: peak {bounds['peak_flops'] / 1e12:.1f} TFLOP/s, "
        f"{bounds['bandwidth'] / 1e9:.0f} GB/s ({bounds['source']}); "
        f"bfloat16; sampling: prompt {prompt}, {new} new tokens, top-p 0.95")
  print(f"{'job':13s} {'family':6s} {'model':12s} {'batch':>5s} "
        f"{'tokens/s':>10s} {'of roofline':>11s} {'MFU':>6s} "
        f"{'compile s':>9s} {'peak GiB':>8s}")
  for r in rows:
    roof = f"{r['roofline_fraction']:.2f}" if "roofline_fraction" in r else ""
    mfu = f"{100 * r['mfu']:.1f}%" if "mfu" in r else ""
    peak = ""
    if "peak_bytes" in r:  # the LoRA row; "n/a" where the device says none
      peak = ("n/a" if r["peak_bytes"] is None else
              f"{r['peak_bytes'] / 2**30:.2f}")
    print(f"{r['job']:13s} {r['family']:6s} {r['size']:12s} "
          f"{r['batch']:5d} {r['tokens_per_s']:10.1f} {roof:>11s} "
          f"{mfu:>6s} {r['compile_s']:9.1f} {peak:>8s}")
  print(f"total {report['seconds']:.0f} s")


if __name__ == "__main__":
  app.run(main)
