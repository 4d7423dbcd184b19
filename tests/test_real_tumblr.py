"""The bot against what real Tumblr does that its docs do not say (issue 40).

The local server behaves as Tumblr was seen to: notification items typed
`user_mention` and `reblog`, a blocked blog's refusal as a string
`response`, 404 for a deleted post, 429 with calls left and no Retry-After,
rolled-up notifications and full pages without `_links`, asks from senders
flagged as spam missing from the inbox, a new post id for a draft, queued
post or ask when it is published, NPF edits refused for legacy posts, the
daily post cap's day in US Eastern time and its 429; posts past the NPF
limits refused (the bot cuts its own to fit), empty end blocks trimmed, a
post fetched by id without `state`, a follow of a blog that blocked the
bot answered `followed: false`, notes paged by their cursor alone, the
queue 20 at a time; and recordings of the API, made and replayed. Real
HTTP, the tiny real model, the real SQLite state.
"""

import datetime
import os
import signal
import time

import pytest
import pytumblr2
from oauthlib.oauth1 import rfc5849

from bot import loop
from bot.posting import Poster, fit_plan
from bot.records import ANSWER, CREATE, Plan
from bot.state import Store, Trace
from bot.tumblr import npf, npf_limits, recording
from bot.tumblr.client import (PostBudget, PostLimitReached, TumblrClient,
                               TumblrError, post_limits)
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
    # Refused, nothing was posted: back to its plan, the try not counted.
    store = Store(cfg.state)
    job = store.job(f"ask:{second}")
    assert (job.status, job.attempts) == ("chosen", 0)
    store.close()
    # Still the same day in New York at 04:59 UTC: nothing is sent.
    for t, published in ((utc("2027-01-16T04:59:00"), []),
                         (utc("2027-01-16T05:01:00"), [f"ask:{second}"])):
      now[0] = t
      report = loop.run_pass(cfg, model=model, client=client,
                             clock=lambda: now[0])
      assert report.published == published and report.failed == []
    assert set(answered(s, [first, second])) == {first, second}


# ---- what real Tumblr refuses ----------------------------------------------------------


def text(value, **extra):
  return dict({"type": "text", "text": value}, **extra)


def linked(n, kind="link"):
  """A text block with `n` inline links (or mentions)."""
  formats = [{"start": i, "end": i + 1, "type": kind,
              **({"url": "https://example.com/"} if kind == "link" else
                 {"blog": {"uuid": "t:abc", "name": "bob"}})}
             for i in range(n)]
  return text("x" * n, formatting=formats)


IMAGE = {"type": "image", "media": [{"type": "image/png", "width": 10,
                                     "height": 10,
                                     "url": "https://example.com/a.png"}]}
