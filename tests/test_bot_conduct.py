"""The bot's conduct on Tumblr: whom it answers, how often, whom it never
touches, commands in asks, and the limits of the API and the day.

Real HTTP against the local Tumblr server, the tiny real model, a fixed
clock (so every pass samples the same candidates), the real SQLite state.
"""

import time

import pytest
import requests

from bot import loop
from bot.filters import WordFilter
from bot.jobs.base import reply_cost, word_count
from bot.lists import Lists
from bot.state import Store, Trace
from bot.tumblr.server import RateLimit
from configs import bot as bot_configs
from gpt2.errors import UserError
from tests import bot_loop_helpers as helpers
# pylint: disable-next=unused-import
from tests.bot_loop_helpers import credentials_env, server  # fixtures
from tests.bot_loop_helpers import answered, make_config, start_server

BOT = helpers.BOT
T0 = 1_800_000_000.0


@pytest.fixture
def model(bot_model):
  return bot_model


def write_list(tmp_path, name, *entries):
  path = tmp_path / f"{name}.txt"
  path.write_text("# " + name + "\n" + "\n".join(entries) + "\n")
  return str(path)


def conduct_config(server, tmp_path, **jobs):
  cfg = make_config(server, tmp_path, **jobs)
  cfg.choice.min_chars = 1
  return cfg


def run(cfg, model, t=T0, **kw):
  return loop.run_pass(cfg, model=model, clock=lambda: t, **kw)


def skipped(cfg) -> dict:
  """{job key: reason} of the trace's `skipped` entries."""
  return {e.get("job") or e.get("stage"): e["skipped"]
          for e in Trace(cfg.state + ".trace.jsonl").read() if "skipped" in e}


# ---- pure rules --------------------------------------------------------------------


def test_words_are_counted_width_aware():
  assert word_count("do you like frogs?") == 4
  assert word_count("你好") == 4  # two CJK characters
  assert word_count("hi 😀") == 3
  # A family emoji: three emoji joined by zero-width joiners (0 each).
  assert word_count("\U0001F468\u200D\U0001F469\u200D\U0001F467") == 6
  assert word_count("<b>bold</b> [image: a cat]") == 1
  assert word_count("!!!") == 0


def test_the_original_reply_cost():
  assert reply_cost(2, "is it really blue where you are?") == pytest.approx(
      2 - 0.7)
  assert reply_cost(2, "lol") == pytest.approx(2 - 0.1 + 6 + 10)
  assert reply_cost(3, "so so blue") == pytest.approx(3 - 0.3 + 6)
  assert reply_cost(1, " ".join(["word"] * 80)) == pytest.approx(1 - 5)


def test_lists_read_files_and_say_what_is_missing(tmp_path):
  cfg = bot_configs.get_config("tiny")
  cfg.lists.avoid_users = write_list(tmp_path, "avoid", "Mallory", "trent")
  cfg.lists.drop_tags_containing = write_list(tmp_path, "drop", "nsfw")
  lists = Lists.from_config(cfg.lists)
  assert lists.avoided("alice", "mallory") == "mallory"
  assert not lists.tag_allowed("ask mallory") and not lists.tag_allowed(
      "NSFW art")
  assert lists.tag_allowed("frogs")
  assert lists.names_avoided_user("say hi to @Trent!") == "trent"
  assert lists.names_avoided_user("trentino is lovely") == ""
  cfg.lists.screened_users = str(tmp_path / "nope.txt")
  with pytest.raises(UserError, match="lists.screened_users .*nope.txt"):
    Lists.from_config(cfg.lists)


