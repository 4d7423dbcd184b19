"""Training over two processes on 127.0.0.1, as over two hosts.

`python -m launch.finetune` runs as a user starts it on each host: two
processes of 4 simulated CPU devices each train one model with FSDP over
the 8 (JAX's distributed runtime, gloo collectives), against one process
with 8 devices. They share the tests' compilation cache (conftest), so each
program compiles once.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
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


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def start(corpus, workdir, processes, *flags, ids=None):
  """`processes` finetune processes over 8 CPU devices in all (Popen); only
  those in `ids` where given."""
  cmd = [sys.executable, "-m", "launch.finetune",
         "--config=configs/gpt2_tiny.py", f"--workdir={workdir}",
         f"--config.data={corpus}", "--config.seq_len=32",
         "--config.batch_size=8", "--config.accumulate=1",
         "--config.val_every=0", "--config.eval_at_start=false",
         "--config.progress=false", f"--config.total_steps={STEPS}",
         "--config.mesh.fsdp=-1", *flags]
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": os.environ.get("XLA_FLAGS", "") +
                      f" --xla_force_host_platform_device_count={8 // processes}"}
  port = _free_port()
  distributed = lambda i: [] if processes == 1 else [
      f"--coordinator_address=127.0.0.1:{port}",
      f"--num_processes={processes}", f"--process_id={i}"]
  return [subprocess.Popen(cmd + distributed(i), cwd=REPO, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
          for i in (range(processes) if ids is None else ids)]


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
def one_process(corpus, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("one") / "run")
  (rc, summary, err), = finish(start(corpus, workdir, 1))
  assert rc == 0, err[-3000:]
  assert summary["steps"] == STEPS
  return workdir


def _stderrs(results) -> str:
  return "\n".join(f"process {i} (status {rc}): {err[-2000:]}"
                   for i, (rc, _, err) in enumerate(results))


@pytest.mark.slow
def test_two_processes_train_like_one_through_a_sigterm(corpus, one_process,
                                                       tmp_path):
  """Two processes train; SIGTERM to one stops both at the same step, and
  started again they finish the run: every step's loss and gradient norm
  equal the one-process run's to 1e-5 (the steps before the stop and after
  the restart alike)."""
  workdir = str(tmp_path / "two")
  # A checkpoint after every step slows the run enough to stop it midway.
  flags = ("--config.save_every=1",)
  procs = start(corpus, workdir, 2, *flags)
  deadline = time.time() + 300
  while not (os.path.exists(os.path.join(workdir, "metrics.jsonl")) and
             len(train.read_metrics(workdir)) >= 2):
    assert all(p.poll() is None for p in procs), _stderrs(finish(procs))
    assert time.time() < deadline, "no second step in 300 s"
    time.sleep(0.02)
  procs[1].send_signal(signal.SIGTERM)
  results = finish(procs)
  for i, (rc, summary, err) in enumerate(results):
    assert rc == 143 and summary["preempted"], _stderrs(results)
    # Each process read its half of every batch.
    assert f"process {i} of 2 reads rows {4 * i}-{4 * i + 3} of each batch " \
           "of 8" in err
  # Both stopped at the same step and saved it, in one checkpoint.
  stopped = {summary["steps"] for _, summary, _ in results}
  assert len(stopped) == 1 and (stopped := stopped.pop()) < STEPS
  saved = os.listdir(os.path.join(workdir, "checkpoints"))
  assert str(stopped) in saved and all(int(s) <= stopped for s in saved)
  assert _losses(workdir)[0] == list(range(1, stopped + 1))

  results = finish(start(corpus, workdir, 2, *flags))
  for rc, summary, err in results:
    assert rc == 0, _stderrs(results)
    assert f"resumed {workdir} at step {stopped}" in err
    assert summary["steps"] == STEPS
  # One metrics.jsonl, each step once.
  steps, two = _losses(workdir)
  assert steps == list(range(1, STEPS + 1))
  _, one = _losses(one_process)
  np.testing.assert_allclose(two, one, rtol=1e-5)
  assert abs(one[-1, 0] - one[0, 0]) > 0.05  # it trained


# ---- the roll call before JAX's coordinator ------------------------------------


def _roll_call_threads(address, calls):
  """Runs distributed.roll_call(address, *args) for each args in `calls` at
  once; returns each one's outcome: None (it returned) or its error line."""
  from gpt2 import distributed  # pylint: disable=import-outside-toplevel
  from gpt2.errors import UserError  # pylint: disable=import-outside-toplevel
  outcomes = [None] * len(calls)

  def call(i):
    try:
      distributed.roll_call(address, *calls[i])
    except UserError as e:
      outcomes[i] = str(e)

  threads = [threading.Thread(target=call, args=(i,))
             for i in range(len(calls))]
  for t in threads:
    t.start()
  for t in threads:
    t.join(60)
  assert not any(t.is_alive() for t in threads)
  return outcomes


