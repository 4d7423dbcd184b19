"""Tuning the generator on its operator's choices (launch.tune_preferences,
gpt2.dpo): a tiny model that says "purple elephant" in a share of its
answers, a real state file in which the operator always turned the phrase
down, and the share measured on held-out asks before and after; with the
decisions shuffled, the share must not fall.

The noise of the share: each measurement samples 16 held-out asks x 16
candidates = 256 answers with the same seeds before and after, so its
binomial standard error near the world's ~27% is sqrt(0.27 * 0.73 / 256) =
2.8 points and that of a before/after difference 3.9 points; the shuffled
control may fall by at most three of those (12 points).

A Llama-family model (a tiny one with grouped-query attention) is tuned
the same way, LoRA on its own projections, and resumed as GPT-2 is.
"""

import hashlib
import json
import math
import os

import jax
import numpy as np
import pytest

from bot.corpus import preferences as P
from configs import preferences as preference_configs
from gpt2 import dpo, train
from gpt2.errors import UserError
from bench import preference_world as world

N, PROMPTS = world.N, world.PROMPTS


@pytest.fixture(scope="module")
def world_model(tmp_path_factory):
  """The world's corpus and a tiny GPT-2 trained on it."""
  return world.train_model(str(tmp_path_factory.mktemp("preference_world")))


def launch(model, data, workdir, expect_rc=0, **extra):
  done = world.tune(model, data, workdir, **extra)
  assert done.returncode == expect_rc, done.stderr[-3000:]
  return done


def digest(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


@pytest.mark.slow
def test_tuned_on_turned_down_phrase_says_it_a_tenth_as_often(world_model,
                                                              tmp_path):
  db, shuffled_db = str(tmp_path / "bot.db"), str(tmp_path / "shuffled.db")
  world.decisions(db)
  world.decisions(shuffled_db, shuffled=True)
  before_db = digest(db)
  tuned = str(tmp_path / "tuned")
  done = launch(world_model, db, tuned)
  assert digest(db) == before_db  # the bot's state is only read
  out = done.stdout.strip().splitlines()
  result = json.loads(out[-1])
  # The phrase was found in the turned-down texts, not given.
  assert "purple elephant" in result["phrases"]
  assert out[0].startswith("240 pairs over 120 prompts")
  before, after = result["before"], result["after"]
  assert before["candidates"] == after["candidates"] == N * PROMPTS
  assert before["turned_down_rate"] > 0.2
  assert after["turned_down_rate"] <= before["turned_down_rate"] / 10
  assert after["lm_loss"] <= before["lm_loss"] * 1.02
  assert after["preference_accuracy"] > before["preference_accuracy"]
  assert after["reward_margin"] > 0 and after["kl"] > 0
  assert before["reward_margin"] == 0 and before["kl"] == pytest.approx(0)
  assert out[-2].startswith("held out (") and "of candidates" in out[-2]
  with open(os.path.join(tuned, "metrics.json"), encoding="utf-8") as f:
    saved = json.load(f)
  assert saved["before"] == before and saved["after"] == after
  assert saved["steps"] == 60 and saved["train_pairs"] + \
      saved["test_pairs"] == 240
  records = train.read_metrics(tuned)
  assert [r["step"] for r in records] == list(range(1, 61))
  assert {"loss", "dpo_loss", "sft_loss", "reward_margin", "reward_accuracy",
          "lr", "grad_norm"} <= set(records[0])
  assert {"val_reward_accuracy", "val_kl", "val_lm_loss"} <= set(records[29])

  # The tuned model is a model every command takes: the LoRA adapters on
  # the model it started from, which is left as it was.
  from gpt2 import weights  # pylint: disable=import-outside-toplevel
  loaded = weights.load_model(tuned)
  assert loaded.kind == "lora" and loaded.step == 60
  base = weights.load_model(world_model)
  assert base.step == 300
  changed = jax.tree.leaves(jax.tree.map(
      lambda a, b: not np.allclose(a, b), loaded.params, base.params))
  assert any(changed)
  from bot import ml  # pylint: disable=import-outside-toplevel
  assert ml.LocalModel(loaded).provenance() == {
      "model": tuned, "model_step": 60, "heads": None}

  # Shuffled decisions: no preference to learn, and the share does not fall
  # by more than the noise (module docstring).
  done = launch(world_model, shuffled_db, str(tmp_path / "control"),
                phrases="purple elephant")
  control = json.loads(done.stdout.strip().splitlines()[-1])
  p = control["before"]["turned_down_rate"]
  noise = math.sqrt(2 * p * (1 - p) / (N * PROMPTS))
  assert control["before"]["turned_down_rate"] == before["turned_down_rate"]
  assert control["after"]["turned_down_rate"] >= p - 3 * noise
  assert control["after"]["lm_loss"] <= before["lm_loss"] * 1.02


def quick_config(model: str, data: str, steps: int, lr: float = 2e-4):
  c = preference_configs.get_config()
  c.model, c.data, c.seq_len, c.total_steps = model, data, 128, steps
  c.lr, c.batch_size, c.sft_batch_size = lr, 4, 4
  c.progress, c.async_checkpoints, c.val_every = False, False, 0
  c.save_every, c.period = 5, 10
  return c


def pairs_of(db: str):
  pairs, _ = P.read_pairs(db)
  train_pairs, test_pairs = P.split(pairs, 0.2)
  return ([(p.prompt, p.chosen, p.rejected) for p in train_pairs],
          [(p.prompt, p.chosen, p.rejected) for p in test_pairs[:8]])


@pytest.mark.slow
def test_a_resumed_run_ends_where_an_unbroken_one_does(world_model, tmp_path):
  db = str(tmp_path / "bot.db")
  world.decisions(db)
  train_pairs, test_pairs = pairs_of(db)
  straight = str(tmp_path / "straight")
  dpo.tune(quick_config(world_model, db, 10), straight, train_pairs,
           test_pairs)
  broken = str(tmp_path / "broken")
  first = dpo.tune(quick_config(world_model, db, 5), broken, train_pairs,
                   test_pairs)
  assert first["steps"] == 5
  again = dpo.tune(quick_config(world_model, db, 10), broken, train_pairs,
                   test_pairs)
  assert again["steps"] == 10 and again["before"] == first["before"]
  from gpt2 import checkpoints  # pylint: disable=import-outside-toplevel
  _, a = checkpoints.latest_params_in_workdir(straight)
  _, b = checkpoints.latest_params_in_workdir(broken)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)
  assert [r["step"] for r in train.read_metrics(broken)] == list(range(1, 11))
  # Another state file in the same workdir is one line, not a mixed run.
  other = str(tmp_path / "other.db")
  world.decisions(other, seed=2)
  with pytest.raises(UserError, match="was tuned with data="):
    dpo.tune(quick_config(world_model, other, 10), broken, train_pairs,
             test_pairs)


