"""GPT-2 in Flax: one module for training, cached decoding and activation taps.

Parameter names follow OpenAI's / Hugging Face's (`wte`, `wpe`, `h`, `ln_1`,
`attn.c_attn`, `attn.c_proj`, `ln_2`, `mlp.c_fc`, `mlp.c_proj`, `ln_f`) so a
checkpoint maps one to one. The blocks' parameters are stacked along a
leading `layers` axis (shape `(L, ...)`); a full-sequence forward runs them
under `nn.scan`, so compile time does not grow with depth, or with
`scan_layers=False` one after another on slices of the same arrays (faster
on CPU). Every parameter carries logical axis names
(`embed`, `heads`, `mlp`, `vocab`, `layers`, ...) that sharding rules in a
config map onto the mesh (see `gpt2/sharding.py`).

Shapes: B batch, T new tokens this call, S key/value slots (T without a cache,
the cache length with one), C = n_embd, H heads, D = C // H, L layers.

The KV cache is a dict `{"k": (L, B, S, H, D), "v": (L, B, S, H, D)}`. A call
with a cache writes its T tokens into slots `[cache_index, cache_index + T)`
for every row; `kv_mask` (B, S) says which slots hold real tokens (False for
left padding and for slots not written yet), and `positions` (B, T) gives each
new token's position id. Causality is by slot: a query at slot q sees key
slots <= q that `kv_mask` allows.

For decoding, `unstack_layers(params)` gives the same parameters with `h` as a
tuple of per-layer trees; `forward` then runs the blocks unrolled, and its
cache is `init_layer_caches(...)`: {"k", "v": L arrays (B H, S, D)}, one
buffer per layer, rows and heads merged, with the same slot semantics. The
results are the same; on XLA:CPU this form decodes several times faster,
because nothing is sliced out of a stacked array, transposed or copied per
step. That cache may also carry a shared prefix ("prefix_k", "prefix_v":
such arrays of P rows and Sp slots, P dividing B): rows b with the same
b // (B / P) share prefix row b // (B / P), read once for all of them (N
candidates of one prompt share its keys and values). Slots are then
numbered prefix first: `kv_mask` is (B, Sp + S), `cache_index` counts from
the prefix's start, and writes go to the row's own slots.
"""

import dataclasses
import functools
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

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
  """`nn.Dense` with the same parameters (`kernel` (in, out), `bias`) and
  numerics, applied to x (..., in) flattened to (N, in).

  Flattening: XLA:CPU computes the kernel's gradient, a contraction over
  batch and time together, about 3x slower when they are two axes than one.
  A kernel stored transposed as `kernel_t` (out, in) is used as it is: the
  decoding parameters (`gpt2.sampling.decode_params`) are laid out so, since
  XLA:CPU multiplies a few rows by an (out, in) matrix faster.
  """
  features: int
  axes: tuple
  config: GPT2Config
  init_std: float = 0.02

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    dt = cfg.compute_dtype
    rows = x.reshape(-1, x.shape[-1]).astype(dt)
    if self.has_variable("params", "kernel_t"):
      kernel_t = self.get_variable("params", "kernel_t").astype(dt)
      y = jax.lax.dot_general(rows, kernel_t, (((1,), (1,)), ((), ())))
    else:
      kernel = self.param(
          "kernel", nn.with_logical_partitioning(
              nn.initializers.normal(self.init_std), self.axes),
          (x.shape[-1], self.features), cfg.params_dtype)
      y = jax.lax.dot_general(rows, kernel.astype(dt),
                              (((1,), (0,)), ((), ())))
    bias = self.param(
        "bias", nn.with_logical_partitioning(nn.initializers.zeros,
                                             self.axes[-1:]),
        (self.features,), cfg.params_dtype)
    y = y + bias.astype(dt)
    return y.reshape(*x.shape[:-1], self.features)


def _dense(features, axes, config, name, init_std=0.02):
  return Dense(features, axes, config, init_std, name=name)


