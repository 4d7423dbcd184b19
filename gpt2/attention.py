"""Attention kernels for a call's own tokens, beside the reference.

`gpt2.model.Attention` holds the reference: softmax(q k^T / sqrt(D) + mask) v
in two einsums, differentiated by JAX. When a call's tokens attend only to
themselves (training; a prefill into an empty cache), each platform has a
faster kernel for the same function. `GPT2Config.attention` names one;
"auto" picks by platform:

- "cpu" (auto on a CPU): the reference's einsums with a hand-written
  backward pass in the (B, H, T, D) layout; XLA:CPU differentiates the
  einsums into transposes and a slower chain of ops, about twice the time.
- "cudnn" (auto on a GPU where it applies: bfloat16 or float16, head size at
  most 128 and a multiple of 8): cuDNN's fused flash attention through
  `jax.nn.dot_product_attention`.
- "xla": `jax.nn.dot_product_attention` as XLA compiles it (auto on a GPU or
  TPU where their kernel does not apply).
- "splash" (auto on a TPU for lengths that are a multiple of 128): Pallas'
  splash attention from `jax.experimental.pallas.ops.tpu`, run per device
  under `shard_map` when a mesh is set.
- "reference": the einsums in `gpt2.model`.

A kernel's mask is causal within the call's tokens plus `valid` (B, T), the
real tokens (None: all); the reference's additive mask says the same.
`tests/test_attention.py` holds each kernel that runs on a CPU (splash in
Pallas' interpret mode) to the reference in float32, forward and gradient.
"""

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from gpt2.errors import UserError

IMPLEMENTATIONS = ("auto", "reference", "cpu", "xla", "cudnn", "splash")
_NEG = float(jnp.finfo(jnp.float32).min)


def platform() -> str:
  """"cpu", "gpu" or "tpu": the default backend's kind."""
  name = jax.default_backend()
  return "gpu" if name in ("gpu", "cuda", "rocm") else name


def cudnn_applies(dtype, head_dim: int) -> bool:
  """Whether cuDNN's fused attention takes these operands."""
  return (jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
          and head_dim <= 128 and head_dim % 8 == 0)


def resolve(name: str, *, dtype, head_dim: int, length: int,
            on: Optional[str] = None) -> str:
  """The implementation `name` means for these operands on platform `on`
  (default: this process's); "auto" becomes a concrete choice."""
  on = on or platform()
  if name != "auto":
    return name
  if on == "gpu":
    return "cudnn" if cudnn_applies(dtype, head_dim) else "xla"
  if on == "tpu":
    return "splash" if length % 128 == 0 else "xla"
  return "cpu"


def causal_attention(q, k, v, valid, implementation: str,
                     interpret: bool = False):
  """Causal attention of q, k, v (B, T, H, D) to themselves; (B, T, H, D).

  `valid` (B, T) marks the real tokens (None: all). `interpret` runs the
  splash kernel in Pallas' interpreter (on a CPU, for tests).
  """
  if implementation == "cpu":
    return _attention_with_backward(q, k, v, _causal_bias(valid, q.shape[1]))
  if implementation in ("xla", "cudnn"):
    if implementation == "cudnn" and platform() != "gpu":
      raise UserError("attention='cudnn' needs a GPU; use 'auto'")
    mask = None if valid is None else valid[:, None, None, :]
    return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=True,
                                        implementation=implementation)
  if implementation == "splash":
    if platform() != "tpu" and not interpret:
      raise UserError("attention='splash' needs a TPU; use 'auto'")
    return _splash(q, k, v, valid, interpret)
  raise ValueError(f"no kernel named {implementation!r}")


def _causal_bias(valid, length: int):
  """The additive mask (B or 1, 1, T, T): 0 where a query may look."""
  allowed = jnp.tril(jnp.ones((length, length), bool))[None]
  if valid is not None:
    allowed = allowed & valid[:, None, :]
  return jnp.where(allowed, 0.0, _NEG)[:, None]


