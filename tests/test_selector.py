"""Selector and sentiment heads on a frozen tiny generator.

The generator is a randomly initialised tiny GPT-2: its activations still
carry which tokens a passage holds, and that is all a head needs to tell two
authors with different vocabularies apart. (Measured while writing this: on
two Shakespeare plays, 60-word passages without speaker names, the same
setup reaches a held-out AUC of about 0.8; a linear probe on mean-pooled
activations does no better, the 64-wide random features are the limit.)
"""

import copy
import dataclasses
import functools
import json
import re
import zlib

import jax
import numpy as np
import pytest

from configs import selector as selector_config
from gpt2.errors import UserError
from gpt2.model import GPT2Config, forward, init_params, param_shapes
from gpt2.tokenizer import Tokenizer
from gpt2.weights import LoadedModel
from selector import data as data_lib
from selector import metrics as M
from selector.score import Head, Heads, pad_candidates
from selector.train import Examples, Splits, split_rows, train_head

FUNCTION_WORDS = ("the a of and to in is that it was for on with as his her "
                  "but not at by from they we you he she this be are").split()
CONTENT_WORDS = (
    "river stone candle winter garden harbor lantern meadow thunder copper "
    "violet orchard silver falcon ember willow marble compass saddle quiet "
    "engine ledger signal circuit vector cargo rocket static metal neon "
    "server switch cable pixel motor battery laser voltage socket tunnel "
    "bread window street letter morning evening table chair paper friend "
    "water light music road house field night story voice heart").split()


def two_authors(n_per_author: int, seed: int, words: int = 24,
                p_own: float = 0.15, p_function: float = 0.4):
  """Passages by two authors who share function words and half their content
  words, and each use 20 words of their own (p_own of the time)."""
  own = (CONTENT_WORDS[:20], CONTENT_WORDS[20:40])
  shared = CONTENT_WORDS[40:]
  rng = np.random.default_rng(seed)
  texts, labels = [], []
  for i in range(2 * n_per_author):
    author = i % 2
    picks = rng.random(words)
    passage = [
        FUNCTION_WORDS[rng.integers(len(FUNCTION_WORDS))] if p < p_function
        else own[author][rng.integers(20)] if p < p_function + p_own
        else shared[rng.integers(len(shared))] for p in picks
    ]
    texts.append(" ".join(passage).capitalize() + ".")
    labels.append(author)
  return texts, np.asarray(labels, np.float32)


def make_config(cache_dir, kind="selector", **train):
  c = selector_config.get_config("tiny")
  if kind == "sentiment":
    c.kind = "sentiment"
  c.model = "tiny generator built in the test"
  c.activation_cache = str(cache_dir)
  for key, value in train.items():
    c.train[key] = value
  return c


def snapshot(tree):
  return jax.tree.map(lambda a: np.array(a, copy=True), tree)


def head_logit_diff(head, cache, texts, rows) -> np.ndarray:
  """The head's logit (positive minus negative) for corpus `rows`, from the
  activation cache, without calibration or probe."""
  hidden, mask = pad_candidates(
      [dict(zip(cache.layers, cache.rows(i))) for i in rows], cache.layers)
  out = head.raw_outputs([hidden[l] for l in head.config.layers], mask,
                         [texts[i] for i in rows])
  return out[:, 1] - out[:, 0]


@pytest.fixture(scope="module")
def corpus():
  return two_authors(300, seed=0)


@pytest.fixture(scope="module")
def generator(corpus):
  texts, _ = corpus
  tokenizer = Tokenizer.train(texts, 512)
  config = GPT2Config.preset("tiny", vocab_size=tokenizer.vocab_size)
  params = jax.jit(init_params, static_argnums=0)(config, jax.random.PRNGKey(0))
  return LoadedModel(config=config, params=params, tokenizer=tokenizer,
                     kind="ours")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpus, generator):
  """A selector trained to tell the authors apart (label 1: author two)."""
  texts, labels = corpus
  root = tmp_path_factory.mktemp("selector")
  before = snapshot(generator.params)
  config = make_config(root / "activations")
  metrics = train_head(config, generator, Examples(texts, labels),
                       str(root / "run"))
  return {"root": root, "workdir": str(root / "run"), "metrics": metrics,
          "before": before, "config": config}


