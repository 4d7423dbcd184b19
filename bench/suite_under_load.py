"""The test suite (or part of it) while other work keeps every core busy.

    python -m bench.suite_under_load                      # the whole suite, 3 runs
    python -m bench.suite_under_load --runs=10 --busy=2 -- tests/test_multihost.py

A test that passes only on a quiet machine fails for someone: CI and a new
user's clone run beside other work. This starts `--busy` processes that spin
on the CPU (one pinned to each core in turn, where the OS allows pinning),
runs `python -m pytest -x -q [pytest args]` `--runs` times in a row, and
prints each run's outcome and time, then one line: `N passed, N failed`
(runs, not tests). The busy processes are stopped whatever happens.
"""

import argparse
import os
import re
import subprocess
import sys
import time

_SPIN = "while True: pass"


def _busy(count: int) -> list:
  cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
      else []
  procs = []
  for i in range(count):
    proc = subprocess.Popen([sys.executable, "-c", _SPIN])
    if cores:
      os.sched_setaffinity(proc.pid, {cores[i % len(cores)]})
    procs.append(proc)
  return procs


def _summary(output: str) -> str:
  """pytest's closing line (`12 passed, 1 failed in 3.2s`), or the last."""
  lines = [l for l in output.strip().splitlines() if l.strip()]
  for line in reversed(lines):
    if re.search(r"\d+ (passed|failed|error)", line):
      return line.strip("= ")
  return lines[-1] if lines else "(no output)"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--runs", type=int, default=3)
  parser.add_argument("--busy", type=int, default=2,
                      help="processes that keep a core busy each")
  parser.add_argument("--log_dir", default="",
                      help="keep each run's whole output here")
  parser.add_argument("pytest_args", nargs="*")
  args = parser.parse_args(argv)
  if args.log_dir:
    os.makedirs(args.log_dir, exist_ok=True)
  busy = _busy(args.busy)
  passed = failed = 0
  try:
    for run in range(1, args.runs + 1):
      start = time.perf_counter()
      proc = subprocess.run(
          [sys.executable, "-m", "pytest", "-x", "-q", *args.pytest_args],
          capture_output=True, text=True, check=False)
      seconds = time.perf_counter() - start
      output = proc.stdout + proc.stderr
      if args.log_dir:
        with open(os.path.join(args.log_dir, f"run{run}.log"), "w",
                  encoding="utf-8") as f:
          f.write(output)
      ok = proc.returncode == 0
      passed, failed = passed + ok, failed + (not ok)
      print(f"run {run}: {'pass' if ok else 'FAIL'} in {seconds:.0f} s "
            f"with {args.busy} busy processes: {_summary(output)}", flush=True)
  finally:
    for proc in busy:
      proc.kill()
      proc.wait()
  print(f"{passed} passed, {failed} failed")
  return 0 if failed == 0 else 1


if __name__ == "__main__":
  sys.exit(main())
