"""GPT-2 in Flax: the reference model, for training, cached decoding and taps.

It reads as nanoGPT's model.py does: the config, a dense layer and a layer
norm, attention with a KV cache, the MLP, the block, the model. Parameter
names follow OpenAI's / Hugging Face's (`wte`, `wpe`, `h`, `ln_1`,
`attn.c_attn`, `attn.c_proj`, `ln_2`, `mlp.c_fc`, `mlp.c_proj`, `ln_f`), so
a checkpoint maps one to one. The blocks' parameters are stacked along a
leading `layers` axis (`h` leaves are (L, ...)): a full-sequence forward runs
them under `nn.scan`, so compile time does not grow with depth, or with
`scan_layers=False` one after another on slices of the same arrays (faster
on a CPU). Parameters and activations carry logical axis names (`embed`,
`heads`, `mlp`, `vocab`, `layers`, `batch`, ...) that a config's rules place
on the device mesh (`gpt2/sharding.py`).

Attention of a call's tokens to themselves (training, and a prefill into an
empty cache) runs the kernel `config.attention` names (`gpt2/attention.py`:
cuDNN on a GPU, Pallas splash attention on a TPU, a hand-written backward on
a CPU); the two einsums in `Attention` are the reference the kernels are
tested against, and what a decoding step runs. The sampler decodes on a CPU
with `gpt2/cpu_decoding.py`, the same arithmetic laid out for XLA:CPU.

LoRA (Hu et al. 2021): with `lora_rank` > 0 the `Dense` layers named in
`lora_targets` add a low-rank update `alpha / rank * x A B` beside their
frozen kernel. The adapters (`a` (in, r), `b` (r, out), float32, `b` zero at
init so that step 0 is the base model) live in a variable collection of
their own, "lora", stacked on the layer axis like the blocks' "params";
`forward(..., lora=adapters)` runs them, and `merge_lora` folds them into
the kernels once, for sampling and export.

Shapes: B batch, T tokens of this call, S key/value slots (T without a
cache, the cache's length with one), C = n_embd, H heads, D = C // H,
L layers, V vocabulary.

The KV cache (`init_cache`) is a tuple of L dicts {"k", "v": (B, S, H, D)}.
A call with a cache writes its T tokens into slots [cache_index,
cache_index + T) of every row; `kv_mask` (B, S) says which slots hold real
tokens (False for left padding and for slots not written yet), and
`positions` (B, T) gives each new token's position id. A query at slot q
sees the key slots <= q that `kv_mask` allows.
"""

import dataclasses
import functools
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gpt2 import attention as attention_lib
from gpt2 import int8 as int8_lib
from gpt2.errors import UserError

Array = Any

# OpenAI's released shapes; "small", "mini" and "tiny" are for tests and CPU
# demos.
PRESETS = {
    "124M": dict(n_layer=12, n_head=12, n_embd=768),
    "355M": dict(n_layer=24, n_head=16, n_embd=1024),
    "774M": dict(n_layer=36, n_head=20, n_embd=1280),
    "1558M": dict(n_layer=48, n_head=25, n_embd=1600),
    "small": dict(n_layer=4, n_head=4, n_embd=256),
    "mini": dict(n_layer=4, n_head=4, n_embd=128, n_positions=256),
    "tiny": dict(n_layer=2, n_head=2, n_embd=64, n_positions=128),
}