# ---- the CPU's: the reference with a hand-written backward ------------------


@jax.custom_vjp
def _attention_with_backward(q, k, v, bias):
  """softmax(q k^T / sqrt(D) + bias) v for q, k, v (B, T, H, D)."""
  return _attention_fwd(q, k, v, bias)[0]


def _attention_fwd(q, k, v, bias):
  qh, kh, vh = (t.transpose(0, 2, 1, 3) for t in (q, k, v))
  scale = 1.0 / jnp.sqrt(jnp.float32(q.shape[-1]))
  scores = jnp.einsum("bhtd,bhsd->bhts", qh, kh,
                      preferred_element_type=jnp.float32) * scale + bias
  probs = jax.nn.softmax(scores, axis=-1)
  out = jnp.einsum("bhts,bhsd->bhtd", probs.astype(v.dtype), vh)
  return out.transpose(0, 2, 1, 3), (qh, kh, vh, probs, out, bias)


def _attention_bwd(residuals, g):
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


_attention_with_backward.defvjp(_attention_fwd, _attention_bwd)


# ---- the TPU's: Pallas splash attention -------------------------------------


@functools.lru_cache(maxsize=16)
def _splash_kernel(heads: int, length: int, interpret: bool):
  from jax.experimental.pallas.ops.tpu.splash_attention import (  # pylint: disable=import-outside-toplevel
      splash_attention_kernel as splash, splash_attention_mask as masks)
  block = min(512, length)
  sizes = splash.BlockSizes(
      block_q=block, block_kv=block, block_kv_compute=block,
      block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
      block_q_dq=block, block_kv_dq=block)
  mask = masks.MultiHeadMask([masks.CausalMask((length, length))] * heads)
  # Its mask tables are concrete arrays even when first made inside a
  # trace, so the cached kernel serves every later one.
  with jax.ensure_compile_time_eval():
    return splash.make_splash_mha(mask, head_shards=1, q_seq_shards=1,
                                  block_sizes=sizes, interpret=interpret)


def _splash_local(q, k, v, valid, interpret):
  """Splash attention on one device's rows and heads."""
  from jax.experimental.pallas.ops.tpu.splash_attention import (  # pylint: disable=import-outside-toplevel
      splash_attention_kernel as splash)
  B, T, H, D = q.shape
  kernel = _splash_kernel(H, T, interpret)
  # The kernel takes one row (H, T, D), and a pre-scaled q.
  qh, kh, vh = (t.transpose(0, 2, 1, 3) for t in (q * (D ** -0.5), k, v))
  # Padding is a segment of its own: real tokens never see it.
  segments = (jnp.ones((B, T), jnp.int32) if valid is None
              else valid.astype(jnp.int32))
  out = jax.vmap(lambda q1, k1, v1, s1: kernel(
      q1, k1, v1, segment_ids=splash.SegmentIds(q=s1, kv=s1)))(
          qh, kh, vh, segments)
  return out.transpose(0, 2, 1, 3)


def _splash(q, k, v, valid, interpret):
  """Splash attention; under a mesh of several devices, each device runs it
  on its own rows and heads (`shard_map`), since XLA cannot split a Pallas
  kernel by itself."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or np.prod(list(mesh.shape.values())) == 1:
    return _splash_local(q, k, v, valid, interpret)
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  P = jax.sharding.PartitionSpec
  spec = nn.logical_to_mesh_axes(("batch", "length", "heads", None))
  rows = P(spec[0], None)
  local = functools.partial(_splash_local, interpret=interpret)
  # check_vma=False: a Pallas kernel's outputs carry no varying-axes types.
  if valid is None:
    return jax.shard_map(lambda q, k, v: local(q, k, v, None), mesh=mesh,
                         in_specs=(spec,) * 3, out_specs=spec,
                         check_vma=False)(q, k, v)
  return jax.shard_map(local, mesh=mesh, in_specs=(spec,) * 3 + (rows,),
                       out_specs=spec, check_vma=False)(q, k, v, valid)