LINK = {"type": "link", "url": "https://example.com/"}
REFUSED = {
    "31 image blocks": [IMAGE] * 31,
    "11 link blocks": [LINK] * 11,
    "101 inline links": [linked(101)],
    "51 mentions": [linked(51, "mention")],
    "over 1 MB": [text("x" * 4000)] * 251,
    "indent_level 8": [text("deep", subtype="indented", indent_level=8)],
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_post_past_tumblrs_limits_is_refused_in_its_error_shape(server,
                                                                  case):
  raw = pytumblr2.TumblrRestClient(*CREDS.client_args(), host=server.url)
  content = REFUSED[case]
  refused = raw.create_post(BOT, content=content)
  assert refused["meta"] == {"status": 400, "msg": "Bad Request"}
  # As the API docs' NPF create route shows it: the message is the title.
  (error,) = refused["errors"]
  assert error["code"] == 8001 and "at most" in error["title"]
  assert server.posts(BOT) == []
  # One less (or the deepest indent) is taken.
  fitted = {"31 image blocks": [IMAGE] * 30, "11 link blocks": [LINK] * 10,
            "101 inline links": [linked(100)],
            "51 mentions": [linked(50, "mention")],
            "over 1 MB": [text("x" * 4000)] * 240,
            "indent_level 8": [text("deep", subtype="indented",
                                    indent_level=7)]}[case]
  assert raw.create_post(BOT, content=fitted)["id"]


def test_an_anonymous_ask_holds_only_text_and_queued_is_no_edit_state(
    server):
  raw = pytumblr2.TumblrRestClient(*CREDS.client_args(), host=server.url)
  anon = server.add_ask(BOT, "what is this?", None)
  answer = [IMAGE, text("a frog")]
  asked = raw.edit_post(BOT, anon, content=[IMAGE] + answer, layout=[
      {"type": "ask", "blocks": [0]}])
  assert asked["meta"]["status"] == 400
  assert asked["errors"][0]["code"] == 8016
  # Signed, the same ask may hold an image.
  named = server.add_ask(BOT, "what is this?", "alice")
  ok = raw.edit_post(BOT, named, content=[IMAGE] + answer, layout=[
      {"type": "ask", "blocks": [0], "attribution": {
          "type": "blog", "url": "https://alice.tumblr.com/",
          "blog": {"name": "alice"}}}])
  assert ok["id"] != str(named)  # published: a new id
  draft = server.add_post(BOT, text="a draft", state="draft")
  queued = raw.edit_post(BOT, draft, content=[text("later")], state="queued")
  assert queued["meta"]["status"] == 400  # tumblr/docs issue #58
  client = TumblrClient(CREDS, host=server.url)
  assert client.edit_post(BOT, str(draft), content=[text("later")],
                          state="queue") == str(draft)
  assert [p["id"] for p in server.posts(BOT, "queue")] == [draft]


def test_a_post_with_empty_blocks_at_its_ends_lands_with_its_layout_right(
    server, tmp_path):
  (ask,) = helpers.seed_asks(server, [("do you like frogs?", "alice")])
  (asked,) = server.posts(BOT, "submission")
  question = asked["content"][0]
  layout = [dict(asked["layout"][0], blocks=[2])]
  content = [text(""), text(""), question, text("yes, all of them"),
             text("")]
  plan = Plan(action=ANSWER, state="published", text="yes, all of them",
              tags=[], content=content, layout=layout, post_id=str(ask))
  fitted, cut = fit_plan(plan)
  assert cut == [] and fitted.content == [question, text("yes, all of "
                                                         "them")]
  assert fitted.layout[0]["blocks"] == [0]
  store = Store(str(tmp_path / "bot.db"))
  poster = Poster(TumblrClient(CREDS, host=server.url), store, BOT)
  # Sent as the bot plans it, Tumblr trims the blocks and shifts the ask.
  post_id = poster.send(plan, f"ask:{ask}")
  post = server.post(int(post_id))
  assert post["content"] == fitted.content
  assert post["layout"][0]["blocks"] == [0]
  assert post["layout"][0]["attribution"]["blog"]["name"] == "alice"
  assert answered(server, [ask]) == {ask: ["yes, all of them"]}
  # The checks a retry makes find it, from either plan.
  assert poster.landed(fitted, f"ask:{ask}") == post_id
  assert poster.landed(plan, f"ask:{ask}") == post_id
  store.close()


def test_a_post_past_the_limits_is_cut_to_them_before_it_is_sent(server,
                                                                 tmp_path):
  own = [IMAGE] * 33 + [LINK] * 12 + [linked(120), linked(60, "mention"),
                                      text("deep", subtype="indented",
                                           indent_level=9)]
  plan = Plan(action=CREATE, state="published", text="many", tags=[],
              content=own, layout=[], slug="many-things")
  fitted, cut = fit_plan(plan)
  assert cut == [
      "3 image blocks left out (Tumblr allows 30)",
      "2 link blocks left out (Tumblr allows 10)",
      "20 inline links made plain text (Tumblr allows 100)",
      "10 mentions made plain text (Tumblr allows 50)",
      "1 blocks indented 7 deep, the most Tumblr allows"]
  store = Store(str(tmp_path / "bot.db"))
  poster = Poster(TumblrClient(CREDS, host=server.url), store, BOT)
  with pytest.raises(TumblrError, match="400"):
    poster.send(plan, "original:1")
  post_id = poster.send(fitted, "original:1")
  assert server.post(int(post_id))["content"] == fitted.content
  store.close()


def a_long_ask(server, room: int) -> int:
  """An ask from alice whose content leaves `room` bytes of Tumblr's 1 MB
  a post for the answer's text (an answer counts its ask's blocks). Its
  bulk is `small` formatting, which Tumblr does not limit and a prompt
  does not show: the prompt stays short."""
  words = " ".join(helpers.WORDS)
  small = [{"start": i, "end": i + 1, "type": "small"}
           for i in range(len(words))]
  letter = []
  while npf_limits.content_bytes(letter) < 990_000:
    letter.append(text(words, formatting=small))
  question = text("so, do you like frogs?")

  def left():
    return npf_limits.MAX_CONTENT_BYTES - npf_limits.content_bytes(
        letter + [text(""), question, text("")]) - room - 1

  while left() > 4000:
    letter.append(text("the sea " * 375))
  filler = left()
  blocks = letter + [text("the sea " * (filler // 8) + "x" * (filler % 8)),
                     question]
  post_id = server.add_post(BOT, blocks, layout=npf.ask_layout(len(blocks),
                                                               "alice"),
                            state="submission")
  server.add_notification(BOT, "ask", from_blog="alice",
                          target_post_id=post_id)
  return post_id


@pytest.mark.slow
def test_a_too_long_answer_is_cut_before_it_is_sent_and_says_why(
    server, tmp_path, model):
  ask = a_long_ask(server, room=1)
  cfg = config(server, tmp_path)
  cfg.feed_live = True
  report = run(cfg, model)
  # Published, or drafted for review (the ask is long): sent either way.
  assert report.published + report.drafted == [f"ask:{ask}"]
  assert report.failed == []
  assert 400 not in [st for _, _, st in server.request_log]
  store = Store(cfg.state)
  job = store.job(f"ask:{ask}")
  store.close()
  (answer,) = answered(server, [ask], job.plan.state)[ask]
  assert 0 < len(answer) < len(job.plan.text)
  assert job.plan.text.startswith(answer)
  post = server.post(ask)
  assert npf_limits.content_bytes(post["content"]) <= (
      npf_limits.MAX_CONTENT_BYTES)
  (entry,) = [e for e in Trace(cfg.state + ".trace.jsonl").read()
              if e.get("job") == f"ask:{ask}"]
  assert entry["cut"] == [f"text cut from {len(job.plan.text)} to "
                          f"{len(answer)} characters to fit Tumblr's "
                          "1000000 bytes a post"]
  feed = (tmp_path / "feed" / "feed.jsonl").read_text()
  assert "cut to Tumblr's limits: text cut from" in feed


# ---- smaller differences -------------------------------------------------------------


def test_a_post_fetched_by_id_has_no_state_and_is_not_taken_for_published(
    server, tmp_path):
  client = TumblrClient(CREDS, host=server.url)
  draft = server.add_post(BOT, text="a draft", state="draft")
  queued = server.add_post(BOT, text="queued", state="queue")
  fetched = client.get_post(BOT, str(draft))
  assert "state" not in fetched and "blog" not in fetched
  assert fetched["tumblelog_uuid"] == server.posts(BOT, "draft")[0]["blog"][
      "uuid"]
  assert client.get_post(BOT, str(queued))["queued_state"] == "queued"
  store = Store(str(tmp_path / "bot.db"))
  poster = Poster(client, store, BOT)
  assert not poster.in_state(fetched, "published")
  assert poster.in_state(fetched, "draft")
  assert poster.in_state(client.get_post(BOT, str(queued)), "queue")
  store.close()


def test_a_draft_the_operator_queues_is_not_taken_for_published(
    server, tmp_path, model):
  cfg = config(server, tmp_path)
  ask, draft = draft_an_ask(server, cfg, model)
  TumblrClient(CREDS, host=server.url).edit_post(
      BOT, str(ask), content=draft["content"], layout=draft["layout"],
      state="queue", tags=draft["tags"])
  run(cfg, model, T0 + 60)
  store = Store(cfg.state)
  assert store.job(f"ask:{ask}").status == "drafted"
  assert store.review_examples() == []
  store.close()


def test_following_a_blog_that_blocked_the_bot_is_recorded_as_not_followed(
    server, tmp_path, model):
  server.add_blog("bob")
  server.block_user("bob")
  (ask,) = helpers.seed_asks(server, [("!follow", "bob")])
  cfg = config(server, tmp_path)
  report = run(cfg, model)
  assert report.deleted == [f"ask:{ask}"]
  assert server.following() == [] and server.posts(BOT, "submission") == []
  store = Store(cfg.state)
  assert store.job(f"ask:{ask}").note == "not followed: bob blocked the bot"
  assert store.is_blocked("bob")
  store.close()


def test_notes_are_paged_with_their_id_and_mode(server):
  own = server.add_post(BOT, text="the sea is blue tonight")
  start = int(time.time()) - 200
  for i in range(70):
    at(server, start + i)
    server.add_note(own, "like", f"fan-{i}")
    server.add_note(own, "reply", f"friend-{i}", text=f"reply {i}")
  client = TumblrClient(CREDS, host=server.url)
  replies = client.notes(BOT, str(own), mode="conversation")
  assert sorted(n["reply_text"] for n in replies) == sorted(
      f"reply {i}" for i in range(70))


def test_the_queue_is_read_twenty_at_a_time(server):
  raw = pytumblr2.TumblrRestClient(*CREDS.client_args(), host=server.url)
  for i in range(45):
    server.add_post(BOT, text=f"queued {i}", state="queue")
  assert raw.queue(BOT, limit=50)["meta"]["status"] == 400
  assert raw.queue(BOT, limit=0)["meta"]["status"] == 400
  assert len(raw.queue(BOT, limit=20)["posts"]) == 20
  client = TumblrClient(CREDS, host=server.url)
  assert len({p["id"] for p in client.queue(BOT)}) == 45
  assert len(client.queue(BOT, limit=30)) == 30


# ---- a record of what Tumblr did ------------------------------------------------------

RECORDING = os.path.join(helpers.REPO, "tests", "data", "tumblr_recording")


def test_the_recording_of_the_documented_examples_replays_against_the_client():
  exchanges = recording.load(RECORDING)
  with recording.ReplayServer(exchanges) as replay:
    client = TumblrClient(CREDS, host=replay.url, backoff_s=0.01)
    assert client.user_info()["name"] == "derekg"
    assert client.following()[:2] == ["david", "matthew"]
    notes = client.notes("YOUR-BLOG", "1234567890000")
    assert [n["type"] for n in notes] == ["reblog", "like"]
    with pytest.raises(TumblrError) as refused:
      client.create_post("YOUR-BLOG", content=[])
    assert refused.value.status == 400 and refused.value.subcodes == (8001,)
    assert "'content' must be an array" in str(refused.value)
    content = [{"type": "text", "text": "Hello world!"}]
    assert client.create_post("YOUR-BLOG", content=content) == (
        "1234567891234567")
    assert client.edit_post("YOUR-BLOG", "1234567891234567", content=[
        {"type": "text", "text": "Hello again!"}]) == "1234567891234567"
    # The client asked what was recorded, in the same order.
    assert [(r["method"], r["path"]) for r in replay.received] == [
        (e["method"], e["path"]) for e in exchanges]
    assert replay.received[2]["query"] == exchanges[2]["query"]
    assert replay.received[4]["body"] == exchanges[4]["request_body"]


def recorded_text(directory) -> str:
  return "\n".join(open(os.path.join(directory, n), encoding="utf-8").read()
                   for n in sorted(os.listdir(directory)))


@pytest.mark.slow
def test_a_dry_run_recorded_has_no_credentials_or_names_and_replays(
    server, tmp_path, bot_model_dir):
  helpers.seed_asks(server, [("do you like frogs?", "alice")])
  cfg = config(server, tmp_path)
  cfg.model = bot_model_dir
  out = tmp_path / "recorded"
  proc = run_bot_cli(cfg, "--dry_run", f"--record_api={out}",
                     "--record_pseudonymize")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"exchanges in {out}" in proc.stdout
  assert server.write_requests == 0
  text = recorded_text(out)
  for secret in CREDS.client_args():
    assert secret not in text
  assert "oauth_" not in text and "Authorization" not in text
  for name in (BOT, "alice", server.posts(BOT, "submission")[0]["blog"][
      "uuid"]):
    assert name not in text
  exchanges = recording.load(out)
  assert [e["path"] for e in exchanges][0] == "/v2/user/info"
  (inbox,) = [e for e in exchanges if e["path"].endswith("/submission")]
  pseudonym = inbox["path"].split("/")[3].split(".")[0]
  with recording.ReplayServer(exchanges) as replay:
    client = TumblrClient(CREDS, host=replay.url)
    client.user_info()
    (ask,) = client.submissions(pseudonym)
  asker, question = npf.split_ask(ask["content"], ask["layout"])[0]
  assert asker not in ("alice", "") and question[0].text == (
      "do you like frogs?")
  assert npf.poster(ask) == pseudonym


def test_a_recording_names_no_credential_even_where_a_server_echoes_one(
    tmp_path):
  recorder = recording.Recorder(str(tmp_path / "rec"), CREDS)
  recorder.add("GET", "/v2/blog/frank/posts",
               {"api_key": CREDS.consumer_key, "tag": "frogs"}, None, 200,
               {"Date": "x", "Authorization": f"OAuth {CREDS.oauth_token}",
                "Set-Cookie": "session=1"},
               {"meta": {"status": 200}, "response": {
                   "echo": f"token={CREDS.oauth_secret}",
                   "oauth_token": CREDS.oauth_token}})
  recorder.write()
  text = recorded_text(tmp_path / "rec")
  for secret in CREDS.client_args():
    assert secret not in text
  (exchange,) = recording.load(tmp_path / "rec")
  assert exchange["query"] == {"api_key": "REDACTED", "tag": "frogs"}
  assert exchange["headers"] == {"Date": "x"}
  assert exchange["body"]["response"]["echo"] == "token=REDACTED"
