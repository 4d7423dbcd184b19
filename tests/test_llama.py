"""The Flax Llama family against transformers' own, on tiny random models
that transformers writes in the test (nothing is downloaded)."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt2 import llama
from gpt2 import llama_weights
from gpt2 import sharding
from gpt2.errors import UserError
from tests import hf_helpers

VOCAB = 101
# Llama 3.1/3.2's rope scaling, with an original context such that the four
# frequencies of head_dim 8 at theta 5e5 (wavelengths about 6, 167, 4400 and
# 1.2e5) fall in all three bands: kept, blended and stretched.
LLAMA3_ROPE = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                   high_freq_factor=4.0, original_max_position_embeddings=256)
SHAPE = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
             num_hidden_layers=2, num_attention_heads=4)


def _configs():
  import transformers  # pylint: disable=import-outside-toplevel
  return {
      # GQA (2 key/value heads for 4 query heads), llama3 rope, untied head.
      "llama": transformers.LlamaConfig(
          **SHAPE, num_key_value_heads=2, rope_theta=500000.0,
          rope_scaling=LLAMA3_ROPE, max_position_embeddings=512,
          tie_word_embeddings=False),
      # q/k/v biases, the head tied to the embedding.
      "qwen2": transformers.Qwen2Config(
          **SHAPE, num_key_value_heads=2, tie_word_embeddings=True,
          max_position_embeddings=512),
      # No sliding window; a head_dim other than hidden / heads.
      "mistral": transformers.MistralConfig(
          **SHAPE, num_key_value_heads=1, head_dim=16, sliding_window=None,
          max_position_embeddings=512),
  }


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  """family -> (transformers model, its directory, our config, params)."""
  out = {}
  for family, config in _configs().items():
    directory = str(tmp_path_factory.mktemp(family))
    hf = hf_helpers.random_decoder(config, directory)
    out[family] = (hf, directory) + llama_weights.load_hf(directory)
  return out


# Jitted: run op by op, a forward of even a tiny model takes seconds.
_forward = jax.jit(llama.forward, static_argnums=0)
# A prefill into an empty cache (slot 0, known when traced: the kernel path).
_prefill = jax.jit(functools.partial(llama.forward, cache_index=0),
                   static_argnums=0)


def _max_diff(ours, ref, mask):
  return float(np.abs(np.asarray(ours) - ref)[mask.astype(bool)].max())


@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral"])
def test_logits_match_transformers(models, family):
  hf, _, config, params = models[family]
  assert config.model_type == family
  ids = np.random.RandomState(1).randint(0, VOCAB, (3, 24))
  full = np.ones_like(ids)
  ours = _forward(config, params, jnp.asarray(ids)).logits
  assert _max_diff(ours, hf_helpers.hf_logits(hf, ids, full), full) < 1e-4
  # Left-padded prompts of different lengths: the real tokens' logits.
  ids, mask = hf_helpers.padded_batch(VOCAB, batch=3, length=24, seed=2)
  ours = _forward(config, params, jnp.asarray(ids),
                  attention_mask=jnp.asarray(mask)).logits
  diff = _max_diff(ours, hf_helpers.hf_logits(hf, ids, mask), mask)
  print(f"{family} parity max |diff| = {diff:.3g}")
  assert diff < 1e-4


def test_config_reads_each_family(models):
  llama_cfg = models["llama"][2]
  assert (llama_cfg.n_kv_head, llama_cfg.rope_type, llama_cfg.rope_factor,
          llama_cfg.rope_original_positions) == (2, "llama3", 8.0, 256)
  assert not llama_cfg.tie_word_embeddings and not llama_cfg.qkv_bias
  qwen = models["qwen2"][2]
  assert qwen.qkv_bias and not qwen.o_bias and qwen.tie_word_embeddings
  assert "lm_head" not in models["qwen2"][3]
  assert models["mistral"][2].head_dim == 16


def test_unrolled_blocks_equal_the_scan(models):
  _, _, config, params = models["llama"]
  ids = jnp.asarray(np.random.RandomState(3).randint(0, VOCAB, (2, 10)))
  scanned = _forward(config, params, ids).logits
  unrolled = _forward(config.replace(scan_layers=False), params,
                      ids).logits
  np.testing.assert_allclose(unrolled, scanned, atol=1e-5)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_cached_decoding_equals_full_forward(models, family):
  _, _, config, params = models[family]
  ids, mask = hf_helpers.padded_batch(VOCAB, batch=2, length=12, seed=4)
  full = np.asarray(_forward(config, params, jnp.asarray(ids),
                             attention_mask=jnp.asarray(mask)).logits)
  cache = llama.init_cache(config, batch=2, length=12)
  # Sized for the key/value heads only.
  assert cache[0]["k"].shape == (2, 12, config.n_kv_head, config.head_dim)
  assert config.n_kv_head < config.n_head
  positions = np.maximum(mask.cumsum(1) - 1, 0)
  kv_mask = np.zeros((2, 12), bool)
  kv_mask[:, :8] = mask[:, :8]
  out = _prefill(config, params, jnp.asarray(ids[:, :8]),
                 positions=jnp.asarray(positions[:, :8]), cache=cache,
                 kv_mask=jnp.asarray(kv_mask))
  assert _max_diff(out.logits, full[:, :8], mask[:, :8]) < 1e-5
  for t in range(8, 12):  # then one token at a time
    kv_mask[:, t] = mask[:, t]
    out = _forward(config, params, jnp.asarray(ids[:, t:t + 1]),
                   positions=jnp.asarray(positions[:, t:t + 1]),
                   cache=out.cache, cache_index=jnp.int32(t),
                   kv_mask=jnp.asarray(kv_mask))
    np.testing.assert_allclose(out.logits[:, 0], full[:, t], atol=1e-5)


def test_hub_style_rope_settings_read_the_same(models, tmp_path):
  """The Hub's Llama 3.x config.json (transformers 4.x) has `rope_theta`
  and `rope_scaling` at the top, where 5.x writes `rope_parameters`."""
  _, directory, config, _ = models["llama"]
  with open(os.path.join(directory, "config.json"), encoding="utf-8") as f:
    hf = json.load(f)
  rope = hf.pop("rope_parameters")
  hf["rope_theta"] = rope.pop("rope_theta")
  hf["rope_scaling"] = rope
  assert llama.config_from_hf(hf, "config.json") == config
  del hf["rope_scaling"]
  assert llama.config_from_hf(hf, "config.json").rope_type == "default"


def test_sharded_bfloat16_checkpoint_loads(tmp_path):
  """Weights in shards (model.safetensors.index.json), in bfloat16 as the
  Hub's Llama 3.x and Qwen2.5 ship them."""
  import torch  # pylint: disable=import-outside-toplevel
  hf = hf_helpers.random_decoder(_configs()["llama"], tmp_path, seed=5,
                     dtype=torch.bfloat16, max_shard_size="20KB")
  assert os.path.exists(tmp_path / llama_weights.INDEX)
  assert not os.path.exists(tmp_path / "model.safetensors")
  config, params = llama_weights.load_hf(str(tmp_path))
  state = hf.state_dict()
  for i in range(config.n_layer):
    want = state[f"model.layers.{i}.self_attn.k_proj.weight"].float().numpy()
    np.testing.assert_array_equal(
        params["layers"]["self_attn"]["k_proj"]["kernel"][i], want.T)
  np.testing.assert_array_equal(
      params["lm_head"]["kernel"], state["lm_head.weight"].float().numpy().T)
  assert params["embed_tokens"]["embedding"].dtype == np.float32