@pytest.mark.slow
def test_head_learns_which_author_wrote_a_passage(trained):
  m = trained["metrics"]
  print(f"held-out AUC {m['auc']:.3f} accuracy {m['accuracy']:.3f} "
        f"ECE {m['ece_before']:.3f} -> {m['ece_after']:.3f}")
  assert (m["n_train"], m["n_calibration"], m["n_test"]) == (480, 60, 60)
  assert m["auc"] >= 0.9
  assert m["accuracy"] >= 0.8
  with open(f"{trained['workdir']}/metrics.json") as f:
    written = json.load(f)
  for key in ("auc", "accuracy", "log_loss", "ece_before", "ece_after"):
    assert written[key] == pytest.approx(m[key])
  # The authors differ by their words: a bag of words tells them apart too.
  baseline = written["baseline"]
  print(f"baseline AUC {baseline['auc']:.3f}")
  assert baseline["auc"] >= 0.9 and set(baseline) >= {
      "auc", "accuracy", "log_loss", "ece_before", "ece_after", "model"}
  assert written["beats_baseline"] == (m["auc"] > baseline["auc"])


@pytest.mark.slow
def test_generator_params_are_bit_identical_after_training(trained, generator):
  before = jax.tree_util.tree_leaves_with_path(trained["before"])
  after = jax.tree_util.tree_leaves_with_path(generator.params)
  assert [p for p, _ in before] == [p for p, _ in after]
  for (path, b), (_, a) in zip(before, after):
    a = np.asarray(a)
    assert a.dtype == b.dtype and a.shape == b.shape, path
    assert a.tobytes() == b.tobytes(), path


@pytest.mark.slow
def test_shuffled_labels_stay_near_chance(trained, corpus, generator):
  texts, labels = corpus
  shuffled = np.random.default_rng(1).permutation(labels)
  # A larger held-out split (180 examples) so that chance has a standard
  # error of about 0.043; the tolerance is 0.15, three and a half of them.
  config = make_config(trained["root"] / "activations", holdout_fraction=0.3)
  m = train_head(config, generator, Examples(texts, shuffled),
                 str(trained["root"] / "shuffled"))
  print(f"shuffled-label held-out AUC {m['auc']:.3f}")
  assert abs(m["auc"] - 0.5) <= 0.15


@pytest.mark.slow
def test_an_interrupted_run_resumes_to_the_same_head(trained, corpus,
                                                     generator, capsys):
  texts, labels = corpus
  workdir = str(trained["root"] / "resumed")
  partial = train_head(trained["config"], generator, Examples(texts, labels),
                       workdir, stop_after_steps=50, progress=True)
  assert partial == {"step": 50, "total_steps": trained["metrics"]["steps"]}
  bar = capsys.readouterr().err  # the progress bar: steps, loss, time left
  assert re.search(rf"selector head: +\d+%.*\| 50/{partial['total_steps']} "
                   r"\[[0-9:]+<[0-9:]+, .*loss=\d", bar), bar[-500:]
  m = train_head(trained["config"], generator, Examples(texts, labels),
                 workdir)
  assert m["auc"] == pytest.approx(trained["metrics"]["auc"])
  a, b = Head.load(workdir).params, Head.load(trained["workdir"]).params
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
  # Other labels in the same workdir: refused, not silently mixed.
  with pytest.raises(UserError, match="other targets"):
    train_head(trained["config"], generator, Examples(texts, 1 - labels),
               workdir)


