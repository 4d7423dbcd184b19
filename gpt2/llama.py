"""The Llama family in Flax: Llama 3.x, Qwen2.5, SmolLM2 and Mistral.

It reads as `gpt2/model.py` does, beside which it sits: the config, the
rotary position embedding, attention with a KV cache, the MLP, the block, the
model. What differs from GPT-2 is each family's: RMSNorm instead of layer
norm; no learned positions but rotary embeddings (RoPE, Su et al. 2021) with
the checkpoint's `rope_theta`, and Llama 3.1's `llama3` rescaling of the long
wavelengths; a SwiGLU MLP; grouped-query attention (`n_kv_head` key/value
heads, each shared by `n_head // n_kv_head` query heads); no biases except
Qwen2's on q, k and v; an output head of its own or tied to the embedding.

Parameter names are Hugging Face's less the leading `model.`
(`embed_tokens`, `layers`, `self_attn.q_proj`, `self_attn.k_proj`,
`self_attn.v_proj`, `self_attn.o_proj`, `mlp.gate_proj`, `mlp.up_proj`,
`mlp.down_proj`, `input_layernorm`, `post_attention_layernorm`, `norm`,
`lm_head`), so a checkpoint maps one to one (`gpt2/llama_weights.py`). As in
GPT-2 the blocks are stacked on a leading `layers` axis, scanned in a full
forward (or run in turn, `scan_layers=False`), and run in turn with a cache.
The layers are GPT-2's `Dense` (kernels (in, out)) with `use_bias` off;
a LoRA run's frozen base may hold its block kernels as int8 codes and
scales instead (`lora.base_weights=int8`), which `Dense` widens next to its
matmul.

LoRA as in GPT-2 (`gpt2/model.py`): with `lora_rank` > 0 the projections
named in `lora_targets` (their Hugging Face and PEFT names, `q_proj`,
`k_proj`, `v_proj`, `o_proj`, `gate_proj`, `up_proj`, `down_proj`) add a
low-rank update whose adapters live in the "lora" collection, stacked on the
layer axis; `forward(..., lora=adapters)` runs them, `merge_lora` folds them
into the kernels.

Shapes: B batch, T tokens of this call, S key/value slots, C = n_embd,
H query heads, K key/value heads, G = H // K, D = head_dim, L layers,
V vocabulary, F = n_inner.

The KV cache (`init_cache`) is a tuple of L dicts {"k", "v": (B, S, K, D)}:
sized for the key/value heads only, holding the keys after their rotation.
A call with a cache takes the arguments GPT-2's does (`cache_index`,
`kv_mask`, `positions`) and returns the same `GPT2Output`.
"""

import dataclasses
import functools
import math
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gpt2 import attention as attention_lib
from gpt2 import model as gpt2_model
from gpt2.errors import UserError
from gpt2.model import Dense, GPT2Output