# A tuning run in a process of its own (`quick_config`, 10 steps), stopped by
# its parent's SIGTERM: after writing step 3 it says so and waits until the
# parent has sent the signal, so the signal lands mid-run at a known step.
PREEMPTED = """
import json, sys
from gpt2 import dpo, train
from tests.test_tune_preferences import quick_config
model, data, workdir, pairs = sys.argv[1:]
with open(pairs, encoding="utf-8") as f:
  train_pairs, test_pairs = json.load(f)
write = train.MetricsLog.write
def write_then_wait(self, record):
  write(self, record)
  if record["step"] == 3:
    print("at step 3", flush=True)
    sys.stdin.readline()
train.MetricsLog.write = write_then_wait
summary = dpo.tune(quick_config(model, data, 10), workdir, train_pairs,
                   test_pairs)
print(json.dumps(summary), flush=True)
"""


def tiny_model(directory: str) -> str:
  """A random tiny GPT-2 with a tokenizer of its own, saved: all the tuning
  needs (no world model: what is learned does not matter here)."""
  # pylint: disable=import-outside-toplevel
  from gpt2 import model as M
  from gpt2 import weights as W
  from gpt2.tokenizer import Tokenizer
  tok = Tokenizer.train([" ".join(world.WORDS + [world.PHRASE]) + " ?"] * 4,
                        300)
  config = M.GPT2Config.preset("tiny", vocab_size=tok.vocab_size,
                               n_positions=128)
  W.save_model(directory, config, M.init_params(config, jax.random.PRNGKey(0)),
               tok)
  return directory


LLAMA_EOT = "<|end_of_text|>"


