"""A tiny real GPT-2 that has learned the bot's text format, for loop tests.

It is trained for a few hundred steps on ask/answer threads written by
bot.text_format (a byte-level BPE trained on the same texts), so it answers a
prompt with ` #tag, #tag`, a blank line, a short answer and <|endoftext|>;
the words of its answers are jumbled, which is all the loop needs. Nothing
is canned: every candidate is sampled from the model.
"""

import os
import random
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bot import text_format
from bot.tumblr.credentials import Credentials
from bot.tumblr import npf
from bot.tumblr.server import TumblrServer
from configs import bot as bot_configs
from bot.tumblr.thread import ASKED, RESPONDED, Thread, Turn
from gpt2 import model as model_lib
from gpt2.tokenizer import Tokenizer
from gpt2.weights import save_model

BOT = "frank"
CREDS = Credentials("loop-consumer-key", "loop-consumer-secret",
                    "loop-oauth-token", "loop-oauth-secret")
ENV = {"TUMBLR_CONSUMER_KEY": CREDS.consumer_key,
       "TUMBLR_CONSUMER_SECRET": CREDS.consumer_secret,
       "TUMBLR_OAUTH_TOKEN": CREDS.oauth_token,
       "TUMBLR_OAUTH_SECRET": CREDS.oauth_secret}
ASKS = [("do you like frogs?", "alice"), ("what is the sea like?", "bob"),
        ("how was your day?", None)]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASKERS = ["alice", "bob", "carol", "dave", "erin", "mallory", "trent"]
QUESTIONS = ["what is your favourite colour?", "do you like frogs?",
             "how was your day?", "what are you reading?",
             "any advice for a rainy day?", "what is the best season?",
             "do you sleep?", "tell me about the sea"]
WORDS = ("the sea is blue and the frogs sing all night long while i read old "
         "books about rain and summer light i think every day is a good day "
         "for tea and quiet thoughts").split()
TAGS = ["chat", "asks", "frogs", "the sea", "books", "weather", "tea"]
# The bot's clock in the tests (config key `now`): its seeds, its mood's daily
# base and its prompts' dates follow the clock, so a test that is not about
# time runs on this one, whatever today's date.
NOW = 1_790_086_400.0  # 2026-09-22 14:13 UTC, a "meh" day (bot.mood)


def training_documents(n: int, seed: int = 0) -> list:
  rng = random.Random(seed)
  docs = []
  for i in range(n):
    asker = rng.choice(ASKERS)
    answer = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12)))
    tags = tuple(rng.sample(TAGS, rng.randint(1, 2)))
    when = 1_700_000_000 + 3600 * i
    thread = Thread((Turn(asker, ASKED, rng.choice(QUESTIONS)),
                     Turn(BOT, RESPONDED, answer, tags, when)), BOT)
    docs.append(text_format.format_thread(thread))
  return docs


def train_tiny_model(directory: str, steps: int = 150, seed: int = 0):
  """Trains and saves the model; returns (config, params, tokenizer)."""
  docs = training_documents(400, seed)
  tokenizer = Tokenizer.train(docs, vocab_size=400)
  stream = []
  for d in docs:
    stream += tokenizer.encode(d) + [tokenizer.eot_id]
  stream = np.asarray(stream, np.int32)
  config = model_lib.GPT2Config.preset("tiny", vocab_size=tokenizer.vocab_size,
                                       n_positions=256)
  params = model_lib.init_params(config, jax.random.PRNGKey(seed))
  optimizer = optax.adam(3e-3)
  opt_state = optimizer.init(params)
  batch, length = 16, 128

  def loss_fn(p, ids):
    logits = model_lib.forward(config, p, ids[:, :-1]).logits
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, ids[:, 1:]).mean()

  @jax.jit
  def step(p, state, ids):
    loss, grads = jax.value_and_grad(loss_fn)(p, ids)
    updates, state = optimizer.update(grads, state, p)
    return optax.apply_updates(p, updates), state, loss

  rng = np.random.default_rng(seed)
  for _ in range(steps):
    starts = rng.integers(0, len(stream) - length - 1, batch)
    ids = jnp.asarray(np.stack([stream[s:s + length + 1] for s in starts]))
    params, opt_state, loss = step(params, opt_state, ids)
  params = jax.device_get(params)
  save_model(directory, config, params, tokenizer)
  return config, params, tokenizer, float(loss)