# `model_type` in a checkpoint's config.json -> the family it is.
FAMILIES = ("llama", "qwen2", "mistral")
# How positions are rotated: plain RoPE, or Llama 3.1's rescaled RoPE.
ROPE_TYPES = ("default", "llama3")
# The projections LoRA may adapt, by their names in a block (Hugging Face's
# and PEFT's), and the module of the block each sits in.
LORA_TARGETS = {"q_proj": "self_attn", "k_proj": "self_attn",
                "v_proj": "self_attn", "o_proj": "self_attn",
                "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}

# Released shapes, as their config.json on the Hub spells them (the fields
# `config_from_hf` reads): a config names one as `model.size`, so that
# `launch.compile_check` needs no download. `preset` makes the LlamaConfig.
PRESETS = {
    "SmolLM2-135M": dict(
        model_type="llama", vocab_size=49152, hidden_size=576,
        intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, max_position_embeddings=8192,
        rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True,
        bos_token_id=0, eos_token_id=0),
    "Llama-3.2-1B": dict(
        model_type="llama", vocab_size=128256, hidden_size=2048,
        intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
        num_key_value_heads=8, head_dim=64, max_position_embeddings=131072,
        rms_norm_eps=1e-5, rope_theta=500000.0, rope_scaling=dict(
            rope_type="llama3", factor=32.0, low_freq_factor=1.0,
            high_freq_factor=4.0, original_max_position_embeddings=8192),
        tie_word_embeddings=True, bos_token_id=128000, eos_token_id=128001),
    "Qwen2.5-1.5B": dict(
        model_type="qwen2", vocab_size=151936, hidden_size=1536,
        intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
        num_key_value_heads=2, max_position_embeddings=131072,
        rms_norm_eps=1e-6, rope_theta=1000000.0, use_sliding_window=False,
        tie_word_embeddings=True, bos_token_id=151643, eos_token_id=151643),
    "Llama-3.1-8B": dict(
        model_type="llama", vocab_size=128256, hidden_size=4096,
        intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, max_position_embeddings=131072,
        rms_norm_eps=1e-5, rope_theta=500000.0, rope_scaling=dict(
            rope_type="llama3", factor=8.0, low_freq_factor=1.0,
            high_freq_factor=4.0, original_max_position_embeddings=8192),
        tie_word_embeddings=False, bos_token_id=128000, eos_token_id=128001),
    # Not released: GPT-2 "mini"'s size as a Llama, which the demo trains
    # from scratch on a CPU (configs/demo.py:llama; its end-of-text is the
    # tokenizer's, named when it is trained).
    "Llama-mini": dict(
        model_type="llama", vocab_size=2048, hidden_size=128,
        intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256,
        rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True),
}

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16,
           "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
  """Architecture and numerics of a Llama-family decoder. Hashable, so jit
  can close on it. Where a setting means what GPT2Config's does it has its
  name (`n_embd`, `n_layer`, `n_head`, `n_positions`, `dtype`, ...)."""
  model_type: str = "llama"
  vocab_size: int = 32000
  n_positions: int = 2048  # max_position_embeddings
  n_embd: int = 2048       # hidden_size
  n_layer: int = 16        # num_hidden_layers
  n_head: int = 32         # num_attention_heads
  n_kv_head: int = 8       # num_key_value_heads
  head_dim: int = 0        # 0: n_embd // n_head
  n_inner: int = 8192      # intermediate_size
  rms_norm_eps: float = 1e-5
  rope_theta: float = 10000.0
  # `llama3` rescaling (Llama 3.1/3.2's rope_scaling): wavelengths longer
  # than original / low_freq_factor are divided by `rope_factor`, shorter
  # than original / high_freq_factor kept, those between blended smoothly.
  rope_type: str = "default"
  rope_factor: float = 1.0
  rope_low_freq_factor: float = 1.0
  rope_high_freq_factor: float = 4.0
  rope_original_positions: int = 8192
  qkv_bias: bool = False   # Qwen2; Llama's attention_bias
  o_bias: bool = False     # Llama's attention_bias
  mlp_bias: bool = False   # Llama's mlp_bias
  tie_word_embeddings: bool = False
  bos_token_id: Optional[int] = None
  eos_token_ids: tuple = ()
  # Numerics and layout, as in GPT2Config.
  dtype: str = "float32"
  param_dtype: str = "float32"
  remat: bool = False
  scan_layers: bool = True
  attention: str = "auto"
  # LoRA adapters on the `lora_targets` projections (0: none), as in
  # GPT2Config.
  lora_rank: int = 0
  lora_alpha: float = 16.0
  lora_dropout: float = 0.0
  lora_targets: tuple = ()

  def __post_init__(self):
    if self.model_type not in FAMILIES:
      raise UserError(f"model_type {self.model_type!r} is not one of "
                      f"{', '.join(FAMILIES)}")
    if not self.head_dim:
      if self.n_embd % self.n_head:
        raise UserError(f"n_embd={self.n_embd} is not divisible by "
                        f"n_head={self.n_head}")
      object.__setattr__(self, "head_dim", self.n_embd // self.n_head)
    if self.n_head % self.n_kv_head:
      raise UserError(f"n_head={self.n_head} is not divisible by "
                      f"n_kv_head={self.n_kv_head}")
    if self.head_dim % 2:
      raise UserError(f"head_dim={self.head_dim} must be even for rotary "
                      "embeddings")
    if self.rope_type not in ROPE_TYPES:
      raise UserError(f"rope type {self.rope_type!r} is not one of "
                      f"{', '.join(ROPE_TYPES)}")
    for field in ("dtype", "param_dtype"):
      if getattr(self, field) not in _DTYPES:
        raise UserError(f"{field}={getattr(self, field)!r} is not one of "
                        f"{', '.join(_DTYPES)}")
    if self.attention not in attention_lib.IMPLEMENTATIONS:
      raise UserError(f"attention={self.attention!r} is not one of "
                      f"{', '.join(attention_lib.IMPLEMENTATIONS)}")
    # From JSON these come as lists; the config must stay hashable.
    object.__setattr__(self, "eos_token_ids", tuple(self.eos_token_ids))
    object.__setattr__(self, "lora_targets", tuple(self.lora_targets))
    if self.lora_rank < 0:
      raise UserError(f"lora_rank={self.lora_rank} must be >= 0")
    for target in self.lora_targets:
      if target not in LORA_TARGETS:
        raise UserError(f"lora target {target!r} is not one of "
                        f"{', '.join(LORA_TARGETS)}")
    if self.lora_rank and not self.lora_targets:
      raise UserError(f"lora_rank={self.lora_rank} needs at least one of "
                      f"{', '.join(LORA_TARGETS)} as a target")

  def ending_with(self, eot_id: int) -> "LlamaConfig":
    """This config with `eot_id` first among its end tokens (unless it is
    one already): a run, a tuning or an export names the end-of-text its
    texts were cut with, so that its directory loads with that tokenizer
    (`weights.end_of_text` reads the first)."""
    if eot_id in self.eos_token_ids:
      return self
    return self.replace(eos_token_ids=(eot_id,) + self.eos_token_ids)

  @property
  def compute_dtype(self):
    return _DTYPES[self.dtype]

  @property
  def params_dtype(self):
    return _DTYPES[self.param_dtype]

  @property
  def kv_groups(self) -> int:
    """G: query heads per key/value head."""
    return self.n_head // self.n_kv_head

  def replace(self, **kw) -> "LlamaConfig":
    return dataclasses.replace(self, **kw)

  def without_lora(self) -> "LlamaConfig":
    """The same model with its adapters merged in (`merge_lora`)."""
    return self.replace(lora_rank=0, lora_alpha=16.0, lora_dropout=0.0,
                        lora_targets=())

  @property
  def lora_scale(self) -> float:
    return self.lora_alpha / self.lora_rank

  def num_params(self) -> int:
    c, h, k, d = self.n_embd, self.n_head, self.n_kv_head, self.head_dim
    attention = c * h * d * 2 + c * k * d * 2 + (
        (h + 2 * k) * d if self.qkv_bias else 0) + (c if self.o_bias else 0)
    mlp = 3 * c * self.n_inner + (
        2 * self.n_inner + c if self.mlp_bias else 0)
    head = 0 if self.tie_word_embeddings else self.vocab_size * c
    return (self.vocab_size * c + head + c +
            self.n_layer * (attention + mlp + 2 * c))

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict) -> "LlamaConfig":
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
      raise UserError(f"unknown LlamaConfig keys: {', '.join(sorted(unknown))}")
    return cls(**d)


def config_from_hf(hf: dict, source: str, **overrides) -> LlamaConfig:
  """Our config from a Hugging Face `config.json` of a Llama, Qwen2 or
  Mistral; `overrides` set numerics (`dtype`, `param_dtype`, ...).

  RoPE settings are read where either transformers writes them: 4.x
  (and the Hub's Llama 3.x files) as `rope_theta` and `rope_scaling`, 5.x as
  `rope_parameters` holding both."""
  family = hf.get("model_type")
  if family not in FAMILIES:
    raise UserError(f"{source}: model_type {family!r} is not one this "
                    f"version loads ({', '.join(FAMILIES)})")
  if hf.get("hidden_act", "silu") != "silu":
    raise UserError(f"{source}: hidden_act {hf['hidden_act']!r} is not silu")
  if family == "mistral" and hf.get("sliding_window") is not None:
    raise UserError(f"{source}: a Mistral with a sliding window "
                    f"({hf['sliding_window']}) is not supported")
  if family == "qwen2" and hf.get("use_sliding_window"):
    raise UserError(f"{source}: a Qwen2 with use_sliding_window is not "
                    "supported")
  rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
  if any(isinstance(v, dict) for v in rope.values()):  # one per layer type
    raise UserError(f"{source}: rope settings per layer type are not "
                    "supported")
  rope_type = rope.get("rope_type", rope.get("type", "default"))
  if rope_type not in ROPE_TYPES:
    raise UserError(f"{source}: rope type {rope_type!r} is not one this "
                    f"version reads ({', '.join(ROPE_TYPES)})")
  eos = hf.get("eos_token_id")
  eos = () if eos is None else (eos,) if isinstance(eos, int) else tuple(eos)
  try:
    n_positions = int(hf["max_position_embeddings"])
    attention_bias = bool(hf.get("attention_bias", False))
    fields = dict(
        model_type=family,
        vocab_size=int(hf["vocab_size"]), n_positions=n_positions,
        n_embd=int(hf["hidden_size"]), n_layer=int(hf["num_hidden_layers"]),
        n_head=int(hf["num_attention_heads"]),
        n_kv_head=int(hf.get("num_key_value_heads")
                      or hf["num_attention_heads"]),
        head_dim=int(hf.get("head_dim") or 0),
        n_inner=int(hf["intermediate_size"]),
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
        rope_type=rope_type,
        qkv_bias=family == "qwen2" or attention_bias,
        o_bias=attention_bias,
        mlp_bias=bool(hf.get("mlp_bias", False)),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        bos_token_id=hf.get("bos_token_id"), eos_token_ids=eos)
    if rope_type == "llama3":
      fields.update(
          rope_factor=float(rope["factor"]),
          rope_low_freq_factor=float(rope["low_freq_factor"]),
          rope_high_freq_factor=float(rope["high_freq_factor"]),
          rope_original_positions=int(rope.get(
              "original_max_position_embeddings", n_positions)))
  except KeyError as e:
    raise UserError(f"{source} lacks the {family} setting {e.args[0]!r}"
                    ) from e
  except (TypeError, ValueError) as e:
    raise UserError(f"{source}: a setting has the wrong type ({e})") from e
  return LlamaConfig(**{**fields, **overrides})


def preset(name: str, **overrides) -> LlamaConfig:
  """The LlamaConfig of a released shape (`PRESETS`)."""
  if name not in PRESETS:
    raise UserError(f"unknown model size {name!r}; the Llama family's are "
                    f"{', '.join(PRESETS)}")
  return config_from_hf(PRESETS[name], name, **overrides)


def config_to_hf(config: LlamaConfig) -> dict:
  """The Hugging Face `config.json` of a model: `config_from_hf` the other
  way, in transformers 4.x's spelling (which 5.x reads too)."""
  architectures = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                   "mistral": "MistralForCausalLM"}
  eos = list(config.eos_token_ids)
  hf = {
      "architectures": [architectures[config.model_type]],
      "model_type": config.model_type,
      "vocab_size": config.vocab_size,
      "max_position_embeddings": config.n_positions,
      "hidden_size": config.n_embd,
      "num_hidden_layers": config.n_layer,
      "num_attention_heads": config.n_head,
      "num_key_value_heads": config.n_kv_head,
      "head_dim": config.head_dim,
      "intermediate_size": config.n_inner,
      "hidden_act": "silu",
      "rms_norm_eps": config.rms_norm_eps,
      "rope_theta": config.rope_theta,
      "rope_scaling": None,
      "tie_word_embeddings": config.tie_word_embeddings,
      "bos_token_id": config.bos_token_id,
      "eos_token_id": eos[0] if len(eos) == 1 else (eos or None),
      "torch_dtype": "float32",
  }
  if config.rope_type == "llama3":
    hf["rope_scaling"] = {
        "rope_type": "llama3", "factor": config.rope_factor,
        "low_freq_factor": config.rope_low_freq_factor,
        "high_freq_factor": config.rope_high_freq_factor,
        "original_max_position_embeddings": config.rope_original_positions}
  if config.model_type == "qwen2":
    # Qwen2 always has q/k/v biases and no others.
    if config.o_bias or config.mlp_bias or not config.qkv_bias:
      raise UserError("a qwen2 model has biases on q, k and v only")
    hf["use_sliding_window"] = False
  else:
    if config.qkv_bias != config.o_bias:
      raise UserError(f"a {config.model_type} model has biases on all of q, "
                      "k, v and o or none")
    hf["attention_bias"] = config.qkv_bias
    hf["mlp_bias"] = config.mlp_bias
    if config.model_type == "mistral":
      hf["sliding_window"] = None
  return hf


