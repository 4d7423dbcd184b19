"""int8 weight-only decoding (gpt2.int8, gpt2/kernels/int8_matmul.cc):
the kernel against numpy at every vector width, and the sampler's int8
path against float32 decoding of the same (dequantized) weights."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt2 import cpu_decoding as C
from gpt2 import int8
from gpt2 import sampling as S
from gpt2.errors import UserError
from gpt2.tokenizer import Tokenizer
from tests.test_cpu_decoding import noisy_tiny

TEXT = "I have promises to keep, and miles to go before I sleep. " * 8


def test_the_kernel_builds_here():
  # CI has a C++ compiler: the kernel must build, not fall back silently.
  assert int8.available(), int8.why_not()
  assert int8.level() in int8.LEVELS.values()
  assert int8.level() == int8.LEVELS[int8.cpu_level()]


@pytest.mark.parametrize("level", [2, 1, 0])
@pytest.mark.parametrize("shape", [(2304, 768, 1), (96, 3072, 8),
                                   (40, 64, 5), (7, 13, 3), (33, 17, 16)])
def test_the_kernel_equals_numpy_at_every_width(level, shape):
  O, I, R = shape
  rng = np.random.default_rng(O + I + R)
  w = rng.standard_normal((O, I)).astype(np.float32)
  q, scale = int8.quantize(w)
  assert np.abs(q).max() == 127 and q.dtype == np.int8
  # Per-row symmetric codes: the dequantized weight is within half a step.
  assert np.all(np.abs(q * scale[:, None] - w) <= scale[:, None] / 2 + 1e-7)
  x = rng.standard_normal((I, R)).astype(np.float32)
  want = (q.astype(np.float64) * scale[:, None]) @ x
  if level > int8.cpu_level():
    # Asking anyway would run a narrower width and pass, testing nothing.
    pytest.skip(f"this CPU has no {int8.LEVELS[level]} (it has "
                f"{int8.LEVELS[int8.cpu_level()]})")
  try:
    assert int8.set_level(level) == level
    got = np.asarray(jax.jit(int8.matmul)(q, scale, x))
    assert int8.last_level() == level  # the kernel itself says it ran there
  finally:
    int8.set_level(-1)
  np.testing.assert_allclose(got, want, rtol=1e-5,
                             atol=1e-5 * np.abs(want).max())


@pytest.fixture(scope="module")
def tiny():
  tok = Tokenizer.train([TEXT], 300)
  return (*noisy_tiny(tok.vocab_size), tok)


def dequantized(params):
  """The model whose float32 weights are the int8 path's: every block
  kernel and the tied embedding through quantize and back."""
  def visit(tree):
    if not isinstance(tree, dict):
      return tree
    tree = {k: visit(v) for k, v in tree.items()}
    if "kernel" in tree:  # (..., in, out), layers stacked or not
      k = np.asarray(tree["kernel"])
      flat = k.reshape(-1, *k.shape[-2:])
      tree["kernel"] = jnp.asarray(np.stack([
          (q * s[:, None]).T for q, s in (int8.quantize(m.T) for m in flat)
      ]).reshape(k.shape))
    return tree
  out = visit(params)
  q, s = int8.quantize(np.asarray(params["wte"]["embedding"]))
  # The head reads the quantized table; the inputs read the float one.
  return out, jnp.asarray(q * s[:, None])


@pytest.mark.slow
def test_int8_decoding_is_float32_decoding_of_the_quantized_weights(tiny):
  config, params, _ = tiny
  prepared = C.prepare(config, params, "int8")
  c_attn = prepared["h"][0]["attn"]["c_attn"]
  assert c_attn["kernel_q"].dtype == jnp.int8 and "kernel_t" not in c_attn
  assert prepared["head_q"].shape == (config.vocab_size, config.n_embd)
  # The reference: float32 layout, dequantized kernels, quantized head.
  deq, head = dequantized(params)
  reference = C.prepare(config, deq)
  rng = np.random.RandomState(1)
  ids = jnp.asarray(rng.randint(0, config.vocab_size, (3, 1)))
  cache = C.init_cache(config, 3, 4)
  kw = dict(positions=jnp.zeros((3, 1), jnp.int32), cache=cache,
            cache_index=0, kv_mask=jnp.ones((3, 1), bool))
  got = jax.jit(C.forward, static_argnums=0)(config, prepared, ids, **kw)
  hidden = jax.jit(C.forward, static_argnums=0, static_argnames=(
      "return_logits", "capture"))(config, reference, ids, capture=(
          config.n_layer,), **kw)
  x = hidden.hidden[config.n_layer][:, 0]
  ln = reference["ln_f"]
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  normed = (x - mean) / jnp.sqrt(var + config.layer_norm_epsilon) * ln[
      "scale"] + ln["bias"]
  np.testing.assert_allclose(np.asarray(got.logits[:, 0]),
                             np.asarray(normed @ head.T), rtol=1e-4,
                             atol=1e-4)


def test_sample_int8_with_and_without_the_kernel(tiny, monkeypatch):
  config, params, tok = tiny
  greedy = dict(num_samples=2, max_new_tokens=12, top_k=1, seed=0)
  with_kernel = S.sample(config, params, tok, ["I have"], weights="int8",
                         **greedy)
  # No kernel (no compiler, or TUMBLR_INT8_KERNEL=0): the same numbers from
  # the dequantized weights in float32.
  monkeypatch.setattr(int8, "_state", {"lib": None, "tried": True,
                                       "why": "no compiler (test)"})
  prepared = C.prepare(config, params, "int8")
  assert "kernel_t" in prepared["h"][0]["mlp"]["c_fc"]
  assert "head_t" in prepared
  without = S.sample(config, params, tok, ["I have"], weights="int8",
                     **greedy)
  # It decoded from float32 weights, not the kernel's codes kept from the
  # first call.
  used = S.prepared_params(config, params, weights="int8")
  assert used["h"][0]["mlp"]["c_fc"]["kernel_t"].dtype == jnp.float32
  assert [r.tokens for r in with_kernel] == [r.tokens for r in without]
  assert all(r.tokens for r in with_kernel)
  with pytest.raises(UserError, match="weights='int4' is not one of"):
    S.sample(config, params, tok, ["I have"], weights="int4", **greedy)


@pytest.mark.slow
def test_the_bots_sampling_settings_carry_the_weights(tiny):
  # pylint: disable-next=import-outside-toplevel
  from bot import ml
  from configs import bot as bot_configs
  config, params, tok = tiny
  cfg = bot_configs.get_config("tiny")
  assert cfg.sampling.weights == "float32"
  cfg.sampling.weights = "int8"
  settings = ml.SamplingSettings.from_config(cfg.sampling)
  assert settings.weights == "int8"
  model = ml.LocalModel(type("Loaded", (), dict(
      config=config, params=params, tokenizer=tok, kind="ours"))(), None,
      dataclasses.replace(settings, max_new_tokens=8, top_k=1))
  (samples,) = model.generate(["I have"], 2, seed=0)
  want, other = (S.sample(config, params, tok, ["I have"], num_samples=2,
                          max_new_tokens=8, top_k=1, weights=weights,
                          rules=model.settings.rules(), seed=[0, 1])
                 for weights in ("int8", "float32"))
  assert [s.raw for s in samples] == [r.text for r in want]
  # Greedy tokens are the same in int8 and float32 here; the log-probability
  # the sampler measured them with is not (about 5e-4 apart on this model,
  # against 5e-7 between the bot's padded batch and this one): it tells
  # which weights the bot's sampler really decoded with.
  gap = abs(want[0].mean_logprob - other[0].mean_logprob)
  assert gap > 1e-4
  for got, ref in zip(samples, want):
    assert abs(got.mean_logprob - ref.mean_logprob) < gap / 20


@pytest.mark.slow
def test_bench_quantization_measures_kl_perplexity_and_greedy_agreement(tiny):
  # pylint: disable-next=import-outside-toplevel
  from bench import quantization
  config, params, tok = tiny
  model = type("Loaded", (), dict(config=config, params=params,
                                  tokenizer=tok))()
  docs = [TEXT[i:] for i in range(0, 60, 6)]
  got = quantization.compare(model, docs, 8)
  assert got["tokens"] > 100
  # Quantizing changes the distribution a little, never nothing at all.
  assert 0 < got["kl_per_token"] < 0.05
  assert abs(got["perplexity_int8"] / got["perplexity_float32"] - 1) < 0.05
  same = quantization.compare(model, docs[:2], 8)
  assert same["tokens"] < got["tokens"]
  greedy = quantization.greedy_agreement(model, [TEXT] * 3, 3, 16)
  assert greedy["prompts"] == 3 and 0 <= greedy["greedy_alike_share"] <= 1


@pytest.mark.slow
def test_convert_quantize_int8_stores_codes_every_command_loads(tiny,
                                                               tmp_path):
  # pylint: disable-next=import-outside-toplevel
  import subprocess, sys, os
  from gpt2 import weights as W
  config, params, tok = tiny
  src, dst = str(tmp_path / "float"), str(tmp_path / "int8")
  W.save_model(src, config, params, tok)
  done = subprocess.run(
      [sys.executable, "-m", "launch.convert", f"--src={src}", f"--dst={dst}",
       "--quantize=int8"], capture_output=True, text=True, timeout=300,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert done.returncode == 0, done.stderr
  assert "(int8)" in done.stdout

  def size(folder):
    return sum(os.path.getsize(os.path.join(d, f))
               for d, _, files in os.walk(folder) for f in files)
  assert size(dst) < size(src)
  loaded = W.load_model(dst)
  # The dequantized kernels; everything else as it was.
  deq, _ = dequantized(params)
  for got, want in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(deq)):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6,
                               atol=1e-7)
  # int8 decoding finds the same codes: the same tokens as from the source.
  greedy = dict(max_new_tokens=10, top_k=1, weights="int8")
  assert [r.tokens for r in S.sample(loaded.config, loaded.params, tok,
                                     ["I have"], **greedy)] == [
      r.tokens for r in S.sample(config, params, tok, ["I have"], **greedy)]
  bad = subprocess.run(
      [sys.executable, "-m", "launch.convert", f"--src={src}",
       f"--dst={tmp_path / 'hf'}", "--quantize=int8", "--to=hf"],
      capture_output=True, text=True, timeout=300,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines() == [
      "error: --quantize=int8 writes our format; --to=hf holds float "
      "weights only"]


def test_the_reference_path_decodes_int8_as_its_dequantized_weights(tiny):
  # The GPU/TPU path keeps int8 codes and widens them inside the program;
  # on this CPU it must write what float32 writes from the same numbers.
  config, params, tok = tiny
  prepared = S.DECODINGS["reference"].prepare(config, params, "int8")
  mlp = prepared["h"][1]["mlp"]["c_fc"]
  assert mlp["kernel_q"].dtype == jnp.int8 and "kernel" not in mlp
  deq, _ = dequantized(params)
  greedy = dict(num_samples=2, max_new_tokens=12, top_k=1, seed=0,
                decoding="reference")
  got = S.sample(config, params, tok, ["I have", "miles"], weights="int8",
                 **greedy)
  want = S.sample(config, deq, tok, ["I have", "miles"], **greedy)
  assert [r.tokens for r in got] == [r.tokens for r in want]
  for a, b in zip(got, want):
    assert abs(a.mean_logprob - b.mean_logprob) < 1e-4
