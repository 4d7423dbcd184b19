"""A head's bag of words: a linear model on the judged text's word counts,
fitted in closed form before the network, which then learns what it leaves.

Why a head has one (measured on the demo, see docs/heads.md):
the labels a head learns are often about which words a text uses (VADER's
sentiment is a squashed sum of word valences; a play's vocabulary tells
comedy from tragedy), and a small generator's hidden states do not say
which words those were. A word-count model does; the generator's states
then add what word counts cannot see.

How it is fitted, so that nothing leaks into the numbers a head reports:
- features: counts of each lower-cased word (`\\w+`) of the judged text,
  hashed to `buckets` columns (CRC-32, the same on every machine), and
  beside them the same columns as TF-IDF (sublinear term frequency, the
  inverse document frequency of the training rows, each row scaled to
  unit length): on the demo's three splits the two together beat either
  alone, for both heads;
- model: logistic regression on the 0/1 label (binary heads) or ridge
  regression on the sentiment target in the head's output space (through
  the inverse of its link), its regularisation chosen by cross-validation
  on the training rows;
- stacking: the network trains on the training rows with, added to its
  output, the bag's out-of-fold prediction for each row (from a fit that
  did not see that row), so it learns what the bag misses rather than
  leaning on a bag that has memorised the training rows. The calibration
  and test rows, and every text scored later, get the bag fitted on all
  the training rows.
"""

import dataclasses
import re
import zlib
from typing import Optional, Sequence

import numpy as np
import scipy.sparse as sparse

from gpt2.errors import UserError
from selector.blas import one_thread

_WORD = re.compile(r"\w+")
_C_GRID = (0.03, 0.1, 0.3, 1.0, 3.0)
_ALPHAS = (1.0, 3.0, 10.0, 30.0)
FOLDS = 5
FEATURES = "counts+tfidf"  # what a bag fitted now reads (spec "features")


def word_columns(text: str, buckets: int) -> np.ndarray:
  """The column of each word occurrence in `text` (lower-cased)."""
  return np.asarray([zlib.crc32(w.encode("utf-8")) % buckets
                     for w in _WORD.findall(text.lower())], np.int64)


def counts(texts: Sequence[str], buckets: int) -> sparse.csr_matrix:
  """(len(texts), buckets) word counts."""
  rows, cols = [], []
  for row, text in enumerate(texts):
    c = word_columns(text, buckets)
    rows.append(np.full(len(c), row, np.int64))
    cols.append(c)
  rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
  cols = np.concatenate(cols) if cols else np.zeros(0, np.int64)
  return sparse.csr_matrix((np.ones(len(rows), np.float64), (rows, cols)),
                           shape=(len(texts), buckets))


def tfidf(X: sparse.csr_matrix, idf: np.ndarray) -> sparse.csr_matrix:
  """Counts -> TF-IDF rows: (1 + log count) * idf, each row scaled to unit
  length (columns whose idf is 0 count for nothing)."""
  X = X.tocsr(copy=True)
  X.data = 1.0 + np.log(X.data)
  X = (X @ sparse.diags(np.asarray(idf, np.float64))).tocsr()
  norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).reshape(-1))
  return (sparse.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ X).tocsr()


@dataclasses.dataclass
class Bag:
  """A fitted bag: output = weights . counts + tfidf_weights . TF-IDF +
  intercept, added to the network's output (a binary head's logit of label
  1, the sentiment head's value before its link). A bag saved before the
  TF-IDF columns existed has none (idf None)."""
  weights: np.ndarray  # (buckets,) float32
  intercept: float
  regularisation: dict  # {"C": ...} or {"alpha": ...}, as chosen
  tfidf_weights: Optional[np.ndarray] = None  # (buckets,) float32
  idf: Optional[np.ndarray] = None  # (buckets,) float32, 0: never seen

  @property
  def buckets(self) -> int:
    return len(self.weights)

  def predict(self, texts: Sequence[str]) -> np.ndarray:
    """(len(texts),) float64 outputs."""
    X = counts(texts, self.buckets)
    out = X @ self.weights.astype(np.float64) + self.intercept
    if self.idf is not None:
      out += tfidf(X, self.idf) @ self.tfidf_weights.astype(np.float64)
    return out

  def arrays(self) -> dict:
    """What bag.safetensors holds."""
    out = {"weights": self.weights}
    if self.idf is not None:
      out.update(tfidf_weights=self.tfidf_weights, idf=self.idf)
    return out

  def spec(self) -> dict:
    return {"buckets": self.buckets, "intercept": self.intercept,
            "regularisation": self.regularisation,
            "features": "counts" if self.idf is None else FEATURES}


