"""The bot end to end: a tiny real GPT-2 against the local Tumblr API server.

Everything goes over real HTTP to `bot.tumblr.server` on 127.0.0.1; the model
is a tiny GPT-2 trained for a few seconds on the bot's text format (see
bot_loop_helpers.py), sampled by gpt2.sampling. Crashes: test_bot_crashes.py.
"""

import html
import json
import logging
import os
import threading
import time

import numpy as np
import pytest

from bot import loop, ml, text_format
from bot.state import Store, Trace
from bot.tumblr.client import TumblrClient
from bot.tumblr.server import RateLimit
from bot.tumblr.thread import ASKED, Thread, Turn
from configs import bot as bot_configs
from tests import bot_loop_helpers as helpers
# pylint: disable-next=unused-import
from tests.bot_loop_helpers import credentials_env, server  # fixtures
from tests.bot_loop_helpers import (answered, make_config, run_bot_cli,
                                    seed_asks, start_server, writes_to)

BOT = helpers.BOT
ASKS = helpers.ASKS
CREDS = helpers.CREDS
ENV = helpers.ENV


@pytest.fixture
def model_dir(bot_model_dir):
  return bot_model_dir


@pytest.fixture
def model(bot_model):
  return bot_model


# ---- one pass, exactly once --------------------------------------------------


def test_three_asks_answered_once_with_tags_then_nothing(server, tmp_path,
                                                         model):
  ask_ids = seed_asks(server)
  cfg = make_config(server, tmp_path)
  calls = len(model.batches)
  report = loop.run_pass(cfg, model=model)
  # All three prompts were sampled in one call (N candidates each).
  assert model.batches[calls] == 3
  assert sorted(report.published) == sorted(f"ask:{i}" for i in ask_ids)
  answers = answered(server, ask_ids)
  assert set(answers) == set(ask_ids)
  assert all(blocks and all(b.strip() for b in blocks)
             for blocks in answers.values())
  for post in server.posts(BOT):
    assert "frank bot" in post["tags"]
  assert server.write_requests == 3
  assert server.posts(BOT, "submission") == []

  # The trace holds every candidate with its scores, the mood and the choice.
  trace = Trace(cfg.state + ".trace.jsonl").read()
  assert len(trace) == 3
  for entry in trace:
    assert len(entry["candidates"]) >= cfg.sampling.n
    assert all({"selector", "sentiment", "verdict"} <= set(c)
               for c in entry["candidates"])
    assert entry["winner"] is not None and entry["reason"]
    assert 0 < entry["mood"] < 1

  again = loop.run_pass(cfg, model=model)
  assert again.new_jobs == [] and again.published == []
  assert again.writes == 0 and server.write_requests == 3


def test_more_rounds_when_the_mood_screen_rejects(server, tmp_path, model):
  seed_asks(server, ASKS[:1])
  cfg = make_config(server, tmp_path)
  # Every day only sad: sentiments over 0.26 are not allowed.
  cfg.mood.base_weights = (1.0, 0.0, 0.0, 0.0, 0.0)
  cfg.sampling.more_rounds = 1
  calls = len(model.batches)
  report = loop.run_pass(cfg, model=model, clock=lambda: 1_800_000_000.0)
  assert model.batches[calls:] == [1, 1]
  (entry,) = Trace(cfg.state + ".trace.jsonl").read()
  assert entry["sentiment_range"] == [0.0, 0.26]
  assert len(entry["candidates"]) == 2 * cfg.sampling.n
  moody = [c for c in entry["candidates"] if c["verdict"].startswith("mood:")]
  assert len(moody) > cfg.sampling.n and all(c["sentiment"] > 0.26
                                             for c in moody)
  assert report.writes == len(report.published)


def test_one_answer_per_user_per_pass(server, tmp_path, model):
  first, second = seed_asks(server, [("do you sleep?", "alice"),
                                     ("do you like tea?", "alice")])
  cfg = make_config(server, tmp_path)
  report = loop.run_pass(cfg, model=model)
  assert len(report.published) == 1 and len(report.deferred) == 1
  report = loop.run_pass(cfg, model=model)
  assert len(report.published) == 1
  assert set(answered(server, [first, second])) == {first, second}


