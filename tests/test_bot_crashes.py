"""Killed at every point of a job's life, for every job kind, the bot posts
each job exactly once.

`launch.run_bot --once` runs in a new process against the local Tumblr
server and is SIGKILLed (`crash_at=POINT:KIND`) when a job of that kind
reaches the point; the next run picks up where it died. The points are
`bot.jobs.base.CRASH_POINTS`: after the plan is stored, after the job is
marked sending but before the request, after the API confirmed the post
(before the store knows), and after an operator's accepted draft is planned.

A job whose handling raises is that job's failure, not the pass's: tried
again by later passes, then parked, while the other jobs are done.
"""

import dataclasses
import signal
import sqlite3

import pytest

from bot import images, loop
from bot.jobs.base import slug_for
from bot.posting import Poster
from bot.records import Parent, Plan
from bot.state import Store, Trace
from bot.tumblr.client import TumblrClient
from gpt2.errors import UserError
from tests import bot_loop_helpers as helpers
# pylint: disable-next=unused-import
from tests.bot_loop_helpers import credentials_env, server  # fixtures
from tests.bot_loop_helpers import make_config, run_bot_cli, writes_to

BOT = helpers.BOT
KINDS = ("ask", "reply", "reblog", "original")
JOBS = ("asks", "notifications", "queue")


def seed_every_kind(server):
  """An ask, a reply to the bot's post, a reblog of it with a comment, and
  room in the queue for one original post: four jobs, four users."""
  for name in ("alice", "bob", "carol"):
    server.add_blog(name)
  own = server.add_post(BOT, text="the sea is blue tonight")
  server.add_note(own, "reply", "alice", text="is it really blue?")
  bobs = server.reblog("bob", own, text="i think the sea is green")
  ask = server.add_ask(BOT, "do you like frogs?", "carol")
  return {"ask": ask, "own": own, "bobs": bobs}


def bot_posts(server, state="published"):
  return server.posts(BOT, state)


def assert_each_job_posted_once(server, ids, cfg):
  published = bot_posts(server)
  by_parent = {}
  for p in published:
    by_parent.setdefault(p.get("parent_post_id"), []).append(p)
  answers = [p for p in published if helpers.first_id(p) == ids["ask"]]
  assert len(answers) == 1
  assert len(writes_to(server, f"/posts/{ids['ask']}")) == 1
  replies = by_parent.get(str(ids["own"]), [])
  assert len(replies) == 1
  assert "@alice: is it really blue?" in replies[0]["content"][0]["text"]
  assert len(by_parent.get(str(ids["bobs"]), [])) == 1
  queued = bot_posts(server, "queue")
  assert len(queued) == 1 and not queued[0].get("parent_post_id")
  assert server.write_requests == 4
  store = Store(cfg.state)
  done = {j.kind: j.status for j in store.jobs(("done", "skipped", "seen",
                                                "chosen", "sending"))}
  store.close()
  assert done == {k: "done" for k in KINDS}


@pytest.mark.slow
@pytest.mark.parametrize("point", ["after_plan", "before_send", "after_send"])
def test_every_kind_killed_at_every_point_posts_once(server, tmp_path,
                                                     bot_model_dir,
                                                     bot_model, point):
  ids = seed_every_kind(server)
  cfg = make_config(server, tmp_path, bot_model_dir)
  cfg.queue_target = 1
  cfg.choice.min_chars = 1
  for kind in KINDS:
    cfg.crash_at = f"{point}:{kind}"
    proc = run_bot_cli(cfg, jobs=JOBS)
    assert proc.returncode == -signal.SIGKILL, (kind, proc.stderr[-3000:])
    store = Store(cfg.state)
    job = store.jobs(("seen", "chosen", "sending", "done"), kind=kind)[0]
    store.close()
    assert job.status == {"after_plan": "chosen", "before_send": "sending",
                          "after_send": "sending"}[point], kind
  cfg.crash_at = ""
  for name in JOBS:
    cfg.jobs[name] = True
  report = loop.run_pass(cfg, model=bot_model)
  # The last one killed, the original post, is finished now: found on the
  # server if it had been sent, else sent.
  (original,) = [k for k in report.queued]
  assert report.reconciled == ([original] if point == "after_send" else [])
  assert_each_job_posted_once(server, ids, cfg)
  assert loop.run_pass(cfg, model=bot_model).writes == 0