def _model(binary: bool, value: float, seed: int):
  # pylint: disable=import-outside-toplevel
  from sklearn.linear_model import LogisticRegression, Ridge
  if binary:
    return LogisticRegression(C=value, max_iter=5000, random_state=seed)
  return Ridge(alpha=value)


@one_thread
def fit(texts: Sequence[str], targets: np.ndarray, train_idx: np.ndarray,
        binary: bool, buckets: int, seed: int = 0):
  """Fits the bag on the training rows.

  targets: 0/1 labels (binary) or the values the bag should output (the
    sentiment target through the inverse of the head's link).
  Returns (Bag, outputs): outputs (len(texts),) float64 is the bag's
  out-of-fold prediction for each training row and the full fit's for every
  other row.
  """
  # scikit-learn only to fit: scoring needs numpy and scipy alone.
  # pylint: disable=import-outside-toplevel
  from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold
  X = counts(texts, buckets)
  if X[train_idx].nnz == 0:
    raise UserError(f"the {len(train_idx)} training texts hold no words for "
                    "the head's bag of words (head.bag_buckets=0 turns it "
                    "off)")
  y = np.asarray(targets, np.float64)[train_idx]
  # Only the columns the training rows use: the others' weights are 0 under
  # the L2 penalty anyway, and 2^18 mostly empty columns make each solver
  # step about ten times slower.
  used = np.unique(X[train_idx].indices)
  # Document frequencies on the training rows (sklearn's smoothed idf);
  # columns no training row uses get 0, and so no weight.
  idf = np.zeros(buckets, np.float64)
  df = np.asarray((X[train_idx] > 0).sum(axis=0)).reshape(-1)
  idf[used] = np.log((1.0 + len(train_idx)) / (1.0 + df[used])) + 1.0
  X = sparse.hstack([X[:, used], tfidf(X, idf)[:, used]]).tocsr()
  if binary:
    folds = int(min(FOLDS, np.bincount(y.astype(int), minlength=2).min()))
    split = StratifiedKFold(folds, shuffle=True, random_state=seed) if (
        folds >= 2) else None
    grid, name, scoring = _C_GRID, "C", "roc_auc"
  else:
    folds = int(min(FOLDS, len(train_idx)))
    split = KFold(folds, shuffle=True, random_state=seed) if (
        folds >= 2) else None
    grid, name, scoring = _ALPHAS, "alpha", "neg_mean_squared_error"
  Xt = X[train_idx]
  if split is None:  # too few rows to cross-validate: the middle of the grid
    value = grid[len(grid) // 2]
  else:
    search = GridSearchCV(_model(binary, grid[0], seed), {name: list(grid)},
                          cv=split, scoring=scoring)
    value = float(search.fit(Xt, y).best_params_[name])
  predict = lambda m, rows: (m.decision_function(rows) if binary else
                             m.predict(rows))
  full = _model(binary, value, seed).fit(Xt, y)
  outputs = np.asarray(predict(full, X), np.float64)
  if split is not None:
    for fit_rows, held in split.split(Xt, y):
      part = _model(binary, value, seed).fit(Xt[fit_rows], y[fit_rows])
      outputs[train_idx[held]] = predict(part, Xt[held])
  coef = np.asarray(full.coef_, np.float64).reshape(-1)
  weights = np.zeros(buckets, np.float32)
  weights[used] = coef[:len(used)]
  tfidf_weights = np.zeros(buckets, np.float32)
  tfidf_weights[used] = coef[len(used):]
  intercept = float(np.asarray(full.intercept_).reshape(-1)[0])
  return Bag(weights=weights, intercept=intercept,
             regularisation={name: value}, tfidf_weights=tfidf_weights,
             idf=idf.astype(np.float32)), outputs


def from_spec(spec: dict, arrays: dict) -> Bag:
  """A Bag from head.json's "bag" entry and bag.safetensors' arrays."""
  features = spec.get("features", "counts")
  if features not in ("counts", FEATURES):
    raise ValueError(f"the bag's features {features!r} are unknown")
  names = ["weights"] + (["tfidf_weights", "idf"]
                         if features == FEATURES else [])
  got = {k: np.asarray(arrays[k], np.float32).reshape(-1) for k in names}
  for name, values in got.items():
    if len(values) != int(spec["buckets"]):
      raise ValueError(f"the bag has {len(values)} {name} for "
                       f"{spec['buckets']} buckets")
  return Bag(intercept=float(spec["intercept"]),
             regularisation=dict(spec.get("regularisation", {})), **got)