# ---- rotary position embeddings ---------------------------------------------


def rope_frequencies(cfg: LlamaConfig) -> np.ndarray:
  """The D/2 inverse frequencies theta^(-2i/D), float32 as transformers
  computes them, rescaled for `llama3`."""
  d = cfg.head_dim
  inv_freq = 1.0 / (np.float32(cfg.rope_theta) ** (
      np.arange(0, d, 2, dtype=np.float32) / np.float32(d)))
  if cfg.rope_type == "llama3":
    # Llama 3.1: wavelengths within the original context's quarter stay;
    # those beyond the whole original context are stretched by `factor`;
    # in between, a blend linear in original / wavelength.
    original = cfg.rope_original_positions
    low, high = cfg.rope_low_freq_factor, cfg.rope_high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    stretched = np.where(wavelen > original / low,
                         inv_freq / cfg.rope_factor, inv_freq)
    smooth = (original / wavelen - low) / (high - low)
    blended = (1 - smooth) * stretched / cfg.rope_factor + smooth * stretched
    medium = (wavelen >= original / high) & (wavelen <= original / low)
    inv_freq = np.where(medium, blended, stretched)
  return inv_freq.astype(np.float32)


def rope_angles(cfg: LlamaConfig, positions) -> tuple:
  """(cos, sin), each (B, T, D/2) float32, of the positions (B, T)."""
  angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(
      rope_frequencies(cfg))
  return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x, cos, sin):
  """Rotates x (B, T, heads, D) by its positions' angles: the pairs are
  (i, i + D/2), as the Hugging Face checkpoints' q and k are laid out."""
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  cos, sin = cos[:, :, None], sin[:, :, None]
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


