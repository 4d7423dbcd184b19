"""The bot against what real Tumblr does that its docs do not say (issue 40).

The local server behaves as Tumblr was seen to: notification items typed
`user_mention` and `reblog`, a blocked blog's refusal as a string
`response`, 404 for a deleted post, 429 with calls left and no Retry-After,
rolled-up notifications and full pages without `_links`, asks from senders
flagged as spam missing from the inbox, a new post id for a draft, queued
post or ask when it is published, NPF edits refused for legacy posts, the
daily post cap's day in US Eastern time and its 429. Real HTTP, the tiny real model, the real
SQLite state.
"""

import datetime
import signal
import time

import pytest
from oauthlib.oauth1 import rfc5849

from bot import loop
from bot.posting import Poster
from bot.state import Store, Trace
from bot.tumblr.client import (PostBudget, PostLimitReached, TumblrClient,
                               post_limits)
from bot.tumblr.server import RateLimit, TumblrServer
from tests import bot_loop_helpers as helpers
# pylint: disable-next=unused-import
from tests.bot_loop_helpers import credentials_env, server  # fixtures
from tests.bot_loop_helpers import (CREDS, answered, make_config, run_bot_cli,
                                    writes_to)

BOT = helpers.BOT
T0 = 1_800_000_000.0


@pytest.fixture
def model(bot_model):
  return bot_model


def config(server, tmp_path, **jobs):
  cfg = make_config(server, tmp_path, **jobs)
  cfg.choice.min_chars = 1
  return cfg


def run(cfg, model, t=T0, **kw):
  return loop.run_pass(cfg, model=model, clock=lambda: t, **kw)


def skipped(cfg) -> dict:
  """{job key: reason} of the trace's `skipped` entries."""
  return {e.get("job") or e.get("stage"): e["skipped"]
          for e in Trace(cfg.state + ".trace.jsonl").read() if "skipped" in e}


def reblogged(server) -> set:
  """The ids of the posts the bot reblogged."""
  return {p["parent_post_id"] for p in server.posts(BOT)
          if p.get("parent_post_id")}


def at(server, t):
  """Sets the server's clock to `t` (the time of what is seeded next)."""
  server.clock = lambda: t


@pytest.mark.slow
def test_a_mention_and_a_reblog_with_a_comment_are_answered(server, tmp_path,
                                                           model):
  for name in ("bob", "carol"):
    server.add_blog(name)
  own = server.add_post(BOT, text="the sea is blue tonight")
  mention = server.mention(BOT, "bob", f"@{BOT} what do you think of frogs?")
  reblog = server.reblog("carol", own, text="i think the sea is green")
  server.reblog("carol", own, text="")  # no comment: not fetched
  types = [n["type"] for n in server._blogs[BOT].notifications]  # pylint: disable=protected-access
  assert types == ["user_mention", "reblog", "reblog"]
  report = run(config(server, tmp_path, notifications=True), model)
  assert sorted(report.published) == sorted([f"reblog:{mention}",
                                             f"reblog:{reblog}"])
  assert reblogged(server) == {str(mention), str(reblog)}


@pytest.mark.slow
def test_a_blocked_blog_and_a_deleted_post_skip_their_items_not_the_pass(
    server, tmp_path, model):
  for name in ("bob", "carol", "dave"):
    server.add_blog(name)
  own = server.add_post(BOT, text="the sea is blue tonight")
  start = int(time.time()) - 100
  at(server, start)
  server.block_user("bob")
  server.reblog("bob", own, text="i think the sea is green")
  at(server, start + 1)
  gone = server.reblog("carol", own, text="frogs sing all night long")
  server.remove_post(gone)
  at(server, start + 2)
  later = server.reblog("dave", own, text="what is the sea like at night?")
  server.clock = time.time
  (ask,) = helpers.seed_asks(server, [("do you like frogs?", "alice")])
  # dave's blog fails (the network) until told otherwise: the pass stops
  # there, and the items before it are not read again.
  failing = {"on": True}

  def drop_dave(method, path):
    server.arrived.append((method, path))
    if failing["on"] and "/v2/blog/dave" in path:
      raise ConnectionAbortedError("dropped")

  server.before_request = drop_dave
  cfg = config(server, tmp_path, notifications=True)
  with pytest.raises(Exception, match="network error"):
    run(cfg, model)
  store = Store(cfg.state)
  assert store.get_meta("notifications_since") == start + 1
  store.close()
  reasons = skipped(cfg)
  assert reasons[f"reblog:{gone}"] == (
      f"post carol/{gone} cannot be read: not found: deleted, or its blog "
      "is gone")
  assert "bob blocked the bot" in reasons.values()
  failing["on"] = False
  report = run(cfg, model, T0 + 60)
  assert report.stopped == ""
  assert f"ask:{ask}" in report.published
  assert f"reblog:{later}" in report.published
  # Neither bob nor carol was asked again.
  asked = [p for _, p in server.arrived if "/v2/blog/bob" in p
           or "/v2/blog/carol" in p]
  assert len(asked) == 2
  # A third pass finds nothing new and fails on nothing.
  third = run(cfg, model, T0 + 120)
  assert third.new_jobs == [] and third.stopped == ""