# The dense layers LoRA may adapt, by their names within a block.
LORA_TARGETS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16,
           "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class GPT2Config:
  """Architecture and numerics of a GPT-2. Hashable, so jit can close on it."""
  vocab_size: int = 50257
  n_positions: int = 1024
  n_embd: int = 768
  n_layer: int = 12
  n_head: int = 12
  layer_norm_epsilon: float = 1e-5
  # Dropout rates (the original fine-tune ran with all three at 0).
  embd_pdrop: float = 0.0
  attn_pdrop: float = 0.0
  resid_pdrop: float = 0.0
  # Numerics: parameters are stored in `param_dtype`, matmuls run in `dtype`.
  dtype: str = "float32"
  param_dtype: str = "float32"
  # Recompute each block's activations in the backward pass.
  remat: bool = False
  # Run the blocks of a full-sequence forward under `lax.scan` (compile time
  # flat in depth: TPUs, big models) or one after another on slices of the
  # same stacked parameters (faster on CPU, where the scan stacks every
  # layer's activations for the backward pass). The parameters are the same.
  scan_layers: bool = True
  # The attention kernel for a call's own tokens: one of
  # `gpt2.attention.IMPLEMENTATIONS`; "auto" picks by platform.
  attention: str = "auto"
  # LoRA adapters on the `lora_targets` layers (0: none); `alpha / rank`
  # scales their update, `lora_dropout` drops their input in training.
  lora_rank: int = 0
  lora_alpha: float = 16.0
  lora_dropout: float = 0.0
  lora_targets: tuple = ()

  @classmethod
  def preset(cls, name: str, **overrides) -> "GPT2Config":
    if name not in PRESETS:
      raise UserError(f"unknown model size {name!r}; choose one of "
                      f"{', '.join(PRESETS)}")
    return cls(**{**PRESETS[name], **overrides})

  def __post_init__(self):
    if self.n_embd % self.n_head:
      raise UserError(f"n_embd={self.n_embd} is not divisible by "
                      f"n_head={self.n_head}")
    for field in ("dtype", "param_dtype"):
      if getattr(self, field) not in _DTYPES:
        raise UserError(f"{field}={getattr(self, field)!r} is not one of "
                        f"{', '.join(_DTYPES)}")
    if self.attention not in attention_lib.IMPLEMENTATIONS:
      raise UserError(f"attention={self.attention!r} is not one of "
                      f"{', '.join(attention_lib.IMPLEMENTATIONS)}")
    # From JSON the targets come as a list; the config must stay hashable.
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

  @property
  def compute_dtype(self):
    return _DTYPES[self.dtype]

  @property
  def params_dtype(self):
    return _DTYPES[self.param_dtype]

  @property
  def head_dim(self) -> int:
    return self.n_embd // self.n_head

  def replace(self, **kw) -> "GPT2Config":
    return dataclasses.replace(self, **kw)

  def without_lora(self) -> "GPT2Config":
    """The same model with its adapters merged in (`merge_lora`)."""
    return self.replace(lora_rank=0, lora_alpha=16.0, lora_dropout=0.0,
                        lora_targets=())

  @property
  def lora_scale(self) -> float:
    return self.lora_alpha / self.lora_rank

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict) -> "GPT2Config":
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
      raise UserError(f"unknown GPT2Config keys: {', '.join(sorted(unknown))}")
    return cls(**d)

  def num_params(self) -> int:
    c, f = self.n_embd, 4 * self.n_embd
    block = 2 * 2 * c + (c * 3 * c + 3 * c) + (c * c + c) + (c * f + f) + (
        f * c + c)
    return self.vocab_size * c + self.n_positions * c + self.n_layer * block + 2 * c


