"""A binary head's linear probe, blended with its network.

Why (measured on the demo, see docs/heads.md): on a few
thousand examples the attention-pooling network and a plain linear model on
the pooled hidden states see the texts differently, and their blend ranks
better than either. The probe is a logistic regression on, for each layer
the head reads, the mean, the first and the last of the judged positions'
hidden states (standardised), with the bag of words' output as one more
column (selector/bag.py). The blend is a two-weight logistic regression of
the label on the network's logit (with its bag) and the probe's logit.

How it is fitted, so that nothing leaks into the numbers a head reports:
- the probe on the training rows, its regularisation chosen by
  cross-validation there, reading the bag's out-of-fold outputs for those
  rows (as the network does);
- the blend on the calibration rows, which neither the network nor the
  probe trained on (the Platt scaling that follows is fitted on them too;
  after the blend it is close to the identity);
- the test rows only measure.
"""

import dataclasses
from typing import Sequence

import numpy as np

from selector.blas import one_thread

_C_GRID = (0.01, 0.03, 0.1)
FOLDS = 5
STATS = ("mean", "first", "last")  # per layer, in this order


def pooled(hidden: Sequence[np.ndarray], mask) -> np.ndarray:
  """(B, len(STATS) * layers * C) float64 from right-padded hidden states
  [(B, T, C) per layer] and mask (B, T): each row's judged positions. A row
  with none gets zeros."""
  mask = np.asarray(mask, bool)
  count = mask.sum(axis=1)
  rows = np.arange(mask.shape[0])
  first = np.argmax(mask, axis=1)
  last = mask.shape[1] - 1 - np.argmax(mask[:, ::-1], axis=1)
  has = (count > 0)[:, None]
  out = []
  for h in hidden:
    h = np.asarray(h, np.float64)
    total = np.einsum("btc,bt->bc", h, mask.astype(np.float64))
    out += [total / np.maximum(count, 1)[:, None],
            np.where(has, h[rows, first], 0.0),
            np.where(has, h[rows, last], 0.0)]
  return np.concatenate(out, axis=1)


def cache_features(cache, block: int = 512) -> np.ndarray:
  """`pooled` for every example of an ActivationCache (selector/data.py),
  read a block of examples at a time."""
  n, out = len(cache), []
  for begin in range(0, n, block):
    idx = list(range(begin, min(n, begin + block)))
    length = max(1, int(cache.lengths[idx].max()))
    hidden, mask = cache.batch(idx, length)
    out.append(pooled(hidden, mask))
  return np.concatenate(out) if out else np.zeros((0, 0))


@dataclasses.dataclass
class Probe:
  """A fitted probe and its blend with the network.

  logit = weights . (features - mean) / scale + bag_weight * bag + intercept
  blended logit = blend[0] * network logit + blend[1] * logit + blend[2]
  """
  mean: np.ndarray  # (D,) float32
  scale: np.ndarray  # (D,) float32
  weights: np.ndarray  # (D,) float32
  bag_weight: float
  intercept: float
  blend: tuple = (1.0, 0.0, 0.0)
  regularisation: dict = dataclasses.field(default_factory=dict)

  def logit(self, features: np.ndarray, bag: np.ndarray) -> np.ndarray:
    z = (features - self.mean.astype(np.float64)) / self.scale.astype(
        np.float64)
    return z @ self.weights.astype(np.float64) + self.bag_weight * np.asarray(
        bag, np.float64) + self.intercept

  def outputs(self, network: np.ndarray, logit: np.ndarray) -> np.ndarray:
    """A binary head's (B, 2) outputs blended: the network's (with its
    bag) in, (0, blended logit) out, so the logit difference the
    calibration and the metrics read is the blend."""
    network = np.asarray(network, np.float64)
    a, b, c = self.blend
    diff = a * (network[:, 1] - network[:, 0]) + b * logit + c
    return np.stack([np.zeros_like(diff), diff], axis=1)

  def arrays(self) -> dict:
    return {"mean": self.mean, "scale": self.scale, "weights": self.weights}

  def spec(self) -> dict:
    return {"stats": list(STATS), "features": int(len(self.weights)),
            "bag_weight": self.bag_weight, "intercept": self.intercept,
            "blend": list(self.blend), "regularisation": self.regularisation}


