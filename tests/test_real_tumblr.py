"""The bot against what real Tumblr does that its docs do not say (issue 40).

The local server behaves as Tumblr was seen to: notification items typed
`user_mention` and `reblog`, a blocked blog's refusal as a string
`response`, 404 for a deleted post, 429 with calls left and no Retry-After,
rolled-up notifications and full pages without `_links`, asks from senders
flagged as spam missing from the inbox. Real HTTP, the tiny real model, the
real SQLite state.
"""

import time

import pytest

from bot import loop
from bot.state import Store, Trace
from bot.tumblr.client import TumblrClient
from bot.tumblr.server import RateLimit, TumblrServer
from tests import bot_loop_helpers as helpers
# pylint: disable-next=unused-import
from tests.bot_loop_helpers import credentials_env, server  # fixtures
from tests.bot_loop_helpers import CREDS, answered, make_config, writes_to

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