# ---- the blocks --------------------------------------------------------------


def _rms_norm(cfg: LlamaConfig, name: str):
  return nn.RMSNorm(
      epsilon=cfg.rms_norm_eps, dtype=jnp.float32,
      param_dtype=cfg.params_dtype,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
      name=name)


class Attention(nn.Module):
  """Causal grouped-query self-attention with rotary positions and an
  optional KV cache of the K key/value heads."""
  config: LlamaConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, x, context, valid, layer_cache, cache_index):
    """x (B, T, C); context (bias (B, 1, T, S), cos, sin (B, T, D/2));
    valid (B, T) or None; layer_cache {"k", "v": (B, S, K, D)} or None.
    Returns (B, T, C) and the updated layer cache."""
    cfg = self.config
    bias, cos, sin = context
    B, T, _ = x.shape
    H, K, G, D = cfg.n_head, cfg.n_kv_head, cfg.kv_groups, cfg.head_dim

    def projection(features, axes, use_bias, name):
      return Dense(features, axes, cfg, site=name,
                   use_bias=use_bias, deterministic=self.deterministic,
                   name=name)

    q = projection(H * D, ("embed", "heads"), cfg.qkv_bias, "q_proj")(x)
    k = projection(K * D, ("embed", "kv_heads"), cfg.qkv_bias, "k_proj")(x)
    v = projection(K * D, ("embed", "kv_heads"), cfg.qkv_bias, "v_proj")(x)
    q = apply_rope(q.reshape(B, T, H, D), cos, sin)
    k = apply_rope(k.reshape(B, T, K, D), cos, sin)
    v = v.reshape(B, T, K, D)
    own_tokens = layer_cache is None or (isinstance(cache_index, int) and
                                         cache_index == 0)
    keys, values = k, v
    if layer_cache is not None:  # write this call's keys and values
      slot = (0, cache_index, 0, 0)
      keys = jax.lax.dynamic_update_slice(
          layer_cache["k"], k.astype(layer_cache["k"].dtype), slot)
      values = jax.lax.dynamic_update_slice(
          layer_cache["v"], v.astype(layer_cache["v"].dtype), slot)
      layer_cache = {"k": keys, "v": values}
    impl = attention_lib.resolve(cfg.attention, dtype=cfg.compute_dtype,
                                 head_dim=D, length=T)
    if own_tokens and impl != "reference":
      # The kernels take as many key heads as query heads: query head h
      # reads key/value head h // G, as Hugging Face's repeat_kv lays out.
      out = attention_lib.causal_attention(
          q, jnp.repeat(k, G, axis=2), jnp.repeat(v, G, axis=2), valid, impl)
    else:  # the reference, reading each cached key/value head once
      qg = q.reshape(B, T, K, G, D)
      scores = jnp.einsum("btkgd,bskd->bkgts", qg, keys.astype(q.dtype),
                          preferred_element_type=jnp.float32)
      scores = scores / jnp.sqrt(jnp.float32(D)) + bias[:, :, None]
      probs = jax.nn.softmax(scores, axis=-1)  # (B, K, G, T, S)
      out = jnp.einsum("bkgts,bskd->btkgd", probs.astype(q.dtype),
                       values.astype(q.dtype))
    out = projection(cfg.n_embd, ("heads", "embed"), cfg.o_bias, "o_proj")(
        out.reshape(B, T, H * D))
    return out, layer_cache


