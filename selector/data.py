"""Texts -> frozen-generator activations, computed once and cached on disk.

The heads never change the generator, so its hidden states at the chosen
layers are a pure function of (generator, text). Training computes them once
and keeps them in a cache directory that later epochs, resumed runs and
re-trainings with other head settings read back:

  meta.json        what the cache holds and the key it was built for
  offsets.npy      (N + 1,) int64: example i owns rows offsets[i]:offsets[i+1]
  layer_{l}.npy    (total_rows, C): layer l's hidden state at each judged
                   position, all examples back to back (no padding stored)

An example is a text with an optional prompt before it: the generator reads
prompt + text, and only the text's positions are judged, as for a candidate
the sampler generated after a prompt.
"""

import dataclasses
import functools
import hashlib
import json
import os
from typing import Iterator, Optional, Sequence

import fsspec
import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from gpt2 import family
from gpt2.errors import UserError
from gpt2.model import GPT2Config

CACHE_DTYPES = ("float32", "float16")
# Sequence lengths are rounded up to a multiple of this, so few shapes compile.
LENGTH_BUCKET = 64


# ---- reading JSONL -----------------------------------------------------------


def read_jsonl(path: str) -> list:
  """[(line number, dict)] of a JSONL file (local or gs://), blank lines
  skipped."""
  try:
    with fsspec.open(path, "rt", encoding="utf-8") as f:
      lines = f.read().splitlines()
  except FileNotFoundError as e:
    raise UserError(f"data file {path} does not exist") from e
  except UnicodeDecodeError as e:
    raise UserError(f"data file {path} is not UTF-8 text") from e
  rows = []
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except ValueError as e:
      raise UserError(f"{path} line {number} is not valid JSON") from e
    if not isinstance(row, dict):
      raise UserError(f"{path} line {number} is not a JSON object")
    rows.append((number, row))
  if not rows:
    raise UserError(f"data file {path} has no rows")
  return rows


# ---- tokens ------------------------------------------------------------------


@dataclasses.dataclass
class Encoded:
  """Token ids of each example and where its judged part starts.

  ids[i]: (n_i,) int32, prompt then text, cut from the left to max_len.
  starts[i]: index in ids[i] of the first judged (text) token.
  """
  ids: list
  starts: np.ndarray

  def __len__(self):
    return len(self.ids)

  @property
  def judged_lengths(self) -> np.ndarray:
    return np.array([len(t) - s for t, s in zip(self.ids, self.starts)],
                    np.int64)


def encode_examples(tokenizer, texts: Sequence[str],
                    prompts: Optional[Sequence[str]] = None,
                    max_len: int = 1024) -> Encoded:
  """Tokenizes prompt + text; long examples lose their beginning.

  The prompt's tokens go first, and the prompt loses tokens before the
  text does, so the head always sees the end of the candidate, where its
  query sits.
  """
  text_ids = tokenizer.encode_batch(list(texts))
  prompt_ids = (tokenizer.encode_batch(list(prompts)) if prompts is not None
                else [[] for _ in texts])
  if len(prompt_ids) != len(text_ids):
    raise ValueError(f"{len(prompt_ids)} prompts for {len(text_ids)} texts")
  ids, starts = [], []
  for i, (p, t) in enumerate(zip(prompt_ids, text_ids)):
    if not t:
      raise UserError(f"example {i} has an empty text: nothing to judge")
    full = (list(p) + list(t))[-max_len:]
    ids.append(np.asarray(full, np.int32))
    starts.append(max(0, len(full) - len(t)))
  return Encoded(ids=ids, starts=np.asarray(starts, np.int64))