def _layer_norm(config, name):
  return nn.LayerNorm(
      epsilon=config.layer_norm_epsilon, dtype=jnp.float32,
      param_dtype=config.params_dtype,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)),
      name=name)


class Attention(nn.Module):
  config: GPT2Config
  # The layer cache's layout: k and v (B, S, H, D) as documented above, or
  # for the unrolled decoding path (see `init_layer_caches`) (B H, S, D),
  # rows and heads merged into one leading axis. Each head's keys and values
  # are then matmul operands just as they lie, and no axis has length 1 when
  # B is 1: XLA:CPU then transposes no part of the cache and updates it in
  # place (with a batch axis of 1 it copied the whole cache on every step).
  heads_major: bool = False

  @nn.compact
  def __call__(self, x, bias, layer_cache, cache_index, deterministic):
    cfg = self.config
    B, T, C = x.shape
    H, D = cfg.n_head, cfg.head_dim
    dt = cfg.compute_dtype
    # GPT-2 scales residual projections by 1/sqrt(2 L) at init.
    proj_std = 0.02 / (2 * cfg.n_layer) ** 0.5
    qkv = _dense(3 * C, ("embed", "heads"), cfg, "c_attn")(x)  # (B, T, 3C)
    q, k, v = jnp.split(qkv, 3, axis=-1)
    q, k, v = (t.reshape(B, T, H, D).astype(dt) for t in (q, k, v))
    if layer_cache is None and (deterministic or not cfg.attn_pdrop):
      out = _causal_attention(q, k, v, bias)
    elif layer_cache is not None and self.heads_major:
      out, layer_cache = _merged_heads_attention(q, k, v, bias, layer_cache,
                                                 cache_index)
    else:
      if layer_cache is not None:
        zero = jnp.zeros((), jnp.int32)
        idx = (zero, jnp.asarray(cache_index, jnp.int32), zero, zero)
        k = jax.lax.dynamic_update_slice(layer_cache["k"], k.astype(
            layer_cache["k"].dtype), idx)
        v = jax.lax.dynamic_update_slice(layer_cache["v"], v.astype(
            layer_cache["v"].dtype), idx)
        layer_cache = {**layer_cache, "k": k, "v": v}
      scores = jnp.einsum("bthd,bshd->bhts", q, k.astype(dt),
                          preferred_element_type=jnp.float32)
      scores = scores / jnp.sqrt(jnp.float32(D)) + bias  # (B, 1, T, S) mask
      probs = jax.nn.softmax(scores, axis=-1)
      probs = nn.Dropout(cfg.attn_pdrop)(probs, deterministic=deterministic)
      out = jnp.einsum("bhts,bshd->bthd", probs.astype(dt), v.astype(dt))
    out = out.reshape(B, T, C)
    out = _dense(C, ("heads", "embed"), cfg, "c_proj", proj_std)(out)
    return out, layer_cache