class Dense(nn.Module):
  """`nn.Dense` (`kernel` (in, out), `bias`) on x (..., in) flattened to
  (N, in): XLA:CPU computes the kernel's gradient, a contraction over batch
  and time together, about 3x slower when they are two axes than one.

  When `site` (its name in the block, one of LORA_TARGETS) is a LoRA target
  of the config, it adds `alpha / rank * dropout(x) @ a @ b`.

  Params holding `kernel_q` and `kernel_scale` instead of `kernel` (a LoRA
  run's frozen base stored as int8, `gpt2.int8.quantize_blocks`) are
  widened to the compute dtype here, next to the matmul: one layer's
  kernels at a time are ever wide, so the base takes a byte a weight.
  Params holding `kernel_qt` (the codes (out, in), `gpt2.int8.
  transpose_codes`: a Llama's int8 decoding on a CPU) are multiplied by
  the int8 kernel, `gpt2.int8.matmul`, the rows as its columns."""
  features: int
  axes: tuple
  config: GPT2Config
  init_std: float = 0.02
  site: str = ""
  deterministic: bool = True
  # Llama-family layers have no bias (Qwen2's q/k/v projections do).
  use_bias: bool = True

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    dt = cfg.compute_dtype
    rows = x.reshape(-1, x.shape[-1]).astype(dt)
    if self.has_variable("params", "kernel_qt"):
      y = int8_lib.matmul(self.get_variable("params", "kernel_qt"),
                          self.get_variable("params", "kernel_scale"),
                          rows.T).T.astype(dt)
    else:
      if self.has_variable("params", "kernel_q"):
        kernel = int8_lib.dequantize_dense(
            {name: self.get_variable("params", name)
             for name in ("kernel_q", "kernel_scale")}, dt)["kernel"]
      else:
        kernel = self.param(
            "kernel", nn.with_logical_partitioning(
                nn.initializers.normal(self.init_std), self.axes),
            (x.shape[-1], self.features), cfg.params_dtype)
      y = rows @ kernel.astype(dt)
    if self.use_bias:
      bias = self.param(
          "bias", nn.with_logical_partitioning(nn.initializers.zeros,
                                               self.axes[-1:]),
          (self.features,), cfg.params_dtype)
      y = y + bias.astype(dt)
    if cfg.lora_rank and self.site in cfg.lora_targets:
      y = y + self._adapter(rows)
    return y.reshape(*x.shape[:-1], self.features)

  def _adapter(self, rows):
    """The low-rank update of (N, in) rows, (N, out)."""
    cfg = self.config
    dt = cfg.compute_dtype
    rank, fan_in = cfg.lora_rank, rows.shape[-1]

    def adapter(name, init, shape, axes):
      boxed = nn.with_logical_partitioning(init, axes)
      return self.variable("lora", name, lambda: boxed(
          self.make_rng("params"), shape, jnp.float32)).value

    # A as LoRA's reference code draws it (kaiming-uniform, bound
    # 1/sqrt(in)); B zero, so that the update starts at zero.
    a = adapter("a", nn.initializers.variance_scaling(1 / 3, "fan_in",
                                                      "uniform"),
                (fan_in, rank), (self.axes[0], "lora_rank"))
    b = adapter("b", nn.initializers.zeros, (rank, self.features),
                ("lora_rank", self.axes[-1]))
    rows = nn.Dropout(cfg.lora_dropout)(rows, deterministic=self.deterministic)
    return ((rows @ a.astype(dt)) @ b.astype(dt)) * jnp.asarray(
        cfg.lora_scale, dt)


def _layer_norm(config, name):
  return nn.LayerNorm(
      epsilon=config.layer_norm_epsilon, dtype=jnp.float32,
      param_dtype=config.params_dtype,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)),
      name=name)


def _residual_std(config):
  """GPT-2 scales the residual projections' init by 1/sqrt(2 L)."""
  return 0.02 / (2 * config.n_layer) ** 0.5


