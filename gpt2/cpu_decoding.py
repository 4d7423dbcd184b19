"""GPT-2 decoding laid out for XLA:CPU: the sampler's path on a CPU.

The same arithmetic as `gpt2.model.forward` with a KV cache, in the layouts
that XLA:CPU runs fastest (each measured with `bench.sampling` on this
project's 2-core Xeon; `tests/test_cpu_decoding.py` holds it to the
reference model):

- Weights stored (out, in) (`prepare`, once per model, outside the decoding
  program: inside one, XLA folds the transposes back into the matmuls) and
  the residual stream carried as columns (C, rows), so every matmul is
  (out, in) @ (in, rows): with a few rows ~1.4x faster than rows @ (in, out).
  The tied head is the exception, see `forward`.
- A cache with rows and heads merged, (B H, S, D) per layer (`init_cache`):
  each head's keys and values are matmul operands as they lie, and no axis
  has length 1 at batch 1 (XLA then copied the whole cache on every step).
- A shared prefix: the N candidates of a prompt read its keys and values
  once per step, not once each.
- Segments: a row's own slots may be split in equal arrays; a step reads only
  the segments written so far, so a loop per segment reads on average about
  half of the slots.

- int8 weights (`prepare(..., weights="int8")`): each block's kernels and
  the tied head quantized per output row (`gpt2.int8`), multiplied by the
  int8 kernel, which reads a quarter of the bytes; embeddings, layer norms
  and the cache stay as they are. Without the kernel the dequantized
  weights are used in float32 (the same numbers, today's speed).

Cache: {"k", "v": L arrays (B H, S, D)} (or L tuples of segments), rows and
heads merged row-major (row b, head h at b H + h), and optionally a shared
prefix "prefix_k", "prefix_v" (L arrays (P H, Sp, D), P dividing B): rows b
with the same b // (B / P) share prefix row b // (B / P). Slots are numbered
prefix first: `kv_mask` is (B, Sp + S), `cache_index` counts from the
prefix's start, and writes go to the row's own slots.
"""

from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from gpt2 import int8
from gpt2 import model as model_lib
from gpt2.model import GPT2Config, GPT2Output

WEIGHTS = ("float32", "int8")


def prepare(config: GPT2Config, params, weights: str = "float32") -> dict:
  """The parameters as `forward` reads them: per layer, in the compute dtype
  (`model.unstack_layers`), each block's kernels transposed to (out, in) as
  `kernel_t`. With `weights="int8"` each kernel is `kernel_q` (int8, (out,
  in)) and `kernel_scale` instead, and the head `head_q`, `head_scale` (the embedding
  stays for the inputs); without the kernel (`gpt2.int8.available()`),
  `kernel_t` and `head_t` hold the dequantized weights."""
  if weights not in WEIGHTS:
    raise ValueError(f"weights={weights!r} is not one of {WEIGHTS}")
  params = model_lib.unstack_layers(params, config.compute_dtype)
  quantized = weights == "int8"
  kernel = quantized and int8.available()

  def transposed(p):
    dtype = p["kernel"].dtype
    if quantized:
      p = int8.quantize_dense(p)
      if kernel:
        return {**p, "kernel_q": p["kernel_q"].T}
      p = int8.dequantize_dense(p)  # float32, as the kernel computes
    p = dict(p)
    p["kernel_t"] = p.pop("kernel").T.astype(dtype)
    return p

  out = {**params, "h": tuple(int8.map_dense(layer, transposed)
                              for layer in params["h"])}
  if quantized:
    q, scale = int8.quantize_jnp(params["wte"]["embedding"])
    if kernel:
      out["head_q"], out["head_scale"] = q, scale
    else:
      out["head_t"] = int8.dequantize(q, scale).astype(
          params["wte"]["embedding"].dtype)
  return out