def test_list_entries_and_texts_are_compared_normalized(tmp_path, caplog):
  cfg = bot_configs.get_config("tiny")
  cfg.lists.avoid_users = write_list(
      tmp_path, "avoid", "@Mallory", "https://eve.tumblr.com/",
      "https://www.tumblr.com/trent/123/a-post", "ＰＥＧＧＹ",
      "Bob Smith", "eve.example.com")
  cfg.lists.avoid_tags = write_list(tmp_path, "tags", "Ｐolitics")
  lists = Lists.from_config(cfg.lists)
  assert lists.avoid_users >= {"mallory", "eve", "trent", "peggy"}
  assert lists.avoid_tags == {"politics"}
  # What matches nothing is one warning line each, at start.
  warned = [r.getMessage() for r in caplog.records
            if r.levelname == "WARNING"]
  assert len(warned) == 2, warned
  assert "'Bob Smith' is not a Tumblr blog's name" in warned[0]
  assert "eve.example.com" in warned[1]
  for text in ("what about @mallory?", "@ｍａｌｌｏｒｙ is here",
               "ask mal\u200blory", "ask mal\u00adlory",
               "@m\u0430llory",  # a Cyrillic a
               "hi EVE", "trent\u2060!"):
    assert lists.names_avoided_user(text), text
  for text in ("malloryfan says hi", "even so", "a trentino wine"):
    assert not lists.names_avoided_user(text), text
  assert lists.avoided("Mallory") == "Mallory" and not lists.avoided("bob")
  words = WordFilter.from_words(["badword", "Ｗｏｒｓｅ ｐｈｒａｓｅ"])
  for text in ("bad\u200bword", "bad\u00adword", "ｂａｄｗｏｒｄ",
               "b\u0430dword", "BÁDWORD", "a worse\u00a0phrase"):
    assert words.hits(text), text
  assert not words.hits("goodword and a worse thing")


# ---- asks -----------------------------------------------------------------------------


@pytest.mark.slow
def test_what_others_wrote_is_screened_before_it_is_published(
    server, tmp_path, model):
  names = server.add_ask(BOT, "what do you think of @mallory and her new "
                              "blog?", "alice")
  slur = server.add_ask(BOT, "everyone knows carol is a badword, right?",
                        "bob")
  hidden = server.add_ask(BOT, "is dave a ｂａｄ\u200bｗｏｒｄ or not?", "carl")
  command = server.add_ask(BOT, "!mood you badword", "dora")
  screened = server.add_ask(BOT, "have you met sybil, the painter?", "erin")
  clean = server.add_ask(BOT, "do you like frogs at night?", "fred")
  own = server.add_post(BOT, text="the sea is blue tonight")
  server.add_blog("gina")
  server.add_note(own, "reply", "gina", text=f"@{BOT} say hi to ｍallory for me")
  cfg = conduct_config(server, tmp_path, notifications=True)
  cfg.feed_live = True
  cfg.lists.avoid_users = write_list(tmp_path, "avoid", "https://mallory."
                                     "tumblr.com")
  cfg.lists.screened_users = write_list(tmp_path, "screened", "@Sybil")
  cfg.word_list = write_list(tmp_path, "words", "badword")
  report = run(cfg, model)
  reasons = skipped(cfg)
  assert reasons[f"ask:{names}"] == ("what alice wrote names mallory, who is "
                                     "on the avoid list")
  for key, who in ((slur, "bob"), (hidden, "carl"), (command, "dora")):
    assert reasons[f"ask:{key}"] == (f"what {who} wrote hits the word list "
                                     "(badword)")
  (reply,) = [k for k in reasons if k.startswith("reply:")]
  assert "what gina wrote names mallory" in reasons[reply]
  assert report.drafted == [f"ask:{screened}"]
  assert report.published == [f"ask:{clean}"]
  published = " ".join(b.get("text", "") for p in server.posts(BOT)
                       for b in p["content"])
  assert "mallory" not in published.lower()
  assert "badword" not in published and "ｂａｄ" not in published
  # The feed says why each was left.
  page = open(f"{cfg.feed_dir}/feed.html", encoding="utf-8").read()
  assert "skipped: what alice wrote names mallory" in page
  assert "skipped: what bob wrote hits the word list" in page


