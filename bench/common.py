"""What the benchmarks share: our runs, the bounds they are measured against,
and the datasheet numbers of known GPUs. No flags here, so that one
benchmark can use another's measurements."""

import time

import numpy as np

# Known GPUs, most specific name first: (a part of `device_kind`, dense
# bfloat16 tensor-core TFLOP/s, HBM bandwidth in TB/s), from the vendors'
# datasheets.
GPU_DATASHEETS = (
    ("H200", 989.0, 4.8),
    ("H100 PCIe", 756.0, 2.0),
    ("H100 NVL", 835.0, 3.9),
    ("H100", 989.0, 3.35),  # SXM
    ("A100-SXM4-80GB", 312.0, 2.039),
    ("A100 80GB PCIe", 312.0, 1.935),
    ("A100", 312.0, 1.555),
    ("L4", 121.0, 0.3),
    ("A10", 125.0, 0.6),
    ("V100", 125.0, 0.9),
    ("T4", 65.0, 0.32),
)


def gpu_datasheet(device_kind: str):
  """(name, peak FLOP/s, HBM bytes/s) of a known GPU, else None."""
  for name, tflops, tb_s in GPU_DATASHEETS:
    if name in device_kind:
      return name, tflops * 1e12, tb_s * 1e12
  return None


def timed(fn, repeats: int):
  """(first call seconds, best of `repeats` later calls, its output)."""
  start = time.perf_counter()
  out = fn()
  first = time.perf_counter() - start
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    out = fn()
    best = min(best, time.perf_counter() - start)
  return first, best, out


