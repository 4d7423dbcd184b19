"""Held-out metrics and calibration: pure numpy functions.

Calibration is Platt scaling: a logistic regression of the label on the
selector's logit difference, p = sigmoid(a * (l1 - l0) + b), fitted on the
calibration split (rows neither training nor the test metrics use). It fixes an over- or under-confident head without changing
its ranking (AUC is the same before and after).
"""

import numpy as np
from scipy import stats


def sigmoid(x):
  return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def roc_auc(labels, scores) -> float:
  """Area under the ROC curve (Mann-Whitney U, ties counted half)."""
  labels = np.asarray(labels).astype(bool)
  n_pos, n_neg = labels.sum(), (~labels).sum()
  if n_pos == 0 or n_neg == 0:
    return float("nan")
  ranks = stats.rankdata(np.asarray(scores, np.float64))
  u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
  return float(u / (n_pos * n_neg))


def log_loss(labels, probs, eps: float = 1e-7) -> float:
  """Mean negative log-likelihood of 0/1 labels under P(label = 1) = probs."""
  y = np.asarray(labels, np.float64)
  p = np.clip(np.asarray(probs, np.float64), eps, 1 - eps)
  return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def expected_calibration_error(labels, probs, n_bins: int = 10) -> float:
  """ECE of P(label = 1) over equal-width bins: sum_b (n_b / N) |acc - conf|.

  Each bin compares the mean predicted probability of class 1 with the
  fraction of its examples that are class 1.
  """
  y = np.asarray(labels, np.float64)
  p = np.asarray(probs, np.float64)
  bins = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
  total = 0.0
  for b in range(n_bins):
    in_bin = bins == b
    if in_bin.any():
      total += in_bin.sum() * abs(y[in_bin].mean() - p[in_bin].mean())
  return float(total / len(y))


def fit_platt(logit_diff, labels, l2: float = 1e-4, iters: int = 100) -> dict:
  """(a, b) maximising the likelihood of sigmoid(a * d + b), by Newton steps.

  A small ridge on `a` keeps it finite when the calibration split is
  perfectly separated.
  """
  d = np.asarray(logit_diff, np.float64)
  y = np.asarray(labels, np.float64)
  X = np.stack([d, np.ones_like(d)], axis=1)  # (N, 2)
  w = np.array([1.0, 0.0])
  reg = np.diag([l2, 0.0]) * len(d)

  def objective(w):
    z = X @ w
    return np.sum(np.logaddexp(0, z) - y * z) + 0.5 * len(d) * l2 * w[0] ** 2

  for _ in range(iters):
    p = sigmoid(X @ w)
    grad = X.T @ (p - y) + reg @ w
    hess = (X * (p * (1 - p))[:, None]).T @ X + reg + 1e-9 * np.eye(2)
    step = np.linalg.solve(hess, grad)
    scale, before = 1.0, objective(w)
    while objective(w - scale * step) > before and scale > 1e-6:
      scale /= 2  # damped Newton: never increase the loss
    w = w - scale * step
    if np.max(np.abs(scale * step)) < 1e-10:
      break
  return {"a": float(w[0]), "b": float(w[1])}


def apply_platt(logit_diff, calibration: dict) -> np.ndarray:
  return sigmoid(calibration["a"] * np.asarray(logit_diff, np.float64) +
                 calibration["b"])


def selector_metrics(labels, logit_diff, calibration: dict,
                     n_bins: int = 10) -> dict:
  """Accuracy, AUC, log-loss and ECE of raw and calibrated probabilities."""
  y = np.asarray(labels, np.float64)
  raw = sigmoid(logit_diff)
  calibrated = apply_platt(logit_diff, calibration)
  return {
      "auc": roc_auc(y, logit_diff),
      "accuracy": float(np.mean((raw > 0.5) == (y > 0.5))),
      "accuracy_calibrated": float(np.mean((calibrated > 0.5) == (y > 0.5))),
      "log_loss": log_loss(y, raw),
      "log_loss_calibrated": log_loss(y, calibrated),
      "ece_before": expected_calibration_error(y, raw, n_bins),
      "ece_after": expected_calibration_error(y, calibrated, n_bins),
      "positive_rate": float(np.mean(y)),
  }


def regression_metrics(targets, predictions) -> dict:
  """MSE, MAE, R^2, Pearson and Spearman correlation, and sign agreement.

  The sign is scored on the rows whose target is not 0: VADER scores a
  third of the plays' lines exactly 0 (no word of its lexicon), which no
  real-valued prediction's sign matches.
  """
  t = np.asarray(targets, np.float64)
  p = np.asarray(predictions, np.float64)
  mse = float(np.mean((t - p) ** 2))
  var = float(np.var(t))
  constant = np.std(t) == 0 or np.std(p) == 0
  signed = t != 0
  return {
      "mse": mse,
      "mae": float(np.mean(np.abs(t - p))),
      "r2": float(1 - mse / var) if var > 0 else float("nan"),
      "pearson": float("nan") if constant else float(np.corrcoef(t, p)[0, 1]),
      "spearman": float("nan") if constant else float(
          stats.spearmanr(t, p).statistic),
      "sign_accuracy": float(np.mean(np.sign(t[signed]) == np.sign(
          p[signed]))) if signed.any() else float("nan"),
  }
