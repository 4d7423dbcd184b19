"""The sampler: N candidates per prompt from one jitted call with a KV cache.

A call left-pads its prompts to a length bucket (a power of two, so prompts of
nearby lengths share one compiled program), fills a cache with all but each
prompt's last token, which the prompt's `num_samples` rows share as a prefix
of their own caches (read once per step for all of them), and then decodes
inside one `lax.while_loop`: each step feeds one token per row, samples the
next one under the rules, and records its log-prob and the hidden states of
the captured layers. A row stops at `<|endoftext|>`, at a
stop string (matched on bytes, so a stop that straddles tokens still stops),
or after `max_new_tokens`; the loop ends when every row has stopped.

Beyond the context (`max_new_tokens` more than the longest prompt leaves),
a call runs that program once per step (`_Windows`, at most `max_steps`):
each step writes a quarter of the context after a window of the prompt's
start and the latest tokens, refilled afresh, and the rows' stop automaton,
rules' state and ended rows carry over (`_with_carry`, `_Steps`).

The model runs as a `Decoding` says, chosen here (`decoding_for`): on a CPU
`gpt2.cpu_decoding` (weights (out, in) @ activations as columns, a cache with
rows and heads merged that the prompt's candidates share, own slots in two
segments with a decoding loop each); elsewhere the reference model
(`gpt2.model.forward` with its KV cache). Both run the layers unstacked
(`gpt2.model.unstack_layers`), reading every weight and cache buffer where it
lies instead of slicing it out of stacked arrays on every step. A model of
the Llama family (`gpt2.llama`) runs the reference on every platform,
through the functions `gpt2.family` gives for its config, with a KV cache of
its key/value heads only (and, in int8 on a CPU, its block matmuls by the
int8 kernel); the rest of the sampler is the same for both.

Rules are pure functions on logits (B, V) that return logits with the
excluded tokens at -inf, applied in this order: temperature (raised by
breakruns), top-k, top-p, typical-p, Mirostat 2.0. `SamplingParams` holds
them.

Randomness: candidate r of a call (prompt-major) draws from
`PRNGKey(seed + r)`, folded with the step, so the same seed gives the same
output and a candidate does not depend on the other rows of its batch.

Log-probs are the model's own (temperature 1, no rule applied): what the
model thinks of the text, whatever rules chose it.
"""

import codecs
import dataclasses
import functools
import logging
import weakref
from typing import Callable, Iterator, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from gpt2 import attention as attention_lib
from gpt2 import cpu_decoding
from gpt2 import family as family_lib
from gpt2 import int8 as int8_lib
from gpt2.errors import UserError
from gpt2.model import GPT2Config
from gpt2.sampling_params import MAX_STEPS, SamplingParams
from gpt2.tokenizer import Tokenizer

log = logging.getLogger("gpt2.sampling")

NEG_INF = -jnp.inf
# Shortest prompt bucket: shorter prompts are left-padded to it.
MIN_BUCKET = 16
# Draws a row may reject (fast top-p / typical-p) before the exact filter.
MAX_REJECTIONS = 16
_BLOCK = 256  # vocabulary block for the two-stage inverse-CDF draw
# The one-call sampler's own cache slots come in up to MAX_SEGMENTS segments
# of at least SEGMENT_SLOTS (`cache_segments`).
MAX_SEGMENTS = 2
SEGMENT_SLOTS = 64

# How many times each jitted program was traced (for the recompile tests).
trace_counts = {"generate": 0, "prefill": 0, "step": 0}


# ---- rules --------------------------------------------------------------------
# (`SamplingParams`, which holds them and their defaults, is in
# gpt2/sampling_params.py, which imports no JAX: the bot's settings read it.)


def _first_argmax(logits):
  """argmax over the last axis, lowest index on ties (cheaper than jnp's)."""
  top = jnp.max(logits, axis=-1, keepdims=True)
  ids = jnp.arange(logits.shape[-1], dtype=jnp.int32)
  return jnp.min(jnp.where(logits == top, ids, logits.shape[-1]), axis=-1)


def apply_temperature(logits, temperature):
  """logits / temperature; `temperature` is a scalar or one per row (B,)."""
  temperature = jnp.asarray(temperature, jnp.float32)
  if temperature.ndim == 1:
    temperature = temperature[:, None]
  return logits / temperature


def top_k_filter(logits, k: int):
  """Keeps the k highest logits of each row (exactly k; ties by index)."""
  _, ids = jax.lax.top_k(logits, k)
  keep = jnp.zeros(logits.shape, bool).at[
      jnp.arange(logits.shape[0])[:, None], ids].set(True)
  return jnp.where(keep, logits, NEG_INF)


def _largest_key_with_mass(keys, weights, target):
  """Per row, the largest k with sum(weights[keys >= k]) >= target.

  keys: (B, V) int32 >= 0; weights (B, V) >= 0; target (B,) at most the row's
  total. Bisection over the 31-bit keys: exact, no sort (sorting 50k floats
  per row is far slower on CPU than 31 masked sums).
  """
  rows = keys.shape[0]

  def body(_, bounds):
    lo, hi = bounds  # mass(keys >= lo) >= target > mass(keys >= hi)
    mid = lo + (hi - lo) // 2
    mass = jnp.sum(jnp.where(keys >= mid[:, None], weights, 0.0), axis=-1)
    ok = mass >= target
    return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

  lo = jnp.zeros((rows,), jnp.int32)
  hi = jnp.full((rows,), 0x7F800001, jnp.int32)  # above +inf's bits
  lo, _ = jax.lax.fori_loop(0, 31, body, (lo, hi))
  return lo


def _float_key(x):
  """An int32 key ordered like the float x >= 0 (its bit pattern)."""
  return jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.int32)


def top_p_filter(logits, top_p):
  """Keeps the smallest set of most likely tokens whose mass reaches top_p.

  Tokens tied with the last one needed are all kept.
  """
  probs = jax.nn.softmax(logits, axis=-1)
  target = jnp.minimum(jnp.asarray(top_p, jnp.float32),
                       jnp.sum(probs, axis=-1))
  key = _float_key(probs)
  cut = _largest_key_with_mass(key, probs, target)
  keep = (key >= cut[:, None]) & (logits > NEG_INF)
  return jnp.where(keep, logits, NEG_INF)


def _typical_shift(logits):
  """|-log p - H| per token (inf where p is 0) and the probabilities."""
  logp = jax.nn.log_softmax(logits, axis=-1)
  probs = jnp.exp(logp)
  entropy = -jnp.sum(jnp.where(probs > 0, probs * logp, 0.0), axis=-1)
  return jnp.abs(-logp - entropy[:, None]), probs


def typical_filter(logits, typical_p):
  """Locally typical sampling: keeps the tokens whose surprise is closest to
  the entropy, fewest first, until their mass reaches typical_p."""
  shift, probs = _typical_shift(logits)
  target = jnp.minimum(jnp.asarray(typical_p, jnp.float32),
                       jnp.sum(probs, axis=-1))
  # Smallest shifts first: order by the complement of the shift's key.
  key = 0x7F800000 - _float_key(jnp.minimum(shift, jnp.inf))
  cut = _largest_key_with_mass(key, probs, target)
  keep = (key >= cut[:, None]) & (logits > NEG_INF)
  return jnp.where(keep, logits, NEG_INF)


