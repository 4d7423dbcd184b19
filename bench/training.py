r"""Training speed: our train step against PyTorch's, same shapes, same run.

  python -m bench.training                        # CPU: "small", 8 x 256
  python -m bench.training --json                 # one JSON object
  python -m bench.training --size 124M --batch 16 --seq_len 1024 \
      --dtype bfloat16 --steps 20                 # on a GPU

Ours: `gpt2.train`'s jitted step (forward, backward, global-norm clip,
Adam, all parameters trained) on one device. PyTorch: Hugging Face's
`GPT2LMHeadModel` with `torch.optim.AdamW` (weight decay 0) and
`clip_grad_norm_`, the same config, batch and sequence length (bf16 autocast
when --dtype bfloat16 on a GPU). Each does `--warmup` untimed steps (ours
compiles there), then `--steps` timed ones; tokens/s is batch x seq_len x
steps over the wall time.

MFU = model FLOPs per second / peak. Model FLOPs per token are
6 N + 12 L T C (N the parameters apart from position embeddings, counting
the tied output projection; L layers, T sequence length, C width), the
count of PaLM's appendix B and nanoGPT. The peak is the datasheet number for
a known GPU, `--peak_tflops` if given, else (CPUs have no datasheet number
here) the FLOP/s of a large matmul measured in this run, and the table says
which.
"""

import json
import time

from absl import app
from absl import flags

from bench.common import flops_per_token, gpu_datasheet, measured_matmul_flops
from bench.common import train_ours

_SIZE = flags.DEFINE_string("size", "small", "Model shape (a GPT2Config "
                            "preset).")
_VOCAB = flags.DEFINE_integer("vocab_size", 50257, "Vocabulary size.")
_BATCH = flags.DEFINE_integer("batch", 8, "Sequences per step.")
_SEQ = flags.DEFINE_integer("seq_len", 256, "Tokens per sequence.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                           "Matmul dtype (parameters stay float32).")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps first.")
_SCAN = flags.DEFINE_boolean("scan_layers", False, "Run our blocks under "
                             "lax.scan (the model's default) instead of "
                             "unrolled.")
_IMPL = flags.DEFINE_list("impl", ["ours", "pytorch"], "What to run.")
_PEAK = flags.DEFINE_float("peak_tflops", 0.0,
                           "Peak TFLOP/s of the device (0: look it up or "
                           "measure).")
_JSON = flags.DEFINE_boolean("json", False, "Print one JSON object.")

def device_peak() -> tuple:
  """(peak FLOP/s, where the number comes from)."""
  import jax  # pylint: disable=import-outside-toplevel
  if _PEAK.value:
    return _PEAK.value * 1e12, "--peak_tflops"
  kind = jax.devices()[0].device_kind
  sheet = gpu_datasheet(kind)
  if sheet:
    return sheet[1], f"{kind} datasheet (bf16 dense)"
  return measured_matmul_flops(), f"measured f32 matmul on {kind}"


def bench_pytorch(config, tokens) -> tuple:
  """(seconds per step, device name) of GPT2LMHeadModel + AdamW."""
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  device = "cuda" if torch.cuda.is_available() else "cpu"
  hf_config = transformers.GPT2Config(
      vocab_size=config.vocab_size, n_positions=config.n_positions,
      n_embd=config.n_embd, n_layer=config.n_layer, n_head=config.n_head,
      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
      activation_function="gelu_new")
  torch.manual_seed(0)
  model = transformers.GPT2LMHeadModel(hf_config).to(device)
  model.train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.999),
                          eps=1e-8, weight_decay=0.0)
  ids = torch.as_tensor(tokens, dtype=torch.long, device=device)
  autocast = torch.autocast(device_type=device, dtype=torch.bfloat16,
                            enabled=_DTYPE.value == "bfloat16")

  def step():
    opt.zero_grad(set_to_none=True)
    with autocast:
      loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss

  for _ in range(_WARMUP.value):
    step()
  if device == "cuda":
    torch.cuda.synchronize()
  start = time.perf_counter()
  for _ in range(_STEPS.value):
    loss = step()
  loss.item()
  if device == "cuda":
    torch.cuda.synchronize()
  name = torch.cuda.get_device_name() if device == "cuda" else (
      f"cpu ({torch.get_num_threads()} threads)")
  return (time.perf_counter() - start) / _STEPS.value, name


def main(argv):
  del argv
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from gpt2.model import GPT2Config  # pylint: disable=import-outside-toplevel
  config = GPT2Config.preset(_SIZE.value, vocab_size=_VOCAB.value,
                             n_positions=max(_SEQ.value, 1024),
                             dtype=_DTYPE.value,
                             scan_layers=_SCAN.value)
  batch, seq_len = _BATCH.value, _SEQ.value
  tokens = np.random.default_rng(0).integers(
      0, config.vocab_size, (batch, seq_len)).astype(np.int32)
  peak, peak_source = device_peak()
  model_flops = flops_per_token(config, seq_len) * batch * seq_len
  rows = []
  for impl in _IMPL.value:
    if impl == "ours":
      seconds = train_ours(config, tokens, _WARMUP.value,
                           _STEPS.value)["step_seconds"]
      device = str(jax.devices()[0].device_kind)
    elif impl == "pytorch":
      seconds, device = bench_pytorch(config, tokens)
    else:
      raise app.UsageError(f"unknown --impl {impl!r}")
    rows.append({"impl": impl, "device": device,
                 "step_seconds": seconds,
                 "tokens_per_sec": batch * seq_len / seconds,
                 "model_tflops_per_sec": model_flops / seconds / 1e12,
                 "mfu": model_flops / seconds / peak})
  report = {"size": _SIZE.value, "params": config.num_params(),
            "batch": batch, "seq_len": seq_len, "dtype": _DTYPE.value,
            "flops_per_token": flops_per_token(config, seq_len),
            "peak_tflops": peak / 1e12, "peak_source": peak_source,
            "results": rows}
  if len(rows) == 2:
    report["ours_over_pytorch"] = rows[0]["tokens_per_sec"] / rows[1][
        "tokens_per_sec"]
  if _JSON.value:
    print(json.dumps(report))
    return
  print(f"{_SIZE.value} ({config.num_params() / 1e6:.1f}M params), batch "
        f"{batch} x {seq_len} tokens, {_DTYPE.value}; peak "
        f"{peak / 1e12:.2f} TFLOP/s ({peak_source})")
  print(f"{'impl':<9} {'device':<28} {'step s':>8} {'tokens/s':>10} "
        f"{'TFLOP/s':>8} {'MFU':>6}")
  for r in rows:
    print(f"{r['impl']:<9} {r['device'][:28]:<28} {r['step_seconds']:8.3f} "
          f"{r['tokens_per_sec']:10.0f} {r['model_tflops_per_sec']:8.3f} "
          f"{100 * r['mfu']:5.1f}%")
  if "ours_over_pytorch" in report:
    print(f"ours / pytorch tokens/s: {report['ours_over_pytorch']:.2f}x")


if __name__ == "__main__":
  app.run(main)
