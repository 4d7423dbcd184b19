"""The Tumblr client wrapper against the local Tumblr API server (real HTTP)."""

import logging
import time

import pytest

from bot.tumblr.client import (PostBudget, PostCapDeferred, TumblrClient, TumblrError,
                        post_limits, reset_wait)
from bot.tumblr.credentials import Credentials
from bot.tumblr.server import RateLimit, TumblrServer

CREDS = Credentials("ck-public-key", "cs-secret-value", "ot-token-value",
                    "os-secret-value")


class RecordingSleep:
  """Really sleeps, and remembers how long each wait was."""

  def __init__(self):
    import time  # pylint: disable=import-outside-toplevel
    self._sleep = time.sleep
    self.waits = []

  def __call__(self, seconds):
    self.waits.append(seconds)
    self._sleep(seconds)


@pytest.fixture
def server():
  with TumblrServer(CREDS, rate_limits=(RateLimit("Perminute", 4, 1.0),
                                        RateLimit("Perday", 5000, 86400.0))
                    ) as s:
    s.add_blog("frank", owned=True)
    yield s


def test_429_is_waited_out_with_the_reset_header(server):
  sleep = RecordingSleep()
  for i in range(9):
    # A new client each time knows nothing of the budget, so it earns 429s.
    client = TumblrClient(CREDS, host=server.url, sleep=sleep, backoff_s=0.01)
    client.create_post("frank", content=[{"type": "text", "text": f"p{i}"}])
  statuses = [status for _, _, status in server.request_log]
  assert statuses.count(429) >= 1
  # Each wait is what the server's reset header said (a 1 s window).
  assert sleep.waits and all(0 < w <= 1.0 for w in sleep.waits)
  assert len(server.posts("frank")) == 9


def test_the_budget_in_the_headers_is_waited_for_without_a_429(server):
  sleep = RecordingSleep()
  client = TumblrClient(CREDS, host=server.url, sleep=sleep, backoff_s=0.01)
  for i in range(9):
    client.create_post("frank", content=[{"type": "text", "text": f"p{i}"}])
  assert [st for _, _, st in server.request_log].count(429) == 0
  assert sleep.waits and all(0 < w <= 1.0 for w in sleep.waits)
  assert len(server.posts("frank")) == 9
  assert client.budget.left(time.time()) is not None


def test_a_reset_too_far_away_stops_instead_of_hanging():
  with TumblrServer(CREDS, rate_limits=(RateLimit("Perhour", 2, 3600.0),)
                    ) as s:
    s.add_blog("frank", owned=True)
    client = TumblrClient(CREDS, host=s.url, max_wait_s=5.0)
    client.posts("frank")
    client.posts("frank")
    with pytest.raises(TumblrError, match="rate limited") as e:
      client.posts("frank")
    assert e.value.status == 429
    # The headers said the hour was spent: the third call was never sent.
    assert [st for _, _, st in s.request_log] == [200, 200]
    fresh = TumblrClient(CREDS, host=s.url, max_wait_s=5.0)
    with pytest.raises(TumblrError, match="rate limited"):
      fresh.posts("frank")  # knows no budget: sent, and answered 429
    assert [st for _, _, st in s.request_log] == [200, 200, 429]


def test_reset_wait_reads_the_headers():
  assert reset_wait({"Retry-After": "7"}, now=0) == 7
  headers = {"X-Ratelimit-Perhour-Remaining": "0",
             "X-Ratelimit-Perhour-Reset": "120",
             "X-Ratelimit-Perday-Remaining": "10",
             "X-Ratelimit-Perday-Reset": "5000"}
  assert reset_wait(headers, now=0) == 120
  assert reset_wait({"X-Ratelimit-Perday-Reset": "1700000100"},
                    now=1700000000) == 100
  assert reset_wait({}, now=0) is None


def test_network_errors_are_retried_and_writes_are_not_doubled(server):
  failures = {"left": 2}

  def drop_connection(method, path):
    if method == "POST" and failures["left"]:
      failures["left"] -= 1
      raise ConnectionAbortedError("dropped")  # the handler dies: no answer

  server.before_request = drop_connection
  sleep = RecordingSleep()
  client = TumblrClient(CREDS, host=server.url, sleep=sleep, backoff_s=0.01)
  asked = []

  def landed():
    asked.append(1)
    return None

  post_id = client.create_post("frank", content=[{"type": "text",
                                                  "text": "once"}],
                               landed=landed)
  assert len(asked) == 2  # asked before each retry
  assert sleep.waits == [0.01, 0.02]  # exponential backoff
  assert [p["id_string"] for p in server.posts("frank")] == [post_id]


def test_a_write_that_landed_before_a_timeout_is_not_sent_again(server):
  import time  # pylint: disable=import-outside-toplevel
  slow = {"left": 1}

  def slow_write(method, path):
    if method == "POST" and slow["left"]:
      slow["left"] -= 1
      time.sleep(0.6)  # the client gives up first; the post still lands

  server.before_request = slow_write
  client = TumblrClient(CREDS, host=server.url, timeout_s=0.2, backoff_s=1.0)

  def landed():
    for post in client.posts("frank"):
      if post["content"] == [{"type": "text", "text": "only once"}]:
        return {"id": post["id_string"]}
    return None

  post_id = client.create_post(
      "frank", content=[{"type": "text", "text": "only once"}], landed=landed)
  assert [p["id_string"] for p in server.posts("frank")] == [post_id]
  assert server.write_requests == 1