def test_roll_call_lets_a_full_run_go_and_names_who_is_missing():
  address = f"127.0.0.1:{_free_port()}"
  # Members may come before process 0 listens: they keep knocking.
  assert _roll_call_threads(address, [(3, 2, 20), (3, 1, 20), (3, 0, 20)]) \
      == [None, None, None]
  # Then the port is free again, for JAX's coordinator.
  with socket.socket() as s:
    s.bind(("127.0.0.1", int(address.rsplit(":", 1)[1])))

  address = f"127.0.0.1:{_free_port()}"
  zero, one = _roll_call_threads(address, [(3, 0, 2), (3, 1, 2)])
  assert zero == (f"process 2 of 3 never arrived at {address} within 2 s "
                  "(--initialization_timeout); start each with the same "
                  "--coordinator_address and --num_processes and its own "
                  "--process_id")
  assert one == zero  # process 1 hears why the run did not start

  address = f"127.0.0.1:{_free_port()}"
  alone, = _roll_call_threads(address, [(2, 1, 1)])
  assert alone == (f"process 0 (the coordinator at {address}) did not answer "
                   "process 1 within 1 s (--initialization_timeout); is it "
                   "started, and is the address one this host reaches?")


def test_roll_call_refuses_processes_started_with_other_flags():
  address = f"127.0.0.1:{_free_port()}"
  zero, one = _roll_call_threads(address, [(2, 0, 20), (3, 1, 20)])
  assert zero == one == ("process 1 was started with --num_processes=3, "
                         "process 0 with --num_processes=2")
  address = f"127.0.0.1:{_free_port()}"
  outcomes = _roll_call_threads(address, [(3, 0, 20), (3, 1, 20), (3, 1, 20)])
  said = "two processes were started with --process_id=1"
  assert outcomes[0] == said and said in outcomes[1:]
  # Someone else on the port: one line, no hang.
  with socket.socket() as other:
    other.bind(("127.0.0.1", 0))
    other.listen(1)
    address = f"127.0.0.1:{other.getsockname()[1]}"
    threading.Thread(target=lambda: other.accept()[0].sendall(
        b"HTTP/1.1 400 Bad Request\r\n\r\n"), daemon=True).start()
    outcome, = _roll_call_threads(address, [(2, 1, 20)])
  assert outcome == (f"the coordinator at {address} answered process 1 with "
                     "something other than this run's roll call: is another "
                     "program listening there?")