def _merged_heads_attention(q, k, v, bias, cache, cache_index, visible=None):
  """Attention of q, k, v (B, T, H, D) over a merged-heads layer cache (see
  `Attention`, `init_layer_caches`), after writing k, v at `cache_index`;
  (output (B, T, H, D), the updated cache).

  The row's own slots may be segments (a tuple of equal arrays, in slot
  order); then only the first `visible` (static) are read, and the write
  must fall in the last of them. `bias` covers the prefix and the visible
  slots.
  """
  B, T, H, D = q.shape
  dt = q.dtype
  merge = lambda t: t.transpose(0, 2, 1, 3).reshape(B * H, T, D)
  prefix = cache.get("prefix_k")
  n_prefix = 0 if prefix is None else prefix.shape[1]
  segmented = isinstance(cache["k"], (tuple, list))
  own_k = list(cache["k"]) if segmented else [cache["k"]]
  own_v = list(cache["v"]) if segmented else [cache["v"]]
  visible = len(own_k) if visible is None else visible
  last = visible - 1
  seg_len = own_k[0].shape[1]
  zero = jnp.zeros((), jnp.int32)
  idx = (zero, jnp.asarray(cache_index, jnp.int32) - n_prefix - last * seg_len,
         zero)
  own_k[last] = jax.lax.dynamic_update_slice(
      own_k[last], merge(k).astype(own_k[last].dtype), idx)
  own_v[last] = jax.lax.dynamic_update_slice(
      own_v[last], merge(v).astype(own_v[last].dtype), idx)
  cache = {**cache, "k": tuple(own_k) if segmented else own_k[0],
           "v": tuple(own_v) if segmented else own_v[0]}
  q_rows = merge(q)  # (B H, T, D)
  scores = [jnp.einsum("ntd,nsd->nts", q_rows, keys.astype(dt),
                       preferred_element_type=jnp.float32).reshape(
                           B, H, T, -1) for keys in own_k[:visible]]
  if prefix is not None:
    # Each group of G = B / P rows shares one prefix row: its keys and
    # values are read once for the group, not once per row.
    P = prefix.shape[0] // H
    G = B // P
    # (B, T, H, D) -> (P H, G T, D): a group's queries against its prefix.
    grouped = q.reshape(P, G, T, H, D).transpose(0, 3, 1, 2, 4).reshape(
        P * H, G * T, D)
    scores.insert(0, jnp.einsum(
        "nmd,nsd->nms", grouped, prefix.astype(dt),
        preferred_element_type=jnp.float32).reshape(
            P, H, G, T, n_prefix).transpose(0, 2, 1, 3, 4).reshape(
                B, H, T, n_prefix))
  scores = jnp.concatenate(scores, axis=-1) if len(scores) > 1 else scores[0]
  scores = scores / jnp.sqrt(jnp.float32(D)) + bias  # (B, 1, T, S) mask
  probs = jax.nn.softmax(scores, axis=-1).astype(dt)
  out = 0
  for i, values in enumerate(own_v[:visible]):
    start = n_prefix + i * seg_len
    own = probs[..., start:start + seg_len].reshape(B * H, T, -1)
    out = out + jnp.einsum("nts,nsd->ntd", own, values.astype(dt))
  out = out.reshape(B, H, T, D).transpose(0, 2, 1, 3)
  if prefix is not None:
    shared = probs[..., :n_prefix].reshape(P, G, H, T, n_prefix).transpose(
        0, 2, 1, 3, 4).reshape(P * H, G * T, n_prefix)
    out = out + jnp.einsum(
        "nms,nsd->nmd", shared, cache["prefix_v"].astype(dt)).reshape(
            P, H, G, T, D).transpose(0, 2, 3, 1, 4).reshape(B, T, H, D)
  return out, cache


@jax.custom_vjp
def _causal_attention(q, k, v, bias):
  """softmax(q k^T / sqrt(D) + bias) v for q, k, v (B, T, H, D); (B, T, H, D).

  The same function as the einsums in `Attention`, with a hand-written
  backward pass in the (B, H, T, D) layout: XLA:CPU differentiates the
  einsums into transposes and a slower chain of ops, about twice the time.
  """
  return _causal_attention_fwd(q, k, v, bias)[0]


def _causal_attention_fwd(q, k, v, bias):
  qh, kh, vh = (t.transpose(0, 2, 1, 3) for t in (q, k, v))
  scale = 1.0 / jnp.sqrt(jnp.float32(q.shape[-1]))
  scores = jnp.einsum("bhtd,bhsd->bhts", qh, kh,
                      preferred_element_type=jnp.float32) * scale + bias
  probs = jax.nn.softmax(scores, axis=-1)
  out = jnp.einsum("bhts,bhsd->bhtd", probs.astype(v.dtype), vh)
  return out.transpose(0, 2, 1, 3), (qh, kh, vh, probs, out, bias)