@pytest.mark.slow
def test_word_list_hits_in_an_ask_can_be_drafted_instead(server, tmp_path,
                                                         model):
  slur = server.add_ask(BOT, "everyone knows carol is a badword, right?",
                        "bob")
  names = server.add_ask(BOT, "what do you think of @mallory?", "alice")
  cfg = conduct_config(server, tmp_path)
  cfg.lists.avoid_users = write_list(tmp_path, "avoid", "mallory")
  cfg.word_list = write_list(tmp_path, "words", "badword")
  cfg.review.others_hits = "draft"
  report = run(cfg, model)
  assert report.drafted == [f"ask:{slur}"]
  assert report.published == []
  trace = {e["job"]: e for e in Trace(cfg.state + ".trace.jsonl").read()
           if "candidates" in e}
  assert "what bob wrote hits the word list (badword): drafted" in trace[
      f"ask:{slur}"]["reason"]
  # An avoided user named is never answered, drafted or not.
  assert "names mallory" in skipped(cfg)[f"ask:{names}"]
  cfg.review.others_hits = "maybe"
  with pytest.raises(UserError, match="review.others_hits is 'maybe'"):
    run(cfg, model, T0 + 60)


@pytest.mark.slow
def test_avoided_screened_and_limited_users(server, tmp_path, model):
  avoided = server.add_ask(BOT, "do you like frogs?", "mallory")
  screened = server.add_ask(BOT, "what is the sea like?", "sybil")
  first = server.add_ask(BOT, "how was your day?", "lim")
  cfg = conduct_config(server, tmp_path)
  cfg.lists.avoid_users = write_list(tmp_path, "avoid", "mallory")
  cfg.lists.screened_users = write_list(tmp_path, "screened", "sybil")
  cfg.lists.limited_users = write_list(tmp_path, "limited", "lim")
  report = run(cfg, model)
  assert f"ask:{avoided}" in report.skipped
  assert "mallory is on the avoid list" in skipped(cfg)[f"ask:{avoided}"]
  assert report.drafted == [f"ask:{screened}"]
  assert report.published == [f"ask:{first}"]
  # The limited user's next ask waits out the window ...
  second = server.add_ask(BOT, "do you sleep?", "lim")
  later = run(cfg, model, T0 + 3600)
  assert later.published == [] and f"ask:{second}" in later.deferred
  assert "limited user" in skipped(cfg)[f"ask:{second}"]
  # ... and is answered after it.
  assert run(cfg, model, T0 + 13 * 3600).published == [f"ask:{second}"]
  assert avoided not in answered(server, [avoided])
  assert server.posts(BOT, "submission")[0]["id"] == avoided  # left alone


@pytest.mark.slow
def test_asks_too_short_without_text_or_with_many_images(server, tmp_path,
                                                         model):
  short = server.add_ask(BOT, "hi", "alice")
  bang = server.add_ask(BOT, "!hey", "bob")  # never too short
  image = {"type": "image", "media": [{"url": "https://64.media.tumblr.com/"
                                              "a.png"}]}
  pictures = server.add_post(
      BOT, [image] * 6 + [{"type": "text", "text": "look at all these"}],
      layout=[{"type": "ask", "blocks": list(range(7)), "attribution": {
          "type": "blog", "blog": {"name": "carol"}}}], state="submission")
  blank = server.add_post(BOT, [image], layout=[{
      "type": "ask", "blocks": [0], "attribution": {
          "type": "blog", "blog": {"name": "dave"}}}], state="submission")
  long_text = "frogs " * 2100
  long = server.add_ask(BOT, long_text, "erin")
  cfg = conduct_config(server, tmp_path)
  cfg.feed_live = True
  report = run(cfg, model)
  reasons = skipped(cfg)
  assert reasons[f"ask:{short}"].startswith("too short (1 words")
  assert reasons[f"ask:{pictures}"] == "6 images (more than 5)"
  assert reasons[f"ask:{blank}"] == "no text"
  assert f"ask:{bang}" in report.published
  assert report.drafted == [f"ask:{long}"]  # over 10,000 characters
  trace = {e["job"]: e for e in Trace(cfg.state + ".trace.jsonl").read()
           if "candidates" in e}
  assert "over 10000 characters: drafted" in trace[f"ask:{long}"]["reason"]
  # The feed says why, too.
  page = open(f"{cfg.feed_dir}/feed.html", encoding="utf-8").read()
  assert "skipped: too short (1 words" in page