class MLP(nn.Module):
  """SwiGLU: down(silu(gate(x)) * up(x))."""
  config: LlamaConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, x):
    cfg = self.config

    def projection(features, axes, name):
      return Dense(features, axes, cfg, site=name,
                   use_bias=cfg.mlp_bias, deterministic=self.deterministic,
                   name=name)

    gate = projection(cfg.n_inner, ("embed", "mlp"), "gate_proj")(x)
    up = projection(cfg.n_inner, ("embed", "mlp"), "up_proj")(x)
    return projection(cfg.n_embd, ("mlp", "embed"), "down_proj")(
        jax.nn.silu(gate) * up)


class Block(nn.Module):
  """One decoder block, in the form of GPT-2's `Block` (`nn.scan`'s: x is
  the carry, the output (x, (layer cache, x when `emit_hidden`)))."""
  config: LlamaConfig
  deterministic: bool = True
  emit_hidden: bool = False

  @nn.compact
  def __call__(self, x, context, valid, layer_cache=None, cache_index=0):
    cfg = self.config
    a, layer_cache = Attention(cfg, self.deterministic, name="self_attn")(
        _rms_norm(cfg, "input_layernorm")(x).astype(cfg.compute_dtype),
        context, valid, layer_cache, cache_index)
    x = x + a
    m = MLP(cfg, self.deterministic, name="mlp")(
        _rms_norm(cfg, "post_attention_layernorm")(x).astype(
            cfg.compute_dtype))
    x = x + m
    x = nn.with_logical_constraint(x, ("batch", "length", "embed_act"))
    return x, (layer_cache, x if self.emit_hidden else None)