def test_scores_from_cached_hidden_states_equal_a_fresh_forward_pass(
    trained, corpus, generator):
  texts, labels = corpus
  heads = Heads(generator, selector=Head.load(trained["workdir"]))
  cache = data_lib.ActivationCache(str(trained["root"] / "activations"))
  layers = heads.layers
  assert layers == cache.layers == (1, 2)
  picks = [0, 1, 7, 100, 333]
  picked = [texts[i] for i in picks]
  from_cache = heads.score_candidates(
      [dict(zip(cache.layers, cache.rows(i))) for i in picks],
      picked).selector
  run = jax.jit(functools.partial(forward, generator.config, capture=layers,
                                  return_logits=False))
  fresh = []
  for i in picks:  # one unpadded forward pass per text
    ids = np.asarray([generator.tokenizer.encode(texts[i])], np.int32)
    out = run(generator.params, ids)
    fresh.append({l: np.asarray(out.hidden[l][0]) for l in layers})
  from_forward = heads.score_candidates(fresh, picked).selector
  from_texts = heads.score_texts([texts[i] for i in picks]).selector
  np.testing.assert_allclose(from_cache, from_forward, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(from_texts, from_forward, rtol=1e-5, atol=1e-6)
  assert from_forward.min() >= 0 and from_forward.max() <= 1
  assert len(set(np.round(from_forward, 6))) > 1

  # With a prompt, only the text's positions are judged.
  prompt = texts[5]
  ids = np.asarray([generator.tokenizer.encode(prompt) +
                    generator.tokenizer.encode(texts[0])], np.int32)
  n_prompt = len(generator.tokenizer.encode(prompt))
  out = run(generator.params, ids)
  want = heads.score_candidates(
      [{l: np.asarray(out.hidden[l][0, n_prompt:]) for l in layers}],
      [texts[0]]).selector
  got = heads.score_texts([texts[0]], prompts=[prompt]).selector
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

  # Scoring the test texts again gives the AUC training reported.
  test = split_rows(labels.astype(np.int64), 0.1, 0.1, 0).test
  probs = heads.score_texts([texts[i] for i in test]).selector
  assert M.roc_auc(labels[test], probs) == pytest.approx(
      trained["metrics"]["auc"], abs=2e-3)  # a near-tie may swap, no more


def test_calibration_lowers_ece_of_an_overconfident_head(trained, generator):
  head = Head.load(trained["workdir"])
  loud = copy.copy(head)  # the same head with its logits made 8x larger
  loud.params = jax.tree.map(np.copy, head.params)
  loud.params["out"]["kernel"] *= 8.0
  loud.params["out"]["bias"] *= 8.0
  loud.bag = dataclasses.replace(head.bag, weights=head.bag.weights * 8.0,
                                 intercept=head.bag.intercept * 8.0)
  # Passages it never saw, with fewer telling words: the head errs, and the
  # loud copy errs with certainty.
  texts, labels = two_authors(200, seed=7, p_own=0.06)
  encoded = data_lib.encode_examples(generator.tokenizer, texts, max_len=128)
  rows = [None] * len(texts)
  for i, states in data_lib.iter_hidden(generator.config, generator.params,
                                        encoded, head.config.layers, 32):
    rows[i] = dict(zip(head.config.layers, states))
  hidden, mask = pad_candidates(rows, head.config.layers)
  out = loud.raw_outputs([hidden[l] for l in head.config.layers], mask,
                         texts)
  diff = out[:, 1] - out[:, 0]
  fit, check = slice(0, 200), slice(200, None)
  calibration = M.fit_platt(diff[fit], labels[fit])
  before = M.expected_calibration_error(labels[check], M.sigmoid(diff[check]))
  after = M.expected_calibration_error(
      labels[check], M.apply_platt(diff[check], calibration))
  print(f"over-confident head: ECE {before:.3f} -> {after:.3f} calibrated")
  assert before > 0.05
  assert after < 0.75 * before


def test_calibration_and_metrics_come_from_disjoint_rows(trained, corpus,
                                                         generator):
  """The calibration is fitted on the calibration rows only, and every
  reported metric is computed on the test rows only: rebuilt here from the
  head's raw outputs on each split."""
  texts, labels = corpus
  splits = split_rows(labels.astype(np.int64), 0.1, 0.1, 0)
  parts = [set(splits.train), set(splits.calibration), set(splits.test)]
  assert sum(map(len, parts)) == len(texts) == len(set().union(*parts))
  assert len(splits.calibration) == len(splits.test) == 60
  with pytest.raises(ValueError, match="overlap"):
    Splits(train=splits.train, calibration=splits.calibration,
           test=np.append(splits.test, splits.calibration[0]))

  head = Head.load(trained["workdir"])
  cache = data_lib.ActivationCache(str(trained["root"] / "activations"))
  logit_diff = functools.partial(head_logit_diff, head, cache, texts)
  want = M.fit_platt(logit_diff(splits.calibration),
                     labels[splits.calibration])
  assert head.calibration == pytest.approx(want, rel=1e-4, abs=1e-4)
  reported = M.selector_metrics(labels[splits.test],
                                logit_diff(splits.test), head.calibration)
  for key in ("auc", "log_loss", "log_loss_calibrated", "ece_before",
              "ece_after", "accuracy"):
    assert trained["metrics"][key] == pytest.approx(reported[key],
                                                    abs=1e-4), key


@pytest.mark.slow
def test_sentiment_head_and_both_heads_together(trained, corpus, generator):
  texts, labels = corpus
  rng = np.random.default_rng(3)
  mood = np.where(labels > 0, 0.6, -0.6) + rng.normal(0, 0.1, len(labels))
  config = make_config(trained["root"] / "activations", kind="sentiment")
  m = train_head(config, generator, Examples(texts, mood.astype(np.float32)),
                 str(trained["root"] / "sentiment"))
  print(f"sentiment held-out pearson {m['pearson']:.3f} mse {m['mse']:.3f}")
  for key in ("mse", "mae", "r2", "pearson", "spearman", "sign_accuracy"):
    assert np.isfinite(m[key])
  assert m["pearson"] >= 0.75

  heads = Heads(generator, selector=Head.load(trained["workdir"]),
                sentiment=Head.load(str(trained["root"] / "sentiment")))
  scores = heads.score_texts(texts[:40])
  assert scores.selector.shape == scores.sentiment.shape == (40,)
  # Values on the targets' scale, not standardised ones, and (the bounded
  # link) never outside the range of the training targets.
  assert np.corrcoef(scores.sentiment, mood[:40])[0, 1] > 0.8
  assert mood.min() <= scores.sentiment.min() < -0.3
  assert 0.3 < scores.sentiment.max() <= mood.max()


def test_a_head_from_another_generator_is_a_clear_error(trained, generator,
                                                         tmp_path, caplog):
  head = Head.load(trained["workdir"])
  for change in ({"n_layer": 3}, {"n_embd": 32, "n_head": 2}):
    other_config = generator.config.replace(**change)
    zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype),
                         param_shapes(other_config))
    other = LoadedModel(other_config, zeros, generator.tokenizer, "ours")
    with pytest.raises(UserError) as e:
      Heads(other, selector=head)
    message = str(e.value)
    assert "\n" not in message
    key = next(iter(change))
    assert f"{key}={getattr(generator.config, key)}" in message
    assert f"{key}={change[key]}" in message
  # Same shapes, other weights: it loads, with a warning.
  nudged = jax.tree.map(lambda a: a + 1e-3, generator.params)
  same_shape = LoadedModel(generator.config, nudged, generator.tokenizer,
                           "ours")
  Heads(same_shape, selector=head)
  assert "other weights" in caplog.text
  # Hidden states missing a layer the heads read.
  heads = Heads(generator, selector=head)
  with pytest.raises(UserError, match=r"layers \(1, 2\)"):
    heads.score_hidden({1: np.zeros((1, 4, 64))}, np.ones((1, 4), bool))
  with pytest.raises(UserError, match="no head in"):
    Head.load(str(tmp_path))
  head.save(str(tmp_path / "cut"))
  with open(tmp_path / "cut" / "params.safetensors", "r+b") as f:
    f.truncate(100)
  with pytest.raises(UserError, match="is unreadable"):
    Head.load(str(tmp_path / "cut"))
  with pytest.raises(UserError, match="none of selector/, sentiment/, "
                     "autoreviewer/"):
    Heads.load(str(tmp_path), model=generator)


