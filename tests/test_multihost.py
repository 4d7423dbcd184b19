"""Training over two processes on 127.0.0.1, as over two hosts.

`python -m launch.finetune` runs as a user starts it on each host: two
processes of 4 simulated CPU devices each train one model with FSDP over
the 8 (JAX's distributed runtime, gloo collectives), against one process
with 8 devices. They share a compilation cache, so each program compiles
once.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from gpt2 import data, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 8


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """A small corpus in token shards (two comedies, a 300-token BPE)."""
  text = tmp_path_factory.mktemp("text")
  plays = os.path.join(data.default_corpus(), "comedies")
  for name in sorted(os.listdir(plays))[:2]:
    with open(os.path.join(plays, name), encoding="utf-8") as f:
      (text / name).write_text(f.read()[:60000], encoding="utf-8")
  out = str(tmp_path_factory.mktemp("tokens"))
  data.prepare(str(text), out, vocab_size=300, val_fraction=0.1,
               progress=False)
  return out


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  return str(tmp_path_factory.mktemp("jax_cache"))


# JAX's error when a process of a distributed run never shows up.
_NO_PEER = "Getting local topologies failed"


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def start(corpus, cache, workdir, processes, *flags):
  """`processes` finetune processes over 8 CPU devices in all (Popen)."""
  cmd = [sys.executable, "-m", "launch.finetune",
         "--config=configs/gpt2_tiny.py", f"--workdir={workdir}",
         f"--config.data={corpus}", "--config.seq_len=32",
         "--config.batch_size=8", "--config.accumulate=1",
         "--config.val_every=0", "--config.eval_at_start=false",
         "--config.progress=false", f"--config.total_steps={STEPS}",
         "--config.mesh.fsdp=-1", *flags]
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": "--xla_force_host_platform_device_count="
                      f"{8 // processes}",
         "JAX_COMPILATION_CACHE_DIR": cache,
         "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
         "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
  port = _free_port()
  distributed = lambda i: [] if processes == 1 else [
      f"--coordinator_address=127.0.0.1:{port}",
      f"--num_processes={processes}", f"--process_id={i}"]
  return [subprocess.Popen(cmd + distributed(i), cwd=REPO, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True) for i in range(processes)]


def finish(procs, timeout=300):
  """[(returncode, summary or None, stderr)] once every process ended."""
  out = []
  try:
    for proc in procs:
      stdout, stderr = proc.communicate(timeout=timeout)
      lines = stdout.strip().splitlines()
      out.append((proc.returncode, json.loads(lines[-1]) if lines else None,
                  stderr))
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
        proc.communicate()
  return out


def _losses(workdir):
  records = train.read_metrics(workdir)
  return [r["step"] for r in records], np.array(
      [(r["loss"], r["grad_norm"]) for r in records])


@pytest.fixture(scope="module")
def one_process(corpus, cache, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("one") / "run")
  (rc, summary, err), = finish(start(corpus, cache, workdir, 1))
  assert rc == 0, err[-3000:]
  assert summary["steps"] == STEPS
  return workdir


def test_two_processes_train_like_one_through_a_sigterm(corpus, cache,
                                                       one_process, tmp_path):
  """Two processes train; SIGTERM to one stops both at the same step, and
  started again they finish the run: every step's loss and gradient norm
  equal the one-process run's to 1e-5 (the steps before the stop and after
  the restart alike)."""
  workdir = str(tmp_path / "two")
  # A checkpoint after every step slows the run enough to stop it midway.
  flags = ("--config.save_every=1",)
  procs = start(corpus, cache, workdir, 2, *flags)
  deadline = time.time() + 300
  while not (os.path.exists(os.path.join(workdir, "metrics.jsonl")) and
             len(train.read_metrics(workdir)) >= 2):
    assert all(p.poll() is None for p in procs), finish(procs)[0][2][-3000:]
    assert time.time() < deadline, "no second step in 300 s"
    time.sleep(0.02)
  procs[1].send_signal(signal.SIGTERM)
  results = finish(procs)
  for i, (rc, summary, err) in enumerate(results):
    assert rc == 143 and summary["preempted"], err[-3000:]
    # Each process read its half of every batch.
    assert f"process {i} of 2 reads rows {4 * i}-{4 * i + 3} of each batch " \
           "of 8" in err
  # Both stopped at the same step and saved it, in one checkpoint.
  stopped = {summary["steps"] for _, summary, _ in results}
  assert len(stopped) == 1 and (stopped := stopped.pop()) < STEPS
  saved = os.listdir(os.path.join(workdir, "checkpoints"))
  assert str(stopped) in saved and all(int(s) <= stopped for s in saved)
  assert _losses(workdir)[0] == list(range(1, stopped + 1))

  results = finish(start(corpus, cache, workdir, 2, *flags))
  if any(_NO_PEER in err for _, _, err in results):
    # Seen once in a full run of the suite on 2 cores: a restarted pair where one
    # process never reached JAX's coordinator within its 2 minutes. Not
    # what this test is about (the stop, the resume): start the pair again,
    # once, and say so.
    print("the restarted pair did not meet at the coordinator; once more")
    results = finish(start(corpus, cache, workdir, 2, *flags))
  for rc, summary, err in results:
    assert rc == 0, "\n".join(f"process {j}: {e[-2000:]}"
                              for j, (_, _, e) in enumerate(results))
    assert f"resumed {workdir} at step {stopped}" in err
    assert summary["steps"] == STEPS
  # One metrics.jsonl, each step once.
  steps, two = _losses(workdir)
  assert steps == list(range(1, STEPS + 1))
  _, one = _losses(one_process)
  np.testing.assert_allclose(two, one, rtol=1e-5)
  assert abs(one[-1, 0] - one[0, 0]) > 0.05  # it trained