# ---- limits ----------------------------------------------------------------------


def test_the_rate_limit_is_waited_out_without_a_429(tmp_path, model):
  limits = (RateLimit("Perminute", 2, 1.0), RateLimit("Perday", 5000, 86400.0))
  with start_server(rate_limits=limits) as s:
    ask_ids = seed_asks(s)
    cfg = make_config(s, tmp_path)
    client = loop.make_client(cfg)
    report = loop.run_pass(cfg, model=model, client=client)
    assert report.stopped == ""
    # The headers said when the minute's calls were spent: the client
    # waited for the reset instead of earning a 429.
    assert [status for _, _, status in s.request_log].count(429) == 0
    assert client.waits and all(0 < w <= 1.0 for w in client.waits)
    assert set(answered(s, ask_ids)) == set(ask_ids)
    assert s.write_requests == 3


def test_the_days_cap_is_never_exceeded(tmp_path, model):
  with start_server(posts_per_day=2) as s:
    ask_ids = seed_asks(s)
    cfg = make_config(s, tmp_path)
    cfg.client.slowdown_below = 0  # the hard cap alone (spacing: client tests)
    first = loop.run_pass(cfg, model=model)
    second = loop.run_pass(cfg, model=model)
    assert len(first.published) == 2 and first.deferred
    assert second.published == [] and second.stopped
    assert len(answered(s, ask_ids)) == 2
    # Only the two posts were attempted: the third never hit the 403.
    assert s.write_requests == 2 and first.failed == []
  # The bot's own ledger holds it to its configured cap too.
  with start_server() as s:
    ask_ids = seed_asks(s)
    cfg = make_config(s, tmp_path / "ledger")
    os.makedirs(tmp_path / "ledger")
    cfg.client.daily_cap = 1
    cfg.client.slowdown_below = 0
    loop.run_pass(cfg, model=model)
    loop.run_pass(cfg, model=model)
    assert len(answered(s, ask_ids)) == 1


# ---- word list and review ----------------------------------------------------------


def test_listed_words_go_to_drafts_and_review_tags_work(server, tmp_path,
                                                        model):
  ask_ids = seed_asks(server)
  cfg = make_config(server, tmp_path)
  cfg.word_list = helpers.model_words_list(tmp_path)
  report = loop.run_pass(cfg, model=model)
  trace = {e["job"]: e for e in Trace(cfg.state + ".trace.jsonl").read()}
  hit = [i for i in ask_ids if trace[f"ask:{i}"]["filter_hits"]]
  assert len(hit) >= 2
  drafts = {p["id"]: p for p in server.posts(BOT, "draft")}
  for ask_id in ask_ids:
    if ask_id in hit:
      assert ask_id in drafts and f"ask:{ask_id}" in report.drafted
      assert cfg.review.needs_tag in drafts[ask_id]["tags"]
    else:
      assert ask_id in answered(server, [ask_id])
  assert not answered(server, hit)  # none of them published

  # The operator tags one draft "retry" and another "accept".
  retry_id, accept_id = hit[:2]
  operator = TumblrClient(CREDS, host=server.url)
  for post_id, tag in ((retry_id, cfg.review.retry_tag),
                       (accept_id, cfg.review.accept_tag)):
    draft = drafts[post_id]
    operator.edit_post(BOT, post_id, content=draft["content"],
                       layout=draft["layout"], state="draft",
                       tags=draft["tags"] + [tag])
  old_retry = answered(server, [retry_id], "draft")[retry_id]
  old_accept = answered(server, [accept_id], "draft")[accept_id]
  cfg.word_list = ""  # the operator also emptied the list
  report = loop.run_pass(cfg, model=model)
  assert sorted(report.reviewed) == sorted([f"ask:{retry_id}",
                                            f"ask:{accept_id}"])
  published = answered(server, [retry_id, accept_id])
  assert published[retry_id] != old_retry  # a new answer
  assert published[accept_id] == old_accept  # the draft as it was
  posts = {helpers.first_id(p): p for p in server.posts(BOT)}
  for post_id in (retry_id, accept_id):
    assert not set(posts[post_id]["tags"]) & {cfg.review.needs_tag,
                                              cfg.review.retry_tag,
                                              cfg.review.accept_tag}
  assert loop.run_pass(cfg, model=model).writes == 0