def bucket_length(n: int, limit: int) -> int:
  """`n` rounded up to a multiple of LENGTH_BUCKET, at most `limit`."""
  return int(min(limit, -(-max(n, 1) // LENGTH_BUCKET) * LENGTH_BUCKET))


# ---- the generator's activations ---------------------------------------------


def generator_fingerprint(config, params) -> dict:
  """What a head must match in its generator: shapes, plus a weights digest.

  The digest reads a few small tensors (final and first-block norms, the
  first embedding rows; for the Llama family also a row of the first block's
  query projection, which a LoRA fine-tune moves while its norms stay), cheap
  even for billions of parameters sharded on a TPU, and different after any
  fine-tune. A GPT-2's fingerprint names no `model_type` (as every head
  trained before the Llama family has it); a Llama-family one names its
  `model_type` and key/value heads.
  """
  if family.of(config) is family.GPT2:
    pieces = [params["ln_f"]["scale"], params["ln_f"]["bias"],
              params["h"]["ln_1"]["scale"][0], params["wpe"]["embedding"][:2]]
    shape = {}
  else:
    blocks = params["layers"]
    unstacked = isinstance(blocks, (list, tuple))  # `unstack_layers`'
    first = lambda *path: _leaf(blocks[0] if unstacked else blocks, path,
                                None if unstacked else 0)
    pieces = [params["norm"]["scale"], first("input_layernorm", "scale"),
              params["embed_tokens"]["embedding"][:2]]
    query = first("self_attn", "q_proj", "kernel")
    if getattr(query, "ndim", 0) == 2:  # not int8 codes and their scales
      pieces.append(query[0])
    shape = {"model_type": config.model_type, "n_kv_head": config.n_kv_head}
  digest = hashlib.sha256()
  for piece in pieces:
    digest.update(np.asarray(jax.device_get(piece), np.float32).tobytes())
  return {"n_layer": config.n_layer, "n_embd": config.n_embd,
          "n_head": config.n_head, "vocab_size": config.vocab_size, **shape,
          "params_digest": digest.hexdigest()[:16]}


def _leaf(tree, path: tuple, index=None):
  """tree[path[0]][path[1]]..., then [index] unless None; None when a key is
  missing."""
  for key in path:
    try:
      tree = tree[key]
    except (KeyError, TypeError, IndexError):
      return None
  return tree if index is None or not hasattr(tree, "ndim") else tree[index]


@functools.lru_cache(maxsize=16)
def _hidden_fn(config, layers: tuple):
  """A jitted (params, ids, mask) -> tuple of (B, T, C) hidden states, run by
  the config's family (GPT-2 or Llama: layer 0 the embeddings, layer i block
  i's output, the last one before the final norm in both)."""
  forward = family.of(config).forward

  def hidden(params, ids, mask):
    # The generator is frozen: nothing downstream may push gradients into it.
    params = jax.lax.stop_gradient(params)
    out = forward(config, params, ids, attention_mask=mask, capture=layers,
                  return_logits=False)
    return tuple(out.hidden[l].astype(jnp.float32) for l in layers)

  return jax.jit(hidden)


def pad_ids(ids: Sequence[np.ndarray], batch: int, length: int):
  """Right-padded (batch, length) ids and mask; missing rows are all padding."""
  out = np.zeros((batch, length), np.int32)
  mask = np.zeros((batch, length), bool)
  for row, t in enumerate(ids):
    out[row, :len(t)] = t
    mask[row, :len(t)] = True
  return out, mask


def iter_hidden(config: GPT2Config, params, encoded: Encoded, layers: tuple,
                batch_size: int = 8) -> Iterator:
  """Yields (example index, [ (n_i, C) float32 per layer ]) for each example.

  n_i counts the judged positions. Examples run in batches of similar length
  (sorted), padded to a multiple of LENGTH_BUCKET.
  """
  fn = _hidden_fn(config, tuple(layers))
  order = np.argsort([len(t) for t in encoded.ids], kind="stable")
  for begin in range(0, len(order), batch_size):
    chunk = order[begin:begin + batch_size]
    length = bucket_length(max(len(encoded.ids[i]) for i in chunk),
                           config.n_positions)
    ids, mask = pad_ids([encoded.ids[i] for i in chunk], batch_size, length)
    states = [np.asarray(h) for h in fn(params, ids, mask)]
    for row, i in enumerate(chunk):
      lo, hi = encoded.starts[i], len(encoded.ids[i])
      yield int(i), [h[row, lo:hi] for h in states]


def cache_key(fingerprint: dict, layers: tuple, encoded: Encoded,
              dtype: str) -> str:
  """A digest of everything the cached activations depend on."""
  digest = hashlib.sha256(json.dumps(
      {"generator": fingerprint, "layers": list(layers), "dtype": dtype},
      sort_keys=True).encode())
  for t, s in zip(encoded.ids, encoded.starts):
    digest.update(np.int64(s).tobytes())
    digest.update(np.int64(len(t)).tobytes())
    digest.update(np.ascontiguousarray(t, np.int32).tobytes())
  return digest.hexdigest()


class ActivationCache:
  """Read access to a cache directory written by `build_cache`."""

  def __init__(self, directory: str):
    self.directory = directory
    with open(os.path.join(directory, "meta.json")) as f:
      self.meta = json.load(f)
    self.layers = tuple(self.meta["layers"])
    self.n_embd = int(self.meta["n_embd"])
    self.offsets = np.load(os.path.join(directory, "offsets.npy"))
    self._arrays = {
        l: np.load(os.path.join(directory, f"layer_{l}.npy"), mmap_mode="r")
        for l in self.layers
    }

  def __len__(self):
    return len(self.offsets) - 1

  @property
  def lengths(self) -> np.ndarray:
    return np.diff(self.offsets)

  def rows(self, i: int) -> list:
    """Example i's hidden states: [(n_i, C) float32 per layer]."""
    lo, hi = self.offsets[i], self.offsets[i + 1]
    return [np.asarray(self._arrays[l][lo:hi], np.float32) for l in self.layers]

  def batch(self, indices: Sequence[int], length: int):
    """Right-padded hidden states for `indices` (-1: an all-padding row).

    Returns ([(B, length, C) float32 per layer], mask (B, length) bool).
    """
    B = len(indices)
    hidden = [np.zeros((B, length, self.n_embd), np.float32)
              for _ in self.layers]
    mask = np.zeros((B, length), bool)
    for row, i in enumerate(indices):
      if i < 0:
        continue
      lo, hi = self.offsets[i], self.offsets[i + 1]
      n = min(hi - lo, length)
      for h, l in zip(hidden, self.layers):
        h[row, :n] = self._arrays[l][lo:lo + n]
      mask[row, :n] = True
    return hidden, mask


def build_cache(directory: str, config: GPT2Config, params, encoded: Encoded,
                layers: tuple, *, fingerprint: dict, dtype: str = "float32",
                batch_size: int = 8, log=None,
                progress: bool = False) -> ActivationCache:
  """Computes the activations into `directory`, unless it already holds them.

  A cache whose key differs (other generator, layers, texts or dtype) is
  rebuilt. meta.json is written last, so an interrupted build is redone.
  `progress`: a bar on stderr, for a terminal.
  """
  if dtype not in CACHE_DTYPES:
    raise UserError(f"config.cache_dtype={dtype!r} is not one of "
                    f"{', '.join(CACHE_DTYPES)}")
  key = cache_key(fingerprint, layers, encoded, dtype)
  meta_path = os.path.join(directory, "meta.json")
  if os.path.exists(meta_path):
    with open(meta_path) as f:
      if json.load(f).get("key") == key:
        return ActivationCache(directory)
    os.remove(meta_path)
  os.makedirs(directory, exist_ok=True)
  lengths = encoded.judged_lengths
  offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
  arrays = {
      l: np.lib.format.open_memmap(
          os.path.join(directory, f"layer_{l}.npy"), mode="w+",
          dtype=np.dtype(dtype), shape=(int(offsets[-1]), config.n_embd))
      for l in layers
  }
  done = 0
  bar = tqdm.tqdm(total=len(encoded), unit="example", desc="activations",
                  disable=not progress, dynamic_ncols=True)
  for i, states in iter_hidden(config, params, encoded, layers, batch_size):
    for l, h in zip(layers, states):
      arrays[l][offsets[i]:offsets[i + 1]] = h
    done += 1
    bar.update(1)
    if log and done % 1000 == 0:
      log(f"activations: {done}/{len(encoded)} examples")
  bar.close()
  for a in arrays.values():
    a.flush()
  del arrays
  np.save(os.path.join(directory, "offsets.npy"), offsets)
  with open(meta_path, "w") as f:
    json.dump({"key": key, "layers": list(layers), "n_embd": config.n_embd,
               "n_examples": len(encoded), "dtype": dtype}, f)
  return ActivationCache(directory)
