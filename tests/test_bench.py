"""The sampling benchmark runs its peers (Hugging Face, CTranslate2) here."""

import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_sampling_benchmark_prints_ours_against_hf_and_ctranslate2():
  proc = subprocess.run(
      [sys.executable, "-m", "bench.sampling", "--size=tiny",
       "--impl=ours,ours-int8,hf,ct2", "--batch=2", "--prompt_tokens=8",
       "--new_tokens=4", "--repeats=1", "--copy_mb=8"],
      cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = {}
  for line in proc.stdout.splitlines():
    fields = line.split()
    if len(fields) == 7 and fields[1] == "2":
      rows[fields[0]] = float(fields[2])
  assert set(rows) == {"ours", "ours-int8", "hf", "ct2-float32",
                       "ct2-int8"}, proc.stdout
  assert all(speed > 0 for speed in rows.values())
  ratios = re.search(r"batch 2: ours / hf = ([\d.]+)x, ours / ct2-float32 = "
                     r"([\d.]+)x, ours / ct2-int8 = ([\d.]+)x", proc.stdout)
  assert ratios, proc.stdout
  for peer, printed in zip(("hf", "ct2-float32", "ct2-int8"),
                           ratios.groups()):
    assert abs(float(printed) - rows["ours"] / rows[peer]) < 0.02 * float(
        printed) + 0.01
  int8 = re.search(r"batch 2: ours-int8 / hf = [\d.]+x, ours-int8 / "
                   r"ct2-float32 = [\d.]+x, ours-int8 / ct2-int8 = ([\d.]+)x",
                   proc.stdout)
  assert int8, proc.stdout
  assert abs(float(int8.group(1)) - rows["ours-int8"] / rows["ct2-int8"]) < (
      0.02 * float(int8.group(1)) + 0.01)