# ---- notifications, dashboard and queue ----------------------------------------------


def test_replies_reblogs_dashboard_and_queue(server, tmp_path, model):
  server.add_blog("alice")
  server.add_blog("bob")
  server.follow("bob")
  own = server.add_post(BOT, text="the sea is blue tonight")
  server.add_note(own, "reply", "alice", text="is it really blue?")
  server.reblog("bob", own, text="i think the sea is green")
  dash = server.add_post("bob", text="frogs sing all night long")
  cfg = make_config(server, tmp_path, notifications=True, dashboard=True,
                    queue=True)
  cfg.queue_target = 1
  cfg.choice.reblog_min_selector = 0.0
  cfg.choice.reblog_gate_prob = 1.0
  cfg.choice.min_chars = 1
  report = loop.run_pass(cfg, model=model)
  kinds = sorted(k.split(":")[0] for k in report.new_jobs)
  assert kinds == ["dash", "original", "reblog", "reply"]
  published = server.posts(BOT)
  reblogs = [p for p in published if p.get("parent_post_id")]
  # bob's reblog and bob's dashboard post are one user: one of them waits.
  assert len(report.deferred) == 1
  parents = {p["parent_post_id"] for p in reblogs}
  assert str(own) in parents  # the reply, answered on the post it was left on
  reply_post = next(p for p in reblogs if p["parent_post_id"] == str(own))
  assert "@alice: is it really blue?" in reply_post["content"][0]["text"]
  assert len(server.posts(BOT, "queue")) == 1
  later = loop.run_pass(cfg, model=model)
  parents = {p["parent_post_id"] for p in server.posts(BOT)
             if p.get("parent_post_id")}
  assert str(dash) in parents or any(k.startswith("dash") for k in
                                     later.skipped)


# ---- dry run and the command line -----------------------------------------------------


@pytest.mark.slow
def test_dry_run_sends_nothing_and_writes_the_feed(server, tmp_path,
                                                   model_dir):
  seed_asks(server)
  cfg = make_config(server, tmp_path, model_dir)
  proc = run_bot_cli(cfg, "--dry_run")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert server.write_requests == 0
  assert all(method == "GET" for method, _ in server.arrived)
  feed_dir = tmp_path / "feed"
  entries = [json.loads(l) for l in (feed_dir / "feed.jsonl").read_text()
             .splitlines()]
  assert len(entries) == 3
  page = (feed_dir / "feed.html").read_text()
  for e in entries:
    assert e["state"] == "published" and e["winner"] is not None
    assert all("selector" in c and "sentiment" in c for c in e["candidates"])
    winner = e["candidates"][e["winner"]]["text"]
    assert html.escape(winner.split("\n")[0][:20]) in page
  assert "do you like frogs?" in page
  assert (feed_dir / "mood.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  # Secrets never reach the output.
  for secret in ENV.values():
    assert secret not in proc.stdout + proc.stderr
  # A later live pass does the dry-run jobs for real.
  store = Store(cfg.state)
  assert store.count_jobs(("dry_run",)) == 3
  store.close()


@pytest.mark.slow
def test_the_config_as_it_ships_fits_a_small_model(server, tmp_path,
                                                   model_dir):
  """`launch.run_bot --config=configs/bot.py` with no sampling flags on a
  model of a 256-token context (the demo's size): the candidates' length is
  the most the model writes in max_steps steps, said once, and the asks are
  answered."""
  ask_ids = seed_asks(server, ASKS[:1])
  cfg = make_config(server, tmp_path, model_dir)
  proc = run_bot_cli(cfg, variant="", timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stderr.count("sampling.max_new_tokens: 512, the most a "
                           "256-token context writes in max_steps=8") == 1
  assert set(answered(server, ask_ids)) == set(ask_ids)


@pytest.mark.slow
def test_credential_and_list_errors_are_one_clear_line(server, tmp_path, monkeypatch):
  cfg = make_config(server, tmp_path, "/nonexistent-model")
  monkeypatch.delenv("TUMBLR_OAUTH_SECRET")
  proc = run_bot_cli(cfg)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      "error: missing Tumblr credential: environment variable "
      "TUMBLR_OAUTH_SECRET is not set (or pass a credentials file)"]

  monkeypatch.setenv("TUMBLR_OAUTH_SECRET", "a-wrong-secret")
  proc = run_bot_cli(cfg)
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and "401" in lines[0] and "rejected" in lines[0]
  assert "a-wrong-secret" not in proc.stderr + proc.stdout

  cfg.lists.avoid_users = str(tmp_path / "no-such-list.txt")
  proc = run_bot_cli(cfg, f"--config.lists.avoid_users={cfg.lists.avoid_users}")
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      f"error: lists.avoid_users {cfg.lists.avoid_users}: cannot read it "
      "(No such file or directory)"]
  cfg.lists.avoid_users = ""

  path = tmp_path / "creds.json"
  path.write_text(json.dumps({
      "consumer_key": CREDS.consumer_key,
      "consumer_secret": CREDS.consumer_secret,
      "oauth_token": CREDS.oauth_token, "oauth_secret": CREDS.oauth_secret}))
  path.chmod(0o644)
  cfg.credentials = str(path)
  proc = run_bot_cli(cfg)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      f"error: credentials file {path} is readable by others (mode 644); "
      f"run: chmod 600 {path}"]
  for secret in ENV.values():
    assert secret not in proc.stderr + proc.stdout