def make_random_heads(heads_dir: str, model_dir: str, seed: int = 0):
  """Selector and sentiment heads with random weights, saved as trained
  ones are (selector/ and sentiment/ under heads_dir).

  Untrained, but real: the bot loads and runs them exactly as it would
  trained heads, on the hidden states the sampler captured.
  """
  # pylint: disable=import-outside-toplevel
  from gpt2.weights import load_model
  from selector.data import generator_fingerprint
  from selector.model import HeadConfig, init_head_params
  from selector.score import Head
  model = load_model(model_dir)
  fingerprint = generator_fingerprint(model.config, model.params)
  for i, (kind, n_out) in enumerate((("selector", 2), ("sentiment", 1))):
    config = HeadConfig(layers=(1, model.config.n_layer),
                        n_embd=model.config.n_embd, n_out=n_out, n_head=2)
    params = jax.device_get(init_head_params(config,
                                             jax.random.PRNGKey(seed + i)))
    head = Head(kind=kind, config=config, params=params,
                generator=fingerprint, max_len=256,
                calibration={"a": 4.0, "b": 0.0} if kind == "selector"
                else None,
                target={"mean": 0.0, "std": 2.0} if kind == "sentiment"
                else None, model=model_dir)
    head.save(f"{heads_dir}/{kind}")


# ---- the bot against the local Tumblr server ------------------------------------


def start_server(**kw):
  """A local Tumblr server that also notes every request as it arrives
  (`request_log` is written after the answer, so it may lag a moment)."""
  s = TumblrServer(CREDS, **kw).start()
  s.add_blog(BOT, owned=True)
  s.arrived = []
  s.before_request = lambda method, path: s.arrived.append((method, path))
  return s


@pytest.fixture
def server():
  with start_server() as s:
    yield s


@pytest.fixture(autouse=True)
def credentials_env(monkeypatch):
  for k, v in ENV.items():
    monkeypatch.setenv(k, v)


def make_config(server, tmp_path, model_dir="", **jobs):
  cfg = bot_configs.get_config("tiny")
  cfg.blog = BOT
  cfg.model = model_dir
  cfg.state = str(tmp_path / "bot.db")
  cfg.now = NOW
  cfg.tumblr_host = server.url
  cfg.feed_dir = str(tmp_path / "feed")
  cfg.tags = ("frank bot",)
  cfg.client.backoff_s = 0.05
  for kind in ("asks", "notifications", "dashboard", "queue"):
    cfg.jobs[kind] = jobs.get(kind, kind == "asks")
  return cfg


def model_words_list(tmp_path, *others) -> str:
  """A word list (its path) of every word the tiny model answers with, so
  its answers go to drafts, less the words of the asks and `others` (texts
  the test's people write): what others wrote that hits the list is never
  answered at all (test_bot_conduct's screening of what others wrote)."""
  said = {w for text in [q for q, _ in ASKS] + QUESTIONS + list(others)
          for w in text.lower().replace("?", " ").split()}
  path = tmp_path / "words.txt"
  path.write_text("\n".join(sorted(set(WORDS) - said)) + "\n")
  return str(path)


def seed_asks(server, asks=ASKS):
  return [server.add_ask(BOT, q, who) for q, who in asks]


def first_id(post: dict) -> int:
  """The id a post had first: published, an ask or a draft has a new one."""
  return int(npf.genesis_id(post))


def answered(server, ask_ids, state="published"):
  """{ask id: answer blocks} for the asks in `state` (an answered ask has a
  new id: found by its genesis id)."""
  posts = {first_id(p): p for p in server.posts(BOT, state)}
  out = {}
  for ask_id in ask_ids:
    if ask_id in posts:
      p = posts[ask_id]
      ask_blocks = p["layout"][0]["blocks"]
      out[ask_id] = [b["text"] for i, b in enumerate(p["content"])
                     if i not in ask_blocks]
  return out


def writes_to(server, path_part):
  return [r for r in server.arrived if r[0] != "GET" and path_part in r[1]]


def run_bot_cli(cfg, *flags, timeout=240, jobs=("asks",), env=None,
                variant="tiny"):
  """`launch.run_bot --once` in a new process, with the config's keys
  (configs/bot.py:`variant`; "" is the config as it ships)."""
  args = [sys.executable, "-m", "launch.run_bot",
          f"--config={REPO}/configs/bot.py" + (f":{variant}" if variant else ""),
          f"--config.blog={cfg.blog}", f"--config.model={cfg.model}",
          f"--config.state={cfg.state}",
          f"--config.tumblr_host={cfg.tumblr_host}",
          f"--config.feed_dir={cfg.feed_dir}",
          f"--config.credentials={cfg.credentials}",
          f"--config.crash_at={cfg.crash_at}",
          f"--config.queue_target={cfg.queue_target}",
          f"--config.choice.min_chars={cfg.choice.min_chars}",
          f"--config.now={cfg.now}", "--once",
          *flags]
  for kind in ("asks", "notifications", "dashboard", "queue"):
    args.append(f"--config.jobs.{kind}={kind in jobs}")
  # conftest's compilation cache comes with os.environ: every run after the
  # first reuses the compiled sampler.
  env = dict(os.environ, JAX_PLATFORMS="cpu", **(env or {}))
  return subprocess.run(args, cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=timeout)
