"""A bag-of-words baseline beside every head: what a head has to beat.

TF-IDF of the judged text (words seen in two training texts or more,
sublinear term frequency; adding bigrams made it weaker on the demo's
heads), then a logistic regression (binary heads: the selector, an
autoreviewer) or a ridge regression (sentiment), its regularisation chosen
by cross-validation on the training rows. It is fitted on the rows the head
trained on, calibrated like the head (Platt scaling on the calibration rows)
and scored with the same metrics on the same test rows.

It reads the judged text only, not the prompt: the text is what a head is
there to judge (the bot's candidates for one prompt share that prompt), and
a baseline that read the prompt could win on who is speaking rather than
on what was said.
"""

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.model_selection import GridSearchCV

from gpt2.errors import UserError
from selector import autoreview
from selector.blas import one_thread
from selector import metrics as metrics_lib

# What each kind's head is compared on (higher is better).
KEY_METRIC = {"selector": "auc", "autoreviewer": "auc",
              "sentiment": "pearson"}
_C_GRID = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
_ALPHAS = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)


def _features(texts, train_idx):
  """idx -> TF-IDF rows, the vocabulary from the training texts."""
  train_texts = [texts[i] for i in train_idx]
  for min_df in (2, 1):  # a handful of texts may share no word at all
    vectorizer = TfidfVectorizer(sublinear_tf=True, min_df=min_df)
    try:
      vectorizer.fit(train_texts)
      return lambda idx: vectorizer.transform([texts[i] for i in idx])
    except ValueError:  # no word left
      continue
  raise UserError("the bag-of-words baseline found no words in the "
                  f"{len(train_texts)} training texts")


@one_thread
def selector_baseline(texts, labels, train_idx, calibration_idx, test_idx,
                      n_bins: int = 10, seed: int = 0,
                      cutoffs: dict = None) -> dict:
  """TF-IDF + logistic regression: a binary head's metrics on the test rows
  (and with `cutoffs`, an autoreviewer's, what its cut-offs do there)."""
  labels = np.asarray(labels, np.float64)
  features = _features(texts, train_idx)
  folds = int(min(5, np.bincount(labels[train_idx].astype(int),
                                  minlength=2).min()))
  model = LogisticRegression(max_iter=5000, random_state=seed)
  if folds >= 2:  # else too few of a label to cross-validate: C = 1
    model = GridSearchCV(model, {"C": list(_C_GRID)}, cv=folds,
                         scoring="roc_auc")
  model.fit(features(train_idx), labels[train_idx])
  C = model.best_params_["C"] if folds >= 2 else model.C
  model = model.best_estimator_ if folds >= 2 else model
  calibration = metrics_lib.fit_platt(
      model.decision_function(features(calibration_idx)),
      labels[calibration_idx])
  decision = model.decision_function(features(test_idx))
  result = metrics_lib.selector_metrics(labels[test_idx], decision,
                                        calibration, n_bins=n_bins)
  if cutoffs is not None:
    result["cutoffs"] = autoreview.cutoff_metrics(
        labels[test_idx], metrics_lib.apply_platt(decision, calibration),
        cutoffs)
  return {"model": "tf-idf + logistic regression", "C": float(C), **result}


@one_thread
def sentiment_baseline(texts, targets, train_idx, test_idx) -> dict:
  """TF-IDF + ridge regression: the sentiment metrics on the test rows."""
  targets = np.asarray(targets, np.float64)
  features = _features(texts, train_idx)
  model = RidgeCV(alphas=_ALPHAS).fit(features(train_idx), targets[train_idx])
  result = metrics_lib.regression_metrics(
      targets[test_idx], model.predict(features(test_idx)))
  return {"model": "tf-idf + ridge regression", "alpha": float(model.alpha_),
          **result}


def verdict(kind: str, head: dict, baseline: dict) -> tuple:
  """(head beats the baseline?, one line saying how they compare)."""
  key = KEY_METRIC[kind]
  ours, theirs = head[key], baseline[key]
  beats = bool(ours > theirs)
  line = (f"{kind} head {key} {ours:.3f} vs its bag-of-words baseline "
          f"{theirs:.3f}")
  if not beats:
    line = (f"the {kind} head does not beat its bag-of-words baseline: {key} "
            f"{ours:.3f} vs {theirs:.3f}")
  return beats, line