def mirostat_filter(logits, mu):
  """Mirostat 2.0's cut (Basu et al., ICLR 2021): keeps the tokens whose
  surprise -log2 p is at most mu (B,); the most likely one when none is."""
  log2p = jax.nn.log_softmax(logits, axis=-1) / jnp.log(2.0)
  keep = (-log2p <= jnp.asarray(mu)[:, None]) | (
      jnp.arange(logits.shape[-1]) == _first_argmax(logits)[:, None])
  return jnp.where(keep, logits, NEG_INF)


def mirostat_update(mu, logits, token, tau, eta):
  """mu - eta * (surprise - tau), as the paper has it: the surprise of
  `token` in bits under `logits`, the distribution before the cut (not the
  cut, renormalised one the token was drawn from)."""
  logp = jax.nn.log_softmax(logits, axis=-1)
  surprise = -jnp.take_along_axis(logp, token[:, None], axis=-1)[:, 0] / (
      jnp.log(2.0))
  return mu - eta * (surprise - tau)


def breakruns_temperature(temperature, tau, run):
  """The breakruns temperature for a run of `run` (B,) argmax picks."""
  return temperature + tau * run.astype(jnp.float32)


def breakruns_update(run, token, argmax):
  """One more in the run when the sampled token was the argmax, else 0."""
  return jnp.where(token == argmax, run + 1, 0)


# ---- drawing a token -------------------------------------------------------------


def _pick(weights, u):
  """Index i with probability weights[i] / sum (B, n), from uniforms u (B,)."""
  cum = jnp.cumsum(weights, axis=-1)
  target = u * cum[:, -1]
  idx = jnp.sum(cum <= target[:, None], axis=-1)
  # Rounding may put target past the last sum: take the last nonzero weight.
  n = weights.shape[-1]
  last = n - 1 - _first_argmax((weights[:, ::-1] > 0).astype(jnp.float32))
  return jnp.minimum(idx, last).astype(jnp.int32)