def _causal_attention_bwd(residuals, g):
  qh, kh, vh, probs, out, bias = residuals
  dt = qh.dtype
  scale = 1.0 / jnp.sqrt(jnp.float32(qh.shape[-1]))
  g = g.transpose(0, 2, 1, 3)  # (B, H, T, D)
  dv = jnp.einsum("bhts,bhtd->bhsd", probs.astype(dt), g)
  dprobs = jnp.einsum("bhtd,bhsd->bhts", g, vh,
                      preferred_element_type=jnp.float32)
  # Softmax's backward: p * (dp - sum_s p dp), and sum_s p dp = sum_d g o.
  row = jnp.sum(g.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)
  dscores = (probs * (dprobs - row[..., None]) * scale).astype(dt)
  dq = jnp.einsum("bhts,bhsd->bhtd", dscores, kh)
  dk = jnp.einsum("bhts,bhtd->bhsd", dscores, qh)
  return (*(t.transpose(0, 2, 1, 3) for t in (dq, dk, dv)),
          jnp.zeros_like(bias))


_causal_attention.defvjp(_causal_attention_fwd, _causal_attention_bwd)


class MLP(nn.Module):
  config: GPT2Config

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    proj_std = 0.02 / (2 * cfg.n_layer) ** 0.5
    h = _dense(4 * cfg.n_embd, ("embed", "mlp"), cfg, "c_fc")(x)
    h = jax.nn.gelu(h, approximate=True)  # GPT-2's "gelu_new"
    return _dense(cfg.n_embd, ("mlp", "embed"), cfg, "c_proj", proj_std)(h)


class Block(nn.Module):
  """One transformer block, in scan form: (carry, per-layer xs) -> (carry, ys)."""
  config: GPT2Config
  deterministic: bool = True
  # Emit each block's output as a scan output (only when a layer is tapped,
  # since it keeps (L, B, T, C) alive).
  emit_hidden: bool = False
  heads_major: bool = False  # the layer cache's layout, as in `Attention`

  @nn.compact
  def __call__(self, x, layer_cache, bias, cache_index):
    cfg = self.config
    drop = nn.Dropout(cfg.resid_pdrop)
    a, layer_cache = Attention(cfg, self.heads_major, name="attn")(
        _layer_norm(cfg, "ln_1")(x).astype(cfg.compute_dtype), bias,
        layer_cache, cache_index, self.deterministic)
    x = x + drop(a, deterministic=self.deterministic)
    m = MLP(cfg, name="mlp")(
        _layer_norm(cfg, "ln_2")(x).astype(cfg.compute_dtype))
    x = x + drop(m, deterministic=self.deterministic)
    x = nn.with_logical_constraint(x, ("batch", "length", "embed_act"))
    return x, (layer_cache, x if self.emit_hidden else None)


