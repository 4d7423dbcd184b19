"""The main job, shortened: launch.demo from corpus to a bot's feed, and resume;
and with a Llama-style generator (`--config.family=llama`)."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# The demo shortened: fewer generator steps, head steps and examples, and
# candidates per ask than its defaults.
SHORT = {"steps": 60, "head_steps": 20, "head_examples": 1800,
         "candidates": 4}


def _demo(workdir, *extra, **short):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run(
      [sys.executable, "-m", "launch.demo", f"--workdir={workdir}",
       *[f"--{k}={v}" for k, v in {**SHORT, **short}.items()], *extra],
      capture_output=True, text=True, cwd=REPO, env=env, timeout=900,
      check=False)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("demo")
  done = _demo(workdir)
  assert done.returncode == 0, done.stderr[-3000:]
  return workdir, done


@pytest.mark.slow
def test_demo_writes_every_output(demo_run):
  workdir, done = demo_run
  for name in ("feed.html", "loss.png", "mood.png", "demo.json"):
    assert os.path.getsize(workdir / name) > 0, name
  with open(workdir / "loss.png", "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  result = json.loads((workdir / "demo.json").read_text())
  assert result["val_loss_end"] < result["val_loss_start"] - 1.0
  # Each head beside its bag-of-words baseline, on the same test split.
  # Even this short a run has the selector beat it (0.715 vs 0.676 on
  # 2026-12-07); the sentiment head, 60 generator steps in, does not yet
  # (0.485 vs 0.555; the full demo's does), but it has learned: a head
  # that said the same for every row would have no correlation at all.
  assert 0.5 < result["selector_auc_baseline"] < result["selector_auc"]
  assert 0.3 < result["sentiment"]["pearson"] <= 1.0
  assert 0.3 < result["sentiment"]["pearson_baseline"] <= 1.0
  with open(workdir / "heads" / "selector" / "metrics.json") as f:
    selector = json.load(f)
  # One split seed by default (bench.heads runs several): its metrics under
  # the mean's keys and as the one entry of each per-seed list.
  for key, values in (
      ("selector_auc", result["selector_auc_per_seed"]),
      ("selector_auc_baseline", result["selector_auc_baseline_per_seed"])):
    assert values == [result[key]], key
  sent = result["sentiment"]
  assert sent["pearson_per_seed"] == [sent["pearson"]]
  assert selector["baseline"]["auc"] == result[
      "selector_auc_baseline_per_seed"][0]
  assert selector["auc"] == result["selector_auc_per_seed"][0]
  assert selector["n_test"] == 180  # 10% of --head_examples
  # An epoch was kept (chosen on the calibration rows: test_selector's
  # test_the_kept_epoch_is_the_best_on_the_calibration_rows) and the
  # network blended with a linear probe (fitted on the same rows:
  # test_a_selector_with_a_probe_scores_as_it_was_measured).
  assert selector["chosen_epoch"] in (1, 2, 3)  # launch.demo's EPOCHS
  assert 0.6 < selector["probe"]["auc"] <= 1.0
  assert len(selector["probe"]["blend"]) == 3
  assert selector["probe"]["blend"][:2] != [1.0, 0.0]
  assert not (workdir / "heads" / "seeds").exists()
  # The heads' bag of words, alone on the same rows: the words tell comedy
  # from tragedy, and VADER's lexicon is words.
  assert selector["bag"]["auc"] > 0.6
  with open(workdir / "heads" / "sentiment" / "metrics.json") as f:
    assert json.load(f)["bag"]["pearson"] > 0.3
  for kind in ("selector", "sentiment"):
    beaten = sent["beats_baseline_per_seed"] if kind == "sentiment" \
        else result["selector_beats_baseline_per_seed"]
    said = f"the {kind} head does not beat its bag-of-words baseline"
    assert done.stdout.count(said) == beaten.count(False), kind
  assert "on split seed 0, selector held-out AUC" in done.stdout
  # Not a terminal: the stage lines, no progress bars.
  assert "\r" not in done.stdout + done.stderr
  assert "[demo " in done.stdout
  # The bot considered every seeded ask (the feed shows each one with its
  # candidates); a model this short-trained gets some of them answered.
  # pylint: disable-next=import-outside-toplevel
  from launch.demo import ASKS, IMAGE_ASK
  page = (workdir / "feed.html").read_text()
  for _, question in ASKS + (IMAGE_ASK[:2],):
    assert question in page
  entries = [json.loads(line) for line in
             (workdir / "feed.jsonl").read_text().splitlines()]
  assert len(entries) == len(ASKS) + 1
  # The screenshot's words reached the prompt by OCR (the test extra has it).
  (shot,) = [e for e in entries if IMAGE_ASK[1] in e["prompt_shown"]]
  words = " ".join(IMAGE_ASK[2]).lower().split()
  read = shot["prompt_shown"].lower()
  assert "[image | text: " in read, read  # no alt text: "[image | text: ...]"
  assert sum(f" {w}" in read for w in words) >= 0.7 * len(words), read
  assert all(len(e["candidates"]) >= 4 for e in entries)
  assert result["answers"]
  for answer in result["answers"]:
    assert answer["answer"].strip() and answer["answer"] in [
        c["text"] for e in entries for c in e["candidates"]]
  # TensorBoard logs of the generator's run.
  events = [f for _, _, files in os.walk(workdir / "train") for f in files
            if f.startswith("events.out.tfevents")]
  assert events


@pytest.mark.slow
def test_demo_model_and_heads_load_with_every_command(demo_run):
  import transformers  # pylint: disable=import-outside-toplevel

  from gpt2 import weights  # pylint: disable=import-outside-toplevel
  from selector.score import Heads  # pylint: disable=import-outside-toplevel
  workdir, _ = demo_run
  model = weights.load_model(str(workdir / "model"))
  assert model.kind == "hf"
  transformers.GPT2LMHeadModel.from_pretrained(str(workdir / "model"))
  heads = Heads.load(str(workdir / "heads"), model=model)
  scores = heads.score_texts(["O, that this too too solid flesh would melt"])
  assert 0.0 <= float(scores.selector[0]) <= 1.0


@pytest.mark.slow
def test_demo_rerun_resumes(demo_run):
  workdir, _ = demo_run
  metrics = (workdir / "train" / "metrics.jsonl").read_text().splitlines()
  again = _demo(workdir)
  assert again.returncode == 0, again.stderr[-3000:]
  # Nothing was retrained: the generator's log is unchanged.
  assert (workdir / "train" / "metrics.jsonl").read_text().splitlines() == (
      metrics)
  assert "resumed" in again.stdout and "already" in again.stdout
  assert json.loads((workdir / "demo.json").read_text())["answers"]


@pytest.mark.slow
def test_bench_heads_tables_the_demos_split_seeds(demo_run):
  """bench.heads on the demo's workdir: seed 0's heads are the demo's own
  (finished, so answered from their saved metrics, not retrained)."""
  workdir, _ = demo_run
  saved = workdir / "heads" / "selector" / "metrics.json"
  before, written = saved.read_text(), saved.stat().st_mtime_ns
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  done = subprocess.run(
      [sys.executable, "-m", "bench.heads", f"--demo={workdir}", "--seeds=1",
       "--steps_per_head=20", "--json"],
      capture_output=True, text=True, cwd=REPO, env=env, timeout=600,
      check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  rows = {row["name"]: row for row in json.loads(
      done.stdout.strip().splitlines()[-1])["rows"]}
  selector = json.loads(before)
  auc = rows["selector (comedy vs tragedy), AUC"]
  assert auc["per_seed"] == [selector["auc"]] and auc["mean"] == selector[
      "auc"]
  assert rows["its linear probe alone"]["per_seed"] == [
      selector["probe"]["auc"]]
  sentiment = json.loads(
      (workdir / "heads" / "sentiment" / "metrics.json").read_text())
  assert rows["sentiment (VADER), Pearson"]["per_seed"] == [
      sentiment["pearson"]]
  # Nothing was retrained: the finished head's metrics were not rewritten.
  assert saved.stat().st_mtime_ns == written