def test_the_bag_of_words_counts_lowercased_words_the_same_everywhere():
  from selector import bag as bag_lib  # pylint: disable=import-outside-toplevel
  cols = bag_lib.word_columns("The river, the RIVER's stone!", 1 << 20)
  # the, river, the, river, s, stone: a word is its lower case.
  assert len(cols) == 6 and cols[0] == cols[2] and cols[1] == cols[3]
  assert len(set(cols.tolist())) == 4
  assert cols[0] == zlib.crc32(b"the") % (1 << 20)  # not Python's salted hash
  X = bag_lib.counts(["a b a", "", "b"], 16)
  assert X.shape == (3, 16) and X.sum() == 4 and X[1].nnz == 0
  assert X[0].max() == 2


def test_the_network_never_trains_on_a_bag_that_saw_its_row():
  """Each text has a word of its own and a random label: a bag fitted on
  every row learns them by heart, so the network must get, for each
  training row, the prediction of a bag that did not see it."""
  from selector import bag as bag_lib  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  n = 400
  texts = [f"word{i} common text" for i in range(n)]
  labels = rng.integers(0, 2, n).astype(np.float64)
  train = np.arange(300)
  bag, outputs = bag_lib.fit(texts, labels, train, binary=True,
                             buckets=1 << 16)
  memorised = M.roc_auc(labels[train], bag.predict([texts[i] for i in train]))
  held_out = M.roc_auc(labels[train], outputs[train])
  print(f"AUC on the training rows: full fit {memorised:.3f}, "
        f"out of fold {held_out:.3f}")
  assert memorised > 0.9 and abs(held_out - 0.5) < 0.12
  # The rows the bag did not train on get the full fit.
  np.testing.assert_allclose(outputs[300:],
                             bag.predict(texts[300:]), rtol=1e-6, atol=1e-9)
  # A real signal survives the folds: label 1 texts say "glad".
  texts = [f"{'glad' if y else 'sad'} word{i}" for i, y in enumerate(labels)]
  _, outputs = bag_lib.fit(texts, labels, train, binary=True, buckets=1 << 16)
  assert M.roc_auc(labels[train], outputs[train]) > 0.99