def copy_bandwidth(megabytes: int, repeats: int = 10) -> float:
  """Bytes read + written per second by a large on-device copy: the best of
  a jitted copy and (on the CPU) numpy's, over `repeats` tries."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  x = jnp.ones((megabytes * 2**20 // 4,), jnp.float32)
  copies = [(jax.jit(lambda a: a + 1.0), x)]
  if jax.devices()[0].platform == "cpu":
    host = np.ones(x.shape, np.float32)
    target = np.empty_like(host)
    copies.append((lambda a: np.copyto(target, a), host))
  best = float("inf")
  for copy, source in copies:
    jax.block_until_ready(copy(source))
    for _ in range(repeats):
      start = time.perf_counter()
      jax.block_until_ready(copy(source))
      best = min(best, time.perf_counter() - start)
  return 2 * x.nbytes / best


def step_bytes(config, batch: int, prompt: int, new: int,
               weight_itemsize: int = 0) -> float:
  """Bytes a decoding step must read at least: every weight, the prompt's
  keys and values once (its `batch` candidates share them), and each row's
  generated ones, averaged over the steps. Weights take `weight_itemsize`
  bytes each (0: the config's parameter dtype). A Llama-family cache holds
  its key/value heads only (grouped-query attention)."""
  itemsize = weight_itemsize or (2 if config.param_dtype == "bfloat16" else 4)
  cache_itemsize = 2 if config.dtype == "bfloat16" else 4
  weights = config.num_params() * itemsize
  slots = prompt + batch * (new + 1) / 2
  width = (config.n_kv_head * config.head_dim if hasattr(config, "n_kv_head")
           else config.n_embd)
  cache = 2 * config.n_layer * slots * width * cache_itemsize
  return weights + cache


# A Llama-family shape for smoke runs and tests, as GPT-2's "tiny" preset is
# (grouped-query attention, a tied head, end-of-text id 0 as SmolLM2's).
LLAMA_TINY = dict(vocab_size=512, n_embd=64, n_layer=2, n_head=4, n_kv_head=2,
                  n_inner=128, n_positions=256, tie_word_embeddings=True,
                  bos_token_id=0, eos_token_ids=(0,))
FAMILIES = ("gpt2", "llama")


def model_config(family: str, size: str, **overrides):
  """The config of a `family` model of shape `size`, with random weights in
  mind: a GPT2Config preset for "gpt2"; for "llama" a released shape of
  `gpt2.llama.PRESETS` (in any case: smollm2-135m) or "tiny". `overrides`
  set the config's numerics (`dtype`, `param_dtype`, ...)."""
  # pylint: disable=import-outside-toplevel
  from gpt2 import llama
  from gpt2.errors import UserError
  from gpt2.model import GPT2Config
  if family == "gpt2":
    return GPT2Config.preset(size, **overrides)
  if family != "llama":
    raise UserError(f"family {family!r} is not one of {', '.join(FAMILIES)}")
  if size == "tiny":
    return llama.LlamaConfig(**{**LLAMA_TINY, **overrides})
  names = {name.lower(): name for name in llama.PRESETS}
  if size.lower() not in names:
    raise UserError(f"unknown llama size {size!r}; one of tiny, "
                    f"{', '.join(llama.PRESETS)}")
  return llama.preset(names[size.lower()], **overrides)


def sample_ours(config, params, prompt, batch: int, new: int, repeats: int,
                decoding: str = "auto", weights: str = "float32") -> dict:
  """Our sampler writing `batch` candidates of `new` tokens after `prompt`
  (top-p 0.95): tokens/s, seconds and compile seconds (the first call's
  extra time)."""
  from gpt2 import sampling  # pylint: disable=import-outside-toplevel
  from gpt2.tokenizer import Tokenizer  # pylint: disable=import-outside-toplevel
  # The prompt is ids and nothing is read as text: GPT-2's tokenizer serves
  # any family. Its end-of-text (50256) lies outside a Llama's vocabulary,
  # so a Llama's rows never stop early, as the peers' do not.
  tokenizer = Tokenizer.gpt2()
  rules = sampling.SamplingParams(top_p=0.95)

  def call():
    return sampling.sample(config, params, tokenizer, [prompt],
                           num_samples=batch, max_new_tokens=new, seed=0,
                           rules=rules, decoding=decoding, weights=weights)

  first, best, results = timed(call, repeats)
  written = sum(len(r.tokens) + (r.finish_reason == "eot") for r in results)
  return {"tokens_per_s": written / best, "seconds": best,
          "compile_s": max(0.0, first - best)}


def flops_per_token(config, seq_len: int) -> float:
  """Model FLOPs of a training step per token: 6 N + 12 L T C (N the
  parameters apart from position embeddings, counting the tied output
  projection), the count of PaLM's appendix B and nanoGPT.

  A LoRA config's step forms no weight gradient of its frozen N: 4 N +
  6 A + 12 L T C, A the adapters' parameters."""
  n = config.num_params() - config.n_positions * config.n_embd
  attention = 12 * config.n_layer * seq_len * config.n_embd
  if not config.lora_rank:
    return 6 * n + attention
  import jax  # pylint: disable=import-outside-toplevel
  from gpt2.model import lora_shapes  # pylint: disable=import-outside-toplevel
  adapters = sum(x.size for x in jax.tree.leaves(lora_shapes(config)))
  return 4 * n + 6 * adapters + attention


def measured_matmul_flops() -> float:
  """FLOP/s of a jitted float32 2048^3 matmul on the default device."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  n = 2048
  a = jnp.ones((n, n), jnp.float32)
  mm = jax.jit(lambda x: x @ x)
  mm(a).block_until_ready()
  best = float("inf")
  for _ in range(3):
    start = time.perf_counter()
    mm(a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * n**3 / best


def train_ours(config, tokens, warmup: int, steps: int) -> dict:
  """`gpt2.train`'s jitted step (forward, backward, clipping, Adam, every
  parameter trained; a LoRA config: its adapters on a random frozen base in
  its `param_dtype`) on one device and `tokens` (B, T): seconds per step
  over `steps` timed steps after `warmup` untimed ones, the first step's
  seconds (mostly compiling), and the device's peak bytes in use so far
  (None where the device does not say: a CPU)."""
  import functools  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  from gpt2 import sharding, train  # pylint: disable=import-outside-toplevel
  from gpt2.model import init_params  # pylint: disable=import-outside-toplevel
  settings = train.default_config()
  settings.only_train_transformer_layers = False
  settings.warmup = 0
  mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "model": 1},
                            jax.devices()[:1])
  train_steps = train.build_steps(config, settings, mesh)
  state = train_steps.init(train_steps.init_params(jax.random.PRNGKey(0)))
  base = None
  if config.lora_rank:
    base = jax.jit(functools.partial(init_params, config),
                   out_shardings=train_steps.base_shardings)(
                       jax.random.PRNGKey(1))
  batch = jax.device_put(tokens.reshape(1, *tokens.shape),
                         train_steps.batch_sharding)
  start = time.perf_counter()
  state, metrics = train_steps.train(state, batch, base)
  jax.block_until_ready(metrics)
  first = time.perf_counter() - start
  for _ in range(warmup - 1):
    state, metrics = train_steps.train(state, batch, base)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = train_steps.train(state, batch, base)
  jax.block_until_ready((state, metrics))
  seconds = (time.perf_counter() - start) / steps
  stats = jax.devices()[0].memory_stats() or {}
  return {"step_seconds": seconds, "first_step_seconds": first,
          "peak_bytes": stats.get("peak_bytes_in_use")}


def load_average() -> str:
  try:
    with open("/proc/loadavg") as f:
      return f.read().split()[0]
  except OSError:
    return "n/a"