class Llama(nn.Module):
  config: LlamaConfig

  @nn.compact
  def __call__(self, input_ids, *, positions=None, attention_mask=None,
               cache=None, cache_index=0, kv_mask=None,
               capture: Sequence[int] = (), deterministic: bool = True,
               return_logits: bool = True):
    """Runs the model on `input_ids` (B, T); the arguments and the output
    (`GPT2Output`) are `gpt2.model.GPT2.__call__`'s (`params["layers"]`
    may be a tuple of per-layer trees, `unstack_layers`)."""
    cfg = self.config
    B, T = input_ids.shape
    positions, valid, bias = gpt2_model.attention_bias(
        input_ids.shape, positions=positions, attention_mask=attention_mask,
        cached=cache is not None, cache_index=cache_index, kv_mask=kv_mask)
    context = (bias,) + rope_angles(cfg, positions)

    embed_tokens = nn.Embed(
        cfg.vocab_size, cfg.n_embd, dtype=cfg.compute_dtype,
        param_dtype=cfg.params_dtype,
        embedding_init=nn.with_logical_partitioning(
            nn.initializers.normal(0.02), ("vocab", "embed")),
        name="embed_tokens")
    x = embed_tokens(input_ids).astype(jnp.float32)  # the residual stream

    x_in = x
    layers = (None if self.is_initializing() else
              self.variables.get("params", {}).get("layers"))
    if layers is not None and (cache is not None or not cfg.scan_layers or
                               isinstance(layers, (list, tuple))):
      # pylint: disable=protected-access
      if not isinstance(layers, (list, tuple)):  # else `unstack_layers`'
        layers = gpt2_model._layer_slices(layers, cfg.n_layer)
      adapters = self.variables.get("lora", {}).get("layers")
      if adapters is not None:  # each block's own slice of the adapters
        layers = [{"params": p, "lora": a} for p, a in zip(
            layers, gpt2_model._layer_slices(adapters, cfg.n_layer))]
      else:
        layers = [{"params": p} for p in layers]
      rng = None if deterministic else self.make_rng("dropout")
      x, cache, layer_out = gpt2_model._blocks_in_turn(
          cfg, layers, x, context, valid, cache, cache_index, deterministic,
          rng, block_cls=Block)
    else:
      block = Block
      if cfg.remat:
        block = nn.remat(Block, prevent_cse=False,
                         policy=jax.checkpoint_policies.nothing_saveable)
      blocks = nn.scan(
          block, variable_axes={"params": 0, "lora": 0},
          split_rngs={"params": True, "dropout": True},
          in_axes=(nn.broadcast, nn.broadcast), length=cfg.n_layer,
          metadata_params={nn.PARTITION_NAME: "layers"})(
              cfg, deterministic, bool(capture), name="layers")
      x, (_, layer_out) = blocks(x, context, valid)

    hidden = None
    if capture:
      gpt2_model.check_capture(cfg, capture)
      hidden = {layer: x_in if layer == 0 else layer_out[layer - 1]
                for layer in capture}
    logits = None
    if return_logits:
      rows = _rms_norm(cfg, "norm")(x).reshape(B * T, -1).astype(
          cfg.compute_dtype)
      if cfg.tie_word_embeddings:
        logits = embed_tokens.attend(rows)
      else:
        logits = Dense(cfg.vocab_size, ("embed", "vocab"), cfg,
                       use_bias=False, name="lm_head")(rows)
      logits = logits.astype(jnp.float32).reshape(B, T, -1)
    return GPT2Output(logits=logits, cache=cache, hidden=hidden)