class Attention(nn.Module):
  """Causal multi-head self-attention, with an optional KV cache."""
  config: GPT2Config

  @nn.compact
  def __call__(self, x, bias, valid, layer_cache, cache_index, deterministic):
    """x (B, T, C); bias (B, 1, T, S) the additive mask over the key slots;
    valid (B, T) which of this call's tokens are real (None: all);
    layer_cache {"k", "v": (B, S, H, D)} or None. Returns (B, T, C) and the
    updated layer cache."""
    cfg = self.config
    B, T, C = x.shape
    H, D = cfg.n_head, cfg.head_dim
    qkv = Dense(3 * C, ("embed", "heads"), cfg, site="attn.c_attn",
                deterministic=deterministic, name="c_attn")(x)
    q, k, v = (t.reshape(B, T, H, D) for t in jnp.split(qkv, 3, axis=-1))
    # The tokens attend only to themselves without a cache, or when they
    # are the first written into one (nothing before them; causality hides
    # the empty slots after): then a fused kernel applies.
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
    dropout = cfg.attn_pdrop > 0 and not deterministic
    impl = attention_lib.resolve(cfg.attention, dtype=cfg.compute_dtype,
                                 head_dim=D, length=T)
    if own_tokens and not dropout and impl != "reference":
      out = attention_lib.causal_attention(q, k, v, valid, impl)
    else:  # the reference
      scores = jnp.einsum("bthd,bshd->bhts", q, keys.astype(q.dtype),
                          preferred_element_type=jnp.float32)
      scores = scores / jnp.sqrt(jnp.float32(D)) + bias
      probs = jax.nn.softmax(scores, axis=-1)  # (B, H, T, S)
      probs = nn.Dropout(cfg.attn_pdrop)(probs, deterministic=deterministic)
      out = jnp.einsum("bhts,bshd->bthd", probs.astype(q.dtype),
                       values.astype(q.dtype))
    out = Dense(C, ("heads", "embed"), cfg, _residual_std(cfg),
                site="attn.c_proj", deterministic=deterministic,
                name="c_proj")(out.reshape(B, T, C))
    return out, layer_cache


class MLP(nn.Module):
  config: GPT2Config
  deterministic: bool = True

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    h = Dense(4 * cfg.n_embd, ("embed", "mlp"), cfg, site="mlp.c_fc",
              deterministic=self.deterministic, name="c_fc")(x)
    h = jax.nn.gelu(h, approximate=True)  # GPT-2's "gelu_new"
    return Dense(cfg.n_embd, ("mlp", "embed"), cfg, _residual_std(cfg),
                 site="mlp.c_proj", deterministic=self.deterministic,
                 name="c_proj")(h)


class Block(nn.Module):
  """One transformer block. Its call has `nn.scan`'s form: x is the carry,
  and the output is (x, (layer cache, x when `emit_hidden`))."""
  config: GPT2Config
  deterministic: bool = True
  # Emit each block's output as a scan output (only when a layer is tapped,
  # since it keeps (L, B, T, C) alive).
  emit_hidden: bool = False

  @nn.compact
  def __call__(self, x, bias, valid, layer_cache=None, cache_index=0):
    cfg = self.config
    drop = nn.Dropout(cfg.resid_pdrop)
    a, layer_cache = Attention(cfg, name="attn")(
        _layer_norm(cfg, "ln_1")(x).astype(cfg.compute_dtype), bias, valid,
        layer_cache, cache_index, self.deterministic)
    x = x + drop(a, deterministic=self.deterministic)
    m = MLP(cfg, self.deterministic, name="mlp")(
        _layer_norm(cfg, "ln_2")(x).astype(cfg.compute_dtype))
    x = x + drop(m, deterministic=self.deterministic)
    x = nn.with_logical_constraint(x, ("batch", "length", "embed_act"))
    return x, (layer_cache, x if self.emit_hidden else None)


@dataclasses.dataclass
class GPT2Output:
  """What a forward pass returns.

  logits: (B, T, V) float32 (None when not asked for).
  cache: the updated KV cache, or None when called without one.
  hidden: {layer: (B, T, C)} for the requested `capture` layers; layer 0 is
    the embedding output and layer i the output of block i (before ln_f).
  """
  logits: Array
  cache: Optional[Any] = None
  hidden: Optional[dict] = None


jax.tree_util.register_dataclass(
    GPT2Output, data_fields=["logits", "cache", "hidden"], meta_fields=[])