def test_a_users_extra_waiting_asks_are_deleted_and_one_is_answered(
    server, tmp_path, model):
  ids = [server.add_ask(BOT, q, "spammy", timestamp=int(T0) - 100 + i)
         for i, q in enumerate(["do you like frogs?", "what is the sea like?",
                                "how was your day?", "do you sleep?"])]
  cfg = conduct_config(server, tmp_path)
  report = run(cfg, model)
  assert report.published == [f"ask:{ids[0]}"]  # the oldest
  assert sorted(report.deleted) == sorted(f"ask:{i}" for i in ids[2:])
  left = [p["id"] for p in server.posts(BOT, "submission")]
  assert left == [ids[1]]
  assert "spam: spammy has 4 waiting asks" in skipped(cfg)[f"ask:{ids[2]}"]
  assert run(cfg, model, T0 + 60).published == [f"ask:{ids[1]}"]
  assert set(answered(server, ids)) == set(ids[:2])
  assert run(cfg, model, T0 + 120).writes == 0


def test_follow_unfollow_and_mood_commands(server, tmp_path, model):
  server.add_blog("alice")
  server.add_blog("bob")
  server.follow("bob")
  follow = server.add_ask(BOT, "!follow", "alice")
  unfollow = server.add_ask(BOT, "!unfollow please", "bob")
  mood = server.add_ask(BOT, "!mood", "carol")
  other = server.add_ask(BOT, "!frogs do you like them?", "dave")
  cfg = conduct_config(server, tmp_path)
  report = run(cfg, model)
  follows = [r for r in server.arrived if r[1] == "/v2/user/follow"]
  unfollows = [r for r in server.arrived if r[1] == "/v2/user/unfollow"]
  assert follows == [("POST", "/v2/user/follow")]
  assert unfollows == [("POST", "/v2/user/unfollow")]
  assert server.following() == ["alice"]
  assert sorted(report.deleted) == sorted([f"ask:{follow}",
                                           f"ask:{unfollow}"])
  assert [p["id"] for p in server.posts(BOT, "submission")] == []
  published = {helpers.first_id(p): p for p in server.posts(BOT)}
  assert set(published) == {mood, other}  # nothing for the follows
  # !mood: one answer with the mood plot as an uploaded image.
  images = [b for b in published[mood]["content"] if b["type"] == "image"]
  assert len(images) == 1
  url = images[0]["media"][0]["url"]
  name = url.rsplit("/", 1)[-1]
  kind, data = server.media[name]
  assert kind == "image/png" and data[:8] == b"\x89PNG\r\n\x1a\n"
  assert requests.get(url, timeout=10).content == data
  texts = " ".join(b.get("text", "") for b in published[mood]["content"])
  assert "my mood over the last 3 days" in texts
  assert run(cfg, model, T0 + 60).writes == 0


# ---- replies and reblogs of the bot's posts ------------------------------------------


def test_which_replies_and_reblogs_are_answered(server, tmp_path, model):
  for name in ("carol", "dave", "erin", "fred", "gina", "bob", "hal"):
    server.add_blog(name)
  server.follow("carol")
  own = server.add_post(BOT, text="the sea is blue tonight")
  fresh = server.add_post(BOT, text="frogs sing all night long")
  reblogged = server.add_post(BOT, text="i read old books about rain")
  server.clock = lambda: time.time() - 60  # a minute before the replies
  server.reblog("hal", reblogged, text="")
  server.clock = time.time
  server.add_note(own, "reply", "carol", text="do you like the sea at night?")
  server.add_note(own, "reply", "dave", text="hey @erin look at this post")
  server.add_note(fresh, "reply", "erin", text="what do the frogs sing?")
  server.add_note(reblogged, "reply", "fred", text="which books do you read?")
  server.add_note(reblogged, "reply", "gina",
                  text=f"@{BOT} what is your favourite book?")
  bare = server.reblog("bob", own, text="")
  server.add_notification(BOT, "mention_in_post", from_blog="bob",
                          post_id=str(bare))
  cfg = conduct_config(server, tmp_path, notifications=True)
  report = run(cfg, model)
  reasons = skipped(cfg)
  jobs = {}
  store = Store(cfg.state)
  for job in store.jobs(("done", "skipped", "seen", "chosen")):
    jobs[job.payload.get("replier")] = job
  store.close()
  assert jobs["dave"].status == "skipped"
  assert "tags someone else (@erin)" in reasons[jobs["dave"].key]
  assert jobs["fred"].status == "skipped"
  assert "reblogged before the reply" in reasons[jobs["fred"].key]
  assert jobs["bob"].status == "skipped"
  assert reasons[jobs["bob"].key] == "a reblog without a comment"
  for who in ("carol", "erin", "gina"):  # followed; wrote it; @bot
    assert jobs[who].key in report.published, who
  # The cost is recorded, and too dear a reply is skipped.
  assert jobs["carol"].payload["cost"] == reply_cost(2, "do you like the sea "
                                                        "at night?")
  server.add_note(own, "reply", "carol", text="lol")
  cfg.replies.max_cost = 15
  run(cfg, model, T0 + 60)
  assert any("over replies.max_cost 15" in r for r in skipped(cfg).values())