# ---- the model over HTTP ---------------------------------------------------------------


def test_model_server_batches_and_serves_the_loop(server, tmp_path, model):
  model_server = ml.ModelServer(model).start()
  try:
    remote = ml.RemoteModel(model_server.url)
    # Two clients at once, with their own seeds: their prompts share one
    # sampler call, and each gets what it gets alone.
    n = bot_configs.get_config("tiny").sampling.n
    seeds = {"a": 11, "b": 29}
    results = {}
    barrier = threading.Barrier(2)

    def ask(name, prompt):
      barrier.wait()
      results[name] = remote.generate([prompt], n, seed=seeds[name])

    prompts = [text_format.ask_prompt(
        Thread((Turn(who, ASKED, question),), BOT), BOT, 1_800_000_000)
               for question, who in (("hi?", "alice"), ("yo?", "bob"))]
    threads = [threading.Thread(target=ask, args=(name, p)) for name, p in
               zip("ab", prompts)]
    model_server.window_s = 0.5
    for t in threads:
      t.start()
    for t in threads:
      t.join()
    model_server.window_s = 0.02
    assert model_server.batches == [2]
    # Scored on the server's side (no selector head here: None).
    assert all(len(r[0]) == n and r[0][0].sentiment is not None
               and r[0][0].selector is None for r in results.values())
    for name, prompt in zip("ab", prompts):
      alone = remote.generate([prompt], n, seed=seeds[name])
      assert [(s.raw, s.mean_logprob) for s in alone[0]] == [
          (s.raw, s.mean_logprob) for s in results[name][0]]
    assert model_server.batches == [2, 1, 1]
    assert len({s.raw for r in results.values() for s in r[0]}) > n

    ask_ids = seed_asks(server)
    cfg = make_config(server, tmp_path)
    report = loop.run_pass(cfg, model_server=model_server.url)
    assert len(report.published) == 3
    assert set(answered(server, ask_ids)) == set(ask_ids)
  finally:
    model_server.stop()


# ---- mood in the loop ----------------------------------------------------------------