@dataclasses.dataclass
class GPT2Output:
  """What a forward pass returns.

  logits: (B, T, V) float32.
  cache: the updated KV cache, or None when called without one.
  hidden: {layer: (B, T, C)} for the requested `capture` layers; layer 0 is
    the embedding output and layer i the output of block i (before ln_f).
  """
  logits: Array
  cache: Optional[dict] = None
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
    """
    cfg = self.config
    B, T = input_ids.shape
    if cache is None:
      mask = (jnp.ones((B, T), bool) if attention_mask is None
              else attention_mask.astype(bool))
      if positions is None:
        positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
      q_slots = jnp.arange(T)
      kv_valid = mask
    else:
      if positions is None or kv_mask is None:
        raise ValueError("a cached call needs positions and kv_mask")
      q_slots = cache_index + jnp.arange(T)
      kv_valid = kv_mask.astype(bool)
    S = kv_valid.shape[1]
    allowed = (jnp.arange(S)[None, :] <= q_slots[:, None])[None] & kv_valid[
        :, None, :]  # (B, T, S)
    bias = jnp.where(allowed, 0.0, jnp.finfo(jnp.float32).min)[:, None]

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
    if isinstance(layers, (list, tuple)):
      if not deterministic:
        raise ValueError("unstacked layers are for inference; train with the "
                         "stacked parameters")
      x, cache, layer_out = _blocks_in_turn(cfg, layers, x, cache, bias,
                                            cache_index, deterministic)
    elif layers is not None and cache is None and not cfg.scan_layers:
      slices = [jax.tree.map(lambda p, i=i: p[i], layers)
                for i in range(cfg.n_layer)]
      x, _, layer_out = _blocks_in_turn(
          cfg, slices, x, None, bias, 0, deterministic,
          None if deterministic else self.make_rng("dropout"))
    else:
      block = Block
      if cfg.remat:
        block = nn.remat(Block, prevent_cse=False,
                         policy=jax.checkpoint_policies.nothing_saveable)
      blocks = nn.scan(
          block, variable_axes={"params": 0}, split_rngs={
              "params": True, "dropout": True},
          in_axes=(0, nn.broadcast, nn.broadcast), length=cfg.n_layer,
          metadata_params={nn.PARTITION_NAME: "layers"})(
              cfg, deterministic, bool(capture), name="h")
      x, (cache, layer_out) = blocks(x, cache, bias, cache_index)

    hidden = None
    if capture:
      _check_capture(cfg, capture)
      hidden = {layer: x_in if layer == 0 else layer_out[layer - 1]
                for layer in capture}
    logits = None
    if return_logits:
      x = _layer_norm(cfg, "ln_f")(x)
      # Flattened to (B T, C) for the same reason as in `_dense`.
      logits = wte.attend(x.reshape(B * T, -1).astype(
          cfg.compute_dtype)).astype(jnp.float32).reshape(B, T, -1)
    return GPT2Output(logits=logits, cache=cache, hidden=hidden)


def _check_capture(cfg: GPT2Config, capture: Sequence[int]) -> None:
  """Layers to tap are 0 (the embedding) to n_layer (the last block)."""
  for layer in capture:
    if not 0 <= layer <= cfg.n_layer:
      raise UserError(f"capture layer {layer} is outside 0..{cfg.n_layer}")


def _blocks_in_turn(cfg, layers, x, cache, bias, cache_index, deterministic,
                    rng=None):
  """The blocks one after another, block i on `layers[i]` (its parameters)
  and, with a cache, on its buffers of `init_layer_caches`.

  Returns (x, cache, [each block's output]). Used for decoding, on the
  parameters of `unstack_layers`, and with `scan_layers=False`, on slices of
  the stacked ones. XLA then reads every weight and cache slot where it lies,
  where the scan copies each layer's slice out of the stacked arrays on every
  call and stacks every layer's activations for the backward pass (on CPU
  that costs more than it saves). `rng` gives the blocks' dropout keys.
  """
  if cache is not None and not isinstance(cache["k"], (list, tuple)):
    raise ValueError("unstacked layers need the per-layer cache of "
                     "init_layer_caches")

  def block(layer_params, x, layer_cache, key):
    rngs = None if key is None else {"dropout": key}
    x, (layer_cache, _) = Block(
        cfg, deterministic, heads_major=True, parent=None).apply(
            {"params": layer_params}, x, layer_cache, bias, cache_index,
            rngs=rngs)
    return x, layer_cache

  if cfg.remat and cache is None:
    block = jax.checkpoint(block, prevent_cse=False,
                           policy=jax.checkpoint_policies.nothing_saveable)
  outputs, keys, values = [], [], []
  for i, layer_params in enumerate(layers):
    layer_cache = None if cache is None else {
        name: cache[name][i] for name in cache}
    x, layer_cache = block(layer_params, x, layer_cache, None if rng is None
                           else jax.random.fold_in(rng, i))
    outputs.append(x)
    if layer_cache is not None:
      keys.append(layer_cache["k"])
      values.append(layer_cache["v"])
  if cache is not None:
    cache = {**cache, "k": tuple(keys), "v": tuple(values)}
  return x, cache, outputs


def decode_step(config: GPT2Config, params, token_ids, *, positions, cache,
                cache_index, kv_mask, capture: Sequence[int] = (),
                segment: Optional[int] = None):
  """`forward` for one new token per row, on decoding parameters
  (`gpt2.sampling.decode_params`: per-layer kernels stored (out, in) as
  `kernel_t`) and the cache of `init_layer_caches`; the same arguments
  (token_ids (B, 1)) and the same `GPT2Output`.

  It carries the residual stream as columns (C, B), so that each matmul is
  (out, in) @ (in, B): with a few rows XLA:CPU runs that form about 1.4x
  faster than rows @ (in, out) (one row: the same), and decoding with a few
  candidates is mostly these matmuls.

  With a cache whose own slots are segments (`init_layer_caches(...,
  segments=n)`), `segment` (static) names the one that `cache_index` falls
  in; the step reads no later segment (they hold nothing yet), so a loop
  over the segments in turn reads on average about half of the slots.
  """
  cfg = config
  dt = cfg.compute_dtype
  B = token_ids.shape[0]
  H, D, C = cfg.n_head, cfg.head_dim, cfg.n_embd
  eps = cfg.layer_norm_epsilon
  visible = None
  if isinstance(cache["k"][0], (tuple, list)):
    if segment is None:
      raise ValueError("a segmented cache needs the segment being written")
    visible = segment + 1
    n_prefix = cache["prefix_k"][0].shape[1] if "prefix_k" in cache else 0
    seen = n_prefix + visible * cache["k"][0][0].shape[1]
    kv_mask = jnp.pad(kv_mask, ((0, 0), (0, max(0, seen - kv_mask.shape[1]))))
    kv_mask = kv_mask[:, :seen]
  S = kv_mask.shape[1]
  slot = jnp.asarray(cache_index, jnp.int32)
  allowed = (jnp.arange(S) <= slot)[None] & kv_mask.astype(bool)
  bias = jnp.where(allowed, 0.0, jnp.finfo(jnp.float32).min)[:, None, None]

  def norm(p, x):  # flax.linen.LayerNorm's arithmetic, over axis 0
    mean = x.mean(0)
    var = jnp.maximum(0.0, (x * x).mean(0) - mean * mean)
    mul = jax.lax.rsqrt(var + eps) * p["scale"].astype(jnp.float32)[:, None]
    return ((x - mean) * mul + p["bias"].astype(jnp.float32)[:, None]).astype(
        dt)

  def dense(p, x):
    return p["kernel_t"] @ x.astype(dt) + p["bias"].astype(dt)[:, None]

  wte = params["wte"]["embedding"]
  ids = token_ids[:, 0]
  x = (wte[ids].astype(dt) + params["wpe"]["embedding"][positions[:, 0]]
       .astype(dt)).astype(jnp.float32).T  # (C, B)
  taps = {0: x}
  keys, values = [], []
  for i, layer in enumerate(params["h"]):
    attn, mlp = layer["attn"], layer["mlp"]
    qkv = dense(attn["c_attn"], norm(layer["ln_1"], x))  # (3C, B)
    q, k, v = (t.T.reshape(B, 1, H, D) for t in jnp.split(qkv, 3, axis=0))
    layer_cache = {name: cache[name][i] for name in cache}
    out, layer_cache = _merged_heads_attention(q, k, v, bias, layer_cache,
                                               slot, visible)
    x = x + dense(attn["c_proj"], out.reshape(B, C).T)
    h = jax.nn.gelu(dense(mlp["c_fc"], norm(layer["ln_2"], x)),
                    approximate=True)
    x = x + dense(mlp["c_proj"], h)
    taps[i + 1] = x
    keys.append(layer_cache["k"])
    values.append(layer_cache["v"])
  hidden = None
  if capture:
    _check_capture(cfg, capture)
    hidden = {layer: taps[layer].T[:, None] for layer in capture}
  # The head reads rows: (B, C) x (V, C) -> (B, V), the form XLA:CPU runs
  # fastest for the (V, C) embedding. The barrier keeps XLA from folding the
  # transpose into the matmul (as a contraction over axis 0, ~4x slower).
  rows = jax.lax.optimization_barrier(norm(params["ln_f"], x).T)
  logits = jax.lax.dot_general(rows, wte.astype(dt),
                               (((1,), (1,)), ((), ()))).astype(jnp.float32)
  cache = {**cache, "k": tuple(keys), "v": tuple(values)}
  return GPT2Output(logits=logits[:, None], cache=cache, hidden=hidden)


def unstack_layers(params) -> dict:
  """`params` with `h` as a tuple of per-layer trees (a copy of the blocks).

  `forward` then runs the blocks unrolled, for decoding (see the module
  docstring); it needs the cache of `init_layer_caches`.
  """
  n_layer = jax.tree.leaves(params["h"])[0].shape[0]
  layers = tuple(jax.tree.map(lambda p, i=i: p[i], params["h"])
                 for i in range(n_layer))
  return {**params, "h": layers}


def init_layer_caches(config: GPT2Config, batch: int, length: int,
                      dtype=None, prefix: Optional[dict] = None,
                      segments: int = 1) -> dict:
  """The cache for unstacked layers: {"k", "v": L arrays (B H, S, D)}, rows
  and heads merged (row-major: row b, head h at b H + h).

  `prefix`, another such cache with P rows (P dividing B), becomes a shared
  prefix: row b sees prefix row b // (B / P) before its own slots.
  With `segments` > 1 each layer's own slots are that many arrays of
  ceil(length / segments) slots, in slot order (for `decode_step`).
  """
  dtype = dtype or config.compute_dtype
  H, D = config.n_head, config.head_dim
  if segments > 1:
    size = -(-length // segments)
    new = lambda: tuple(jnp.zeros((batch * H, size, D), dtype)
                        for _ in range(segments))
  else:
    new = lambda: jnp.zeros((batch * H, length, D), dtype)
  cache = {"k": tuple(new() for _ in range(config.n_layer)),
           "v": tuple(new() for _ in range(config.n_layer))}
  if prefix is not None:
    rows = prefix["k"][0].shape[0] // H
    if batch % rows:
      raise ValueError(f"a prefix of {rows} rows cannot be shared by "
                       f"{batch} rows")
    cache.update(prefix_k=prefix["k"], prefix_v=prefix["v"])
  return cache


def init_cache(config: GPT2Config, batch: int, length: int,
               dtype=None) -> dict:
  """An empty KV cache of `length` slots, in the compute dtype by default."""
  dtype = dtype or config.compute_dtype
  shape = (config.n_layer, batch, length, config.n_head, config.head_dim)
  return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}


def init_params(config: GPT2Config, rng) -> dict:
  """Random parameters (GPT-2's init) as a plain pytree of arrays."""
  variables = _init_variables(config, rng)
  return nn.unbox(variables["params"])


def _init_variables(config, rng):
  dummy = jnp.zeros((1, 1), jnp.int32)
  return GPT2(config).init(rng, dummy)


def param_logical_axes(config: GPT2Config):
  """A pytree like the params whose leaves are PartitionSpecs of logical names."""
  abstract = jax.eval_shape(
      functools.partial(_init_variables, config), jax.random.PRNGKey(0))
  return nn.get_partition_spec(abstract)["params"]


def param_shapes(config: GPT2Config):
  """A pytree like the params whose leaves are ShapeDtypeStructs."""
  return jax.eval_shape(
      functools.partial(init_params, config), jax.random.PRNGKey(0))


def forward(config: GPT2Config, params, input_ids, **kw) -> GPT2Output:
  """`GPT2(config).apply` on plain params; keyword arguments as in `__call__`."""
  rngs = kw.pop("rngs", None)
  return GPT2(config).apply({"params": params}, input_ids, rngs=rngs, **kw)