@pytest.mark.parametrize("change, named", [
    (dict(model_type="gpt_neox"), "'gpt_neox'"),
    (dict(model_type="mistral", sliding_window=4096), "sliding window"),
    (dict(rope_parameters=dict(rope_type="yarn", factor=4.0)), "'yarn'"),
    (dict(rope_parameters=dict(full_attention=dict(rope_theta=1e4))),
     "per layer type"),
    (dict(hidden_act="gelu"), "'gelu'"),
])
def test_unsupported_config_is_one_error_line(models, tmp_path, change, named):
  _, directory, _, _ = models["llama"]
  with open(os.path.join(directory, "config.json"), encoding="utf-8") as f:
    hf = json.load(f)
  (tmp_path / "config.json").write_text(json.dumps({**hf, **change}))
  with pytest.raises(UserError) as e:
    llama_weights.load_hf(str(tmp_path))
  message = str(e.value)
  assert "\n" not in message and named in message
  assert str(tmp_path / "config.json") in message


def test_params_place_on_a_mesh_by_logical_axes(models):
  _, _, config, _ = models["llama"]
  axes = llama.param_logical_axes(config)
  attn = axes["layers"]["self_attn"]
  assert tuple(attn["k_proj"]["kernel"]) == ("layers", "embed", "kv_heads")
  assert tuple(attn["o_proj"]["kernel"]) == ("layers", "heads", "embed")
  assert tuple(axes["lm_head"]["kernel"]) == ("embed", "vocab")
  mesh = sharding.make_mesh(dict(data=1, fsdp=1, model=1),
                            jax.devices()[:1])
  shardings = sharding.tree_shardings(axes, llama.param_shapes(config), mesh,
                                      sharding.DEFAULT_RULES)
  spec = shardings["layers"]["self_attn"]["k_proj"]["kernel"].spec
  assert tuple(spec) == (None, "fsdp", "model")