def test_the_pass_keeps_mood_history(server, tmp_path, model):
  seed_asks(server, [("i hate everything, this is awful and sad", "alice")])
  cfg = make_config(server, tmp_path)
  clock = {"t": 1_800_000_000.0}
  loop.run_pass(cfg, model=model, clock=lambda: clock["t"])
  clock["t"] += 3 * 3600
  loop.run_pass(cfg, model=model, clock=lambda: clock["t"])
  store = Store(cfg.state)
  history = store.mood_history(0)
  events = store.mood_events(0)
  store.close()
  assert [h["t"] for h in history] == [1_800_000_000.0, 1_800_010_800.0]
  (kick,) = events  # one input, one kick
  assert kick["source"] == "user" and kick["hours"] == 0
  # Valued by what was said (VADER: very negative) and the candidates.
  entry = next(e for e in Trace(cfg.state + ".trace.jsonl").read()
               if "candidates" in e)
  from bot import mood  # pylint: disable=import-outside-toplevel
  params = mood.MoodParams.from_config(cfg.mood)
  value = mood.kick_value(entry["user_sentiment"],
                          [c["sentiment"] for c in entry["candidates"]],
                          params)
  assert kick["sentiment"] == pytest.approx(value) and kick["u"] < 0
  # The saved state holds the kick, and moved as the exact solution says.
  assert history[0]["x2"] == pytest.approx(kick["u"])
  want = mood.advance(mood.MoodState(t=history[0]["t"], x1=history[0]["x1"],
                                     x2=history[0]["x2"]), history[1]["t"],
                      [], params)
  assert history[1]["x1"] == pytest.approx(want.x1) and want.x1 < 0
  assert np.isfinite(history[1]["mood"])


# ---- scoring with the heads ----------------------------------------------------------


@pytest.mark.slow
def test_heads_score_the_candidates_and_greedy_takes_the_best(
    server, tmp_path, model_dir):
  heads_dir = str(tmp_path / "heads")
  helpers.make_random_heads(heads_dir, model_dir)
  cfg = make_config(server, tmp_path, model_dir)
  cfg.heads = heads_dir
  cfg.choice.epsilon.ask = 0.0
  scored = ml.LocalModel.load(model_dir, heads_dir,
                              ml.SamplingSettings.from_config(cfg.sampling))
  ask_ids = seed_asks(server)
  # A fixed day: the mood's daily base (and so the sentiments it allows the
  # random heads' candidates) follows the date.
  loop.run_pass(cfg, model=scored, clock=lambda: 1_800_000_000.0)
  assert set(answered(server, ask_ids)) == set(ask_ids)
  for entry in Trace(cfg.state + ".trace.jsonl").read():
    cands = entry["candidates"]
    selectors = [c["selector"] for c in cands]
    assert len(set(selectors)) > 1  # the head tells candidates apart
    assert all(0 <= c["sentiment"] <= 1 for c in cands)
    kept = [c["selector"] for c in cands if c["verdict"] == "kept"]
    assert cands[entry["winner"]]["selector"] == max(kept)


def test_the_helpers_clock_makes_a_pass_the_same_on_any_date(tmp_path, model,
                                                             monkeypatch):
  """make_config pins the bot's clock (config key `now`): a dry pass run on
  two different real dates writes the same candidates. Left to the real
  clock, the same two passes do not (the seeds, the mood and the prompt's
  date follow it), so the pin is what keeps the tests off today's date."""

  def candidates(real_time, now):
    monkeypatch.setattr(loop, "time", type("T", (), {
        "time": staticmethod(lambda: real_time)}))
    with start_server() as s:
      seed_asks(s, ASKS[:2])
      room = tmp_path / f"{real_time}-{now}"
      room.mkdir()
      cfg = make_config(s, room)
      if now is not None:
        cfg.now = now
      loop.run_pass(cfg, model=model, dry_run=True)
    return [[c["text"] for c in e["candidates"]]
            for e in Trace(cfg.state + ".trace.jsonl").read()
            if "candidates" in e]

  june, december = 1_780_000_000.0, 1_796_000_000.0
  pinned = candidates(june, None)
  assert pinned and pinned == candidates(december, None)
  assert candidates(june, 0.0) != candidates(december, 0.0)


# ---- the house rules: dry runs, the daemon, long listings, no heads ----------------


def test_a_dry_run_does_not_block_the_live_pass_mood_events(server, tmp_path,
                                                            model):
  seed_asks(server, [("what a lovely happy day, thank you!", "alice")])
  cfg = make_config(server, tmp_path)
  clock = {"t": 1_800_000_000.0}
  dry = loop.run_pass(cfg, model=model, dry_run=True,
                      clock=lambda: clock["t"])
  assert len(dry.would_post) == 1
  store = Store(cfg.state)
  assert store.mood_events(0) == [] and store.last_mood() is None
  assert [e["source"] for e in store.mood_events(0, dry_run=True)] == [
      "user"]
  store.close()
  clock["t"] += 60
  live = loop.run_pass(cfg, model=model, clock=lambda: clock["t"])
  assert live.published == dry.would_post
  store = Store(cfg.state)
  events = store.mood_events(0)
  assert [e["source"] for e in events] == ["user"]
  assert {e["job_key"] for e in events} == set(live.published)
  assert all(e["t"] == clock["t"] for e in events)
  store.close()


