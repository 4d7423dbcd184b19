"""Trained heads on disk, and scoring candidates with them.

A head directory holds `head.json` (kind, architecture, the generator's
fingerprint, calibration, test-split metrics), `params.safetensors` (the
network) and `bag.safetensors` (its bag of words' weights, when it has one;
see selector/bag.py). A
training workdir holds one under `head/`, and `Head.load` takes either.
The bot loads its heads from one directory, each folder optional:

  heads_dir/selector/      a head directory or a selector training workdir
  heads_dir/sentiment/     the same for the sentiment head
  heads_dir/autoreviewer/  the same for the autoreviewer (P(the operator
                           turns the post down), see configs/autoreviewer.py)

`Heads.score_hidden` takes the hidden states the sampler already returned
for each candidate's generated tokens (and the candidates' texts, which a
head's bag of words reads), so no candidate runs through the generator twice;
`Heads.score_texts` runs the frozen generator itself.
"""

import dataclasses
import functools
import json
import logging
from typing import Optional, Sequence

import fsspec
import jax
import jax.numpy as jnp
import numpy as np

import safetensors
from safetensors import numpy as safetensors_np

from gpt2.errors import UserError
from selector import bag as bag_lib
from selector import data as data_lib
from selector import probe as probe_lib
from selector.metrics import apply_platt
from selector.model import HeadConfig, apply_head

FORMAT = "selector-head"
N_OUT = {"selector": 2, "sentiment": 1, "autoreviewer": 2}
# Kinds with a 0/1 label: two logits, cross-entropy, Platt calibration, the
# same metrics and baseline. The selector's 1 is "did well"; the
# autoreviewer's 1 is "the operator turned it down" (state.DECISION_LABELS).
BINARY = ("selector", "autoreviewer")
HEAD_SUBDIR = "head"
# What must match between a head and the generator it reads.
_SHAPE_KEYS = ("n_layer", "n_embd", "vocab_size")


@functools.lru_cache(maxsize=16)
def compiled_head(config: HeadConfig):
  """Jitted (params, hidden tuple, mask) -> (B, n_out), deterministic."""
  return jax.jit(functools.partial(apply_head, config))


SENTIMENT_LINKS = ("bounded", "linear")


def sentiment_target(link: str, train_targets: np.ndarray) -> dict:
  """How the sentiment head's output maps to a value, from its training
  targets: their mean and spread (the loss is on the standardised value)
  and, for the "bounded" link, their range.

  bounded: value = low + (high - low) sigmoid(output), never outside the
    range the head was trained on. VADER's compound score is a squashed
    sum of word valences, and a sum of per-word terms behind such a link
    fits it far better than a straight line through the saturated scores.
  linear: value = mean + std output (heads saved before the link existed).
  """
  if link not in SENTIMENT_LINKS:
    raise UserError(f"config.link={link!r} is not one of "
                    f"{', '.join(SENTIMENT_LINKS)}")
  t = np.asarray(train_targets, np.float64)
  target = {"link": link, "mean": float(t.mean()),
            "std": float(max(t.std(), 1e-6))}
  if link == "bounded":
    low, high = float(t.min()), float(t.max())
    if high - low < 1e-6:
      raise UserError("every sentiment target in the training split is "
                      f"{low}: nothing to learn")
    target.update(low=low, high=high)
  return target


def sentiment_value(output, target: dict):
  """The sentiment head's (B,) output -> (B,) values (jax or numpy in,
  a jax array out)."""
  if target.get("link", "linear") == "bounded":
    return target["low"] + (target["high"] - target["low"]) * jax.nn.sigmoid(
        jnp.asarray(output, jnp.float32))
  return jnp.asarray(output, jnp.float32) * target["std"] + target["mean"]