def test_heads_with_a_bag_need_the_texts(trained, generator):
  heads = Heads(generator, selector=Head.load(trained["workdir"]))
  assert heads.reads_texts and trained["metrics"]["bag"]["auc"] > 0.8
  hidden = {l: np.zeros((2, 4, 64), np.float32) for l in heads.layers}
  with pytest.raises(UserError, match="texts") as e:
    heads.score_hidden(hidden, np.ones((2, 4), bool))
  assert "\n" not in str(e.value)
  # The same hidden states, other words: the logits move by the bag's
  # outputs (the first author's words against the second's).
  head = heads.selector
  words = ["river stone candle", "engine ledger signal"]
  out = head.raw_outputs([hidden[l] for l in head.config.layers],
                         np.ones((2, 4), bool), words)
  diff = out[:, 1] - out[:, 0]
  bag = head.bag.predict(words)
  assert bag[1] - bag[0] > 1.0  # label 1 is the second author
  np.testing.assert_allclose(diff[1] - diff[0], bag[1] - bag[0], rtol=1e-4)


def test_a_sentiment_value_stays_within_the_range_it_learned():
  from selector.score import (sentiment_output, sentiment_target,  # pylint: disable=import-outside-toplevel
                              sentiment_value)
  train = np.array([-0.9, -0.2, 0.0, 0.3, 0.8])
  bounded = sentiment_target("bounded", train)
  assert (bounded["low"], bounded["high"]) == (-0.9, 0.8)
  values = np.asarray(sentiment_value(np.array([-50.0, 0.0, 50.0]), bounded))
  np.testing.assert_allclose(values, [-0.9, -0.05, 0.8], atol=1e-6)
  inner = np.array([-0.5, 0.0, 0.6])
  np.testing.assert_allclose(
      np.asarray(sentiment_value(sentiment_output(inner, bounded), bounded)),
      inner, atol=1e-5)
  assert np.isfinite(sentiment_output(np.array([-0.9, 0.8]), bounded)).all()
  linear = sentiment_target("linear", train)
  assert "low" not in linear
  np.testing.assert_allclose(
      np.asarray(sentiment_value(np.array([0.0, 1.0]), linear)),
      [train.mean(), train.mean() + train.std()], rtol=1e-6)
  with pytest.raises(UserError, match="config.link='tanh'"):
    sentiment_target("tanh", train)
  with pytest.raises(UserError, match="nothing to learn"):
    sentiment_target("bounded", np.zeros(4))