@pytest.mark.slow
def test_accepted_draft_killed_before_it_is_sent_is_published_once(
    server, tmp_path, bot_model_dir, bot_model):
  (ask,) = helpers.seed_asks(server, helpers.ASKS[:1])
  cfg = make_config(server, tmp_path, bot_model_dir)
  cfg.word_list = helpers.model_words_list(tmp_path)
  cfg.choice.min_chars = 1
  # The sampler's seeds follow the pass's clock: a fixed one, so that the
  # candidates (every one hits the word list) are the same on every run.
  first = loop.run_pass(cfg, model=bot_model, clock=lambda: 1.7e9)
  assert first.drafted == [f"ask:{ask}"], (first.summary(),
                                           Trace(cfg.state + ".trace.jsonl").read()[-5:])
  draft = next(p for p in server.posts(BOT, "draft") if p["id"] == ask)
  TumblrClient(helpers.CREDS, host=server.url).edit_post(
      BOT, ask, content=draft["content"], layout=draft["layout"],
      state="draft", tags=draft["tags"] + [cfg.review.accept_tag])
  writes = server.write_requests
  cfg.word_list = ""
  cfg.crash_at = "after_accept"
  proc = run_bot_cli(cfg)
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
  store = Store(cfg.state)
  job = store.job(f"ask:{ask}")
  store.close()
  assert job.status == "chosen" and job.plan.state == "published"
  assert server.write_requests == writes  # nothing sent before the kill
  cfg.crash_at = ""
  report = loop.run_pass(cfg, model=bot_model)
  assert report.published == [f"ask:{ask}"]
  assert server.write_requests == writes + 1
  (post,) = [p for p in server.posts(BOT) if helpers.first_id(p) == ask]
  assert post["content"] == draft["content"]  # as the operator left it
  assert cfg.review.needs_tag not in post["tags"]
  assert loop.run_pass(cfg, model=bot_model).writes == 0


# ---- finding a new post again after a crash ------------------------------------------


def lol_setup(server, tmp_path):
  """A reply job that was posted, and a second reply job ("lol" again, by
  the same user on the same post) whose plan is the same text."""
  server.add_blog("alice")
  own = server.add_post(BOT, text="the sea is blue tonight")
  cfg = make_config(server, tmp_path)
  store = Store(cfg.state)
  poster = Poster(TumblrClient(helpers.CREDS, host=server.url), store, BOT)
  post = server.posts(BOT)[0]
  parent = Parent(id=str(own), uuid=post["blog"]["uuid"],
                  reblog_key=post["reblog_key"], blog=BOT)
  content = [{"type": "text", "text": "@alice: lol", "subtype": "indented"},
             {"type": "text", "text": "lol"}]
  plans = {}
  for key in ("reply:n1", "reply:n2"):
    store.record_job(key, "reply", {"post": post, "replier": "alice",
                                    "reply_text": "lol"}, "alice")
    plans[key] = Plan(action="reblog", state="published", text="lol",
                      tags=[], content=content, layout=[], parent=parent,
                      slug=slug_for(key, "lol"))
    store.save_plan(key, plans[key])
  # The first was posted and recorded; the second is about to be sent.
  store.mark_sending("reply:n1")
  first = poster.send(plans["reply:n1"], "reply:n1")
  store.finish("reply:n1", first)
  store.mark_sending("reply:n2")
  return cfg, store, poster, plans, first


def lol_posts(server, own_id):
  return [p for p in server.posts(BOT)
          if p.get("parent_post_id") == str(own_id)]


def test_a_short_reply_like_an_earlier_one_is_still_posted_once(server,
                                                                tmp_path,
                                                                bot_model):
  # Killed before the request left: the earlier "lol" is not this job's.
  cfg, store, _, _, first = lol_setup(server, tmp_path)
  store.close()
  report = loop.run_pass(cfg, model=bot_model)
  assert report.reconciled == [] and report.published == ["reply:n2"]
  own = next(p for p in server.posts(BOT) if not p.get("parent_post_id"))
  assert len(lol_posts(server, own["id"])) == 2
  store = Store(cfg.state)
  assert store.job("reply:n2").post_id not in (None, first)
  store.close()
  assert loop.run_pass(cfg, model=bot_model).writes == 0


def test_a_short_reply_that_had_landed_is_found_by_its_slug(server, tmp_path,
                                                            bot_model):
  # Killed after the request landed: found by its slug, not sent again, and
  # not mistaken for the same words the operator then posted by hand.
  cfg, store, poster, plans, first = lol_setup(server, tmp_path)
  p = plans["reply:n2"]
  second = poster.send(p, "reply:n2")
  poster.send(dataclasses.replace(p, slug=""), "by hand")
  store.close()
  writes = server.write_requests
  report = loop.run_pass(cfg, model=bot_model)
  assert report.reconciled == ["reply:n2"]
  assert server.write_requests == writes
  store = Store(cfg.state)
  assert store.job("reply:n2").post_id == second != first
  store.close()