def test_error_envelopes_become_tumblr_errors(server):
  client = TumblrClient(CREDS, host=server.url)
  with pytest.raises(TumblrError) as e:
    client.create_post("nobody", content=[{"type": "text", "text": "x"}])
  assert e.value.status == 404
  assert client.get_post("frank", "12345") is None


def test_wrong_keys_are_401_and_secrets_never_logged(server, caplog):
  wrong = Credentials("ck-public-key", "cs-WRONG-secret", "ot-token-value",
                      "os-secret-value")
  caplog.set_level(logging.DEBUG)
  client = TumblrClient(wrong, host=server.url)
  with pytest.raises(TumblrError) as e:
    client.submissions("frank")
  assert e.value.status == 401
  good = TumblrClient(CREDS, host=server.url)
  good.posts("frank")  # sends api_key in the query string
  text = caplog.text + repr(good) + repr(client) + str(e.value)
  for secret in ("ck-public-key", "cs-WRONG-secret", "cs-secret-value",
                 "ot-token-value", "os-secret-value"):
    assert secret not in text
  assert "GET /v2/blog/frank.tumblr.com/posts" in caplog.text


def test_one_user_agent_for_every_request(server):
  seen = []
  client = TumblrClient(CREDS, host=server.url, user_agent="my-bot/1.0")
  original = client._session.request  # pylint: disable=protected-access

  def spy(*args, **kw):
    resp = original(*args, **kw)
    agent = resp.request.headers["User-Agent"]
    seen.append(agent.decode() if isinstance(agent, bytes) else agent)
    return resp

  client._session.request = spy  # pylint: disable=protected-access
  client.posts("frank")
  client.submissions("frank")
  client.create_post("frank", content=[{"type": "text", "text": "ua"}])
  assert seen == ["my-bot/1.0"] * 3


def test_budget_follows_the_server_and_never_exceeds_the_cap():
  with TumblrServer(CREDS, posts_per_day=3) as s:
    s.add_blog("frank", owned=True)
    client = TumblrClient(CREDS, host=s.url)
    made = []
    budget = PostBudget(used_since=lambda t: 0, last_post=lambda: None,
                        cap=250, slowdown_below=0,
                        server=post_limits(client.user_limits()))
    for i in range(6):
      try:
        budget.check()
      except PostCapDeferred:
        continue
      made.append(client.create_post("frank", content=[
          {"type": "text", "text": f"p{i}"}]))
      budget.spent()
    assert len(made) == 3
    assert all(status not in (403, 429) for _, _, status in s.request_log)


def test_budget_spaces_posts_near_the_cap():
  now = 1_700_000_000.0  # 2023-11-14 22:13 UTC
  day_start = now - now % 86400 + 5 * 3600  # midnight in New York (EST)
  used = {"n": 240}
  last = {"t": now - 60}
  budget = PostBudget(used_since=lambda t: used["n"], last_post=lambda: last["t"],
                      cap=250, slowdown_below=25, clock=lambda: now)
  # 10 left for the rest of the day: one post every (day end - now) / 10.
  spacing = (day_start + 86400 - now) / 10
  with pytest.raises(PostCapDeferred, match="spacing"):
    budget.check()
  last["t"] = now - spacing - 1
  budget.check()
  used["n"] = 250
  with pytest.raises(PostCapDeferred, match="cap of 250"):
    budget.check()
  used["n"] = 100
  last["t"] = now  # far from the cap: no spacing
  budget.check()


def test_the_day_is_tumblrs_calendar_day():
  with TumblrServer(CREDS) as s:
    s.clock = lambda: time.time() + 120  # Tumblr's clock runs 2 min ahead
    s.add_blog("frank", owned=True)
    client = TumblrClient(CREDS, host=s.url)
    client.posts("frank")
    assert client.budget.clock_offset == pytest.approx(120, abs=2)
  # Midnight in New York (05:00 UTC in January): Tumblr's day begins.
  midnight = 1_800_000_000 // 86400 * 86400 + 86400 + 5 * 3600
  posts = [midnight - 300]  # our clock: five minutes before midnight
  budget = PostBudget(used_since=lambda t: sum(p >= t for p in posts),
                      last_post=lambda: None, cap=10,
                      clock=lambda: midnight - 60,
                      tumblr_offset=lambda: 120.0)
  # A minute before our midnight Tumblr's day has begun: that post was
  # yesterday's.
  assert budget.remaining() == 10
  budget.tumblr_offset = lambda: 0.0
  assert budget.remaining() == 9


def test_post_tiers_follow_the_posts_left():
  left = {"n": 250}
  budget = PostBudget(used_since=lambda t: 250 - left["n"],
                      last_post=lambda: None)
  tiers = {}
  for n in (250, 25, 24, 5, 4, 0):
    left["n"] = n
    tiers[n] = budget.tier()
  assert tiers[250].share == tiers[25].share == 1.0
  assert tiers[24].share == 0.62 and not tiers[24].answers_only
  assert tiers[5].share == 0.62
  assert tiers[4].answers_only and tiers[4].name.startswith("4 posts left")
  assert tiers[0].share == 0.0