class GPT2(nn.Module):
  config: GPT2Config

  @nn.compact
  def __call__(self, input_ids, *, positions=None, attention_mask=None,
               cache=None, cache_index=0, kv_mask=None,
               capture: Sequence[int] = (), deterministic: bool = True,
               return_logits: bool = True):
    """Runs the model on `input_ids` (B, T).

    Without a cache: a full-sequence forward. `attention_mask` (B, T) marks
    real tokens (1) and padding (0); positions default to the running count of
    real tokens, so left padding gets the right position ids.
    With a cache: writes the T new tokens at `cache_index`; `kv_mask` (B, S)
    marks the valid slots after this write and `positions` is required.
    `params["h"]` may also be a tuple of per-layer trees (`unstack_layers`).
    """
    cfg = self.config
    B, T = input_ids.shape
    positions, valid, bias = attention_bias(
        input_ids.shape, positions=positions, attention_mask=attention_mask,
        cached=cache is not None, cache_index=cache_index, kv_mask=kv_mask)

    wte = nn.Embed(
        cfg.vocab_size, cfg.n_embd, dtype=cfg.compute_dtype,
        param_dtype=cfg.params_dtype,
        embedding_init=nn.with_logical_partitioning(
            nn.initializers.normal(0.02), ("vocab", "embed")), name="wte")
    wpe = nn.Embed(
        cfg.n_positions, cfg.n_embd, dtype=cfg.compute_dtype,
        param_dtype=cfg.params_dtype,
        embedding_init=nn.with_logical_partitioning(
            nn.initializers.normal(0.01), ("positions", "embed")), name="wpe")
    x = wte(input_ids) + wpe(positions)  # (B, T, C)
    x = nn.Dropout(cfg.embd_pdrop)(x, deterministic=deterministic)
    x = x.astype(jnp.float32)  # the residual stream stays in float32

    x_in = x
    layers = (None if self.is_initializing() else
              self.variables.get("params", {}).get("h"))
    if layers is not None and (cache is not None or not cfg.scan_layers or
                               isinstance(layers, (list, tuple))):
      if not isinstance(layers, (list, tuple)):
        layers = _layer_slices(layers, cfg.n_layer)
      adapters = self.variables.get("lora", {}).get("h")
      if adapters is not None:  # each block's own slice of the adapters
        layers = [{"params": p, "lora": a} for p, a in
                  zip(layers, _layer_slices(adapters, cfg.n_layer))]
      else:
        layers = [{"params": p} for p in layers]
      rng = None if deterministic else self.make_rng("dropout")
      x, cache, layer_out = _blocks_in_turn(cfg, layers, x, bias, valid, cache,
                                            cache_index, deterministic, rng)
    else:
      block = Block
      if cfg.remat:
        block = nn.remat(Block, prevent_cse=False,
                         policy=jax.checkpoint_policies.nothing_saveable)
      blocks = nn.scan(
          block, variable_axes={"params": 0, "lora": 0}, split_rngs={
              "params": True, "dropout": True},
          in_axes=(nn.broadcast, nn.broadcast), length=cfg.n_layer,
          metadata_params={nn.PARTITION_NAME: "layers"})(
              cfg, deterministic, bool(capture), name="h")
      x, (_, layer_out) = blocks(x, bias, valid)

    hidden = None
    if capture:
      check_capture(cfg, capture)
      hidden = {layer: x_in if layer == 0 else layer_out[layer - 1]
                for layer in capture}
    logits = None
    if return_logits:
      x = _layer_norm(cfg, "ln_f")(x)
      # The tied head, on (B T, C) rows for the same reason as in `Dense`.
      logits = wte.attend(x.reshape(B * T, -1).astype(
          cfg.compute_dtype)).astype(jnp.float32).reshape(B, T, -1)
    return GPT2Output(logits=logits, cache=cache, hidden=hidden)