# ---- parameters, cache and the forward pass ---------------------------------


def init_cache(config: LlamaConfig, batch: int, length: int,
               dtype=None) -> tuple:
  """An empty KV cache of `length` slots for the K key/value heads, in the
  compute dtype by default."""
  dtype = dtype or config.compute_dtype
  shape = (batch, length, config.n_kv_head, config.head_dim)
  return tuple({"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}
               for _ in range(config.n_layer))


def unstack_layers(params, dtype=None) -> dict:
  """`params` with `layers` a tuple of per-layer trees, the weights but the
  norms' in `dtype`: `gpt2.model.unstack_layers` for this family."""
  return gpt2_model.unstack_layers(params, dtype, key="layers")


def _init_variables(config, rng):
  return Llama(config).init(rng, jnp.zeros((1, 1), jnp.int32))


@functools.partial(jax.jit, static_argnums=0)
def init_params(config: LlamaConfig, rng) -> dict:
  """Random parameters as a plain pytree of arrays."""
  return nn.unbox(_init_variables(config, rng)["params"])


@functools.partial(jax.jit, static_argnums=0)
def init_lora(config: LlamaConfig, rng) -> dict:
  """Fresh LoRA adapters of a config with `lora_rank` > 0: {"layers":
  {"self_attn": {"q_proj": {"a", "b"}}, ...}}, stacked on the layer axis."""
  if not config.lora_rank:
    raise ValueError("init_lora needs a config with lora_rank > 0")
  return nn.unbox(_init_variables(config, rng)["lora"])


def param_logical_axes(config: LlamaConfig, collection: str = "params"):
  """A pytree like the params (or, with collection="lora", the adapters)
  whose leaves are PartitionSpecs of logical names."""
  variables = jax.eval_shape(functools.partial(_init_variables, config),
                             jax.random.PRNGKey(0))
  return nn.get_partition_spec(variables)[collection]


def lora_shapes(config: LlamaConfig):
  """A pytree like the adapters whose leaves are ShapeDtypeStructs."""
  return jax.eval_shape(functools.partial(init_lora, config),
                        jax.random.PRNGKey(0))


def merge_lora(config: LlamaConfig, params: dict, lora: dict) -> tuple:
  """(config without LoRA, params with the adapters folded into their
  kernels): `gpt2.model.merge_lora` for this family."""
  return gpt2_model.merge_lora(config, params, lora, key="layers",
                               path=lambda target: (LORA_TARGETS[target],
                                                    target))


def param_shapes(config: LlamaConfig):
  """A pytree like the params whose leaves are ShapeDtypeStructs."""
  return jax.eval_shape(functools.partial(init_params, config),
                        jax.random.PRNGKey(0))


def forward(config: LlamaConfig, params, input_ids, *, lora=None,
            **kw) -> GPT2Output:
  """`Llama(config).apply` on plain params (and a LoRA config's adapters);
  keyword arguments as in `Llama.__call__`."""
  rngs = kw.pop("rngs", None)
  variables = {"params": params}
  if lora is not None:
    variables["lora"] = lora
  return Llama(config).apply(variables, input_ids, rngs=rngs, **kw)