def tiny_llama(directory: str) -> str:
  """`tiny_model`'s Llama-family twin: grouped-query attention (4 query
  heads on 2 key/value heads), a byte-level BPE with Llama 3's special
  tokens, and its end-of-text named only in tokenizer_config.json (as
  Qwen2.5's config.json names none), which the tuned run must record."""
  # pylint: disable=import-outside-toplevel
  from gpt2 import llama
  from gpt2 import weights as W
  from tests import hf_helpers
  tok = hf_helpers.byte_level_bpe(
      [" ".join(world.WORDS + [world.PHRASE]) + " ?"] * 4, 300,
      ["<|begin_of_text|>", LLAMA_EOT])
  config = llama.LlamaConfig(vocab_size=300, n_positions=128, n_embd=64,
                             n_layer=2, n_head=4, n_kv_head=2, n_inner=128,
                             tie_word_embeddings=True)
  W.save_model(directory, config,
               llama.init_params(config, jax.random.PRNGKey(0)), None)
  hf_helpers.write_tokenizer(directory, tok, LLAMA_EOT)
  return directory


def word_pairs(n: int = 16):
  """(prompt, chosen, rejected) triples: the rejected text always says the
  phrase; the last four are held out."""
  words = world.WORDS
  pairs = [(f"ask {i}: {world.QUESTIONS[i % 10]}",
            " ".join(words[i:i + 8]), f"the {world.PHRASE} {words[i]}")
           for i in range(n)]
  return pairs[:-4], pairs[-4:]


@pytest.mark.slow
def test_a_run_stopped_by_sigterm_resumes_to_the_unbroken_runs_adapters(
    tmp_path):
  # pylint: disable=import-outside-toplevel
  import signal, subprocess, sys
  from gpt2 import checkpoints
  from tests import processes
  model = tiny_model(str(tmp_path / "model"))
  data = str(tmp_path / "bot.db")  # only named in run.json: pairs are given
  train_pairs, test_pairs = word_pairs()
  pairs = str(tmp_path / "pairs.json")
  with open(pairs, "w", encoding="utf-8") as f:
    json.dump([train_pairs, test_pairs], f)
  straight = str(tmp_path / "straight")
  dpo.tune(quick_config(model, data, 10), straight, train_pairs, test_pairs)

  broken = str(tmp_path / "broken")
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  with processes.killed_on_exit(subprocess.Popen(
      [sys.executable, "-c", PREEMPTED, model, data, broken, pairs],
      cwd=repo, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)) as proc:
    assert proc.stdout.readline() == "at step 3\n", proc.communicate()[1]
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate("go on\n", timeout=300)
  assert proc.returncode == 0, err[-3000:]
  first = json.loads(out.strip().splitlines()[-1])
  # _Preemption turned the signal into a checkpoint at the step it came in.
  assert first["preempted"] and first["steps"] == 3 and "after" not in first
  assert os.listdir(os.path.join(broken, "checkpoints")) == ["3"]
  assert not os.path.exists(os.path.join(broken, dpo.METRICS_JSON))

  again = dpo.tune(quick_config(model, data, 10), broken, train_pairs,
                   test_pairs)
  assert again["steps"] == 10 and not again["preempted"]
  assert again["before"] == first["before"]
  _, a = checkpoints.latest_params_in_workdir(straight)
  _, b = checkpoints.latest_params_in_workdir(broken)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)
  assert [r["step"] for r in train.read_metrics(broken)] == list(range(1, 11))


