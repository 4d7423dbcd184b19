"""The head: attention pooling over frozen generator layers, then a small MLP.

One architecture serves both heads. The selector emits 2 logits (will this
post do well?), the sentiment head one value. Its input is the hidden states
of a few generator layers at the positions to judge (a candidate's own
tokens), with a mask marking real positions.

Shapes: B batch, T positions, C the generator's width, H pooling heads,
D = width // H.
"""

import dataclasses
import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gpt2.errors import UserError


@dataclasses.dataclass(frozen=True)
class HeadConfig:
  """What the head looks like. Hashable, so jit can close on it."""
  layers: tuple  # generator layers read, resolved to 0..n_layer
  n_embd: int  # the generator's width C
  n_out: int  # 2 logits (selector) or 1 value (sentiment)
  n_head: int = 8  # pooling heads per layer
  pool_width: int = 0  # width of each pooled vector; 0 means n_embd
  mlp_ratio: float = 1.0  # MLP hidden width / concatenated width
  dropout: float = 0.1

  def __post_init__(self):
    if self.width % self.n_head:
      raise UserError(f"head.pool_width={self.width} is not divisible by "
                      f"head.n_head={self.n_head}")
    if not self.layers:
      raise UserError("the head needs at least one generator layer "
                      "(--config.layers is empty)")
    if self.mlp_ratio <= 0:
      raise UserError(f"head.mlp_ratio={self.mlp_ratio} must be positive")

  @property
  def width(self) -> int:
    return self.pool_width or self.n_embd

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d["layers"] = list(self.layers)
    return d

  @classmethod
  def from_dict(cls, d: dict) -> "HeadConfig":
    return cls(**{**d, "layers": tuple(int(l) for l in d["layers"])})


def resolve_layers(layers: Sequence[int], n_layer: int) -> tuple:
  """Layer numbers in 0..n_layer; negative ones count from the last block.

  0 is the embedding output, i the output of block i, -1 the last block.
  """
  out = []
  for layer in layers:
    layer = int(layer)
    resolved = layer if layer >= 0 else n_layer + 1 + layer
    if not 0 <= resolved <= n_layer:
      raise UserError(f"--config.layers has {layer}, outside the generator's "
                      f"layers 0..{n_layer} (negative counts from the last)")
    out.append(resolved)
  if len(set(out)) != len(out):
    raise UserError(f"--config.layers {tuple(layers)} names a layer twice "
                    f"(resolved: {tuple(out)})")
  return tuple(out)


def last_index(mask):
  """Index of the last True in each row of `mask` (B, T); 0 for empty rows."""
  T = mask.shape[1]
  return T - 1 - jnp.argmax(mask[:, ::-1], axis=1)


class AttentionPool(nn.Module):
  """Multi-head attention with one query, read at the last real position.

  The query comes from the last non-padding token; keys and values from every
  real position up to it (causal), so the pooled vector summarises the
  candidate as the generator saw it by its end.
  """
  n_head: int
  width: int

  @nn.compact
  def __call__(self, x, mask):
    B, T, _ = x.shape
    H, D = self.n_head, self.width // self.n_head
    x = nn.LayerNorm(name="ln")(x.astype(jnp.float32))  # (B, T, C)
    last = last_index(mask)  # (B,)
    x_last = x[jnp.arange(B), last]  # (B, C)
    q = nn.Dense(self.width, name="q")(x_last).reshape(B, H, D)
    kv = nn.Dense(2 * self.width, name="kv")(x)  # (B, T, 2 W)
    k, v = jnp.split(kv.reshape(B, T, 2 * H, D), 2, axis=2)  # (B, T, H, D)
    scores = jnp.einsum("bhd,bthd->bht", q, k) / jnp.sqrt(jnp.float32(D))
    allowed = mask & (jnp.arange(T)[None, :] <= last[:, None])  # (B, T)
    scores = jnp.where(allowed[:, None, :], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1)  # (B, H, T)
    pooled = jnp.einsum("bht,bthd->bhd", probs, v).reshape(B, self.width)
    return nn.Dense(self.width, name="proj")(pooled)  # (B, W)


class JudgmentHead(nn.Module):
  """Pool each chosen layer, concatenate, residual GELU MLP, final linear."""
  config: HeadConfig

  @nn.compact
  def __call__(self, hidden: Sequence, mask, deterministic: bool = True):
    """`hidden`: one (B, T, C) array per layer in `config.layers` order;
    `mask` (B, T) bool marks the positions to judge. Returns (B, n_out)."""
    cfg = self.config
    mask = mask.astype(bool)
    pooled = [
        AttentionPool(cfg.n_head, cfg.width, name=f"pool_{layer}")(h, mask)
        for layer, h in zip(cfg.layers, hidden)
    ]
    x = jnp.concatenate(pooled, axis=-1)  # (B, n_layers * W)
    x = nn.Dropout(cfg.dropout)(x, deterministic=deterministic)
    dim = x.shape[-1]
    h = nn.LayerNorm(name="mlp_ln")(x)
    h = nn.Dense(max(1, int(round(cfg.mlp_ratio * dim))), name="mlp_in")(h)
    h = jax.nn.gelu(h)
    h = nn.Dropout(cfg.dropout)(h, deterministic=deterministic)
    x = x + nn.Dense(dim, name="mlp_out")(h)
    x = nn.LayerNorm(name="out_ln")(x)
    x = nn.Dropout(cfg.dropout)(x, deterministic=deterministic)
    return nn.Dense(cfg.n_out, name="out")(x)  # (B, n_out)


@functools.partial(jax.jit, static_argnums=0)
def init_head_params(config: HeadConfig, rng) -> dict:
  """Random head parameters as a plain pytree (jitted: one compile is much
  faster than running Flax's init op by op)."""
  hidden = [jnp.zeros((1, 1, config.n_embd), jnp.float32)
            for _ in config.layers]
  mask = jnp.ones((1, 1), bool)
  return JudgmentHead(config).init(rng, hidden, mask)["params"]


def apply_head(config: HeadConfig, params, hidden: Sequence, mask,
               deterministic: bool = True, dropout_rng=None):
  """`JudgmentHead(config).apply` on plain params. Returns (B, n_out) f32."""
  rngs = None if deterministic else {"dropout": dropout_rng}
  return JudgmentHead(config).apply({"params": params}, hidden, mask,
                                    deterministic=deterministic, rngs=rngs)