@pytest.mark.slow
def test_a_429_with_calls_left_is_backed_off_in_seconds(server, tmp_path,
                                                        model):
  (ask,) = helpers.seed_asks(server, [("do you like frogs?", "alice")])
  cfg = config(server, tmp_path)
  client = loop.make_client(cfg)
  # Three 429s that still show calls left this hour, and no Retry-After.
  server.surprise_429s = 3
  began = time.monotonic()
  report = loop.run_pass(cfg, model=model, client=client)
  assert time.monotonic() - began < 30
  assert report.published == [f"ask:{ask}"]
  assert [st for _, _, st in server.request_log].count(429) == 3
  assert client.waits == [0.05, 0.1, 0.2]  # backoff_s, doubled each time


def test_the_client_keeps_under_the_per_ip_minute_without_a_429():
  elapsed = [0.0]  # seconds the test's sleeps have "waited"

  def sleep(seconds):
    elapsed[0] += seconds

  with TumblrServer(CREDS, ip_limits=(RateLimit("Perminute", 3, 60.0),),
                    clock=lambda: time.time() + elapsed[0]) as s:
    s.add_blog(BOT, owned=True)
    client = TumblrClient(CREDS, host=s.url, backoff_s=0.01, sleep=sleep,
                          calls_per_minute=3,
                          pace_clock=lambda: time.monotonic() + elapsed[0])
    for _ in range(4):
      client.posts(BOT)
    assert [st for _, _, st in s.request_log] == [200] * 4
    assert len(client.waits) == 1 and 59 < client.waits[0] <= 60


def test_notifications_are_read_unrolled_and_past_pages_without_links(
    server):
  server.notification_links = False  # as real Tumblr sends full pages
  for name in ("carol", "erin", "gina"):
    server.add_blog(name)
  own = server.add_post(BOT, text="the sea is blue tonight")
  start = int(time.time()) - 100
  for i in range(26):
    # Items 20 and 21 (newest first) share a second: the page boundary.
    at(server, start + i + (1 if i == 5 else 0))
    server.add_note(own, "like", f"fan-{i}")
  server.clock = time.time
  client = TumblrClient(CREDS, host=server.url)
  rolled = client.api.notifications(BOT)["notifications"]
  assert len(rolled) == 1 and rolled[0]["rollup_count"] == 26
  items = client.notifications(BOT)
  assert sorted(n["from_tumblelog_name"] for n in items) == sorted(
      f"fan-{i}" for i in range(26))
  # With a cursor it stops at what it saw last.
  newest_six = client.notifications(BOT, since=start + 20)
  assert len(newest_six) == 6


def test_three_rolled_up_replies_are_answered_three_times(server, tmp_path,
                                                         model):
  own = server.add_post(BOT, text="the sea is blue tonight")
  for name, text in (("carol", "do you like the sea at night?"),
                     ("erin", "what do the frogs sing tonight?"),
                     ("gina", "which old books about rain do you read?")):
    server.add_blog(name)
    server.follow(name)
    server.add_note(own, "reply", name, text=text)
  report = run(config(server, tmp_path, notifications=True), model)
  replies = [k for k in report.published if k.startswith("reply:")]
  assert len(replies) == 3
  quoted = sorted(p["content"][0]["text"].split(":")[0]
                  for p in server.posts(BOT) if p.get("parent_post_id"))
  assert quoted == ["@carol", "@erin", "@gina"]


def test_an_ask_hidden_from_the_inbox_is_answered_from_its_notification_once(
    server, tmp_path, model):
  server.flag_spam("mallory")
  hidden, plain = helpers.seed_asks(server, [
      ("what is the sea like?", "mallory"), ("do you like frogs?", "alice")])
  cfg = config(server, tmp_path, notifications=True)
  report = run(cfg, model)
  assert sorted(report.published) == sorted([f"ask:{hidden}", f"ask:{plain}"])
  assert set(answered(server, [hidden, plain])) == {hidden, plain}
  again = run(cfg, model, T0 + 60)
  assert again.new_jobs == [] and again.published == []
  for ask in (hidden, plain):
    assert len(writes_to(server, f"/posts/{ask}")) == 1, ask