def attention_bias(shape, *, positions, attention_mask, cached: bool,
                   cache_index, kv_mask) -> tuple:
  """(positions (B, T), valid (B, T) or None, bias (B, 1, T, S)) of a call on
  token ids of `shape` (B, T), its arguments as `GPT2.__call__` describes
  them: which of the call's tokens are real, and the additive mask over the
  key slots (causal, and only the slots the masks allow)."""
  B, T = shape
  if not cached:
    valid = None if attention_mask is None else attention_mask.astype(bool)
    kv_valid = jnp.ones((B, T), bool) if valid is None else valid
    if positions is None:
      positions = jnp.maximum(jnp.cumsum(kv_valid, axis=1) - 1, 0)
    q_slots = jnp.arange(T)
  else:
    if positions is None or kv_mask is None:
      raise ValueError("a cached call needs positions and kv_mask")
    kv_valid = kv_mask.astype(bool)
    valid = jax.lax.dynamic_slice_in_dim(kv_valid, cache_index, T, axis=1)
    q_slots = cache_index + jnp.arange(T)
  S = kv_valid.shape[1]
  allowed = (jnp.arange(S)[None, :] <= q_slots[:, None])[None] & kv_valid[
      :, None, :]  # (B, T, S)
  bias = jnp.where(allowed, 0.0, jnp.finfo(jnp.float32).min)[:, None]
  return positions, valid, bias


def check_capture(cfg: GPT2Config, capture: Sequence[int]) -> None:
  """Layers to tap are 0 (the embedding) to n_layer (the last block)."""
  for layer in capture:
    if not 0 <= layer <= cfg.n_layer:
      raise UserError(f"capture layer {layer} is outside 0..{cfg.n_layer}")


def _layer_slices(stacked, n_layer: int) -> list:
  return [jax.tree.map(lambda p, i=i: p[i], stacked) for i in range(n_layer)]


def _blocks_in_turn(cfg, layers, x, bias, valid, cache, cache_index,
                    deterministic, rng, block_cls=None):
  """The blocks one after another, block i on `layers[i]` (its variables:
  {"params": ..., and "lora" with adapters}) and `cache[i]`; returns (x,
  cache, [each block's output]).

  The path of cached calls and of `scan_layers=False`: XLA then reads every
  weight and cache buffer where it lies (a scan slices each layer's out of
  the stacked arrays, and stacks every layer's activations for the backward
  pass). `rng` gives the blocks' dropout keys. `block_cls` is the block
  class (GPT-2's `Block` by default; the Llama family's has the same form,
  its per-call inputs in `bias`).
  """
  block_cls = block_cls or Block

  def block(layer_variables, x, layer_cache, key):
    rngs = None if key is None else {"dropout": key}
    x, (layer_cache, _) = block_cls(cfg, deterministic, parent=None).apply(
        layer_variables, x, bias, valid, layer_cache, cache_index, rngs=rngs)
    return x, layer_cache

  if cfg.remat and cache is None:
    block = jax.checkpoint(block, prevent_cse=False,
                           policy=jax.checkpoint_policies.nothing_saveable)
  outputs, caches = [], []
  for i, layer_variables in enumerate(layers):
    x, layer_cache = block(layer_variables, x,
                           None if cache is None else cache[i],
                           None if rng is None else jax.random.fold_in(rng, i))
    outputs.append(x)
    caches.append(layer_cache)
  return x, None if cache is None else tuple(caches), outputs