def from_spec(spec: dict, arrays: dict) -> Probe:
  """A Probe from head.json's "probe" entry and its arrays."""
  if list(spec.get("stats", [])) != list(STATS):
    raise ValueError(f"the probe pools {spec.get('stats')}, not {STATS}")
  got = {k: np.asarray(arrays[k], np.float32).reshape(-1)
         for k in ("mean", "scale", "weights")}
  if any(len(v) != int(spec["features"]) for v in got.values()):
    raise ValueError(f"the probe's arrays do not have {spec['features']} "
                     "features")
  blend = tuple(float(x) for x in spec["blend"])
  if len(blend) != 3:
    raise ValueError("the probe's blend is not three numbers")
  return Probe(bag_weight=float(spec["bag_weight"]),
               intercept=float(spec["intercept"]), blend=blend,
               regularisation=dict(spec.get("regularisation", {})), **got)


def _design(features, bag, mean, scale):
  return np.concatenate([(features - mean) / scale, bag[:, None]], axis=1)


@one_thread
def fit(features: np.ndarray, bag: np.ndarray, labels: np.ndarray,
        train_idx: np.ndarray, seed: int = 0):
  """Fits the probe on the training rows.

  bag: (N,) the bag's output for each row (out-of-fold on the training
    rows); zeros for a head without one.
  Returns (Probe, logits): logits (N,) float64, out-of-fold for each
  training row, the full fit's for every other row.
  """
  # pylint: disable=import-outside-toplevel
  from sklearn.linear_model import LogisticRegression
  from sklearn.model_selection import StratifiedKFold
  from selector import metrics as metrics_lib
  features = np.asarray(features, np.float64)
  labels = np.asarray(labels, np.float64)
  bag = np.asarray(bag, np.float64)
  mean = features[train_idx].mean(axis=0)
  scale = features[train_idx].std(axis=0) + 1e-6
  X = _design(features, bag, mean, scale)
  y = labels[train_idx]
  # Newton's method with a Cholesky solve: a few steps where L-BFGS takes
  # hundreds on these few thousand dense columns (2.4x faster on the demo).
  model = lambda C: LogisticRegression(C=C, max_iter=500,
                                       solver="newton-cholesky",
                                       random_state=seed)
  folds = int(min(FOLDS, np.bincount(y.astype(int), minlength=2).min()))
  best = None  # (cross-validated AUC, C, out-of-fold logits)
  if folds >= 2:
    split = list(StratifiedKFold(folds, shuffle=True, random_state=seed)
                 .split(train_idx, y))
    for C in _C_GRID:
      held_out = np.zeros(len(train_idx))
      for fit_rows, held in split:
        held_out[held] = model(C).fit(X[train_idx[fit_rows]],
                                      y[fit_rows]).decision_function(
                                          X[train_idx[held]])
      auc = metrics_lib.roc_auc(y, held_out)
      if best is None or auc > best[0]:
        best = (auc, C, held_out)
  C = best[1] if best else _C_GRID[len(_C_GRID) // 2]
  full = model(C).fit(X[train_idx], y)
  logits = full.decision_function(X)
  if best:
    logits[train_idx] = best[2]
  coef = np.asarray(full.coef_, np.float64).reshape(-1)
  probe = Probe(mean=mean.astype(np.float32), scale=scale.astype(np.float32),
                weights=coef[:-1].astype(np.float32),
                bag_weight=float(coef[-1]),
                intercept=float(np.asarray(full.intercept_).reshape(-1)[0]),
                regularisation={"C": C})
  return probe, logits


def fit_blend(network: np.ndarray, probe: np.ndarray,
              labels: np.ndarray) -> tuple:
  """(network weight, probe weight, intercept): a logistic regression of
  the labels on the two logits (all but unregularised: two weights)."""
  # pylint: disable-next=import-outside-toplevel
  from sklearn.linear_model import LogisticRegression
  X = np.stack([np.asarray(network, np.float64),
                np.asarray(probe, np.float64)], axis=1)
  model = LogisticRegression(C=1e4, max_iter=5000).fit(
      X, np.asarray(labels, np.float64))
  a, b = np.asarray(model.coef_, np.float64).reshape(-1)
  return (float(a), float(b), float(np.asarray(model.intercept_)[0]))