def test_without_its_slug_a_post_is_found_by_parent_and_text(server, tmp_path,
                                                             bot_model):
  # A server that ignored the slug: the post with the planned parent and
  # text that no other job made is this job's.
  cfg, store, poster, plans, first = lol_setup(server, tmp_path)
  # No slug: the server makes one from its words.
  second = poster.send(dataclasses.replace(plans["reply:n2"], slug=""),
                       "reply:n2")
  store.close()
  report = loop.run_pass(cfg, model=bot_model)
  assert report.reconciled == ["reply:n2"]
  store = Store(cfg.state)
  assert store.job("reply:n2").post_id == second != first
  store.close()


# ---- a job whose handling raises ------------------------------------------------------


def image_reader_raises(monkeypatch, post_id, error):
  """Reading the images of post `post_id` raises `error` (as a malformed
  image URL made the reader raise ValueError); other posts are read."""
  real = images.annotate

  def annotate(post, reader):
    if str(post.get("id")) == str(post_id):
      raise error
    return real(post, reader)

  monkeypatch.setattr(images, "annotate", annotate)


def test_a_job_that_raises_is_retried_then_parked_and_the_rest_go_on(
    server, tmp_path, bot_model, monkeypatch):
  # No sampling: the job done beside the bad one is a command (!follow).
  for name in ("bob", "carol"):
    server.add_blog(name)
  (bad,) = helpers.seed_asks(server, helpers.ASKS[:1])
  follow = server.add_ask(BOT, "!follow", "bob")
  cfg = make_config(server, tmp_path)
  cfg.jobs.max_errors = 2
  cfg.feed_live = True
  image_reader_raises(monkeypatch, bad,
                      ValueError("Port out of range 0-65535\nat :99999"))
  reports = loop.run_passes(cfg, model=bot_model,
                            client=loop.make_client(cfg), interval_s=0,
                            passes=2, sleep=lambda s: None)
  # Both passes ran to their end: the command was carried out by the first,
  # the bad ask failed in each and the second parked it.
  assert None not in reports
  first, second = reports
  assert first.deleted == [f"ask:{follow}"] and server.following() == ["bob"]
  assert (first.failed, first.parked) == ([f"ask:{bad}"], [])
  assert (second.failed, second.parked) == ([], [f"ask:{bad}"])
  assert "1 parked" in second.summary()
  store = Store(cfg.state)
  job = store.job(f"ask:{bad}")
  store.close()
  error = "ValueError: Port out of range 0-65535 at :99999"
  assert (job.status, job.errors, job.note) == ("parked", 2, error)
  traced = [e for e in Trace(cfg.state + ".trace.jsonl").read()
            if "error" in e]
  assert [(e["job"], e["errors"], e["parked"]) for e in traced] == [
      (f"ask:{bad}", 1, False), (f"ask:{bad}", 2, True)]
  assert all(e["error"] == error for e in traced)
  feed = (tmp_path / "feed" / "feed.html").read_text()
  assert f"error 1 of 2 (tried again next pass): {error}" in feed
  assert f"parked after 2 errors: {error}" in feed
  # The next pass works, and leaves the parked job be.
  again = server.add_ask(BOT, "!follow", "carol")
  report = loop.run_pass(cfg, model=bot_model)
  assert report.deleted == [f"ask:{again}"]
  assert report.failed == report.parked == []
  assert len([e for e in Trace(cfg.state + ".trace.jsonl").read()
              if "error" in e]) == 2
  store = Store(cfg.state)
  assert store.job(f"ask:{bad}").status == "parked"
  store.close()
  assert helpers.answered(server, [bad]) == {}


@pytest.mark.slow
def test_a_job_that_raises_leaves_the_others_to_be_written(
    server, tmp_path, bot_model, monkeypatch):
  bad, good = helpers.seed_asks(server, helpers.ASKS[:2])
  cfg = make_config(server, tmp_path)
  image_reader_raises(monkeypatch, bad, ValueError("Invalid IPv6 URL"))
  report = loop.run_pass(cfg, model=bot_model)
  assert report.published == [f"ask:{good}"]
  assert report.failed == [f"ask:{bad}"]
  assert set(helpers.answered(server, [bad, good])) == {good}


@pytest.mark.parametrize("error", [
    UserError("images: a user's mistake"), KeyboardInterrupt(),
    sqlite3.OperationalError("disk I/O error")])
def test_what_is_not_the_jobs_still_stops_the_pass(server, tmp_path,
                                                   bot_model, monkeypatch,
                                                   error):
  (ask,) = helpers.seed_asks(server, helpers.ASKS[:1])
  cfg = make_config(server, tmp_path)
  image_reader_raises(monkeypatch, ask, error)
  with pytest.raises(type(error)):
    loop.run_pass(cfg, model=bot_model)
  store = Store(cfg.state)
  job = store.job(f"ask:{ask}")
  assert (job.status, job.errors) == ("seen", 0)
  store.lock()  # the pass let go of the lock
  store.close()
