"""The launch scripts end to end: train both heads from files, score offline.

Each command runs as a user would run it, in a subprocess.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from gpt2.model import GPT2Config, init_params, param_shapes
from gpt2.tokenizer import Tokenizer
from gpt2.weights import save_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAY = 86400
WORDS = ("river stone candle winter garden harbor lantern meadow thunder "
         "copper engine ledger signal circuit vector cargo rocket static "
         "metal neon the a of and to in is that it was").split()


def passage(rng, author: int) -> str:
  """Ten words; each author draws from their own ten plus shared ones."""
  own = WORDS[author * 10:(author + 1) * 10]
  words = [own[rng.integers(10)] if rng.random() < 0.4 else
           WORDS[20 + rng.integers(len(WORDS) - 20)] for _ in range(10)]
  return " ".join(words)


def npf_post(i, text, timestamp, note_count, ask=None):
  post = {"object_type": "post", "type": "blocks", "id": i,
          "id_string": str(i), "blog": {"name": "frank"},
          "blog_name": "frank", "timestamp": timestamp, "tags": [],
          "content": [{"type": "text", "text": text}], "layout": [],
          "trail": []}
  if note_count is not None:
    post["note_count"] = note_count
  if ask is not None:
    post["content"].insert(0, {"type": "text", "text": ask})
    post["layout"] = [{"type": "ask", "blocks": [0], "attribution": {
        "type": "blog", "blog": {"name": "curious-cat"}}}]
  return post


def write_jsonl(path, rows):
  with open(path, "w") as f:
    for row in rows:
      f.write(json.dumps(row) + "\n")
  return str(path)


def run(module, *args):
  return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  """A tiny generator on disk, a scraped blog's posts, and two bad files."""
  root = tmp_path_factory.mktemp("launch")
  rng = np.random.default_rng(0)
  posts = []
  for i in range(160):  # asks and original posts, 8 a day
    author = i % 2  # author 1's posts get many more notes
    notes = int(rng.integers(40, 60) if author else rng.integers(0, 20))
    ask = "what do you think about it?" if i % 4 < 2 else None
    posts.append(npf_post(i, passage(rng, author), 1_600_000_000 + i * DAY // 8,
                          None if i % 40 == 39 else notes, ask))
  texts = [passage(rng, 0) for _ in range(30)]
  tokenizer = Tokenizer.train(
      [p["content"][-1]["text"] for p in posts] + texts, 400)
  config = GPT2Config.preset("tiny", vocab_size=tokenizer.vocab_size)
  save_model(str(root / "model"), config, jax.jit(
      init_params, static_argnums=0)(config, jax.random.PRNGKey(0)), tokenizer)
  deeper = config.replace(n_layer=3)  # weights never read: zeros will do
  save_model(str(root / "deeper"), deeper, jax.tree.map(
      lambda s: np.zeros(s.shape, s.dtype), param_shapes(deeper)), tokenizer)
  return {
      "root": root, "model": str(root / "model"),
      "deeper": str(root / "deeper"),
      "posts": write_jsonl(root / "posts.jsonl", posts),
      "texts": write_jsonl(root / "texts.jsonl",
                           [{"text": t + " I love it, wonderful" if k % 2 else
                             t + " awful, I hate it"}
                            for k, t in enumerate(texts)]),
      "bad_labels": write_jsonl(root / "bad.jsonl",
                                [{"text": "to be", "label": 1},
                                 {"text": "or not", "label": "comedy"}]),
  }


@pytest.mark.slow
def test_train_both_heads_and_score_offline(files):
  heads = files["root"] / "heads"
  common = [f"--config.model={files['model']}", "--config.train.epochs=2"]
  result = run("launch.train_selector", "--config=configs/selector.py:tiny",
               f"--config.data={files['posts']}",
               f"--workdir={heads / 'selector'}", *common)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "skipped 4 posts without a note count" in result.stdout
  with open(heads / "selector" / "metrics.json") as f:
    metrics = json.load(f)
  for key in ("auc", "accuracy", "log_loss", "ece_before", "ece_after"):
    assert np.isfinite(metrics[key]), key
  assert metrics["n_train"] + metrics["n_calibration"] + metrics[
      "n_test"] > 40
  # The bag-of-words baseline on the same split, and the verdict.
  assert metrics["baseline"]["model"] == "tf-idf + logistic regression"
  assert np.isfinite(metrics["baseline"]["auc"])
  assert metrics["beats_baseline"] == (metrics["auc"] >
                                       metrics["baseline"]["auc"])

  result = run("launch.train_selector", "--config=configs/sentiment.py:tiny",
               f"--config.data={files['texts']}",
               f"--workdir={heads / 'sentiment'}", *common)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(heads / "sentiment" / "metrics.json") as f:
    metrics = json.load(f)
  for key in ("mse", "pearson", "spearman"):
    assert np.isfinite(metrics[key]), key
    assert np.isfinite(metrics["baseline"][key]), key
  assert metrics["baseline"]["model"] == "tf-idf + ridge regression"
  assert metrics["n_calibration"] == 0  # no calibration: its rows train

  candidates = write_jsonl(files["root"] / "candidates.jsonl", [
      {"text": "river stone candle", "id": 1},
      {"text": "engine ledger signal, I love it", "prompt": "what now?"}])
  out = files["root"] / "scored.jsonl"
  result = run("launch.score", f"--heads={heads}", f"--in={candidates}",
               f"--out={out}")
  assert result.returncode == 0, result.stderr[-3000:]
  rows = [json.loads(line) for line in open(out)]
  assert [r.get("id") for r in rows] == [1, None]
  for row in rows:
    assert 0.0 <= row["selector"] <= 1.0
    assert np.isfinite(row["sentiment"])

  # The same heads on a generator of another depth: one clear line.
  result = run("launch.score", f"--heads={heads}", f"--in={candidates}",
               f"--model={files['deeper']}")
  assert result.returncode == 2
  message = result.stderr.strip().splitlines()[-1]  # after orbax's logs
  assert message.startswith("error: ") and "Traceback" not in result.stderr
  assert "n_layer=2" in message and "n_layer=3" in message


@pytest.mark.slow
def test_a_label_that_is_not_a_number_is_one_line(files):
  result = run("launch.train_selector", "--config=configs/selector.py:tiny",
               f"--config.model={files['model']}",
               f"--config.data={files['bad_labels']}",
               f"--workdir={files['root'] / 'bad'}")
  assert result.returncode == 2
  assert result.stderr.strip() == (
      f"error: {files['bad_labels']} line 2: 'label' is 'comedy', not a "
      "number")