def sentiment_output(values, target: dict, margin: float = 0.01) -> np.ndarray:
  """The inverse of `sentiment_value`: the output that gives each value
  (a bounded link's ends are kept `margin` of the range inside, where the
  output is finite)."""
  values = np.asarray(values, np.float64)
  if target.get("link", "linear") == "bounded":
    p = (values - target["low"]) / (target["high"] - target["low"])
    p = np.clip(p, margin, 1.0 - margin)
    return np.log(p) - np.log1p(-p)
  return (values - target["mean"]) / target["std"]


def _flatten(tree: dict, prefix: str = "") -> dict:
  out = {}
  for key, value in tree.items():
    name = f"{prefix}/{key}" if prefix else str(key)
    if isinstance(value, dict):
      out.update(_flatten(value, name))
    else:
      out[name] = np.asarray(jax.device_get(value), np.float32)
  return out


def _unflatten(flat: dict) -> dict:
  tree = {}
  for name, value in flat.items():
    node = tree
    *parents, leaf = name.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


@dataclasses.dataclass
class Head:
  """One trained head: its architecture, parameters and what it needs.

  calibration: binary kinds only, Platt's {"a", "b"} on the logit difference.
  target: sentiment only, the link from output to value (sentiment_target).
  """
  kind: str  # a key of N_OUT
  config: HeadConfig
  params: dict
  generator: dict  # the generator's fingerprint (data.generator_fingerprint)
  max_len: int
  calibration: Optional[dict] = None
  target: Optional[dict] = None
  model: str = ""  # the generator directory the head was trained on
  bag: Optional[bag_lib.Bag] = None  # its bag of words (selector/bag.py)
  probe: Optional[probe_lib.Probe] = None  # binary kinds (selector/probe.py)
  metrics: dict = dataclasses.field(default_factory=dict)
  source: str = ""  # where it was loaded from, for messages

  # ---- files ---------------------------------------------------------------

  def save(self, directory: str) -> None:
    fs, root = fsspec.core.url_to_fs(directory)
    root = root.rstrip("/")
    fs.makedirs(root, exist_ok=True)
    with fs.open(f"{root}/params.safetensors", "wb") as f:
      f.write(safetensors_np.save(_flatten(self.params)))
    if self.bag is not None:
      with fs.open(f"{root}/bag.safetensors", "wb") as f:
        f.write(safetensors_np.save(self.bag.arrays()))
    if self.probe is not None:
      with fs.open(f"{root}/probe.safetensors", "wb") as f:
        f.write(safetensors_np.save(self.probe.arrays()))
    spec = {
        "format": FORMAT, "kind": self.kind, "head": self.config.to_dict(),
        "generator": self.generator, "max_len": self.max_len,
        "calibration": self.calibration, "target": self.target,
        "model": self.model, "metrics": self.metrics,
        "bag": self.bag.spec() if self.bag is not None else None,
        "probe": self.probe.spec() if self.probe is not None else None,
    }
    with fs.open(f"{root}/head.json", "w") as f:
      json.dump(spec, f, indent=2)

  @classmethod
  def load(cls, path: str) -> "Head":
    """Loads a head directory, or the head a training workdir produced."""
    fs, root = fsspec.core.url_to_fs(path)
    root = root.rstrip("/")
    if not fs.exists(f"{root}/head.json") and fs.exists(
        f"{root}/{HEAD_SUBDIR}/head.json"):
      root = f"{root}/{HEAD_SUBDIR}"
    if not fs.exists(f"{root}/head.json"):
      raise UserError(f"no head in {path}: expected head.json (a head "
                      f"directory) or {HEAD_SUBDIR}/head.json (a finished "
                      "training workdir)")
    try:
      spec = json.loads(fs.cat_file(f"{root}/head.json"))
      if spec.get("format") != FORMAT or spec.get("kind") not in N_OUT:
        raise ValueError("not a head description")
      config = HeadConfig.from_dict(spec["head"])
      data = fs.cat_file(f"{root}/params.safetensors")
      bag = None
      if spec.get("bag"):
        bag = bag_lib.from_spec(spec["bag"], safetensors_np.load(
            fs.cat_file(f"{root}/bag.safetensors")))
      probe = None
      if spec.get("probe"):
        if spec["kind"] not in BINARY:
          raise ValueError(f"a {spec['kind']} head has no probe")
        probe = probe_lib.from_spec(spec["probe"], safetensors_np.load(
            fs.cat_file(f"{root}/probe.safetensors")))
      return cls(kind=spec["kind"], config=config, bag=bag, probe=probe,
                 params=_unflatten(safetensors_np.load(data)),
                 generator=dict(spec["generator"]),
                 max_len=int(spec["max_len"]),
                 calibration=spec.get("calibration"),
                 target=spec.get("target"), model=spec.get("model", ""),
                 metrics=spec.get("metrics", {}), source=path)
    except FileNotFoundError as e:
      raise UserError(f"head {path} has head.json but a weights file is "
                      f"missing ({e.filename or e})") from e
    except (ValueError, KeyError, TypeError, safetensors.SafetensorError) as e:
      raise UserError(f"head {path} is unreadable: {str(e).splitlines()[0]}"
                      ) from e

  # ---- the generator it reads ------------------------------------------------

  def check_generator(self, config, fingerprint: dict = None,
                      model_name: str = "the generator") -> None:
    """A one-line UserError when the head was trained on another shape or
    family (a fingerprint without `model_type` is a GPT-2's)."""
    have_type = getattr(config, "model_type", "gpt2")
    want_type = self.generator.get("model_type", "gpt2")
    if have_type != want_type:
      raise UserError(
          f"{self.kind} head {self.source or ''} was trained on a {want_type} "
          f"generator, but {model_name} is a {have_type}; retrain the head "
          "on this generator")
    have = {"n_layer": config.n_layer, "n_embd": config.n_embd,
            "vocab_size": config.vocab_size}
    want = {k: self.generator.get(k) for k in _SHAPE_KEYS}
    if have != want:
      fmt = lambda d: ", ".join(f"{k}={v}" for k, v in d.items())
      raise UserError(
          f"{self.kind} head {self.source or ''} was trained on a generator "
          f"with {fmt(want)}, but {model_name} has {fmt(have)}; retrain the "
          "head on this generator")
    if fingerprint and fingerprint.get("params_digest") != self.generator.get(
        "params_digest"):
      logging.warning(
          "%s head %s was trained on a generator with the same shape but "
          "other weights (%s); its scores may be off", self.kind, self.source,
          self.model or "unknown")

  # ---- scoring -------------------------------------------------------------

  def raw_outputs(self, hidden: Sequence, mask,
                  texts: Optional[Sequence[str]] = None) -> np.ndarray:
    """(B, n_out) float32 outputs for hidden states in `config.layers` order
    and (for a head with a bag of words) the B judged texts; padding rows
    past the texts get no bag."""
    out = np.array(compiled_head(self.config)(self.params, tuple(hidden),
                                              mask), np.float32)
    if self.bag is not None:
      if texts is None:
        raise UserError(f"the {self.kind} head reads the candidates' texts "
                        "as well as their hidden states (its bag of words), "
                        "and none were given")
      bag = self.bag.predict(texts)
      out[:len(texts), -1] += bag
    if self.probe is not None:  # blended with the network (selector/probe.py)
      bag_column = np.zeros(len(out))
      if self.bag is not None:
        bag_column[:len(texts)] = bag
      logit = self.probe.logit(probe_lib.pooled(hidden, mask), bag_column)
      out = self.probe.outputs(out, logit).astype(np.float32)
    return out

  def values(self, outputs: np.ndarray) -> np.ndarray:
    """Calibrated P(label 1) for a binary head (P(does well) for a selector,
    P(the operator turns it down) for an autoreviewer), the sentiment value
    otherwise."""
    if self.kind in BINARY:
      return apply_platt(outputs[:, 1] - outputs[:, 0], self.calibration)
    return np.asarray(sentiment_value(outputs[:, 0], self.target), np.float64)