def init_cache(config: GPT2Config, batch: int, length: int,
               dtype=None) -> tuple:
  """An empty KV cache of `length` slots, in the compute dtype by default."""
  dtype = dtype or config.compute_dtype
  shape = (batch, length, config.n_head, config.head_dim)
  return tuple({"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}
               for _ in range(config.n_layer))


def unstack_layers(params, dtype=None, key: str = "h") -> dict:
  """`params` with `key` (the stacked blocks: GPT-2's `h`, the Llama
  family's `layers`) as a tuple of per-layer trees (a copy of the blocks),
  which `forward` runs in turn: a decoding loop then reads each layer's
  weights where they lie instead of slicing them out on every step.

  With `dtype`, every weight but the norms' (`ln_*`, `*norm`) is cast to
  it, so that a bfloat16 model with float32 parameters converts no weight
  per step (the layers would cast them to the same values)."""
  if not isinstance(params[key], (list, tuple)):
    n_layer = jax.tree.leaves(params[key])[0].shape[0]
    params = {**params, key: tuple(
        jax.tree.map(lambda p, i=i: p[i], params[key])
        for i in range(n_layer))}
  if dtype is None:
    return params

  def cast(path, leaf):
    names = [str(getattr(k, "key", "")) for k in path]
    norm = any(n.startswith("ln_") or n.endswith("norm") for n in names)
    return leaf if norm else leaf.astype(dtype)

  return jax.tree_util.tree_map_with_path(cast, params)


@functools.partial(jax.jit, static_argnums=0)
def init_params(config: GPT2Config, rng) -> dict:
  """Random parameters (GPT-2's init) as a plain pytree of arrays."""
  variables = _init_variables(config, rng)
  return nn.unbox(variables["params"])


@functools.partial(jax.jit, static_argnums=0)
def init_lora(config: GPT2Config, rng) -> dict:
  """Fresh LoRA adapters of a config with `lora_rank` > 0: {"h": {"attn":
  {"c_attn": {"a", "b"}}, ...}}, stacked on the layer axis."""
  if not config.lora_rank:
    raise ValueError("init_lora needs a config with lora_rank > 0")
  return nn.unbox(_init_variables(config, rng)["lora"])


def _init_variables(config, rng):
  dummy = jnp.zeros((1, 1), jnp.int32)
  return GPT2(config).init(rng, dummy)


def _abstract_variables(config):
  return jax.eval_shape(functools.partial(_init_variables, config),
                        jax.random.PRNGKey(0))


def param_logical_axes(config: GPT2Config, collection: str = "params"):
  """A pytree like the params (or, with collection="lora", the adapters)
  whose leaves are PartitionSpecs of logical names."""
  return nn.get_partition_spec(_abstract_variables(config))[collection]


def param_shapes(config: GPT2Config):
  """A pytree like the params whose leaves are ShapeDtypeStructs."""
  return jax.eval_shape(
      functools.partial(init_params, config), jax.random.PRNGKey(0))


def lora_shapes(config: GPT2Config):
  """A pytree like the adapters whose leaves are ShapeDtypeStructs."""
  return jax.eval_shape(
      functools.partial(init_lora, config), jax.random.PRNGKey(0))


def merge_lora(config: GPT2Config, params: dict, lora: dict, key: str = "h",
               path=None) -> tuple:
  """(config without LoRA, params with each target kernel W replaced by
  W + alpha / rank * A B): the same model as `params` with `lora`, in one
  set of weights. Merged in float32, stored in the kernel's dtype.

  `key` names the stacked blocks and `path(target)` gives a target's
  (module, layer) within a block (GPT-2's: "attn.c_attn" split at the dot;
  the Llama family's `gpt2.llama.merge_lora` passes its own)."""
  path = path or (lambda target: tuple(target.split(".")))
  blocks = jax.tree.map(lambda p: p, params[key])  # a copy of the dicts
  for target in config.lora_targets:
    module, layer = path(target)
    adapter = lora[key][module][layer]
    kernel = blocks[module][layer]["kernel"]
    update = jnp.matmul(jnp.asarray(adapter["a"], jnp.float32),
                        jnp.asarray(adapter["b"], jnp.float32))
    merged = jnp.asarray(kernel, jnp.float32) + config.lora_scale * update
    blocks[module][layer] = {**blocks[module][layer],
                             "kernel": merged.astype(kernel.dtype)}
  return config.without_lora(), {**params, key: blocks}


def forward(config: GPT2Config, params, input_ids, *, lora=None,
            **kw) -> GPT2Output:
  """`GPT2(config).apply` on plain params (and a LoRA config's adapters);
  keyword arguments as in `__call__`."""
  rngs = kw.pop("rngs", None)
  variables = {"params": params}
  if lora is not None:
    variables["lora"] = lora
  return GPT2(config).apply(variables, input_ids, rngs=rngs, **kw)
