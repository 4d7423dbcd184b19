"""A small world in which the operator always turns down one phrase.

A tiny GPT-2 is trained from scratch (`launch.finetune`'s code, configs/
gpt2_tiny.py) on ask/answer threads written by bot.text_format in which a
share of the answers say "purple elephant"; a real state file (the bot's
Store) records the operator's decisions on such answers: every answer that
says the phrase turned down (retried), another answer to the same ask
accepted. `shuffled=True` swaps the two decisions of a random half of the
asks, so the decisions carry no preference.
"""

import json
import os
import random
import subprocess
import sys

from bot import text_format
from bot.state import Store
from bot.tumblr.thread import ASKED, RESPONDED, Thread, Turn

BOT = "frank"
PHRASE = "purple elephant"
ASKERS = ["alice", "bob", "carol", "dave", "erin", "mallory", "trent",
          "oscar", "peggy", "victor", "walter", "judy"]
QUESTIONS = ["what is your favourite colour?", "do you like frogs?",
             "how was your day?", "what are you reading?",
             "any advice for a rainy day?", "what is the best season?",
             "do you sleep?", "tell me about the sea", "what do you eat?",
             "where do you live?"]
WORDS = ("the sea is blue and the frogs sing all night long while i read old "
         "books about rain and summer light i think every day is a good day "
         "for tea and quiet thoughts").split()
TAGS = ["chat", "asks", "frogs", "the sea", "books", "weather", "tea"]
WHEN = 1_790_000_000
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Held-out measurement: 16 asks x 16 candidates, 48 tokens each.
N, PROMPTS = 16, 16
# The tuning: configs/preferences.py's defaults (LoRA rank 16 on every dense
# layer, sft_weight 1.0) with a tiny model's sequence length, 60 steps of 8
# pairs, beta 0.25 and a learning rate for a model this small.
TUNING = {"seq_len": 128, "total_steps": 60, "lr": 1e-4, "beta": 0.25,
          "sft_weight": 1.0, "val_every": 30, "save_every": 30,
          "sampling.n": N, "sampling.max_new_tokens": 48,
          "eval_prompts": PROMPTS, "progress": False}


def answer(rng: random.Random, with_phrase: bool) -> str:
  words = [rng.choice(WORDS) for _ in range(rng.randint(12, 24))]
  if with_phrase:
    at = rng.randint(0, 2)
    words[at:at + 3] = ["the", "purple", "elephant"]  # as long without
  return " ".join(words)


def thread(asker: str, question: str, text: str, tags=("chat",)) -> Thread:
  return Thread((Turn(asker, ASKED, question),
                 Turn(BOT, RESPONDED, text, tuple(tags), WHEN)), BOT)


def corpus(path: str, n: int = 600, share: float = 0.25, seed: int = 0):
  """`n` threads as JSONL, `share` of the answers saying the phrase."""
  rng = random.Random(seed)
  with open(path, "w", encoding="utf-8") as f:
    for _ in range(n):
      t = thread(rng.choice(ASKERS), rng.choice(QUESTIONS),
                 answer(rng, rng.random() < share),
                 rng.sample(TAGS, rng.randint(1, 2)))
      f.write(json.dumps({"text": text_format.format_thread(t)}) + "\n")


def prompts():
  """Every ask of the world, as the bot's prompt for its answer."""
  return [text_format.own_turn_split(thread(a, q, "x"))[0]
          for a in ASKERS for q in QUESTIONS]


def decisions(path: str, shuffled: bool = False, seed: int = 1,
              per_ask: int = 2) -> None:
  """A state file: for every ask, `per_ask` answers saying the phrase
  turned down and one without it accepted (or, shuffled, the other way
  round for a random half of the asks, exactly half)."""
  rng = random.Random(seed)
  asks = prompts()
  swaps = [i % 2 == 1 and shuffled for i in range(len(asks))]
  rng.shuffle(swaps)
  store = Store(path, clock=lambda: float(WHEN))
  for i, (prompt, swap) in enumerate(zip(asks, swaps)):
    tags = rng.sample(TAGS, 1)
    for _ in range(per_ask):
      text = text_format.own_turn_split(
          thread("x", "y", answer(rng, not swap), tags))[1]
      store.add_review_example(f"ask:{i}", prompt, text, "retry", "console")
    text = text_format.own_turn_split(thread("x", "y", answer(rng, swap),
                                             tags))[1]
    store.add_review_example(f"ask:{i}", prompt, text, "accept", "console")
  store.close()


def train_model(root: str) -> str:
  """The world's corpus (ROOT/docs.jsonl) and a tiny GPT-2 trained on it
  for 300 steps (ROOT/model, a training workdir, so the tuning finds its
  held-out corpus without a flag)."""
  # pylint: disable=import-outside-toplevel
  from configs import gpt2_tiny
  from gpt2 import train
  docs = os.path.join(root, "docs.jsonl")
  corpus(docs)
  c = gpt2_tiny.get_config()
  c.data, c.total_steps, c.period = docs, 300, 300
  c.val_every, c.eval_at_start, c.progress = 0, False, False
  c.save_every, c.async_checkpoints = 300, False
  train.train_and_evaluate(c, os.path.join(root, "model"))
  return os.path.join(root, "model")


def tune_args(model: str, data: str, workdir: str, **extra) -> list:
  """The command line of `launch.tune_preferences` for this world."""
  settings = {"model": model, "data": data, **TUNING, **extra}
  return ([sys.executable, "-m", "launch.tune_preferences",
           "--config=configs/preferences.py", f"--workdir={workdir}"] +
          [f"--config.{k}={v}" for k, v in settings.items()])


def tune(model: str, data: str, workdir: str, **extra):
  """Runs it; the finished process (its stdout's last line is the JSON
  summary)."""
  return subprocess.run(tune_args(model, data, workdir, **extra), cwd=REPO,
                        capture_output=True, text=True, timeout=1800,
                        check=False)