@dataclasses.dataclass
class Scores:
  """Per candidate: calibrated selector probability, sentiment value and
  calibrated autoreviewer P(reject).

  Each is a (B,) float64 array, or None when that head is not loaded.
  """
  selector: Optional[np.ndarray]
  sentiment: Optional[np.ndarray]
  autoreviewer: Optional[np.ndarray] = None


class Heads:
  """The selector, sentiment and autoreviewer heads over one frozen
  generator (any of them may be missing, not all)."""

  def __init__(self, model, selector: Optional[Head] = None,
               sentiment: Optional[Head] = None,
               autoreviewer: Optional[Head] = None, batch_size: int = 16):
    """`model`: a `gpt2.weights.LoadedModel` (config, params, tokenizer)."""
    if selector is None and sentiment is None and autoreviewer is None:
      raise ValueError("Heads needs at least one head")
    self.model = model
    self.selector = selector
    self.sentiment = sentiment
    self.autoreviewer = autoreviewer
    self.batch_size = batch_size
    for head in self.heads:  # shapes first: a mismatch never reads params
      head.check_generator(model.config)
    fingerprint = data_lib.generator_fingerprint(model.config, model.params)
    for head in self.heads:
      head.check_generator(model.config, fingerprint)
    self.layers = tuple(sorted({l for h in self.heads
                                for l in h.config.layers}))
    self.max_len = min([h.max_len for h in self.heads] +
                       [model.config.n_positions])

  @property
  def heads(self) -> list:
    return [h for h in (self.selector, self.sentiment, self.autoreviewer)
            if h is not None]

  @classmethod
  def load(cls, heads_dir: str, model=None, batch_size: int = 16) -> "Heads":
    """Loads `heads_dir/selector`, `heads_dir/sentiment` and
    `heads_dir/autoreviewer` (any may be missing, not all) and, unless
    `model` is given, the generator the heads name."""
    fs, root = fsspec.core.url_to_fs(heads_dir)
    root = root.rstrip("/")
    if not fs.isdir(root):
      raise UserError(f"heads directory {heads_dir} does not exist")
    found = {}
    for kind in N_OUT:
      if fs.isdir(f"{root}/{kind}"):
        head = Head.load(f"{heads_dir.rstrip('/')}/{kind}")
        if head.kind != kind:
          raise UserError(f"{heads_dir}/{kind} holds a {head.kind} head")
        found[kind] = head
    if not found:
      raise UserError(f"heads directory {heads_dir} has none of "
                      f"{', '.join(k + '/' for k in N_OUT)}")
    if model is None:
      from gpt2 import weights  # pylint: disable=import-outside-toplevel
      named = next(h.model for h in found.values())
      if not named:
        raise UserError(f"the heads in {heads_dir} do not name their "
                        "generator; pass the model directory")
      model = weights.load_model(named)
    return cls(model, batch_size=batch_size, **found)

  @property
  def reads_texts(self) -> bool:
    """Whether any head reads the candidates' texts (a bag of words)."""
    return any(h.bag is not None for h in self.heads)

  def score_hidden(self, hidden: dict, mask,
                   texts: Optional[Sequence[str]] = None) -> Scores:
    """Scores from hidden states already computed.

    hidden: {layer: (B, T, C)} covering at least `self.layers`; mask: (B, T)
    bool, True at each candidate's judged (generated) positions; texts: the
    B candidates' texts, needed when `reads_texts`.
    """
    missing = [l for l in self.layers if l not in hidden]
    if missing:
      raise UserError(f"the heads read generator layers {self.layers}, but "
                      f"the hidden states hold only {tuple(sorted(hidden))}")
    if texts is None and self.reads_texts:
      raise UserError("the heads read the candidates' texts as well as "
                      "their hidden states (a bag of words), and none were "
                      "given")
    mask = np.asarray(mask, bool)
    B, T = mask.shape
    if texts is not None and len(texts) != B:
      raise ValueError(f"{len(texts)} texts for {B} candidates")
    real = np.flatnonzero(mask.any(axis=0))
    T_used = int(real[-1]) + 1 if len(real) else 1
    length = -(-T_used // data_lib.LENGTH_BUCKET) * data_lib.LENGTH_BUCKET
    out = {h.kind: [] for h in self.heads}
    for begin in range(0, B, self.batch_size):
      rows = slice(begin, min(B, begin + self.batch_size))
      n = rows.stop - rows.start
      chunk_mask = np.zeros((self.batch_size, length), bool)
      chunk_mask[:n, :T_used] = mask[rows, :T_used]
      chunk_texts = None if texts is None else list(texts[rows])
      chunk = {}
      for l in self.layers:
        h = np.asarray(hidden[l][rows, :T_used], np.float32)
        if h.shape[-1] != self.model.config.n_embd:
          raise UserError(f"hidden states of layer {l} have width "
                          f"{h.shape[-1]}; the heads need "
                          f"{self.model.config.n_embd}")
        padded = np.zeros((self.batch_size, length, h.shape[-1]), np.float32)
        padded[:n, :T_used] = h
        chunk[l] = padded
      for head in self.heads:
        raw = head.raw_outputs([chunk[l] for l in head.config.layers],
                               chunk_mask, chunk_texts)
        out[head.kind].append(head.values(raw[:n]))
    joined = {k: np.concatenate(v) if v else np.zeros((0,))
              for k, v in out.items()}
    return Scores(selector=joined.get("selector"),
                  sentiment=joined.get("sentiment"),
                  autoreviewer=joined.get("autoreviewer"))

  def score_candidates(self, candidates: Sequence[dict],
                       texts: Optional[Sequence[str]] = None) -> Scores:
    """Scores for the sampler's per-candidate `{layer: (n_generated, C)}`
    and (for heads with a bag of words) the candidates' texts."""
    hidden, mask = pad_candidates(candidates, self.layers)
    return self.score_hidden(hidden, mask, texts)

  def score_texts(self, texts: Sequence[str],
                  prompts: Optional[Sequence[str]] = None) -> Scores:
    """Runs the frozen generator on prompt + text and scores each text."""
    if not len(texts):
      empty = lambda head: np.zeros((0,)) if head else None
      return Scores(selector=empty(self.selector),
                    sentiment=empty(self.sentiment),
                    autoreviewer=empty(self.autoreviewer))
    cfg = self.model.config
    encoded = data_lib.encode_examples(self.model.tokenizer, texts, prompts,
                                       max_len=self.max_len)
    rows = [None] * len(texts)
    for i, states in data_lib.iter_hidden(cfg, self.model.params, encoded,
                                          self.layers, self.batch_size):
      rows[i] = dict(zip(self.layers, states))
    return self.score_candidates(rows, list(texts))


def pad_candidates(candidates: Sequence[dict], layers: Sequence[int]):
  """[{layer: (n_i, C)}] -> ({layer: (B, T, C)}, mask (B, T)), right-padded."""
  if not candidates:
    raise ValueError("no candidates to score")
  for c in candidates:
    missing = [l for l in layers if l not in c]
    if missing:
      raise UserError(f"the heads read generator layers {tuple(layers)}, but "
                      "a candidate's hidden states hold only "
                      f"{tuple(sorted(c))}")
  lengths = [len(c[layers[0]]) for c in candidates]
  T = max(1, max(lengths))
  mask = np.zeros((len(candidates), T), bool)
  hidden = {}
  for l in layers:
    width = np.shape(candidates[0][l])[-1]
    hidden[l] = np.zeros((len(candidates), T, width), np.float32)
    for row, c in enumerate(candidates):
      hidden[l][row, :lengths[row]] = np.asarray(c[l], np.float32)
  for row, n in enumerate(lengths):
    mask[row, :n] = True
  return hidden, mask