def test_a_blog_that_blocked_the_bot_is_not_queried_again(server, tmp_path,
                                                          model):
  server.add_blog("bob")
  own = server.add_post(BOT, text="the sea is blue tonight")
  server.block_user("bob")
  server.reblog("bob", own, text="i think the sea is green")
  cfg = conduct_config(server, tmp_path, notifications=True)
  report = run(cfg, model)
  (key,) = report.skipped
  assert skipped(cfg)[key] == "bob blocked the bot"
  asked = [r for r in server.arrived if "/v2/blog/bob" in r[1]]
  assert len(asked) == 1  # the one that answered 403
  store = Store(cfg.state)
  assert store.is_blocked("bob")
  store.close()
  server.reblog("bob", own, text="still green")
  run(cfg, model, T0 + 60)
  assert [r for r in server.arrived if "/v2/blog/bob" in r[1]] == asked


# ---- the dashboard ---------------------------------------------------------------------


def test_dashboard_posts_the_rules_never_reblog(server, tmp_path, model):
  for name in ("bob", "mallory", "viral"):
    server.add_blog(name)
    server.follow(name)
  tagged = server.add_post("bob", text="frogs sing all night long",
                           tags=["Politics"])
  by_avoided = server.add_post("mallory", text="the sea is blue")
  popular = server.add_post("viral", text="a good day for tea")
  no_comment = server.reblog("bob", popular, text="")
  server.add_post("viral", text="rain and summer light", note_count=0)
  # A post with 2,000 notes that adds no comment.
  with server._lock:  # pylint: disable=protected-access
    server._posts[no_comment].extra_note_count = 2000  # pylint: disable=protected-access
  cfg = conduct_config(server, tmp_path, dashboard=True)
  cfg.jobs.dashboard_per_pass = 10
  cfg.lists.avoid_users = write_list(tmp_path, "avoid", "mallory")
  cfg.lists.avoid_tags = write_list(tmp_path, "tags", "politics")
  cfg.dashboard.author_gate = 1e9  # the model gate says no to the rest
  report = run(cfg, model)
  reasons = skipped(cfg)
  assert reasons[f"dash:{tagged}"] == "tagged #politics (lists.avoid_tags)"
  assert reasons[f"dash:{by_avoided}"] == "mallory is on the avoid list"
  assert reasons[f"dash:{no_comment}"] == "2000 notes and no comment"
  gated = [k for k, r in reasons.items() if r.startswith("author gate")]
  assert gated and report.published == []
  assert not [p for p in server.posts(BOT) if p.get("parent_post_id")]


def test_dashboard_author_gate_lets_a_likely_post_through(server, tmp_path,
                                                         model):
  server.add_blog("bob")
  server.follow("bob")
  server.add_post("bob", text="frogs sing all night long")
  cfg = conduct_config(server, tmp_path, dashboard=True)
  cfg.dashboard.author_gate = 1e-9
  cfg.choice.reblog_min_selector = 0.0
  cfg.choice.reblog_gate_prob = 1.0
  run(cfg, model)
  assert not any(r.startswith("author gate") for r in skipped(cfg).values())
  # The gate's numbers come from the generator: log P(" frank commented:")
  # after the thread, here and on a neutral post.
  here, neutral = model.logprob(["#1 bob posted:\n\nfrogs\n\n#2",
                                 "#1 someone posted:\n\nhello\n\n#2"],
                                [f" {BOT} commented:"] * 2)
  assert here < 0 and neutral < 0 and here != neutral


# ---- the API's and the day's budgets -------------------------------------------------