@pytest.mark.slow
def test_the_kept_epoch_is_the_best_on_the_calibration_rows(trained, corpus,
                                                            generator):
  """choose_epoch: every epoch is scored on the calibration rows only, the
  best one is kept (and survives a resume), and for sentiment the same
  rows are held apart for it."""
  texts, labels = corpus
  for kind, targets in (("selector", labels),
                        ("sentiment", np.clip(
                            np.where(labels > 0, 0.5, -0.3) +
                            np.random.default_rng(2).normal(0, 0.2, len(
                                labels)), -0.95, 0.95).astype(np.float32))):
    config = make_config(trained["root"] / "activations", kind=kind,
                         choose_epoch=True, epochs=4)
    lines = []
    workdir = str(trained["root"] / f"chosen-{kind}")
    steps_per_epoch = 480 // 16
    partial = train_head(config, generator, Examples(texts, targets),
                         workdir, log=lines.append,
                         stop_after_steps=steps_per_epoch + 3)
    assert partial["step"] == steps_per_epoch + 3
    m = train_head(config, generator, Examples(texts, targets), workdir,
                   log=lines.append)
    scores = [float(re.search(r"rows (-?[\d.]+)", line).group(1))
              for line in lines if re.match(r"epoch \d+: ", line)]
    assert len(scores) == 4, lines
    assert m["chosen_epoch"] == int(np.argmax(scores)) + 1
    assert (m["n_train"], m["n_calibration"], m["n_test"]) == (480, 60, 60)
    assert sum(line.startswith("kept epoch") for line in lines) == 1
    if kind == "selector":
      # The scores were the calibration rows': the kept head, scored here
      # on them, gets the best one (on the test rows it gets another).
      cache = data_lib.ActivationCache(str(trained["root"] / "activations"))
      splits = split_rows(labels.astype(np.int64), 0.1, 0.1, 0)
      head = Head.load(workdir)
      rows = {name: M.roc_auc(labels[idx], head_logit_diff(
          head, cache, texts, idx)) for name, idx in (
              ("calibration", splits.calibration), ("test", splits.test))}
      assert rows["calibration"] == pytest.approx(max(scores), abs=1e-4)
      assert rows["test"] != pytest.approx(max(scores), abs=1e-4)


def test_the_probe_pools_the_same_from_the_cache_and_from_a_padded_batch():
  from selector import probe as probe_lib  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  rows = [rng.normal(size=(n, 4)).astype(np.float32) for n in (3, 1, 5)]
  want = np.stack([np.concatenate([r.mean(0), r[0], r[-1]]) for r in rows])
  hidden = np.zeros((4, 7, 4), np.float32)  # one more row, all padding
  mask = np.zeros((4, 7), bool)
  for i, r in enumerate(rows):
    hidden[i, :len(r)] = r
    mask[i, :len(r)] = True
  got = probe_lib.pooled([hidden], mask)
  np.testing.assert_allclose(got[:3], want, rtol=1e-6, atol=1e-6)
  assert not got[3].any()


def test_the_blend_weighs_each_logit_by_what_it_tells():
  """fit_blend on logits of which only the probe's carries the label: the
  probe gets the weight, the network next to none; and the other way."""
  from selector import probe as probe_lib  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  labels = (rng.random(400) < 0.5).astype(np.float64)
  informative = 3 * (labels - 0.5) + rng.normal(0, 1, 400)
  noise = rng.normal(0, 1, 400)
  a, b, _ = probe_lib.fit_blend(noise, informative, labels)
  assert b > 1 and abs(a) < 0.3 * b
  a, b, _ = probe_lib.fit_blend(informative, noise, labels)
  assert a > 1 and abs(b) < 0.3 * a


def test_the_probe_never_fits_on_a_row_it_scores_out_of_fold():
  """Random features and labels, each row with a column of its own: the
  full fit learns the training rows by heart, the out-of-fold logits do
  not; the rows outside training, and their labels, change nothing."""
  from selector import probe as probe_lib  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  n = 300
  features = np.eye(n) + rng.normal(0, 0.01, (n, n))
  labels = rng.integers(0, 2, n).astype(np.float64)
  train = np.arange(200)
  probe, logits = probe_lib.fit(features, np.zeros(n), labels, train)
  full = probe.logit(features, np.zeros(n))
  assert M.roc_auc(labels[train], full[train]) > 0.9
  assert abs(M.roc_auc(labels[train], logits[train]) - 0.5) < 0.15
  # (its saved weights are float32)
  np.testing.assert_allclose(logits[200:], full[200:], rtol=1e-5, atol=1e-6)
  flipped = labels.copy()
  flipped[200:] = 1 - flipped[200:]
  again, _ = probe_lib.fit(features, np.zeros(n), flipped, train)
  # (the same fit; the solver's threads may round the last digits apart)
  np.testing.assert_allclose(again.weights, probe.weights, rtol=1e-4,
                             atol=1e-6)