@pytest.mark.slow
def test_a_llama_is_tuned_on_its_projections_and_loads_back_for_sampling(
    tmp_path):
  """DPO on a Llama-family model: LoRA on every projection of its blocks
  (the family's targets, as launch.finetune's), its own end-of-text ending
  each text; the reward margin rises; a run started again resumes where it
  stopped (that it ends where an unbroken one does is the family's no more
  than the GPT-2 tests above check); the workdir loads as a model that
  samples text, and the launch's measure samples it before and after."""
  # pylint: disable=import-outside-toplevel
  from bot import ml
  from gpt2 import checkpoints, llama, weights
  from bot.corpus.preferences import sampled_share
  model = tiny_llama(str(tmp_path / "model"))
  train_pairs, test_pairs = word_pairs()
  prompts = [p[0] for p in test_pairs[:2]]
  tuned = str(tmp_path / "tuned")

  def run(steps: int) -> dict:
    c = quick_config(model, str(tmp_path / "bot.db"), steps, lr=1e-3)
    c.sampling.n, c.sampling.max_new_tokens = 2, 8
    return dpo.tune(c, tuned, train_pairs, test_pairs,
                    sampled_share(c, prompts, [world.PHRASE])), c

  first, _ = run(5)
  got, c = run(10)
  assert (first["steps"], got["steps"]) == (5, 10)
  before, after = got["before"], got["after"]
  assert before == first["before"]
  assert before["reward_margin"] == 0 and before["kl"] == pytest.approx(0)
  assert after["reward_margin"] > first["after"]["reward_margin"] > 0
  assert after["kl"] > 0
  assert after["preference_accuracy"] >= before["preference_accuracy"]
  records = train.read_metrics(tuned)
  assert [r["step"] for r in records] == list(range(1, 11))
  assert records[0]["reward_margin"] == pytest.approx(0, abs=1e-6)
  assert records[-1]["reward_margin"] > 0.05
  assert before["candidates"] == after["candidates"] == 4

  run_file = checkpoints.read_run_file(tuned)
  assert run_file["lora"]["targets"].split(",") == list(llama.LORA_TARGETS)
  _, adapters = checkpoints.latest_params_in_workdir(tuned)
  assert set(adapters["layers"]["self_attn"]) == {
      "q_proj", "k_proj", "v_proj", "o_proj"}
  assert set(adapters["layers"]["mlp"]) == {"gate_proj", "up_proj",
                                            "down_proj"}
  loaded = weights.load_model(tuned)
  assert loaded.kind == "lora" and loaded.step == 10
  assert loaded.config.model_type == "llama" and not loaded.config.lora_rank
  assert loaded.tokenizer.eot_token == LLAMA_EOT
  samples = ml.LocalModel(loaded, settings=ml.SamplingSettings.from_config(
      c.sampling)).generate(prompts, 2, seed=0)
  texts = [s.raw for per_prompt in samples for s in per_prompt]
  assert len(texts) == 4 and any(t.strip() for t in texts)
  # Another family's targets are one line naming them.
  c.lora.targets = "attn.c_attn"
  with pytest.raises(UserError, match="unknown target 'attn.c_attn'"):
    dpo.tune(c, str(tmp_path / "gpt2_targets"), train_pairs, test_pairs)


@pytest.mark.slow
def test_full_fine_tune_keeps_a_frozen_reference(world_model, tmp_path):
  db = str(tmp_path / "bot.db")
  world.decisions(db)
  train_pairs, test_pairs = pairs_of(db)
  c = quick_config(world_model, db, 5)
  c.lora.rank = 0
  c.seq_len = 0  # the model's context
  got = dpo.tune(c, str(tmp_path / "full"), train_pairs, test_pairs)
  assert got["before"]["kl"] == pytest.approx(0, abs=1e-6)
  assert got["after"]["kl"] > 0 and got["after"]["reward_margin"] > 0
  from gpt2 import weights  # pylint: disable=import-outside-toplevel
  loaded = weights.load_model(str(tmp_path / "full"))
  assert loaded.kind == "workdir" and not loaded.config.lora_rank


@pytest.mark.slow
def test_too_few_pairs_is_one_line_and_the_state_is_untouched(world_model,
                                                              tmp_path):
  from bot.state import Store  # pylint: disable=import-outside-toplevel
  db = str(tmp_path / "bot.db")
  store = Store(db)
  prompt = world.prompts()[0]
  for i in range(3):
    store.add_review_example("ask:1", prompt, f" #a\n\nbad {i}", "retry",
                             "console")
  store.add_review_example("ask:1", prompt, " #a\n\ngood", "accept",
                           "console")
  store.close()
  before = digest(db)
  done = launch(world_model, db, str(tmp_path / "w"), expect_rc=2)
  lines = done.stderr.strip().splitlines()
  assert lines[-1].startswith("error: ") and "3 preference pairs over 1 " \
      "prompts" in lines[-1]
  assert digest(db) == before
  assert not os.path.exists(tmp_path / "w")
  done = launch(world_model, str(tmp_path / "nowhere.db"),
                str(tmp_path / "w"), expect_rc=2)
  assert done.stderr.strip().splitlines()[-1] == (
      f"error: state file {tmp_path / 'nowhere.db'} does not exist")