def test_a_low_hourly_budget_skips_the_dashboard_and_earns_no_429(tmp_path,
                                                                   model):
  with start_server(rate_limits=(RateLimit("Perhour", 4, 3600.0),)) as s:
    s.add_blog("bob")
    s.follow("bob")
    s.add_post("bob", text="frogs sing all night long")
    ask = s.add_ask(BOT, "do you like frogs?", "alice")
    cfg = conduct_config(s, tmp_path, dashboard=True, queue=True)
    client = loop.make_client(cfg)  # one call: the header says 3 left
    assert client.budget.left(cfg.now) == 3
    report = loop.run_pass(cfg, model=model, client=client)
    reasons = skipped(cfg)
    assert "API calls left this hour" in reasons["dashboard"]
    assert "API calls left this hour" in reasons["queue"]
    assert not [r for r in s.arrived if "dashboard" in r[1]]
    assert report.published == [f"ask:{ask}"]  # answers come first
    assert client.budget.left(cfg.now) == 0
    # The next pass would need a call the hour does not have: it stops
    # without sending one, where a 429 would have been earned.
    sent = len(s.arrived)
    later = loop.run_pass(cfg, model=model, client=client)
    assert "API budget is spent" in later.stopped
    assert len(s.arrived) == sent
    assert [st for _, _, st in s.request_log].count(429) == 0


def test_with_four_posts_left_only_answers_are_posted(tmp_path, model):
  with start_server(posts_per_day=4) as s:
    s.add_blog("bob")
    s.follow("bob")
    s.add_post("bob", text="frogs sing all night long")
    ask = s.add_ask(BOT, "do you like frogs?", "alice")
    cfg = conduct_config(s, tmp_path, dashboard=True, queue=True)
    cfg.queue_target = 1
    cfg.dashboard.author_gate = 0.0
    report = run(cfg, model)
    assert report.published == [f"ask:{ask}"]
    assert s.posts(BOT, "queue") == []
    reasons = skipped(cfg)
    held = [k for k, r in reasons.items() if "answers only" in r]
    assert {k.split(":")[0] for k in held} == {"dash", "original"}


def test_generated_tags_with_listed_words_are_dropped(server, tmp_path,
                                                      model):
  ids = helpers.seed_asks(server)
  cfg = conduct_config(server, tmp_path)
  cfg.lists.drop_tags_containing = write_list(
      tmp_path, "drop", *sorted({c for t in helpers.TAGS for c in t}))
  run(cfg, model)
  posts = {helpers.first_id(p): p for p in server.posts(BOT)}
  assert set(ids) <= set(posts)
  assert all(posts[i]["tags"] == ["frank bot"] for i in ids)


def test_a_dashboard_comment_must_beat_the_post_alone(server, tmp_path,
                                                      bot_model_dir):
  # pylint: disable=import-outside-toplevel
  import random
  from bot import ml
  from bot.choice import Candidate
  from bot.jobs.base import Desk
  from bot.jobs.dashboard import DASHBOARD
  from bot.records import PassReport
  heads = str(tmp_path / "heads")
  helpers.make_random_heads(heads, bot_model_dir)
  cfg = conduct_config(server, tmp_path)
  cfg.choice.reblog_min_selector = 0.0
  cfg.choice.reblog_gate_prob = 1.0
  scored = ml.LocalModel.load(bot_model_dir, heads,
                              ml.SamplingSettings.from_config(cfg.sampling))
  server.add_blog("bob")
  post = server.post(server.add_post("bob", text="frogs sing all night"))
  store = Store(cfg.state)
  store.record_job("dash:1", "dashboard", {"post": post}, "bob")
  desk = Desk(blog=BOT, config=cfg, client=None, store=store,
              report=PassReport(dry_run=True), now=T0,
              dry_run=True, rng=random.Random(0), model=scored)
  ctx = DASHBOARD.context(store.job("dash:1"), BOT, T0)
  low = DASHBOARD.gate(Candidate("ok", selector=0.0), ctx, desk)
  assert low.startswith("the comment's selector 0.000 does not beat the post")
  assert DASHBOARD.gate(Candidate("ok", selector=1.01), ctx, desk) is None
  store.close()