class FailsOnce:
  """A real model whose first sampler call fails (a device that fell over)."""

  def __init__(self, model):
    self.model = model
    self.failures = 0

  def generate(self, *args, **kw):
    if not self.failures:
      self.failures += 1
      raise RuntimeError("the accelerator fell over")
    return self.model.generate(*args, **kw)

  def __getattr__(self, name):
    return getattr(self.model, name)


def test_the_daemon_keeps_running_after_an_unexpected_error(server, tmp_path,
                                                            model, caplog):
  ask_ids = seed_asks(server)
  cfg = make_config(server, tmp_path)
  waits = []
  caplog.set_level(logging.INFO, logger="bot.loop")
  reports = loop.run_passes(cfg, model=FailsOnce(model),
                            client=loop.make_client(cfg), interval_s=300,
                            passes=2, sleep=waits.append)
  assert reports[0] is None and waits == [300]
  failure = next(r for r in caplog.records if r.levelno == logging.ERROR)
  assert "unexpected error" in failure.getMessage()
  assert failure.exc_info[0] is RuntimeError  # logged with its traceback
  assert "Traceback" in caplog.text and "the accelerator fell over" in (
      caplog.text)
  # The next pass did the work the failed one had recorded.
  assert sorted(reports[1].published) == sorted(f"ask:{i}" for i in ask_ids)
  assert set(answered(server, ask_ids)) == set(ask_ids)


def test_notifications_and_drafts_are_read_past_their_first_page(
    server, tmp_path, model):
  server.add_blog("alice")
  own = server.add_post(BOT, text="the sea is blue tonight")
  start = time.time() - 100
  for i in range(26):  # newer notifications push the reply to page 2
    server.clock = lambda t=start + i: t
    if i == 0:
      server.add_note(own, "reply", "alice", text="is it really blue?")
    else:
      server.add_note(own, "like", f"fan-{i}")
  server.clock = time.time
  ask_ids = seed_asks(server, ASKS[:1])
  cfg = make_config(server, tmp_path, notifications=True)
  cfg.review.all = True  # the answer waits in the drafts for the operator
  cfg.choice.min_chars = 1
  first = loop.run_pass(cfg, model=model)
  assert any(k.startswith("reply:") for k in first.new_jobs)
  assert first.drafted == [f"ask:{ask_ids[0]}"]
  # 25 newer drafts push the bot's draft to the second page of the drafts.
  for i in range(25):
    server.add_post(BOT, text=f"someone else's draft {i}", state="draft")
  draft = next(p for p in server.posts(BOT, "draft")
               if p["id"] == ask_ids[0])
  TumblrClient(CREDS, host=server.url).edit_post(
      BOT, ask_ids[0], content=draft["content"], layout=draft["layout"],
      state="draft", tags=draft["tags"] + [cfg.review.accept_tag])
  second = loop.run_pass(cfg, model=model)
  assert second.reviewed == [f"ask:{ask_ids[0]}"]
  assert ask_ids[0] in answered(server, ask_ids)


def test_without_heads_the_bot_says_so_and_chooses_by_log_probability(
    server, tmp_path, model_dir, caplog):
  ask_ids = seed_asks(server)
  cfg = make_config(server, tmp_path, model_dir)
  cfg.choice.epsilon.ask = 0.0
  with caplog.at_level(logging.WARNING, logger="bot.loop"):
    chooser = loop.make_model(cfg)
  warnings = [r.getMessage() for r in caplog.records
              if r.levelno == logging.WARNING]
  assert len(warnings) == 1 and "no selector head" in warnings[0]
  loop.run_pass(cfg, model=chooser)
  assert set(answered(server, ask_ids)) == set(ask_ids)
  for entry in Trace(cfg.state + ".trace.jsonl").read():
    cands = entry["candidates"]
    assert all(c["selector"] is None for c in cands)
    kept = [c["mean_logprob"] for c in cands if c["verdict"] == "kept"]
    assert len(kept) > 1 and len(set(kept)) > 1
    assert cands[entry["winner"]]["mean_logprob"] == max(kept)
    assert entry["reason"].startswith("highest mean log-probability")


