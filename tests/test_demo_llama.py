"""The demo on a Llama-style generator (`launch.demo --config.family=llama`).

A module of its own, not test_demo's: pytest-xdist hands out whole
modules, so this runs beside the GPT-2 demo's fixture on the other worker
instead of after it on the same one.
"""

import json
import os

import pytest

from tests.test_demo import _demo


@pytest.mark.slow
def test_demo_trains_a_llama_style_generator_through_every_stage(tmp_path):
  """`--config.family=llama`: the generator is a Llama-style decoder
  (configs/demo.py:llama) on the same corpus and tokenizer, and the heads
  and the bot pass run on it unchanged. As short as every stage allows (2
  generator steps, 2 per head, 40 answers): what it learns is the GPT-2
  test's above."""
  # pylint: disable=import-outside-toplevel
  from configs import demo as demo_config
  from gpt2 import train, weights
  from gpt2.errors import UserError
  from gpt2.tokenizer import Tokenizer
  from launch.demo import ASKS
  workdir = tmp_path / "demo"
  done = _demo(workdir, "--config.family=llama", steps=2, head_steps=2,
               head_examples=40, candidates=2)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "generator: 2 steps of a llama" in done.stdout
  for name in ("feed.html", "loss.png", "mood.png", "demo.json"):
    assert os.path.getsize(workdir / name) > 0, name
  for kind in ("selector", "sentiment"):
    assert (workdir / "heads" / kind / "metrics.json").exists(), kind
  with open(workdir / "model" / "config.json", encoding="utf-8") as f:
    assert json.load(f)["model_type"] == "llama"
  model = weights.load_model(str(workdir / "model"))
  assert model.config.n_kv_head < model.config.n_head  # grouped-query
  # The corpus's own BPE (the one the run trained), ending with its
  # <|endoftext|>, which the model's config names.
  trained = Tokenizer.from_dir(str(workdir / "train" / "data"))
  assert model.tokenizer.vocab_size == trained.vocab_size == 2048
  assert model.tokenizer.eot_token == "<|endoftext|>"
  assert model.config.eos_token_ids[0] == trained.eot_id
  entries = [json.loads(line) for line in
             (workdir / "feed.jsonl").read_text().splitlines()]
  assert len(entries) == len(ASKS) + 1
  # Two steps in, what it writes has no post's shape yet (each candidate's
  # verdict is "empty"), but it is the tokenizer's text.
  raw = [c["raw"] for e in entries for c in e["candidates"]]
  assert len(raw) >= 2 * len(entries) and all(r.strip() for r in raw)

  # Its workdir is not resumed as a GPT-2's, whose sizes its are: the
  # demo's generator stage, run again with the default family.
  config = demo_config.get_config()
  config.data = str(workdir / "corpus" / "documents.jsonl")
  with pytest.raises(UserError, match=r"holds a checkpoint of a different "
                     r"model \(model_type=llama, n_layer=4"):
    train.train_and_evaluate(config, str(workdir / "train"))
  # Another family is one line, before anything is written.
  done = _demo(tmp_path / "other", "--config.family=mamba")
  assert done.returncode == 2
  assert done.stderr.strip().splitlines()[-1] == (
      "error: --config.family='mamba' is not one of gpt2, llama")
  assert not (tmp_path / "other").exists()