def init_cache(config: GPT2Config, batch: int, length: int, dtype=None,
               prefix: Optional[dict] = None, segments: int = 1) -> dict:
  """An empty cache of `length` own slots per row (see the module's doc).

  `prefix`, another such cache with P rows (P dividing B), becomes the
  shared prefix. With `segments` > 1 each layer's own slots are that many
  arrays of ceil(length / segments) slots, in slot order.
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


def prefill(config: GPT2Config, params, ids, mask, positions, *,
            num_samples: int, own_slots: int, segments: int = 1) -> dict:
  """The decoding cache of `num_samples` rows per prompt: ids, mask,
  positions (P, T) left-padded prompts written into a prefix the rows share,
  and `own_slots` empty slots per row."""
  prefix = None
  if ids.shape[1]:
    prefix = forward(
        config, params, ids, positions=positions,
        cache=init_cache(config, ids.shape[0], ids.shape[1]), cache_index=0,
        kv_mask=mask.astype(bool), return_logits=False).cache
  return init_cache(config, ids.shape[0] * num_samples, own_slots,
                    prefix=prefix, segments=segments)


def forward(config: GPT2Config, params, token_ids, *, positions, cache,
            cache_index, kv_mask, capture: Sequence[int] = (),
            segment: Optional[int] = None,
            return_logits: bool = True) -> GPT2Output:
  """`gpt2.model.forward` with a cache, on `prepare`d parameters and a cache
  of `init_cache`: token_ids and positions (B, T), the same `GPT2Output`.

  With a segmented cache, `segment` (static) names the segment that
  `cache_index` falls in; no later segment is read (they hold nothing yet).
  """
  cfg = config
  dt = cfg.compute_dtype
  B, T = token_ids.shape
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
  allowed = (jnp.arange(S)[None] <= (slot + jnp.arange(T))[:, None])[None] & (
      kv_mask.astype(bool)[:, None])  # (B, T, S)
  bias = jnp.where(allowed, 0.0, jnp.finfo(jnp.float32).min)[:, None]

  def norm(p, x):  # flax.linen.LayerNorm's arithmetic, over axis 0
    mean = x.mean(0)
    var = jnp.maximum(0.0, (x * x).mean(0) - mean * mean)
    mul = jax.lax.rsqrt(var + eps) * p["scale"].astype(jnp.float32)[:, None]
    return ((x - mean) * mul + p["bias"].astype(jnp.float32)[:, None]).astype(
        dt)

  def dense(p, x):
    if "kernel_q" in p:
      y = int8.matmul(p["kernel_q"], p["kernel_scale"], x).astype(dt)
    else:
      y = p["kernel_t"] @ x.astype(dt)
    return y + p["bias"].astype(dt)[:, None]

  wte = params["wte"]["embedding"]
  x = (wte[token_ids.reshape(-1)].astype(dt) +
       params["wpe"]["embedding"][positions.reshape(-1)].astype(dt)).astype(
           jnp.float32).T  # (C, B T)
  taps = {0: x}
  keys, values = [], []
  for i, layer in enumerate(params["h"]):
    attn, mlp = layer["attn"], layer["mlp"]
    qkv = dense(attn["c_attn"], norm(layer["ln_1"], x))  # (3C, B T)
    q, k, v = (t.T.reshape(B, T, H, D) for t in jnp.split(qkv, 3, axis=0))
    layer_cache = {name: cache[name][i] for name in cache}
    out, layer_cache = _attention(q, k, v, bias, layer_cache, slot, visible)
    x = x + dense(attn["c_proj"], out.reshape(B * T, C).T)
    h = jax.nn.gelu(dense(mlp["c_fc"], norm(layer["ln_2"], x)),
                    approximate=True)
    x = x + dense(mlp["c_proj"], h)
    taps[i + 1] = x
    keys.append(layer_cache["k"])
    values.append(layer_cache["v"])
  hidden = None
  if capture:
    model_lib.check_capture(cfg, capture)
    hidden = {layer: taps[layer].T.reshape(B, T, C) for layer in capture}
  logits = None
  if return_logits and "head_q" in params and B * T <= int8.MAX_KERNEL_ROWS:
    logits = int8.matmul(params["head_q"], params["head_scale"],
                         norm(params["ln_f"], x)).T.reshape(B, T, -1)
  elif return_logits:
    # The head reads rows: (B T, C) x (V, C) -> (B T, V), the form XLA:CPU
    # runs fastest for the (V, C) embedding. The barrier keeps XLA from
    # folding the transpose into the matmul (a contraction over axis 0,
    # ~4x slower).
    rows = jax.lax.optimization_barrier(norm(params["ln_f"], x).T)
    head = params.get("head_t", wte)
    if "head_q" in params:
      head = int8.dequantize(params["head_q"], params["head_scale"])
    logits = jax.lax.dot_general(
        rows, head.astype(dt), (((1,), (1,)), ((), ()))).astype(
            jnp.float32).reshape(B, T, -1)
  cache = {**cache, "k": tuple(keys), "v": tuple(values)}
  return GPT2Output(logits=logits, cache=cache, hidden=hidden)


def _attention(q, k, v, bias, cache, cache_index, visible=None):
  """Attention of q, k, v (B, T, H, D) over one layer's cache, after writing
  k, v at `cache_index`; (output (B, T, H, D), the updated layer cache).

  With segments, only the first `visible` (static) are read, and the write
  must fall in the last of them. `bias` (B, 1, T, S) covers the prefix and
  the visible slots.
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
  scores = scores / jnp.sqrt(jnp.float32(D)) + bias  # (B, H, T, S)
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
