"""Selector labels, test-split metrics, calibration and the bag-of-words
baselines: numpy and scikit-learn, no JAX."""

import itertools

import numpy as np
import pytest

from gpt2.errors import UserError
from selector import baseline as B
from selector import labels as L
from selector import metrics as M

DAY = 86400.0


def ask(day, notes):
  return L.PostRecord("ask", day * DAY, notes)


# Asks (14-day window), two original posts (42 days), a lone reblog, and an
# ask without a note count. Worked by hand with numpy's linear quantiles;
# a window is (t - 14 days, t], the post itself included.
RECORDS = [
    ask(0, 10),  # window [10]: q25 = q75 = 10, both hold -> no label
    ask(1, 20),  # [10, 20]: q25 12.5, q75 17.5 -> 1
    ask(2, 0),  # [10, 20, 0]: q25 5, q75 15 -> 0
    ask(2.5, None),  # no note count: skipped, and not in anyone's window
    ask(3, 12),  # [10, 20, 0, 12]: q25 7.5, q75 14 -> middle band, no label
    ask(16, 30),  # (2, 16] excludes day 2: [12, 30]: q25 16.5, q75 25.5 -> 1
    ask(20, 5),  # (6, 20]: [30, 5]: q25 11.25, q75 23.75 -> 0
    L.PostRecord("original", 0 * DAY, 100),  # alone -> no label
    # 42 days reach back to day 0: [100, 50]: q25 62.5, q75 87.5 -> 0
    # (a 14-day window would leave it alone, unlabelled)
    L.PostRecord("original", 30 * DAY, 50),
    L.PostRecord("reblog", 1 * DAY, 1000),  # asks are not its kind -> alone
]
WANT = [-1, 1, 0, -1, -1, 1, 0, -1, 0, -1]
WANT_LOW = [10, 12.5, 5, np.nan, 7.5, 16.5, 11.25, 100, 62.5, 1000]
WANT_HIGH = [10, 17.5, 15, np.nan, 14, 25.5, 23.75, 100, 87.5, 1000]


def test_rolling_quantile_labels_match_the_hand_computed_example():
  got = L.note_count_labels(RECORDS)
  assert got.labels.tolist() == WANT
  np.testing.assert_allclose(got.low, WANT_LOW)
  np.testing.assert_allclose(got.high, WANT_HIGH)
  assert got.n_without_notes == 1
  assert got.n_dropped == 4  # day-3 ask (middle band) and three lone posts
  assert got.labelled.tolist() == [1, 2, 5, 6, 8]


def test_middle_band_gets_no_label_and_order_does_not_matter():
  # Ten asks a day apart with notes 0..9, then notes 5, 2 and 7 at day 9.5:
  # each late window holds 0..9 and the late posts before it. With 5 added
  # the quartiles are 2.5 and 6.5: 5 is in the middle band.
  records = [ask(d, d) for d in range(10)]
  got = L.note_count_labels(records + [ask(9.5, 5)])
  assert got.labels[-1] == -1
  assert got.low[-1] == 2.5 and got.high[-1] == 6.5
  assert got.labels[9] == 1  # 9 against 0..9: q75 6.75
  perm = np.random.default_rng(0).permutation(len(RECORDS))
  shuffled = L.note_count_labels([RECORDS[i] for i in perm])
  assert shuffled.labels.tolist() == [WANT[i] for i in perm]


def test_window_lengths_and_quantiles_are_settings():
  got = L.note_count_labels(RECORDS, window_days={"original": 14.0})
  assert got.labels[8] == -1  # the original post now has only itself
  wide = L.note_count_labels([ask(0, 0), ask(1, 1), ask(2, 2), ask(3, 3)],
                             low_quantile=0.5, high_quantile=0.5)
  assert wide.labels.tolist() == [-1, 1, 1, 1]


def test_bad_records_give_one_line_messages():
  with pytest.raises(UserError, match="note_count is 'many', not a number"):
    L.post_record({"kind": "ask", "timestamp": 1, "note_count": "many"},
                  "posts.jsonl line 3")
  with pytest.raises(UserError, match="posts.jsonl line 4: kind 'photo'"):
    L.post_record({"kind": "photo", "timestamp": 1}, "posts.jsonl line 4")
  with pytest.raises(UserError, match="has no timestamp"):
    L.post_record({"kind": "ask", "note_count": 3}, "posts.jsonl line 5")
  record = L.post_record({"kind": "reblog", "timestamp": "7", "note_count":
                          None}, "x")
  assert record == L.PostRecord("reblog", 7.0, None)
  with pytest.raises(UserError, match="kind 'poll'"):
    L.note_count_labels([L.PostRecord("poll", 0.0, 1)])