# ---- post ids change on publishing -------------------------------------------------


def test_published_drafts_queued_posts_and_asks_get_new_ids(server):
  client = TumblrClient(CREDS, host=server.url)
  ask = server.add_ask(BOT, "do you like frogs?", "alice")
  draft = client.create_post(BOT, state="draft", content=[
      {"type": "text", "text": "a draft"}])
  queued = client.create_post(BOT, state="queue", content=[
      {"type": "text", "text": "queued"}])
  # Answered into a draft, an ask keeps its id: only publishing moves it.
  assert client.edit_post(BOT, str(ask), state="draft", content=[
      {"type": "text", "text": "yes"}]) == str(ask)
  moved = {}
  for old in (str(ask), draft, queued):
    moved[old] = client.edit_post(BOT, old, state="published", content=[
        {"type": "text", "text": f"published {old}"}])
    assert moved[old] != old
    assert client.get_post(BOT, old) is None  # the old id is gone
    assert client.get_post(BOT, moved[old])["genesis_post_id"] == old
  # Published again (an edit), a post keeps its id.
  assert client.edit_post(BOT, moved[draft], content=[
      {"type": "text", "text": "edited"}]) == moved[draft]
  # A new post never had another id.
  new = client.create_post(BOT, content=[{"type": "text", "text": "new"}])
  assert "genesis_post_id" not in client.get_post(BOT, new)


def draft_an_ask(server, cfg, model):
  """An ask answered into a draft for review; returns (ask id, the draft)."""
  (ask,) = helpers.seed_asks(server, [("do you like frogs?", "alice")])
  cfg.review.all = True
  first = run(cfg, model)
  assert first.drafted == [f"ask:{ask}"]
  (draft,) = server.posts(BOT, "draft")
  assert draft["id"] == ask
  return ask, draft


def test_a_draft_the_operator_publishes_is_done_at_its_new_id_and_accepted(
    server, tmp_path, model):
  cfg = config(server, tmp_path)
  ask, draft = draft_an_ask(server, cfg, model)
  # The operator publishes it on Tumblr, as it is.
  published = TumblrClient(CREDS, host=server.url).edit_post(
      BOT, str(ask), content=draft["content"], layout=draft["layout"],
      tags=draft["tags"])
  assert published != str(ask)
  report = run(cfg, model, T0 + 60)
  assert report.writes == 0
  store = Store(cfg.state)
  job = store.job(f"ask:{ask}")
  assert (job.status, job.post_id, job.note) == (
      "done", published, "published by the operator")
  assert store.current_post_id(str(ask)) == published
  # The autoreviewer learns that the operator took the bot's text.
  assert [(e["decision"], e["label"]) for e in store.review_examples()] == [
      ("published", 0)]
  assert store.posts_since(0) == 1
  store.close()


@pytest.mark.slow
def test_killed_after_publishing_a_draft_the_post_is_found_at_its_new_id(
    server, tmp_path, bot_model_dir, model):
  cfg = config(server, tmp_path)
  cfg.model = bot_model_dir
  ask, draft = draft_an_ask(server, cfg, model)
  TumblrClient(CREDS, host=server.url).edit_post(
      BOT, str(ask), content=draft["content"], layout=draft["layout"],
      state="draft", tags=draft["tags"] + [cfg.review.accept_tag])
  writes = server.write_requests
  # Killed once the publish is confirmed, before the store knows its id.
  cfg.crash_at = "after_send"
  proc = run_bot_cli(cfg)
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
  assert server.write_requests == writes + 1
  (post,) = server.posts(BOT)
  assert post["genesis_post_id"] == str(ask) != post["id_string"]
  cfg.crash_at = ""
  report = run(cfg, model, T0 + 60)
  assert report.reconciled == report.published == [f"ask:{ask}"]
  assert report.failed == [] and server.write_requests == writes + 1
  store = Store(cfg.state)
  assert store.job(f"ask:{ask}").post_id == post["id_string"]
  assert store.current_post_id(str(ask)) == post["id_string"]
  store.close()
  assert run(cfg, model, T0 + 120).writes == 0


# ---- NPF edits only for posts made in NPF ---------------------------------------------


