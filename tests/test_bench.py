"""The sampling benchmark runs its peers (Hugging Face, CTranslate2) here,
for a GPT-2 and for a Llama-family model; the GPU benchmark builds its
Llama rows on a CPU."""

import json
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = ("hf", "ct2-float32", "ct2-int8")


def _run_sampling(*args) -> str:
  proc = subprocess.run(
      [sys.executable, "-m", "bench.sampling", "--size=tiny",
       "--impl=ours,ours-int8,hf,ct2", "--prompt_tokens=8",
       "--new_tokens=4", "--repeats=1", "--copy_mb=8", *args],
      cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


def _rows(stdout: str, family: str) -> dict:
  """{(impl, batch): tokens/s} of the table's rows."""
  rows = {}
  for line in stdout.splitlines():
    fields = line.split()
    if len(fields) == 8 and fields[0] == family and fields[2].isdigit():
      rows[fields[1], int(fields[2])] = float(fields[3])
  return rows


def _close(printed: str, ratio: float) -> bool:
  return abs(float(printed) - ratio) < 0.02 * float(printed) + 0.01


def _check_ratios(stdout: str, family: str, rows: dict, batch: int) -> None:
  """Each of ours' and ours-int8's ratio lines at `batch` names every peer
  and agrees with the rows."""
  for mine in ("ours", "ours-int8"):
    line = re.search(
        rf"^{family} batch {batch}: " + ", ".join(
            rf"{mine} / {peer} = ([\d.]+)x" for peer in PEERS) + "$",
        stdout, re.M)
    assert line, stdout
    for peer, printed in zip(PEERS, line.groups()):
      assert _close(printed, rows[mine, batch] / rows[peer, batch])


def test_a_llama_decoding_step_reads_the_cache_of_its_key_value_heads():
  """The roofline's bytes for SmolLM2-135M's shape: its 134,515,008
  parameters (the released count, the head tied) and a cache of 3 key/value
  heads of 64 dims in each of 30 layers, not 576 dims."""
  from bench.common import model_config, step_bytes  # pylint: disable=import-outside-toplevel
  config = model_config("llama", "smollm2-135m")
  assert config.num_params() == 134_515_008
  slots = 128 + 8 * (256 + 1) / 2  # the prompt's once, each row's own
  cache = 2 * 30 * slots * 3 * 64 * 4
  assert step_bytes(config, 8, 128, 256) == 134_515_008 * 4 + cache
  assert step_bytes(config, 8, 128, 256, 1) == 134_515_008 + cache


@pytest.mark.slow
def test_sampling_benchmark_prints_ours_against_hf_and_ctranslate2():
  stdout = _run_sampling("--batch=2")
  rows = _rows(stdout, "gpt2")
  assert set(rows) == {(impl, 2) for impl in ("ours", "ours-int8") + PEERS
                       }, stdout
  assert all(speed > 0 for speed in rows.values())
  _check_ratios(stdout, "gpt2", rows, 2)


@pytest.mark.slow
def test_sampling_benchmark_runs_a_llama_beside_its_peers():
  """A tiny Llama: every peer's row at batch 1 and 8, the ratios, and the
  two targets with the ratio each is judged by."""
  stdout = _run_sampling("--family=llama", "--batch=1,8")
  assert stdout.startswith("llama tiny float32"), stdout
  rows = _rows(stdout, "llama")
  assert set(rows) == {(impl, batch) for impl in ("ours", "ours-int8") + PEERS
                       for batch in (1, 8)}, stdout
  assert all(speed > 0 for speed in rows.values())
  for batch in (1, 8):
    _check_ratios(stdout, "llama", rows, batch)
  targets = re.findall(
      r"^llama target (\S+) / (\S+) >= ([\d.]+)x at batch (\d+): ([\d.]+)x, "
      r"(met|NOT met)$", stdout, re.M)
  assert [t[:4] for t in targets] == [("ours", "hf", "2.0", "8"),
                                      ("ours-int8", "ct2-int8", "1.3", "1")]
  for mine, peer, least, batch, printed, verdict in targets:
    ratio = rows[mine, int(batch)] / rows[peer, int(batch)]
    assert _close(printed, ratio)
    assert (verdict == "met") == (float(printed) >= float(least))


@pytest.mark.slow
def test_gpu_benchmark_builds_llama_sampling_rows():
  """bench.gpu's Llama rows (Llama-3.2-1B's on a GPU) on a tiny shape, on
  this CPU: in bfloat16 and int8, named by family, against a roofline. In a
  process of its own: bench.gpu's flags would clash with another bench
  module's imported by a test here."""
  script = (
      "import json\n"
      "from bench import gpu\n"
      "plan = (('llama', 'tiny', (1, 2)),)\n"
      "bounds = {'bandwidth': 1e10}\n"
      "rows = gpu.sampling_rows(bounds, plan, 8, 4)\n"
      "rows += gpu.sampling_rows(bounds, (('llama', 'tiny', (1,)),), 8, 4,"
      " 'int8')\n"
      "print(json.dumps(rows))\n")
  proc = subprocess.run(
      [sys.executable, "-c", script], cwd=REPO, capture_output=True,
      text=True, timeout=300, check=False,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = json.loads(proc.stdout.splitlines()[-1])
  assert [(r["job"], r["family"], r["size"], r["batch"]) for r in rows] == [
      ("sampling", "llama", "tiny", 1), ("sampling", "llama", "tiny", 2),
      ("sampling-int8", "llama", "tiny", 1)]
  for r in rows:
    assert r["tokens_per_s"] > 0 and r["roofline_fraction"] > 0