def test_an_original_post_is_written_in_the_mood_of_its_publish_time(
    server, tmp_path, model):
  seed_asks(server, [("what a lovely happy day, thank you so much!", "alice")])
  cfg = make_config(server, tmp_path, queue=True)
  cfg.queue_target = 1
  cfg.queue_interval_hours = 5.0
  cfg.choice.min_chars = 1
  t0 = 1_800_000_000.0
  loop.run_pass(cfg, model=model, clock=lambda: t0)
  entries = {e["kind"]: e for e in Trace(cfg.state + ".trace.jsonl").read()
             if "candidates" in e}
  from bot import mood  # pylint: disable=import-outside-toplevel
  from bot.jobs.originals import next_slot  # pylint: disable=import-outside-toplevel
  params = mood.MoodParams.from_config(cfg.mood)
  store = Store(cfg.state)
  (kick,) = store.mood_events(0)
  store.close()
  # The ask is answered in the mood of now (before its own kick) ...
  assert entries["ask"]["mood"] == pytest.approx(
      mood.mood_value(mood.MoodState(t=t0), params))
  # ... the original post in the mood projected to when the queue, empty
  # now, publishes it: five hours on, with the ask's kick in it.
  at = mood.advance(mood.MoodState(t=t0, x2=kick["u"]), t0 + 5 * 3600, [],
                    params)
  assert entries["original"]["mood"] == pytest.approx(
      mood.mood_value(at, params))
  assert next_slot([], 0, t0, 5.0) == t0 + 5 * 3600
  assert next_slot([t0 + 100, t0 + 3700, t0 + 7300], 3, t0, 5.0) == (
      t0 + 10900)


@pytest.mark.slow
def test_a_kept_candidate_is_posted_later_once_without_sampling(
    server, tmp_path, model_dir):
  heads_dir = str(tmp_path / "heads")
  helpers.make_random_heads(heads_dir, model_dir)
  cfg = make_config(server, tmp_path, model_dir, asks=False, queue=True)
  cfg.heads = heads_dir
  cfg.queue_target = 1
  cfg.retention.min_selector = 0.0  # keep every screened loser
  cfg.choice.min_chars = 1
  scored = ml.LocalModel.load(model_dir, heads_dir,
                              ml.SamplingSettings.from_config(cfg.sampling))
  t0 = 1_800_000_000.0
  first = loop.run_pass(cfg, model=scored, clock=lambda: t0)
  assert len(first.queued) == 1
  store = Store(cfg.state)
  kept = store.kept(0)
  store.close()
  assert len(kept) >= 3
  texts = {c["text"] for _, c in kept}
  # The next original post draws on the kept ones: no sampling at all.
  cfg.queue_target, cfg.sampling.n = 2, 3
  calls = len(scored.batches)
  second = loop.run_pass(cfg, model=scored, clock=lambda: t0 + 60)
  assert len(second.queued) == 1 and scored.batches[calls:] == []
  posted = [p["content"][0]["text"] for p in server.posts(BOT, "queue")]
  assert posted[0] in texts or posted[1] in texts
  store = Store(cfg.state)
  used = [i for i, _ in kept if i not in {j for j, _ in store.kept(0)}]
  store.close()
  assert len(used) == 1
  # And it is not used again.
  cfg.queue_target = 3
  loop.run_pass(cfg, model=scored, clock=lambda: t0 + 120)
  queued = [p["content"][0]["text"] for p in server.posts(BOT, "queue")]
  assert len(queued) == 3 and len(set(queued)) == 3
  # Kept candidates expire.
  cfg.queue_target, cfg.retention.max_age_days = 4, 1e-9
  calls = len(scored.batches)
  loop.run_pass(cfg, model=scored, clock=lambda: t0 + 180)
  assert scored.batches[calls:] == [1]