def _blocks(weights):
  """(B, V) -> (B, V/256, 256) zero-padded, and the block sums (B, V/256)."""
  rows, n = weights.shape
  padded = -(-n // _BLOCK) * _BLOCK
  blocks = jnp.pad(weights, ((0, 0), (0, padded - n))).reshape(
      rows, padded // _BLOCK, _BLOCK)
  return blocks, jnp.sum(blocks, axis=-1)


def _draw_from_blocks(blocks, block_sums, u):
  """Inverse-CDF draw in two stages (a block, then a token in it): two small
  cumulative sums instead of one over the vocabulary. u: (B, 2)."""
  b = _pick(block_sums, u[:, 0])
  inner = jnp.take_along_axis(blocks, b[:, None, None], axis=1)[:, 0]
  return b * _BLOCK + _pick(inner, u[:, 1])


def draw(logits, u):
  """A token per row from softmax(logits) (-inf excluded); u (B, 2) uniform."""
  top = jnp.max(logits, axis=-1, keepdims=True)
  weights = jnp.exp(logits - top)
  return _draw_from_blocks(*_blocks(weights), u)


def _draw_rejecting(scaled, rule: str, value, uniforms):
  """A draw from softmax(scaled) restricted by top-p or typical-p, by
  rejection: draw from the whole distribution, keep the draw if the rule
  keeps it. The same distribution as filtering first, without the 31 passes
  over the vocabulary that finding the cut takes; a kept draw costs one pass.

  A token x is in the top-p set iff the mass of tokens strictly more likely
  than x is below p; in the typical set iff the mass of tokens with a
  strictly smaller shift is below p. Rows still rejecting after
  MAX_REJECTIONS draws fall back to the exact filter.
  """
  top = jnp.max(scaled, axis=-1, keepdims=True)
  weights = jnp.exp(scaled - top)  # (B, V)
  blocks, block_sums = _blocks(weights)
  total = jnp.sum(block_sums, axis=-1)
  if rule == "top_p":
    order = weights
    filter_fn = top_p_filter
  else:
    order = -_typical_shift(scaled)[0]
    filter_fn = typical_filter
  limit = value * total

  def attempt(state):
    n, token, accepted = state
    x = _draw_from_blocks(blocks, block_sums, uniforms(n))
    x_order = jnp.take_along_axis(order, x[:, None], axis=-1)
    ahead = jnp.sum(jnp.where(order > x_order, weights, 0.0), axis=-1)
    token = jnp.where(accepted, token, x)
    return n + 1, token, accepted | (ahead < limit)

  def undecided(state):
    n, _, accepted = state
    return (n < MAX_REJECTIONS) & ~jnp.all(accepted)

  rows = scaled.shape[0]
  _, token, accepted = jax.lax.while_loop(
      undecided, attempt, (jnp.int32(0), jnp.zeros((rows,), jnp.int32),
                           jnp.zeros((rows,), bool)))

  def exact(token):
    x = draw(filter_fn(scaled, value), uniforms(MAX_REJECTIONS))
    return jnp.where(accepted, token, x)

  return jax.lax.cond(jnp.all(accepted), lambda t: t, exact, token)


def choose(logits, structure: tuple, values: dict, run, mu, uniforms):
  """One sampling step on raw logits (B, V).

  `uniforms(n)` gives (B, 2) uniforms for the n-th draw of this step; `run`
  (B,) is breakruns' counter and `mu` (B,) Mirostat's state.
  Returns (token (B,), run, mu).
  """
  greedy, top_k, use_top_p, use_typical, use_mirostat, use_breakruns = (
      structure)
  if greedy:
    return _first_argmax(logits), run, mu
  temperature = values["temperature"]
  if use_breakruns:
    temperature = breakruns_temperature(temperature, values["breakruns_tau"],
                                        run)
  scaled = apply_temperature(logits, temperature)
  ids = None
  if top_k:  # the other rules then run on the k candidates only
    scaled, ids = jax.lax.top_k(scaled, top_k)
  if not top_k and not use_mirostat and use_top_p != use_typical:
    if use_top_p:
      token = _draw_rejecting(scaled, "top_p", values["top_p"], uniforms)
    else:
      token = _draw_rejecting(scaled, "typical", values["typical_p"],
                              uniforms)
  else:
    if use_top_p:
      scaled = top_p_filter(scaled, values["top_p"])
    if use_typical:
      scaled = typical_filter(scaled, values["typical_p"])
    before_cut = scaled
    if use_mirostat:
      scaled = mirostat_filter(scaled, mu)
    token = draw(scaled, uniforms(0))
    if use_mirostat:
      mu = mirostat_update(mu, before_cut, token, values["mirostat_tau"],
                           values["mirostat_eta"])
  if ids is not None:
    token = jnp.take_along_axis(ids, token[:, None], axis=-1)[:, 0]
  if use_breakruns:
    run = breakruns_update(run, token, _first_argmax(logits))
  return token.astype(jnp.int32), run, mu


# ---- stop strings -----------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _token_bytes(tokenizer: Tokenizer) -> tuple:
  """(bytes (V, maxlen) uint8, lengths (V,)) of every token; eot is empty."""
  pieces = [b"" if i == tokenizer.eot_id else tokenizer.decode_bytes([i])
            for i in range(tokenizer.vocab_size)]
  lengths = np.array([len(p) for p in pieces], np.int64)
  table = np.zeros((len(pieces), max(1, lengths.max())), np.uint8)
  for i, p in enumerate(pieces):
    table[i, :len(p)] = np.frombuffer(p, np.uint8)
  return table, lengths


def _byte_automaton(stops: Sequence[bytes]):
  """Aho-Corasick over bytes: (delta (n, 256), matched (n,)) for the stops."""
  goto, matched = [{}], [False]
  for stop in stops:
    state = 0
    for byte in stop:
      if byte not in goto[state]:
        goto.append({})
        matched.append(False)
        goto[state][byte] = len(goto) - 1
      state = goto[state][byte]
    matched[state] = True
  delta = np.zeros((len(goto), 256), np.int32)
  fail = [0] * len(goto)
  queue = []
  for byte, nxt in goto[0].items():
    delta[0, byte] = nxt
    queue.append(nxt)
  while queue:
    state = queue.pop(0)
    matched[state] = matched[state] or matched[fail[state]]
    delta[state] = delta[fail[state]]
    for byte, nxt in goto[state].items():
      delta[state, byte] = nxt
      fail[nxt] = delta[fail[state], byte] if state else 0
      queue.append(nxt)
  return delta, np.array(matched)


@functools.lru_cache(maxsize=16)
def stop_tables(tokenizer: Tokenizer, stops: tuple, vocab_size: int):
  """Per (automaton state, token): the state after the token's bytes, and
  whether a stop string completed inside them. (n_states, vocab) each."""
  delta, matched = _byte_automaton([s.encode("utf-8") for s in stops])
  table, lengths = _token_bytes(tokenizer)
  n_states, n_tok = len(delta), len(lengths)
  order = np.argsort(-lengths, kind="stable")  # longest first
  state = np.broadcast_to(np.arange(n_states)[:, None], (n_states, n_tok)).copy()
  hit = np.zeros((n_states, n_tok), bool)
  for j in range(table.shape[1]):
    active = order[:int(np.sum(lengths > j))]
    if not len(active):
      break
    nxt = delta[state[:, active], table[active, j][None, :]]
    state[:, active] = nxt
    hit[:, active] |= matched[nxt]
  # Padding ids the tokenizer lacks keep the state and never stop.
  next_state = np.tile(np.arange(n_states, dtype=np.int32)[:, None],
                       (1, vocab_size))
  stops_here = np.zeros((n_states, vocab_size), bool)
  next_state[:, :n_tok] = state
  stops_here[:, :n_tok] = hit
  return next_state, stops_here


# ---- the jitted programs ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Decoding:
  """How the sampler runs the model; `decoding_for` picks one.

  prepare(config, params): the parameters as `forward` reads them (made
    once per model, outside the decoding program).
  prefill(config, params, ids, mask, positions, *, num_samples, own_slots,
    segments): the cache of `num_samples` rows per prompt, the prompts
    (P, T) written and `own_slots` more slots per row, numbered after them.
  forward(config, params, token_ids, *, positions, cache, cache_index,
    kv_mask, capture, segment): `gpt2.model.forward` with a cache.
  max_segments: how many segments a row's own slots may come in.
  """
  name: str
  prepare: Callable
  prefill: Callable
  forward: Callable
  max_segments: int


def _int8_kernel_decodes(config: GPT2Config) -> bool:
  """Whether the reference decoding multiplies a model's int8 codes by the
  CPU kernel (`gpt2.int8.matmul`) rather than widening them: on a CPU, for
  a family without a CPU layout of its own (GPT-2's, `gpt2.cpu_decoding`,
  uses the kernel; its reference stays the GPU/TPU path)."""
  return (attention_lib.platform() == "cpu" and
          not family_lib.of(config).cpu_decoding)


def _reference_prepare(config: GPT2Config, params,
                       weights: str = "float32") -> dict:
  """The reference model's layers, unstacked; with `weights="int8"` each
  block kernel (in, out) as `kernel_q` int8 codes and `kernel_scale`
  (out,), gpt2.int8's per-output-channel quantization (the embedding, and
  so a tied head, stays as it is). Where the CPU kernel decodes them
  (`_int8_kernel_decodes`, and it is built) the codes are `kernel_qt`
  (out, in) instead, its layout."""
  family = family_lib.of(config)
  params = family.unstack_layers(params, config.compute_dtype)
  if weights == "float32":
    return params
  quantize = int8_lib.quantize_dense
  if _int8_kernel_decodes(config) and int8_lib.available():
    quantize = lambda p: int8_lib.transpose_codes(int8_lib.quantize_dense(p))
  return {**params, family.layers: tuple(
      int8_lib.map_dense(layer, quantize)
      for layer in params[family.layers])}


def _widened(config: GPT2Config, params) -> dict:
  """int8 kernels widened to the compute dtype inside the decoding program,
  next to the matmul that reads each, where the platform's compiler can
  fuse the conversion into it (XLA's GPU matmul fusions do); the rest
  (the CPU kernel's `kernel_qt` too) as it is."""
  key = family_lib.of(config).layers
  widen = lambda p: int8_lib.dequantize_dense(p, config.compute_dtype)
  return {**params, key: tuple(int8_lib.map_dense(layer, widen)
                               for layer in params[key])}


def _reference_prefill(config: GPT2Config, params, ids, mask, positions, *,
                       num_samples: int, own_slots: int, segments: int):
  """The prompts' cache, each row repeated for its candidates."""
  del segments
  n_prompts, length = ids.shape
  family = family_lib.of(config)
  cache = family.init_cache(config, n_prompts, length + own_slots)
  if length:
    cache = family.forward(
        config, _widened(config, params), ids, positions=positions,
        cache=cache, cache_index=0,
        kv_mask=jnp.pad(mask.astype(bool), ((0, 0), (0, own_slots))),
        return_logits=False).cache
  return jax.tree.map(lambda a: jnp.repeat(a, num_samples, axis=0), cache)


def _reference_forward(config, params, token_ids, *, segment=None, **kw):
  del segment
  return family_lib.of(config).forward(config, _widened(config, params),
                                       token_ids, **kw)


DECODINGS = {
    # The reference model with its KV cache: GPUs and TPUs.
    "reference": Decoding("reference", _reference_prepare, _reference_prefill,
                          _reference_forward, max_segments=1),
    # Laid out for XLA:CPU (`gpt2/cpu_decoding.py`).
    "cpu": Decoding("cpu", cpu_decoding.prepare, cpu_decoding.prefill,
                    cpu_decoding.forward, max_segments=MAX_SEGMENTS),
}


def decoding_for(name: str = "auto", config=None) -> Decoding:
  """The decoding `name` names; "auto": "cpu" on a CPU, else "reference".
  A model `config` whose family `gpt2.cpu_decoding` does not lay out (the
  Llama family, so far) runs the reference everywhere."""
  laid_out = config is None or family_lib.of(config).cpu_decoding
  if name == "auto":
    name = ("cpu" if attention_lib.platform() == "cpu" and laid_out
            else "reference")
  if name not in DECODINGS:
    raise UserError(f"decoding={name!r} is not one of auto, "
                    f"{', '.join(DECODINGS)}")
  if name == "cpu" and not laid_out:
    raise UserError(f"decoding='cpu' runs GPT-2s only; a "
                    f"{config.model_type} model decodes with 'reference' "
                    "(or 'auto')")
  return DECODINGS[name]


def _prefill(params, ids, mask, keys, *, config: GPT2Config, decoding: str,
             num_samples: int, max_new_tokens: int, capture: tuple,
             segments: int = 1):
  """Fills a prompt cache with all but the last prompt token; the decoding
  state.

  ids, mask: (P, T) left-padded prompts; keys (P * num_samples, 2). The last
  prompt token is fed by the first decoding step, whose logits give the
  first new token, so the prefill needs no logits at all.
  """
  trace_counts["prefill"] += 1
  n_prompts, bucket = ids.shape
  positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
  # Slots: the prompt's bucket - 1, then each row's own: the last prompt
  # token and the new ones.
  cache = DECODINGS[decoding].prefill(
      config, params, ids[:, :-1], mask[:, :-1], positions[:, :-1],
      num_samples=num_samples, own_slots=max_new_tokens + 1,
      segments=segments)
  prompt_slots = jnp.pad(mask.astype(bool), ((0, 0), (0, max_new_tokens)))
  rows = n_prompts * num_samples
  repeat = lambda x: jnp.repeat(x, num_samples, axis=0)
  steps = max_new_tokens + 1  # one more to feed (and tap) the last token
  return {
      "cache": cache,
      "prompt_slots": repeat(prompt_slots),
      "next_position": repeat(positions[:, -1]),
      "keys": keys,
      "t": jnp.int32(0),
      "feed": repeat(ids[:, -1]),
      "tokens": jnp.zeros((rows, steps), jnp.int32),
      "logprobs": jnp.zeros((rows, steps), jnp.float32),
      "hidden": {layer: jnp.zeros((rows, steps, config.n_embd), jnp.float32)
                 for layer in capture},
      "done": jnp.zeros((rows,), bool),
      "last": jnp.full((rows,), max_new_tokens, jnp.int32),
      "run": jnp.zeros((rows,), jnp.int32),
      "mu": jnp.zeros((rows,), jnp.float32),
      "stop_state": jnp.zeros((rows,), jnp.int32),
  }


def _step(params, state, values, stop, *, config: GPT2Config, decoding: str,
          structure: tuple, max_new_tokens: int, capture: tuple, eot_id: int,
          segment: Optional[int] = None):
  """Feeds one token per row and samples the next; returns the new state.

  Step t feeds token t-1 (the last prompt token at t = 0) at slot
  bucket - 1 + t, taps its hidden states (position t-1) and samples token t.
  With a segmented cache, t falls in own-slot segment `segment`.
  """
  t = state["t"]
  rows, slots = state["prompt_slots"].shape
  bucket = slots - max_new_tokens
  slot = bucket - 1 + t
  ids = jnp.arange(slots)
  kv_mask = state["prompt_slots"] | ((ids >= bucket) & (ids <= slot))[None]
  out = DECODINGS[decoding].forward(
      config, params, state["feed"][:, None],
      positions=(state["next_position"] + t)[:, None], cache=state["cache"],
      cache_index=slot, kv_mask=kv_mask, capture=capture, segment=segment)
  logits = out.logits[:, 0]  # (B, V)
  hidden = {
      layer: jax.lax.dynamic_update_slice(
          state["hidden"][layer], out.hidden[layer].astype(jnp.float32),
          (0, jnp.maximum(t - 1, 0), 0))
      for layer in capture}

  def uniforms(n):
    fold = lambda key: jax.random.fold_in(jax.random.fold_in(key, t), n)
    return jax.vmap(lambda key: jax.random.uniform(fold(key), (2,)))(
        state["keys"])

  token, run, mu = choose(logits, structure, values, state["run"],
                          state["mu"], uniforms)
  logprob = jnp.take_along_axis(logits, token[:, None], axis=-1)[:, 0] - (
      jax.nn.logsumexp(logits, axis=-1))
  finished = token == eot_id
  stop_state = state["stop_state"]
  if stop is not None:
    finished |= stop["hit"][stop_state, token]
    stop_state = stop["next"][stop_state, token]
  ends = finished | (t >= state.get("limit", max_new_tokens) - 1)
  newly = ends & ~state["done"]
  window = {}
  if "limit" in state:  # one window of a longer candidate (`_with_carry`)
    held = state["done"]  # rows that ended before this token keep theirs
    run, mu, stop_state = (jnp.where(held, state[k], new) for k, new in (
        ("run", run), ("mu", mu), ("stop_state", stop_state)))
    window = {"stopped": state["stopped"] | (finished & ~held)}
  return {
      **state,
      "cache": out.cache,
      "t": t + 1,
      "feed": token,
      "tokens": jax.lax.dynamic_update_slice(state["tokens"], token[:, None],
                                             (0, t)),
      "logprobs": jax.lax.dynamic_update_slice(state["logprobs"],
                                               logprob[:, None], (0, t)),
      "hidden": hidden,
      "done": state["done"] | ends,
      "last": jnp.where(newly, t, state["last"]),
      "run": run,
      "mu": mu,
      "stop_state": stop_state,
      **window,
  }


def _running(state, capture: tuple):
  """Whether another step is needed: a row still sampling, or (when tapping)
  a row whose last token is not fed yet."""
  fed = state["t"] > state["last"] + (1 if capture else 0)
  return ~jnp.all(state["done"] & fed)


def _outputs(state):
  keys = ("tokens", "logprobs", "hidden", "last")
  if "limit" in state:  # and what the next window goes on from
    keys += ("stopped", "stop_state", "run", "mu")
  return {k: state[k] for k in keys}


def _with_carry(state, carry):
  """The state of one window of a candidate longer than the context: rows
  that ended stay ended (and take no more tokens); the stop automaton,
  breakruns' run and Mirostat's mu go on from where the last window left
  them; the rows write at most `limit` tokens (a scalar) in this window.
  Rows then also record whether they `stopped` by themselves."""
  done = carry["done"]
  return {**state, "done": done, "stopped": done,
          "last": jnp.where(done, -1, state["last"]),
          "stop_state": carry["stop_state"], "run": carry["run"],
          "mu": carry["mu"], "limit": carry["limit"]}


def _generate(params, ids, mask, keys, values, mu0, stop, carry=None, *,
              config, decoding, structure, num_samples, max_new_tokens,
              capture, eot_id):
  """Prefill and the whole decoding loop in one program, on `params` from
  the decoding's `prepare`; with a `carry`, one window of a longer
  candidate (`_with_carry`)."""
  trace_counts["generate"] += 1
  segments = cache_segments(max_new_tokens + 1,
                            DECODINGS[decoding].max_segments)
  state = _prefill(params, ids, mask, keys, config=config, decoding=decoding,
                   num_samples=num_samples, max_new_tokens=max_new_tokens,
                   capture=capture, segments=segments)
  state["mu"] = jnp.full_like(state["mu"], mu0)
  if carry is not None:
    state = _with_carry(state, carry)
  size = -(-(max_new_tokens + 1) // segments)
  # One loop per segment of the rows' own cache slots: a step then reads
  # the segments written so far and none after.
  for segment in range(segments):
    step = functools.partial(
        _step, config=config, decoding=decoding, structure=structure,
        max_new_tokens=max_new_tokens, capture=capture, eot_id=eot_id,
        segment=segment if segments > 1 else None)
    end = (segment + 1) * size
    state = jax.lax.while_loop(
        lambda s, end=end: _running(s, capture) & (s["t"] < end),
        lambda s, step=step: step(params, s, values, stop), state)
  return _outputs(state)


_STATIC = ("config", "decoding", "structure", "num_samples", "max_new_tokens",
           "capture", "eot_id")
_generate_jit = jax.jit(_generate, static_argnames=_STATIC)


def cache_segments(slots: int, max_segments: int = MAX_SEGMENTS) -> int:
  """How many segments the one-call sampler splits a row's `slots` own cache
  slots into: at most `max_segments`, none shorter than SEGMENT_SLOTS. Each
  segment is one more compiled copy of the step, so short budgets keep
  one."""
  return max(1, min(max_segments, slots // SEGMENT_SLOTS))


def _prefill_for_stream(params, ids, mask, keys, mu0, carry=None, *, config,
                        decoding, num_samples, max_new_tokens, capture):
  state = _prefill(params, ids, mask, keys, config=config, decoding=decoding,
                   num_samples=num_samples, max_new_tokens=max_new_tokens,
                   capture=capture)
  state["mu"] = jnp.full_like(state["mu"], mu0)
  if carry is not None:
    state = _with_carry(state, carry)
  return state


_prefill_jit = jax.jit(_prefill_for_stream, static_argnames=(
    "config", "decoding", "num_samples", "max_new_tokens", "capture"))


def _stream_step(params, state, values, stop, **static):
  trace_counts["step"] += 1
  return _step(params, state, values, stop, **static)


# The state (with the cache) is donated: the step updates it in place.
_step_jit = jax.jit(_stream_step, donate_argnums=(1,), static_argnames=(
    "config", "decoding", "structure", "max_new_tokens", "capture", "eot_id"))
# `kernel` (whether gpt2.int8's kernel is built, for int8) is only a key:
# the prepared layout depends on it, and jit must not reuse the other one.
_prepare_jit = jax.jit(
    lambda decoding, config, weights, kernel, params: DECODINGS[
        decoding].prepare(config, params, weights),
    static_argnums=(0, 1, 2, 3))
_said: set = set()


def _say_once(line: str) -> None:
  """A warning logged once per process."""
  if line not in _said:
    _said.add(line)
    log.warning(line)


# The last model's decoding parameters: (decoding, config, tree structure,
# weak references to its leaves, the prepared parameters).
_last_prepared: list = []


def prepared_params(config: GPT2Config, params, decoding: str = "auto",
                    weights: str = "float32") -> dict:
  """The decoding's `prepare(config, params)`, kept for the last model seen.

  The bot and the benchmarks sample many times from one model; preparing
  its decoding parameters again each time would copy every weight per call.
  Kept only for JAX arrays (numpy ones may change in place), and dropped
  when the model's arrays are.
  """
  name = decoding_for(decoding, config).name
  leaves = jax.tree.leaves(params)
  if weights not in cpu_decoding.WEIGHTS:
    raise UserError(f"weights={weights!r} is not one of "
                    f"{', '.join(cpu_decoding.WEIGHTS)}")
  if weights == "int8" and (name == "cpu" or _int8_kernel_decodes(
      config)) and not int8_lib.available():
    _say_once(f"int8 decoding without its kernel ({int8_lib.why_not()}): "
              "the dequantized weights in float32")
  kernel = weights == "int8" and int8_lib.available()
  key = (name, config, weights, kernel, jax.tree.structure(params))
  if _last_prepared and _last_prepared[0] == key and all(
      ref() is leaf for ref, leaf in zip(_last_prepared[1], leaves)):
    return _last_prepared[2]
  prepared = _prepare_jit(name, config, weights, kernel, params)
  _last_prepared.clear()
  # Only immutable arrays are kept track of: a numpy array changed in place
  # would be the same object with other weights.
  if all(isinstance(leaf, jax.Array) for leaf in leaves):
    refs = [weakref.ref(leaf, lambda _: _last_prepared.clear())
            for leaf in leaves]
    _last_prepared.extend([key, refs, prepared])
  return prepared


# ---- host side ----------------------------------------------------------------------


@dataclasses.dataclass
class SampleResult:
  """One candidate.

  text: the continuation, cut before `<|endoftext|>` or the first stop string.
  tokens: the generated ids behind `text` (a token in which a stop string
    begins is kept, its text cut); `<|endoftext|>` is never included.
  logprobs: (n,) the model's log-prob of each of `tokens`.
  finish_reason: "eot", "stop" or "length".
  hidden: {layer: (n, C) float32} for the captured layers, row i the hidden
    state at `tokens[i]` (what `forward` on prompt + tokens gives there).
  end_logprob: the log-prob of `<|endoftext|>` when the row ended with it.
  steps: the windows of the context the text was written in (1 unless it
    goes beyond the context; see `sample`).
  """
  text: str
  tokens: list
  logprobs: np.ndarray
  finish_reason: str
  prompt_index: int = 0
  prompt_tokens: int = 0  # prompt length after any left truncation
  hidden: Optional[dict] = None
  end_logprob: Optional[float] = None
  steps: int = 1

  @property
  def finished(self) -> bool:
    """Ended by itself (end-of-text or a stop string), not by the budget."""
    return self.finish_reason != "length"

  @property
  def mean_logprob(self) -> float:
    """Mean log-prob of the tokens, and of the end-of-text when it ended so
    (an empty candidate is then judged by that); NaN when there is none."""
    values = list(self.logprobs)
    if self.end_logprob is not None:
      values.append(self.end_logprob)
    return float(np.mean(values)) if values else float("nan")

  def to_json(self) -> dict:
    mean = self.mean_logprob
    return {"text": self.text, "tokens": [int(t) for t in self.tokens],
            "mean_logprob": None if np.isnan(mean) else mean,
            "finish_reason": self.finish_reason,
            "prompt_index": self.prompt_index}


@dataclasses.dataclass
class TextPiece:
  """Streaming: `text` was appended to candidate `row`'s continuation."""
  row: int
  text: str


def bucket_length(n: int, limit: int) -> int:
  """The padded prompt length for n tokens: a power of two >= MIN_BUCKET,
  at most `limit`."""
  size = MIN_BUCKET
  while size < n:
    size *= 2
  return min(size, limit)


def _rules(rules: Optional[SamplingParams], overrides: dict,
           config: GPT2Config) -> SamplingParams:
  rules = rules or SamplingParams()
  unknown = set(overrides) - {f.name for f in dataclasses.fields(rules)}
  if unknown:
    raise TypeError(f"unknown sampling rules: {', '.join(sorted(unknown))}")
  return dataclasses.replace(rules, **overrides).validate(config.vocab_size)


@dataclasses.dataclass
class _Windows:
  """How a call whose candidates go beyond the context writes them.

  Each step writes at most `step_tokens` (a quarter of the context) new
  tokens per row after a prompt of at most `width` (the rest): the first
  `header` tokens of the original prompt (a quarter of the context, or the
  whole prompt when shorter), then the latest tokens of the prompt and the
  text written so far. Step 1's prompt is the original one cut so; each
  later step fills a fresh cache with its window (each row its own) and goes
  on. Every step writes the same number of tokens whatever the prompts'
  lengths, so a candidate does not depend on the other prompts of its call.
  """
  context: int
  step_tokens: int
  steps: int  # steps needed for `total`
  total: int  # max_new_tokens asked for
  prompts: list  # each prompt's tokens, whole

  @property
  def width(self) -> int:
    return self.context - self.step_tokens

  def header(self, prompt_tokens: int) -> int:
    """How many of a prompt's first tokens every window keeps."""
    return min(prompt_tokens, self.context // 4)

  def window(self, prompt: list, written: list = ()) -> list:
    """The prompt of a step that goes on after `written` new tokens."""
    tokens = list(prompt) + list(written)
    if len(tokens) <= self.width:
      return tokens
    header = self.header(len(prompt))
    return tokens[:header] + tokens[len(tokens) - (self.width - header):]


def window_step(config: GPT2Config) -> int:
  """New tokens per step beyond the context: a quarter of it."""
  return max(1, config.n_positions // 4)


def longest(config: GPT2Config, max_steps: int) -> int:
  """The most new tokens a call with `max_steps` writes after any prompt
  (with one step, the context less one: a long prompt keeps its end)."""
  if max_steps == 1:
    return config.n_positions - 1
  return max_steps * window_step(config)


def _windows(config: GPT2Config, encoded: list, max_new_tokens: int,
             max_steps: int) -> _Windows:
  step = window_step(config)
  steps = -(-max_new_tokens // step)
  if steps > max_steps:
    raise UserError(
        f"max_new_tokens={max_new_tokens} needs {steps} steps of {step} new "
        f"tokens (a quarter of the {config.n_positions}-token context); "
        f"max_steps={max_steps} allows at most {max_steps * step}")
  return _Windows(context=config.n_positions, step_tokens=step, steps=steps,
                  total=int(max_new_tokens),
                  prompts=[list(ids) for ids in encoded])


@dataclasses.dataclass
class _Request:
  """Checked, encoded and padded inputs of one sampler call."""
  ids: np.ndarray  # (P, bucket) left-padded
  mask: np.ndarray  # (P, bucket)
  lengths: list  # prompt tokens used, per prompt
  keys: np.ndarray  # (P * n, 2) uint32
  stops: tuple
  stop: Optional[dict]
  rules: SamplingParams
  num_samples: int
  max_new_tokens: int  # per step
  capture: tuple
  windows: Optional[_Windows] = None  # when the call goes beyond the context


def _pad_left(rows: list, width: int) -> tuple:
  """(ids, mask), each (len(rows), width), the rows at the right."""
  ids = np.zeros((len(rows), width), np.int32)
  mask = np.zeros((len(rows), width), np.int32)
  for i, row in enumerate(rows):
    ids[i, width - len(row):] = row
    mask[i, width - len(row):] = 1
  return ids, mask


def _prepare(config: GPT2Config, tokenizer: Tokenizer, prompts, num_samples,
             max_new_tokens, stop, seed, rules, capture,
             max_steps: int = MAX_STEPS) -> _Request:
  if isinstance(prompts, str) or (
      prompts and isinstance(prompts[0], (int, np.integer))):
    prompts = [prompts]
  if not len(prompts):
    raise UserError("no prompts given")
  if not isinstance(max_steps, (int, np.integer)) or max_steps < 1:
    raise UserError(f"max_steps must be an integer >= 1, got {max_steps!r}")
  if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
    raise UserError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
  if max_steps == 1 and max_new_tokens >= config.n_positions:
    raise UserError(f"max_new_tokens must be between 1 and "
                    f"{config.n_positions - 1} (the context is "
                    f"{config.n_positions}) with max_steps=1, got "
                    f"{max_new_tokens}")
  if not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
    raise UserError(f"num_samples must be >= 1, got {num_samples}")
  stops = tuple(stop or ())
  if any(not isinstance(s, str) or not s for s in stops):
    raise UserError(f"stop strings must be non-empty strings, got {stops!r}")
  capture = tuple(int(layer) for layer in capture or ())
  for layer in capture:
    if not 0 <= layer <= config.n_layer:
      raise UserError(f"capture layer {layer} is outside 0..{config.n_layer}")
  texts = [i for i, p in enumerate(prompts) if isinstance(p, str)]
  encoded = list(prompts)
  if texts:
    for i, ids in zip(texts, tokenizer.encode_batch(
        [prompts[i] for i in texts])):
      encoded[i] = ids
  for i, ids in enumerate(encoded):
    if not len(ids):
      raise UserError(f"prompt {i} is empty; give at least one token of text "
                      "(for instance <|endoftext|>)")
    if max(ids) >= config.vocab_size or min(ids) < 0:
      raise UserError(f"prompt {i} has token ids outside the vocabulary of "
                      f"{config.vocab_size}")
  windows = None
  step_tokens = int(max_new_tokens)
  room = config.n_positions - max_new_tokens
  if max(len(ids) for ids in encoded) > room and max_steps > 1:
    # Beyond the context: written in steps (`_Windows`).
    windows = _windows(config, encoded, max_new_tokens, max_steps)
    step_tokens, room = windows.step_tokens, windows.width
  lengths = []
  for i, ids in enumerate(encoded):
    if len(ids) > room and windows is not None:
      encoded[i] = windows.window(ids)
      header = windows.header(len(ids))
      log.warning("prompt %d has %d tokens; keeping its first %d and last %d "
                  "so that %d new tokens a step fit the context of %d", i,
                  len(ids), header, room - header, step_tokens,
                  config.n_positions)
    elif len(ids) > room:
      log.warning("prompt %d has %d tokens; keeping its last %d so that %d "
                  "new tokens fit the context of %d", i, len(ids), room,
                  max_new_tokens, config.n_positions)
      encoded[i] = ids[-room:]
    lengths.append(len(encoded[i]))
  bucket = bucket_length(max(lengths), room)
  ids, mask = _pad_left(encoded, bucket)
  rows = len(encoded) * num_samples
  if isinstance(seed, (int, np.integer)):
    seeds = [int(seed) + r for r in range(rows)]
  else:
    seeds = [int(s) for s in seed]
    if len(seeds) != rows:
      raise UserError(f"{len(seeds)} seeds for {rows} candidates")
  if any(not 0 <= s < 2**63 for s in seeds):
    raise UserError(f"seeds must be in [0, 2**63), got {seed}")
  keys = np.stack([np.asarray(jax.random.PRNGKey(s)) for s in seeds])
  table = None
  if stops:
    next_state, hit = stop_tables(tokenizer, stops, config.vocab_size)
    table = {"next": jnp.asarray(next_state), "hit": jnp.asarray(hit)}
  return _Request(ids=ids, mask=mask, lengths=lengths, keys=keys,
                  stops=stops, stop=table,
                  rules=rules, num_samples=int(num_samples),
                  max_new_tokens=step_tokens, capture=capture,
                  windows=windows)


def _cut(tokens: Sequence[int], tokenizer: Tokenizer, stops: tuple):
  """(tokens kept, text bytes, finish reason) for one row's sampled tokens."""
  reason = "length"
  tokens = list(tokens)
  if tokenizer.eot_id in tokens:
    tokens = tokens[:tokens.index(tokenizer.eot_id)]
    reason = "eot"
  data = tokenizer.decode_bytes(tokens)
  found = [data.find(s.encode("utf-8")) for s in stops]
  found = [f for f in found if f >= 0]
  if found:
    end = min(found)
    offset, kept = 0, 0
    for token in tokens:  # keep the tokens that add bytes before `end`
      if offset >= end:
        break
      offset += len(tokenizer.decode_bytes([token]))
      kept += 1
    return tokens[:kept], data[:end], "stop"
  return tokens, data, reason


_fold_keys = jax.jit(jax.vmap(jax.random.fold_in, in_axes=(0, None)))


class _Steps:
  """The host's side of a call written in steps (`_Windows`): each step's
  inputs, and the rows' text joined across the steps."""

  def __init__(self, request: _Request):
    self.request = request
    self.plan = request.windows
    rows = request.keys.shape[0]
    self.step = 0
    self.tokens = [[] for _ in range(rows)]
    self.logprobs = [[] for _ in range(rows)]
    self.hidden = {layer: [[] for _ in range(rows)]
                   for layer in request.capture}
    self.steps = np.zeros(rows, np.int64)  # steps each row wrote in
    self.carry = {
        "done": np.zeros(rows, bool),
        "stop_state": np.zeros(rows, np.int32),
        "run": np.zeros(rows, np.int32),
        "mu": np.full(rows, request.rules.initial_mu, np.float32),
        "limit": np.int32(self._limit()),
    }

  def _limit(self) -> int:
    """New tokens a row may write in this step."""
    return min(self.plan.step_tokens,
               self.plan.total - self.step * self.plan.step_tokens)

  @property
  def finished(self) -> bool:
    return self.step >= self.plan.steps or bool(self.carry["done"].all())

  def inputs(self) -> tuple:
    """(ids, mask, keys, num_samples) of the next step."""
    r = self.request
    if self.step == 0:
      return r.ids, r.mask, r.keys, r.num_samples
    prompts = self.plan.prompts
    windows = [self.plan.window(prompts[row // r.num_samples], tokens)
               for row, tokens in enumerate(self.tokens)]
    ids, mask = _pad_left(windows, self.plan.width)
    # Another step's draws: the row's key folded with the step.
    return ids, mask, _fold_keys(r.keys, self.step), 1

  def final(self, t: int, row: int, last, stopped) -> bool:
    """Whether token t of this step is its row's last of the call."""
    return t == last[row] and bool(
        stopped[row] or
        self.step * self.plan.step_tokens + t + 1 >= self.plan.total)

  def add(self, out: dict) -> None:
    """Takes a step's outputs (host arrays)."""
    for row in np.flatnonzero(~self.carry["done"]):
      n = int(out["last"][row]) + 1
      self.tokens[row] += out["tokens"][row, :n].tolist()
      self.logprobs[row].append(out["logprobs"][row, :n])
      for layer in self.hidden:
        self.hidden[layer][row].append(out["hidden"][layer][row, :n])
      self.steps[row] += 1
    self.step += 1
    self.carry = {"done": np.asarray(out["stopped"]),
                  "stop_state": np.asarray(out["stop_state"]),
                  "run": np.asarray(out["run"]),
                  "mu": np.asarray(out["mu"]),
                  "limit": np.int32(max(1, self._limit()))}

  def outputs(self) -> dict:
    """The steps' rows joined, as `_outputs` gives one program's."""
    rows, width = len(self.tokens), max(map(len, self.tokens))
    tokens = np.zeros((rows, width), np.int32)
    logprobs = np.zeros((rows, width), np.float32)
    hidden = {layer: np.zeros((rows, width, parts[0][0].shape[-1]),
                              np.float32)
              for layer, parts in self.hidden.items()}
    for row, row_tokens in enumerate(self.tokens):
      n = len(row_tokens)
      tokens[row, :n] = row_tokens
      logprobs[row, :n] = np.concatenate(self.logprobs[row])
      for layer, parts in self.hidden.items():
        hidden[layer][row, :n] = np.concatenate(parts[row])
    last = np.array([len(t) - 1 for t in self.tokens])
    return {"tokens": tokens, "logprobs": logprobs, "hidden": hidden,
            "last": last}


def _results(request: _Request, tokenizer: Tokenizer, out: dict,
             steps: Optional[np.ndarray] = None) -> list:
  out = jax.device_get(out)
  results = []
  for row in range(out["tokens"].shape[0]):
    n = int(out["last"][row]) + 1
    sampled = out["tokens"][row, :n].tolist()
    tokens, data, reason = _cut(sampled, tokenizer, request.stops)
    kept = len(tokens)
    end_logprob = (float(out["logprobs"][row, kept]) if reason == "eot"
                   else None)
    hidden = None
    if request.capture:
      hidden = {layer: np.asarray(out["hidden"][layer][row, :kept])
                for layer in request.capture}
    prompt = row // request.num_samples
    results.append(SampleResult(
        text=data.decode("utf-8", errors="replace"), tokens=tokens,
        logprobs=np.asarray(out["logprobs"][row, :kept]),
        finish_reason=reason, prompt_index=prompt,
        prompt_tokens=request.lengths[prompt], hidden=hidden,
        end_logprob=end_logprob,
        steps=1 if steps is None else int(steps[row])))
  return results


def sample(config: GPT2Config, params, tokenizer: Tokenizer,
           prompts: Union[str, Sequence[Union[str, Sequence[int]]]], *,
           num_samples: int = 1, max_new_tokens: int = 200,
           stop: Sequence[str] = (), seed: Union[int, Sequence[int]] = 0,
           rules: Optional[SamplingParams] = None,
           capture: Sequence[int] = (), decoding: str = "auto",
           max_steps: int = MAX_STEPS, weights: str = "float32", **rule_overrides) -> list:
  """`num_samples` continuations of each prompt, in one jitted call.

  prompts: texts or token-id lists.
  max_new_tokens: new tokens per candidate at most. When the longest prompt
    and they fit the context, one program writes them. Otherwise (and
    `max_steps` > 1) they are written in steps of a quarter of the context
    each, every step's prompt the original prompt's first quarter-context
    of tokens (all of it when shorter) and the latest tokens of the prompt
    and the text (`_Windows`); a prompt too long for that window is cut so
    too, with a warning. Stop rules, breakruns and Mirostat go on across
    the steps. With `max_steps` 1, a prompt longer than the context minus
    `max_new_tokens` keeps its last tokens, with a warning.
  max_steps: steps a candidate may take at most; a `max_new_tokens` that
    needs more is refused (a one-line UserError), whatever the prompts.
  stop: strings that end a candidate (the text is cut before them).
  seed: candidate r (prompt-major) uses seed + r; or a list, one per row.
  rules: a SamplingParams; keyword arguments (temperature=..., top_p=...)
    override its fields.
  capture: layers whose hidden states to return (0 = embeddings, i = block i).
  decoding: how the model runs (`DECODINGS`); "auto" picks by platform.
  weights: "float32" (the weights as loaded) or "int8" (quantized per
    output channel at the first call, `gpt2.int8`: multiplied by the int8
    kernel on the CPU path and on a CPU's reference path for a Llama,
    widened inside the program on the reference path otherwise).
  Returns a flat, prompt-major list of SampleResult.
  """
  decoding = decoding_for(decoding, config).name
  rules = _rules(rules, rule_overrides, config)
  request = _prepare(config, tokenizer, prompts, num_samples, max_new_tokens,
                     stop, seed, rules, capture, max_steps)
  params = prepared_params(config, params, decoding, weights)
  static = dict(config=config, decoding=decoding,
                structure=rules.structure(),
                max_new_tokens=request.max_new_tokens,
                capture=request.capture, eot_id=tokenizer.eot_id)
  if request.windows is None:
    out = _generate_jit(
        params, request.ids, request.mask, request.keys, rules.values(),
        np.float32(rules.initial_mu), request.stop,
        num_samples=request.num_samples, **static)
    return _results(request, tokenizer, out)
  steps = _Steps(request)
  while not steps.finished:
    ids, mask, keys, n = steps.inputs()
    steps.add(jax.device_get(_generate_jit(
        params, ids, mask, keys, rules.values(), np.float32(rules.initial_mu),
        request.stop, steps.carry, num_samples=n, **static)))
  return _results(request, tokenizer, steps.outputs(), steps.steps)


class _RowText:
  """Streams one row's text: holds back bytes that may begin a stop string
  or an unfinished UTF-8 character, so nothing is taken back later."""

  def __init__(self, tokenizer: Tokenizer, stops: tuple):
    self.tokenizer = tokenizer
    self.stops = [s.encode("utf-8") for s in stops]
    self.tokens = []
    self.sent = 0  # bytes already decoded
    self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    self.closed = False

  def add(self, token: int, final: bool) -> str:
    if self.closed:
      return ""
    self.tokens.append(int(token))
    if final:
      self.closed = True
      _, data, _ = _cut(self.tokens, self.tokenizer, tuple(
          s.decode() for s in self.stops))
      return self.decoder.decode(data[self.sent:], final=True)
    data = self.tokenizer.decode_bytes(self.tokens)
    safe = len(data)
    for stop in self.stops:
      for k in range(min(len(stop) - 1, len(data)), 0, -1):
        if data.endswith(stop[:k]):
          safe = min(safe, len(data) - k)
          break
    text = self.decoder.decode(data[self.sent:safe])
    self.sent = max(self.sent, safe)
    return text


def stream(config: GPT2Config, params, tokenizer: Tokenizer,
           prompts: Union[str, Sequence[Union[str, Sequence[int]]]], *,
           num_samples: int = 1, max_new_tokens: int = 200,
           stop: Sequence[str] = (), seed: Union[int, Sequence[int]] = 0,
           rules: Optional[SamplingParams] = None,
           capture: Sequence[int] = (), decoding: str = "auto",
           max_steps: int = MAX_STEPS, weights: str = "float32",
           **rule_overrides) -> Iterator[TextPiece]:
  """Like `sample`, but yields TextPiece(row, text) as the text is written.

  Each token is one call of a jitted step function whose state (the cache
  with it) is donated; a call beyond the context fills a new cache at each
  of its steps. The pieces of a row join to its final text, and with the
  same arguments the results equal `sample`'s; the generator returns them
  (`results = yield from stream(...)`).
  """
  decoding = decoding_for(decoding, config).name
  rules = _rules(rules, rule_overrides, config)
  request = _prepare(config, tokenizer, prompts, num_samples, max_new_tokens,
                     stop, seed, rules, capture, max_steps)
  params = prepared_params(config, params, decoding, weights)
  rows = request.keys.shape[0]
  texts = [_RowText(tokenizer, request.stops) for _ in range(rows)]
  prefill = functools.partial(
      _prefill_jit, params, config=config, decoding=decoding,
      max_new_tokens=request.max_new_tokens, capture=request.capture)
  step = functools.partial(
      _step_jit, params, values=rules.values(), stop=request.stop,
      config=config, decoding=decoding, structure=rules.structure(),
      max_new_tokens=request.max_new_tokens, capture=request.capture,
      eot_id=tokenizer.eot_id)
  mu0 = np.float32(rules.initial_mu)
  if request.windows is None:
    state = prefill(request.ids, request.mask, request.keys, mu0,
                    num_samples=request.num_samples)
    state = yield from _stream_tokens(
        state, step, texts, request,
        lambda t, row, last, _: t == last[row])
    return _results(request, tokenizer, _outputs(state))
  steps = _Steps(request)
  while not steps.finished:
    ids, mask, keys, n = steps.inputs()
    state = prefill(ids, mask, keys, mu0, steps.carry, num_samples=n)
    state = yield from _stream_tokens(state, step, texts, request,
                                      steps.final)
    steps.add(jax.device_get(_outputs(state)))
  return _results(request, tokenizer, steps.outputs(), steps.steps)


def _stream_tokens(state, step, texts: list, request: _Request,
                   final: Callable):
  """Runs one program's steps token by token, yielding the rows' new text;
  `final(t, row, last, stopped)` says whether token t is a row's last.
  Returns the state."""
  while True:
    t = int(state["t"])
    state = step(state)
    if t < request.max_new_tokens:
      tokens, last, stopped = jax.device_get((
          state["tokens"][:, t], state["last"], state.get("stopped")))
      for row, text in enumerate(texts):
        if t <= last[row]:
          piece = text.add(tokens[row], final=final(t, row, last, stopped))
          if piece:
            yield TextPiece(row, piece)
    if not bool(_running(state, request.capture)):
      return state
