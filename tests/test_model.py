"""The Flax GPT-2 against Hugging Face's PyTorch one, and its own modes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt2 import model as M
from gpt2 import weights as W
from tests import hf_helpers

SMALL = dict(vocab_size=500, n_positions=64, n_embd=64, n_layer=3, n_head=4)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
  directory = tmp_path_factory.mktemp("hf_small")
  hf = hf_helpers.random_hf_model(directory, **SMALL)
  return hf, W.load_model(str(directory), with_tokenizer=False)


def _max_diff_on_real_tokens(ours, ref, mask):
  return float(np.abs(np.asarray(ours) - ref)[mask.astype(bool)].max())


def _parity_with_hf(hf, loaded, ids, mask) -> float:
  """Largest |logit difference| from HF over the real (unpadded) tokens."""
  ours = M.forward(loaded.config, loaded.params, jnp.asarray(ids),
                   attention_mask=jnp.asarray(mask)).logits
  return _max_diff_on_real_tokens(ours, hf_helpers.hf_logits(hf, ids, mask),
                                  mask)


def test_small_logits_match_hf_on_padded_batch(small):
  hf, loaded = small
  ids, mask = hf_helpers.padded_batch(SMALL["vocab_size"])
  diff = _parity_with_hf(hf, loaded, ids, mask)
  print(f"small parity max |diff| = {diff:.3g}")
  assert diff < 1e-4


@pytest.mark.slow
def test_124m_logits_match_hf_on_padded_batch(tmp_path):
  shape = dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12,
               n_head=12)
  hf = hf_helpers.random_hf_model(tmp_path, seed=1, **shape)
  loaded = W.load_model(str(tmp_path), with_tokenizer=False)
  assert loaded.config == M.GPT2Config.preset("124M")
  ids, mask = hf_helpers.padded_batch(shape["vocab_size"], batch=2, length=16)
  diff = _parity_with_hf(hf, loaded, ids, mask)
  print(f"124M parity max |diff| = {diff:.3g}")
  assert diff < 1e-4


@pytest.mark.slow
def test_cached_decoding_equals_full_forward(small):
  _, loaded = small
  cfg, params = loaded.config, loaded.params
  ids, mask = hf_helpers.padded_batch(cfg.vocab_size, batch=2, length=8)
  full = M.forward(cfg, params, jnp.asarray(ids),
                   attention_mask=jnp.asarray(mask)).logits
  # Prefill the first 5 slots, then feed the rest one token at a time.
  cache = M.init_cache(cfg, batch=2, length=8)
  positions = np.maximum(mask.cumsum(1) - 1, 0)
  kv_mask = np.zeros((2, 8), bool)
  kv_mask[:, :5] = mask[:, :5]
  out = M.forward(cfg, params, jnp.asarray(ids[:, :5]),
                  positions=jnp.asarray(positions[:, :5]), cache=cache,
                  cache_index=0, kv_mask=jnp.asarray(kv_mask))
  steps = [out.logits]
  for t in range(5, 8):
    kv_mask[:, t] = mask[:, t]
    out = M.forward(cfg, params, jnp.asarray(ids[:, t:t + 1]),
                    positions=jnp.asarray(positions[:, t:t + 1]),
                    cache=out.cache, cache_index=t,
                    kv_mask=jnp.asarray(kv_mask))
    steps.append(out.logits)
  cached = jnp.concatenate(steps, axis=1)
  assert _max_diff_on_real_tokens(cached, np.asarray(full), mask) < 1e-5


def test_capture_returns_chosen_layers(small):
  _, loaded = small
  cfg, params = loaded.config, loaded.params
  ids = jnp.arange(6)[None]
  out = M.forward(cfg, params, ids, capture=(0, 2, 3))
  assert sorted(out.hidden) == [0, 2, 3]
  emb = params["wte"]["embedding"][ids] + params["wpe"]["embedding"][:6][None]
  np.testing.assert_allclose(out.hidden[0], emb, atol=1e-6)
  # The last block's output through ln_f and the tied head gives the logits.
  ln = params["ln_f"]
  h = out.hidden[3]
  mu, var = h.mean(-1, keepdims=True), h.var(-1, keepdims=True)
  normed = (h - mu) / jnp.sqrt(var + cfg.layer_norm_epsilon) * ln["scale"] + ln[
      "bias"]
  np.testing.assert_allclose(normed @ params["wte"]["embedding"].T, out.logits,
                             atol=1e-4)
  # The layers in between differ from each other.
  assert not np.allclose(out.hidden[2], out.hidden[3])


@pytest.mark.slow
def test_dropout_and_remat_train_forward():
  cfg = M.GPT2Config.preset("tiny", vocab_size=100, resid_pdrop=0.5,
                            remat=True)
  params = M.init_params(cfg, jax.random.PRNGKey(0))
  ids = jnp.zeros((2, 8), jnp.int32)

  def loss(p, rng):
    out = M.forward(cfg, p, ids, deterministic=False,
                    rngs={"dropout": rng})
    return out.logits.mean()

  a = loss(params, jax.random.PRNGKey(1))
  b = loss(params, jax.random.PRNGKey(2))
  assert a != b  # dropout is on
  det = M.forward(cfg, params, ids).logits.mean()
  assert det == M.forward(cfg, params, ids).logits.mean()
  grads = jax.grad(loss)(params, jax.random.PRNGKey(1))
  assert float(jnp.abs(grads["h"]["mlp"]["c_fc"]["kernel"]).sum()) > 0


@pytest.mark.slow
def test_unrolled_layers_match_scan(small):
  """scan_layers=False: the same parameters and results, loss gradients too."""
  _, loaded = small
  cfg, params = loaded.config, loaded.params
  ids, mask = hf_helpers.padded_batch(cfg.vocab_size, batch=2, length=12)
  ids, mask = jnp.asarray(ids), jnp.asarray(mask)

  def loss(p, c):
    out = M.forward(c, p, ids, attention_mask=mask, capture=(2,))
    return (out.logits * mask[..., None]).mean() + out.hidden[2].mean(), out

  for remat in (False, True):
    scan_cfg = cfg.replace(remat=remat)
    flat_cfg = scan_cfg.replace(scan_layers=False)
    (l_scan, out_scan), g_scan = jax.value_and_grad(loss, has_aux=True)(
        params, scan_cfg)
    (l_flat, out_flat), g_flat = jax.value_and_grad(loss, has_aux=True)(
        params, flat_cfg)
    np.testing.assert_allclose(out_flat.logits, out_scan.logits, atol=1e-5)
    np.testing.assert_allclose(out_flat.hidden[2], out_scan.hidden[2],
                               atol=1e-5)
    assert abs(float(l_flat - l_scan)) < 1e-6
    for a, b in zip(jax.tree.leaves(g_flat), jax.tree.leaves(g_scan)):
      np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-4)
    assert float(jnp.abs(g_flat["h"]["attn"]["c_attn"]["kernel"]).max()) > 0
  # Dropout reaches the unrolled blocks.
  drop = cfg.replace(scan_layers=False, resid_pdrop=0.5)
  a, b = (M.forward(drop, params, ids, deterministic=False,
                    rngs={"dropout": jax.random.PRNGKey(r)}).logits
          for r in (1, 2))
  assert not np.allclose(a, b)


@pytest.mark.slow
def test_bf16_compute_keeps_fp32_params():
  cfg = M.GPT2Config.preset("tiny", vocab_size=100, dtype="bfloat16")
  params = M.init_params(cfg, jax.random.PRNGKey(0))
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  out = M.forward(cfg, params, jnp.zeros((1, 4), jnp.int32))
  ref = M.forward(cfg.replace(dtype="float32"), params,
                  jnp.zeros((1, 4), jnp.int32))
  assert out.logits.dtype == jnp.float32
  assert float(jnp.abs(out.logits - ref.logits).max()) < 0.05


def test_presets_and_logical_axes():
  for name, n in (("124M", 124_439_808), ("355M", 354_823_168),
                  ("774M", 774_030_080), ("1558M", 1_557_611_200)):
    assert M.GPT2Config.preset(name).num_params() == n
  axes = M.param_logical_axes(M.GPT2Config.preset("tiny"))
  assert tuple(axes["h"]["attn"]["c_attn"]["kernel"]) == ("layers", "embed",
                                                          "heads")
  assert tuple(axes["h"]["mlp"]["c_fc"]["kernel"]) == ("layers", "embed", "mlp")
  assert tuple(axes["wte"]["embedding"]) == ("vocab", "embed")
  shapes = M.param_shapes(M.GPT2Config.preset("1558M"))
  assert shapes["h"]["mlp"]["c_fc"]["kernel"].shape == (48, 1600, 6400)