def test_label_columns_must_be_numbers():
  assert L.binary_label(1, "x") == 1.0
  assert L.binary_label("0", "x") == 0.0
  assert L.binary_label(True, "x") == 1.0
  for bad in ("comedy", None, float("nan"), [1]):
    with pytest.raises(UserError) as e:
      L.binary_label(bad, "data.jsonl line 2: 'label'")
    assert "\n" not in str(e.value)
    assert "data.jsonl line 2: 'label'" in str(e.value)
  with pytest.raises(UserError, match="needs labels 0 or 1"):
    L.binary_label(2, "data.jsonl line 9: 'label'")
  assert L.numeric_label("-0.25", "x") == -0.25
  with pytest.raises(UserError, match="'tragic', not a number"):
    L.numeric_label("tragic", "data.jsonl line 1: 'mood'")


def test_vader_scores_are_signed():
  happy, sad = L.vader_sentiment(["I love this, it is wonderful!",
                                  "This is terrible and I hate it."])
  assert happy > 0.5 and sad < -0.5


def test_roc_auc_counts_pairs_and_ties():
  rng = np.random.default_rng(0)
  y = rng.integers(0, 2, 40)
  s = rng.integers(0, 5, 40).astype(float)  # many ties
  pairs = [(1.0 if a > b else 0.5 if a == b else 0.0)
           for (a, ya), (b, yb) in itertools.product(zip(s, y), zip(s, y))
           if ya == 1 and yb == 0]
  assert M.roc_auc(y, s) == pytest.approx(np.mean(pairs))
  assert M.roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0


def test_ece_by_hand():
  # Bin [0.2, 0.3): p 0.25 x2, one positive: |0.5 - 0.25| = 0.25 on 2 of 4;
  # bin [0.9, 1]: p 0.95 x2, both positive: 0.05 on 2 of 4.
  ece = M.expected_calibration_error([0, 1, 1, 1], [0.25, 0.25, 0.95, 0.95])
  assert ece == pytest.approx(0.5 * 0.25 + 0.5 * 0.05)


def test_calibration_fixes_an_overconfident_head_out_of_sample():
  rng = np.random.default_rng(0)
  true_logit = rng.normal(0.0, 1.0, 4000)
  y = (rng.random(4000) < M.sigmoid(true_logit)).astype(float)
  overconfident = 6.0 * true_logit + 0.5  # right ranking, far too sure
  fit, check = slice(0, 2000), slice(2000, None)
  cal = M.fit_platt(overconfident[fit], y[fit])
  assert cal["a"] == pytest.approx(1 / 6, rel=0.15)
  before = M.expected_calibration_error(y[check],
                                        M.sigmoid(overconfident[check]))
  after = M.expected_calibration_error(
      y[check], M.apply_platt(overconfident[check], cal))
  assert before > 0.15 and after < 0.04
  m = M.selector_metrics(y[check], overconfident[check], cal)
  assert m["ece_after"] == pytest.approx(after)
  assert m["log_loss_calibrated"] < m["log_loss"]
  # A perfectly separated split still gives a finite slope.
  sep = M.fit_platt(np.array([-2.0, -1.0, 1.0, 2.0]), np.array([0, 0, 1, 1]))
  assert np.isfinite(sep["a"]) and sep["a"] > 0


def test_baselines_learn_words_and_say_when_a_head_loses():
  rng = np.random.default_rng(0)
  good, bad = ["joy", "love", "sweet", "fair"], ["death", "blood", "woe"]
  filler = "the a of and my lord sir".split()
  texts, y = [], []
  for i in range(200):
    words = list(rng.choice(filler, 6)) + [rng.choice(good if i % 2 else bad)]
    texts.append(" ".join(rng.permutation(words)))
    y.append(i % 2)
  y = np.asarray(y, float)
  train, cal, test = np.arange(140), np.arange(140, 170), np.arange(170, 200)
  sel = B.selector_baseline(texts, y, train, cal, test)
  assert sel["auc"] == 1.0 and sel["C"] in B._C_GRID
  sent = B.sentiment_baseline(texts, 2 * y - 1, train, test)
  assert sent["pearson"] > 0.95
  beats, line = B.verdict("selector", {"auc": 0.9}, sel)
  assert not beats and line == ("the selector head does not beat its "
                                "bag-of-words baseline: auc 0.900 vs 1.000")
  assert B.verdict("sentiment", {"pearson": 0.99}, {"pearson": 0.5})[0]
  # Four texts (too few to cross-validate), and texts without a word.
  assert 0 <= B.selector_baseline(texts[:8], y[:8], np.arange(4),
                                  np.arange(4, 6), np.arange(6, 8))["auc"]
  with pytest.raises(UserError, match="found no words in the 2 training"):
    B.sentiment_baseline(["!", "?", "..."], np.array([1.0, 0.0, 1.0]),
                         np.arange(2), np.arange(2, 3))