def test_roll_call_outlasts_connections_that_say_nothing_of_the_run():
  from gpt2 import distributed  # pylint: disable=import-outside-toplevel
  address = f"127.0.0.1:{_free_port()}"
  port = int(address.rsplit(":", 1)[1])
  outcomes = []
  zero = threading.Thread(target=lambda: outcomes.append(
      _roll_call_threads(address, [(2, 0, 20)])))
  zero.start()
  # A port scan: connect and go, without a word (the first connection that
  # gets through also tells that process 0 listens) ...
  deadline = time.monotonic() + 20
  while True:
    try:
      socket.create_connection(("127.0.0.1", port), timeout=1).close()
      break
    except OSError:
      assert time.monotonic() < deadline, "process 0 never listened"
      time.sleep(0.02)
  # ... and a client of some other protocol, which hears nothing back.
  with socket.create_connection(("127.0.0.1", port), timeout=5) as other:
    other.sendall(b"GET / HTTP/1.1\r\n\r\n")
    assert other.recv(100) == b""  # closed by process 0
  distributed.roll_call(address, 2, 1, 20)  # the run still starts
  zero.join(30)
  assert outcomes == [[None]]

  # The other way round: something on the port that takes each knock and
  # hangs up without a word. A member knocks again until its deadline.
  done = threading.Event()
  with socket.socket() as silent:
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    silent.settimeout(0.05)
    address = f"127.0.0.1:{silent.getsockname()[1]}"

    def hang_up():
      while not done.is_set():
        try:
          silent.accept()[0].close()
        except socket.timeout:
          pass

    listener = threading.Thread(target=hang_up)
    listener.start()
    started = time.monotonic()
    try:
      outcome, = _roll_call_threads(address, [(2, 1, 1)])
    finally:
      done.set()
      listener.join(5)
    assert time.monotonic() - started < 5  # not the 10 s grace of a reply
  assert outcome == (f"process 0 (the coordinator at {address}) did not "
                     "answer process 1 within 1 s (--initialization_timeout); "
                     "is it started, and is the address one this host "
                     "reaches?")


def test_roll_call_on_a_port_in_use_is_one_line():
  with socket.socket() as taken:
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    address = f"127.0.0.1:{taken.getsockname()[1]}"
    outcome, = _roll_call_threads(address, [(2, 0, 20)])
  assert outcome == (f"process 0 cannot listen at {address}: the port is in "
                     "use (another run, or a process of an earlier one still "
                     "running?)")


def test_roll_call_names_an_id_out_of_range():
  address = f"127.0.0.1:{_free_port()}"
  zero, five = _roll_call_threads(address, [(3, 0, 20), (3, 5, 20)])
  assert zero == five == ("a process reported --process_id=5; with "
                          "--num_processes=3 the others are 1..2")


def test_the_distributed_flags_are_checked_before_any_connection():
  # (A timeout of 1 s each: were a check missing, the call would fail fast
  # on something else instead of waiting minutes for a run.)
  # pylint: disable=import-outside-toplevel
  from gpt2 import distributed
  from gpt2.errors import UserError
  for bad in ("localhost", "localhost:", ":8476", "localhost:port"):
    for process_id in (0, 1):
      with pytest.raises(UserError) as e:
        distributed.roll_call(bad, 2, process_id, 1)
      assert str(e.value) == f"--coordinator_address={bad} must be HOST:PORT"
  address = f"127.0.0.1:{_free_port()}"
  together = ("--coordinator_address, --num_processes and --process_id go "
              "together: give all three or none")
  for partial in (dict(coordinator_address=address),
                  dict(num_processes=2, process_id=0),
                  dict(coordinator_address=address, process_id=1)):
    with pytest.raises(UserError) as e:
      distributed.start(**partial, timeout_s=1)
    assert str(e.value) == together
  for process_id in (2, -1):
    with pytest.raises(UserError) as e:
      distributed.start(address, 2, process_id, timeout_s=1)
    assert str(e.value) == (f"--process_id={process_id} must be in 0..1 "
                            "(--num_processes=2)")
  for timeout_s in (0, -5):
    with pytest.raises(UserError) as e:
      distributed.start(address, 2, 0, timeout_s=timeout_s)
    assert str(e.value) == (f"--initialization_timeout={timeout_s} must be "
                            "more than 0 seconds")


@pytest.mark.slow
def test_a_process_that_never_comes_is_one_error_line(corpus, tmp_path):
  """launch.finetune's process 0 of 2, alone: within its timeout it stops
  with one `error:` line naming process 1, status 2, no JAX abort."""
  (rc, _, err), = finish(start(corpus, str(tmp_path / "run"), 2,
                               "--initialization_timeout=3", ids=[0]),
                         timeout=120)
  assert rc == 2, err[-3000:]
  errors = [l for l in err.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and "process 1 of 2 never arrived at 127.0.0.1:" \
      in errors[0] and "within 3 s (--initialization_timeout)" in errors[0], err
  assert "Check failure" not in err and "Traceback" not in err