@pytest.mark.slow
def test_a_selector_with_a_probe_scores_as_it_was_measured(trained, corpus,
                                                           generator,
                                                           monkeypatch):
  """head.probe: the probe is fitted, blended on the calibration rows,
  saved with the head, and the scorer (from texts or from the sampler's
  hidden states) gives the test rows the AUC training reported."""
  texts, labels = corpus
  config = make_config(trained["root"] / "activations", steps=60)
  config.head.probe = True
  workdir = str(trained["root"] / "probe")
  lines = []
  from selector import probe as probe_lib  # pylint: disable=import-outside-toplevel
  blends = []

  def fit_blend(network, probe, targets):  # the real one, its rows noted
    blends.append(np.asarray(targets))
    return real_fit_blend(network, probe, targets)

  real_fit_blend = probe_lib.fit_blend
  monkeypatch.setattr(probe_lib, "fit_blend", fit_blend)
  m = train_head(config, generator, Examples(texts, labels), workdir,
                 log=lines.append)
  assert m["probe"]["auc"] > 0.8 and len(m["probe"]["blend"]) == 3
  # The blend was fitted on the calibration rows' labels, not the test
  # rows' (how it weighs the two: test_the_blend_weighs_each_logit_...).
  splits = split_rows(labels.astype(np.int64), 0.1, 0.1, 0)
  (fitted,) = blends
  np.testing.assert_array_equal(fitted, labels[splits.calibration])
  assert not np.array_equal(fitted, labels[splits.test])
  assert any(line.startswith("blend on the calibration rows") for line in
             lines)
  head = Head.load(workdir)
  assert head.probe is not None and head.probe.blend == tuple(
      m["probe"]["blend"])
  heads = Heads(generator, selector=head)
  test = split_rows(labels.astype(np.int64), 0.1, 0.1, 0).test
  probs = heads.score_texts([texts[i] for i in test]).selector
  assert M.roc_auc(labels[test], probs) == pytest.approx(m["auc"], abs=2e-3)
  cache = data_lib.ActivationCache(str(trained["root"] / "activations"))
  from_cache = heads.score_candidates(
      [dict(zip(cache.layers, cache.rows(i))) for i in test[:5]],
      [texts[i] for i in test[:5]]).selector
  np.testing.assert_allclose(from_cache, probs[:5], rtol=1e-5, atol=1e-6)
  # The probe is for the binary heads: asked of sentiment, one line.
  config = make_config(trained["root"] / "activations", kind="sentiment")
  config.head.probe = True
  with pytest.raises(UserError, match="head.probe is for the binary heads"):
    train_head(config, generator, Examples(texts, labels),
               str(trained["root"] / "probe-sentiment"))


def test_a_bag_saved_before_its_tfidf_columns_still_scores():
  """A bag of counts only (head.json with no "features") loads and scores
  as counts . weights + intercept; one with the TF-IDF columns adds them."""
  from selector import bag as bag_lib  # pylint: disable=import-outside-toplevel
  weights = np.zeros(16, np.float32)
  texts = ["a b a", "b", "c c"]
  for w in ("a", "b"):
    weights[bag_lib.word_columns(w, 16)[0]] = 1.0 if w == "a" else -1.0
  old = bag_lib.from_spec({"buckets": 16, "intercept": 0.5},
                          {"weights": weights})
  assert old.idf is None and old.spec()["features"] == "counts"
  np.testing.assert_allclose(old.predict(texts),
                             bag_lib.counts(texts, 16) @ weights + 0.5)
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, 40).astype(np.float64)
  new, outputs = bag_lib.fit(
      [f"{'glad' if y else 'sad'} word{i}" for i, y in enumerate(labels)],
      labels, np.arange(30), binary=True, buckets=1 << 12)
  again = bag_lib.from_spec(new.spec(), new.arrays())
  assert again.spec()["features"] == "counts+tfidf"
  assert np.any(again.tfidf_weights != 0)
  held = [f"{'glad' if y else 'sad'} word{i}" for i, y in
          enumerate(labels)][30:]
  np.testing.assert_allclose(again.predict(held), outputs[30:], rtol=1e-5,
                             atol=1e-6)
