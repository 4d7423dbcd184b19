"""`python -m launch.sample` end to end on a tiny saved model."""

import json
import os
import subprocess
import sys

import jax
import pytest

from gpt2 import model as M
from gpt2 import sampling
from gpt2 import weights as W
from gpt2.tokenizer import Tokenizer
from tests import hf_helpers

TEXT = ("The woods are lovely, dark and deep, but I have promises to keep, "
        "and miles to go before I sleep. ") * 8
PROMPT = "miles to go"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("tiny_model"))
  tok = Tokenizer.train([TEXT], 300)
  config = M.GPT2Config.preset("tiny", vocab_size=tok.vocab_size)
  W.save_model(directory, config, M.init_params(config, jax.random.PRNGKey(0)),
               tok)
  return directory


def _run(*args, **env_vars):
  env = dict(os.environ, JAX_PLATFORMS="cpu", **env_vars)
  return subprocess.run([sys.executable, "-m", "launch.sample", *args],
                        capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def greedy_json(model_dir):
  proc = _run("--model", model_dir, "--prompt", PROMPT, "--max_new_tokens",
              "12", "--seed", "3", "--top_k", "1", "--num_samples", "2",
              "--json")
  assert proc.returncode == 0, proc.stderr
  return [json.loads(line) for line in proc.stdout.splitlines()]


@pytest.mark.slow
def test_json_greedy_candidates_match_the_library(greedy_json, model_dir):
  assert len(greedy_json) == 2
  loaded = W.load_model(model_dir)
  want = sampling.sample(loaded.config, loaded.params, loaded.tokenizer,
                         [PROMPT], num_samples=2, max_new_tokens=12, seed=3,
                         top_k=1)
  for line, result in zip(greedy_json, want):
    assert {"text", "tokens", "mean_logprob"} <= set(line)
    assert line["tokens"] == result.tokens and line["text"] == result.text
    assert abs(line["mean_logprob"] - result.mean_logprob) < 1e-4
    assert all(0 <= t < loaded.config.vocab_size for t in line["tokens"])
  # Greedy: the two candidates are the same.
  assert greedy_json[0]["tokens"] == greedy_json[1]["tokens"]


@pytest.mark.slow
def test_weights_int8_decodes_as_the_library_does(model_dir):
  proc = _run("--model", model_dir, "--prompt", PROMPT, "--max_new_tokens",
              "12", "--top_k", "1", "--weights", "int8", "--json")
  assert proc.returncode == 0, proc.stderr
  (line,) = [json.loads(l) for l in proc.stdout.splitlines()]
  loaded = W.load_model(model_dir)
  (want,) = sampling.sample(loaded.config, loaded.params, loaded.tokenizer,
                            [PROMPT], max_new_tokens=12, top_k=1,
                            weights="int8")
  assert line["tokens"] == want.tokens
  assert abs(line["mean_logprob"] - want.mean_logprob) < 1e-4


@pytest.mark.slow
def test_stream_types_the_same_text_from_the_hub_name(greedy_json, model_dir,
                                                     tmp_path):
  """Streamed, the same greedy text; and the model named as a Hugging Face
  Hub model (`--model gpt2`), found in a Hub cache offline."""
  loaded = W.load_model(model_dir)
  W.export_hf(str(tmp_path / "hf"), loaded.config, loaded.params,
              loaded.tokenizer)
  hf_helpers.write_hub_cache(tmp_path / "hub", "gpt2", tmp_path / "hf")
  proc = _run("--model", "gpt2", "--prompt", PROMPT, "--max_new_tokens",
              "12", "--top_k", "1", "--stream", HF_HUB_OFFLINE="1",
              HF_HUB_CACHE=str(tmp_path / "hub"))
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout == greedy_json[0]["text"] + "\n"


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--max_new_tokens", "0"], "error: --max_new_tokens must be >= 1"),
    (["--top_p", "1.5"], "error: top_p must be in (0, 1]"),
    (["--prompt", ""], "error: prompt 0 is empty"),
    (["--max_new_tokens", "500"], "error: max_new_tokens=500 needs 16 steps"),
    (["--max_new_tokens", "500", "--max_steps", "1"],
     "error: max_new_tokens must be between 1"),
])
def test_bad_input_prints_one_line_without_traceback(model_dir, args,
                                                     message):
  flags = {"--prompt": PROMPT}
  flags.update(dict(zip(args[::2], args[1::2])))
  argv = ["--model", model_dir] + [x for kv in flags.items() for x in kv]
  proc = _run(*argv)
  assert proc.returncode == 2
  assert "Traceback" not in proc.stderr
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and errors[0].startswith(message), proc.stderr


def test_missing_model_directory(tmp_path):
  proc = _run("--model", str(tmp_path / "nope"), "--prompt", PROMPT)
  assert proc.returncode == 2 and "Traceback" not in proc.stderr
  assert "does not exist" in proc.stderr