def test_a_legacy_ask_is_answered_through_the_legacy_edit(server, tmp_path,
                                                         model):
  legacy = server.add_ask(BOT, "do you like frogs?", "alice", legacy=True)
  plain = server.add_ask(BOT, "what is the sea like?", "bob")
  client = TumblrClient(CREDS, host=server.url)
  # Tumblr refuses to edit it in NPF.
  with pytest.raises(Exception, match="400"):
    client.edit_post(BOT, str(legacy), content=[{"type": "text",
                                                 "text": "yes"}])
  cfg = config(server, tmp_path)
  report = run(cfg, model)
  assert sorted(report.published) == sorted([f"ask:{legacy}",
                                             f"ask:{plain}"])
  assert report.failed == []
  assert len(writes_to(server, f"/posts/{legacy}")) == 1  # the test's own
  assert len(writes_to(server, "/post/edit")) == 1
  assert len(writes_to(server, f"/posts/{plain}")) == 1
  store = Store(cfg.state)
  job = store.job(f"ask:{legacy}")
  store.close()
  answers = answered(server, [legacy, plain])
  assert set(answers) == {legacy, plain}
  # The answer is the chosen text, found at its new id by the checks a
  # retry makes.
  assert " ".join(answers[legacy]).split() == job.plan.text.split()
  poster = Poster(client, Store(cfg.state), BOT)
  assert poster.landed(job.plan, job.key) == job.post_id
  poster.store.close()


# ---- the daily post cap's day --------------------------------------------------------


def tumblr_time(monkeypatch, t: float) -> list:
  """Tumblr's clock (and the time the client signs requests at, which the
  server checks against it) set to `t`; returns [t] to move it."""
  now = [t]
  monkeypatch.setattr(rfc5849, "generate_timestamp",
                      lambda: str(int(now[0])))
  return now


def utc(text: str) -> float:
  return datetime.datetime.fromisoformat(text + "+00:00").timestamp()


@pytest.mark.parametrize("midnight", ["2027-01-15T05:00:00",   # EST
                                      "2027-07-15T04:00:00"])  # EDT
def test_the_post_caps_day_begins_at_midnight_in_new_york(monkeypatch,
                                                         midnight):
  boundary = utc(midnight)
  now = tumblr_time(monkeypatch, boundary - 30)
  with TumblrServer(CREDS, posts_per_day=1, clock=lambda: now[0]) as s:
    s.add_blog(BOT, owned=True)
    client = TumblrClient(CREDS, host=s.url, clock=lambda: now[0])

    def post():
      return client.create_post(BOT, content=[{"type": "text", "text": "hi"}])

    post()
    # Refused with a 429, which is the day's cap, not the API's rate limit:
    # no waiting.
    with pytest.raises(PostLimitReached, match="429: Limit Exceeded"):
      post()
    assert client.waits == []
    assert post_limits(client.user_limits())["reset_at"] == boundary
    # The bot counts the same day from its own ledger when Tumblr does not
    # say: the post 30 s before midnight in New York is yesterday's after it.
    budget = PostBudget(used_since=lambda t: int(boundary - 30 >= t),
                        last_post=lambda: None, cap=1, slowdown_below=0,
                        clock=lambda: now[0])
    assert budget.remaining() == 0
    now[0] = boundary
    assert budget.remaining() == 1
    post()  # a rolling 24 hours would still refuse it


def test_a_post_refused_for_the_days_cap_waits_for_the_next_day(
    monkeypatch, tmp_path, model):
  start = utc("2027-01-15T12:00:00")
  now = tumblr_time(monkeypatch, start)
  with helpers.start_server(posts_per_day=2, clock=lambda: now[0]) as s:
    first, second = helpers.seed_asks(s, [("do you like frogs?", "alice"),
                                          ("what is the sea like?", "bob")])
    cfg = config(s, tmp_path)
    cfg.client.slowdown_below = cfg.client.answers_only_below = 0
    # The operator posts from the app during the pass, after the bot read
    # its posts left: the bot's second answer is one over the day's cap.
    operator = TumblrClient(CREDS, host=s.url)
    posted = []

    def operator_posts(method, path):
      s.arrived.append((method, path))
      if method == "PUT" and not posted:
        posted.append(operator.create_post(BOT, content=[
            {"type": "text", "text": "from the app"}]))

    s.before_request = operator_posts
    client = loop.make_client(cfg, clock=lambda: now[0])
    report = loop.run_pass(cfg, model=model, client=client,
                           clock=lambda: now[0])
    assert report.published == [f"ask:{first}"]
    assert report.deferred == [f"ask:{second}"] and report.failed == []
    assert "daily post limit" in report.stopped
    assert client.waits == []  # deferred, not waited for
    assert [st for _, _, st in s.request_log].count(429) == 1
    # Still the same day in New York at 04:59 UTC: nothing is sent.
    for t, published in ((utc("2027-01-16T04:59:00"), []),
                         (utc("2027-01-16T05:01:00"), [f"ask:{second}"])):
      now[0] = t
      report = loop.run_pass(cfg, model=model, client=client,
                             clock=lambda: now[0])
      assert report.published == published and report.failed == []
    assert set(answered(s, [first, second])) == {first, second}
