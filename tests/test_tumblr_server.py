"""The local Tumblr API server, driven over real HTTP by the real clients."""

import time

import pytest
import pytumblr
import pytumblr2
import requests
from requests_oauthlib import OAuth1

from bot import text_format
from bot.tumblr import npf
from bot.tumblr.credentials import Credentials
from bot.tumblr.server import RateLimit, TumblrServer
from gpt2.tokenizer import EOT

CREDENTIALS = Credentials("consumer-key-0123456789", "consumer-secret-abc",
                          "oauth-token-0123456789", "oauth-secret-xyz")
JAN_7_2021_11PM = 1610061300


@pytest.fixture
def server():
  server = TumblrServer(CREDENTIALS)
  server.add_blog("frank", owned=True)
  server.add_blog("alice")
  with server:
    yield server


def client(server, credentials=CREDENTIALS):
  return pytumblr2.TumblrRestClient(*credentials.client_args(),
                                    host=server.url)


def signed_get(server, path, credentials=CREDENTIALS, **params):
  auth = OAuth1(credentials.consumer_key, credentials.consumer_secret,
                credentials.oauth_token, credentials.oauth_secret)
  return requests.get(server.url + path, params=params, auth=auth, timeout=10)


# ---- envelopes and authentication -------------------------------------------


def test_responses_have_the_real_envelope(server):
  server.add_post("alice", text="hi")
  response = signed_get(server, "/v2/blog/alice.tumblr.com/info")
  assert response.status_code == 200
  assert response.headers["Content-Type"].startswith("application/json")
  body = response.json()
  assert body["meta"] == {"status": 200, "msg": "OK"}
  assert body["response"]["blog"]["name"] == "alice"
  assert body["response"]["blog"]["posts"] == 1

  missing = signed_get(server, "/v2/blog/nobody/info")
  assert missing.status_code == 404
  assert missing.json()["meta"] == {"status": 404, "msg": "Not Found"}
  assert missing.json()["response"] == []
  assert missing.json()["errors"][0]["title"] == "Not Found"


def test_signatures_are_verified(server):
  assert signed_get(server, "/v2/user/info").status_code == 200
  for wrong in (Credentials(CREDENTIALS.consumer_key, "wrong",
                            CREDENTIALS.oauth_token, CREDENTIALS.oauth_secret),
                Credentials(CREDENTIALS.consumer_key,
                            CREDENTIALS.consumer_secret,
                            CREDENTIALS.oauth_token, "wrong"),
                Credentials("unknown-key", CREDENTIALS.consumer_secret,
                            CREDENTIALS.oauth_token, CREDENTIALS.oauth_secret)):
    response = signed_get(server, "/v2/user/info", credentials=wrong)
    assert response.status_code == 401
    assert response.json()["meta"]["status"] == 401
  # The api_key alone opens the public routes only.
  public = requests.get(server.url + "/v2/blog/alice/posts",
                        params={"api_key": CREDENTIALS.consumer_key},
                        timeout=10)
  assert public.status_code == 200
  private = requests.get(server.url + "/v2/user/info",
                         params={"api_key": CREDENTIALS.consumer_key},
                         timeout=10)
  assert private.status_code == 401


def test_a_replayed_request_is_refused(server):
  auth = OAuth1(*CREDENTIALS.client_args())
  prepared = requests.Request("GET", server.url + "/v2/user/info",
                              auth=auth).prepare()
  with requests.Session() as session:
    assert session.send(prepared, timeout=10).status_code == 200
    assert session.send(prepared, timeout=10).status_code == 401


def test_form_bodies_are_signed_too(server):
  legacy = pytumblr.TumblrRestClient(*CREDENTIALS.client_args(),
                                     host=server.url)
  created = legacy.create_text("frank", body="<p>hello <b>there</b></p>",
                               tags=["a", "b"])
  assert "id" in created
  assert server.posts("frank")[0]["content"] == [
      {"type": "text", "text": "hello there",
       "formatting": [{"start": 6, "end": 11, "type": "bold"}]}]


# ---- rate limits ------------------------------------------------------------


def test_rate_limit_headers_and_429_until_the_reset():
  server = TumblrServer(CREDENTIALS,
                        rate_limits=[RateLimit("Perhour", 3, 1.0),
                                     RateLimit("Perday", 100, 86400.0)])
  server.add_blog("alice")
  with server:
    c = client(server)
    remaining = []
    for _ in range(3):
      assert "blog" in c.blog_info("alice")
      remaining.append(c.get_ratelimit_data()["hour"]["remaining"])
    assert remaining == [2, 1, 0]
    refused = c.blog_info("alice")
    headers = c.request.last_response_headers
    assert refused["meta"] == {"status": 429, "msg": "Limit Exceeded"}
    assert headers["X-Ratelimit-Perhour-Remaining"] == "0"
    assert headers["X-Ratelimit-Perhour-Reset"] == "1"
    assert headers["Retry-After"] == "1"
    assert headers["X-Ratelimit-Perday-Remaining"] == "97"
    time.sleep(1.05)
    assert "blog" in c.blog_info("alice")


def test_daily_post_cap_and_user_limits():
  # A one-second day, and the NPF section's 403.8023 rather than the 429
  # (tests/test_real_tumblr.py has the calendar day and the 429).
  server = TumblrServer(CREDENTIALS, posts_per_day=2, post_limit_period_s=1.0)
  server.post_cap_status = 403
  server.add_blog("frank", owned=True)
  with server:
    c = client(server)
    for i in range(2):
      assert "id" in c.create_post("frank", content=[{"type": "text",
                                                      "text": f"post {i}"}])
    # Drafts do not count; a third published post does.
    assert "id" in c.create_post("frank", state="draft",
                                 content=[{"type": "text", "text": "draft"}])
    refused = c.create_post("frank", content=[{"type": "text", "text": "3"}])
    assert refused["meta"]["status"] == 403
    assert refused["errors"][0]["code"] == 8023
    limits = c.send_api_request("get", "/v2/user/limits")["user"]["posts"]
    assert (limits["limit"], limits["remaining"]) == (2, 0)
    assert len(server.posts("frank")) == 2
    time.sleep(1.05)
    assert "id" in c.create_post("frank", content=[{"type": "text",
                                                    "text": "next day"}])


def test_write_requests_are_counted(server):
  c = client(server)
  assert server.write_requests == 0
  post_id = c.create_post("frank",
                          content=[{"type": "text", "text": "a"}])["id"]
  c.edit_post("frank", post_id, content=[{"type": "text", "text": "b"}])
  c.posts("frank")
  c.delete_post("frank", post_id)
  assert server.write_requests == 3
  assert server.posts("frank") == []
  assert [m for m, _, _ in server.request_log].count("GET") == 1


# ---- reading ----------------------------------------------------------------


def test_posts_pages_filters_and_both_formats(server):
  ids = [server.add_post("alice", text=f"post {i}", tags=["even"] if i % 2
                         == 0 else [], timestamp=1_600_000_000 + i)
         for i in range(25)]
  c = client(server)
  first = c.posts("alice")
  assert first["total_posts"] == 25
  assert [p["id"] for p in first["posts"]] == ids[::-1][:20]
  assert first["posts"][0]["content"] == [{"type": "text", "text": "post 24"}]
  assert "next" in first["_links"]
  second = c.posts("alice", offset=20)
  assert [p["id"] for p in second["posts"]] == ids[::-1][20:]
  assert [p["id"] for p in c.posts("alice", before=1_600_000_003)["posts"]] \
      == ids[2::-1]
  assert [p["id"] for p in c.posts("alice", after=1_600_000_021,
                                   sort="asc")["posts"]] == ids[22:]
  assert len(c.posts("alice", tag="even")["posts"]) == 13
  server.posts_served.clear()
  assert c.posts("alice", id=ids[3])["posts"][0]["id"] == ids[3]
  legacy = pytumblr.TumblrRestClient(*CREDENTIALS.client_args(),
                                     host=server.url)
  legacy_post = legacy.posts("alice.tumblr.com", id=ids[3])["posts"][0]
  assert legacy_post["type"] == "text"
  assert legacy_post["body"] == "<p>post 3</p>"
  assert server.posts_served[ids[3]] == 2


def test_blog_info_user_info_and_dashboard(server):
  server.add_blog("bob")
  server.follow("alice")
  alice_post = server.add_post("alice", text="from alice", timestamp=100)
  server.add_post("bob", text="bob is not followed", timestamp=200)
  own = server.add_post("frank", text="own post", timestamp=300)
  c = client(server)
  user = c.info()["user"]
  assert user["blogs"][0]["name"] == "frank" and user["blogs"][0]["primary"]
  assert user["following"] == 1
  dashboard = c.dashboard()["posts"]
  assert [p["id"] for p in dashboard] == [own, alice_post]
  assert c.dashboard(since_id=alice_post)["posts"][0]["id"] == own


def test_notes_and_notifications(server):
  post_id = server.add_post("frank", text="a post")
  server.add_note(post_id, "like", "alice")
  server.add_note(post_id, "reply", "alice", text="nice post")
  server.reblog("alice", post_id, text="agreed", tags=["yes"])
  c = client(server)
  notes = c.notes("frank", post_id)
  assert notes["total_notes"] == 3
  assert [n["type"] for n in c.notes("frank", post_id, mode="likes")["notes"]] \
      == ["like"]
  conversation = c.notes("frank", post_id, mode="conversation")
  assert sorted(n["type"] for n in conversation["notes"]) == ["reblog", "reply"]
  notifications = c.notifications("frank")["notifications"]
  by_type = {n["type"]: n for n in notifications}
  assert by_type["reply"]["reply_text"] == "nice post"
  # Real Tumblr types a reblog item `reblog`, whatever the filter's names.
  assert by_type["reblog"]["added_text"] == "agreed"
  assert by_type["reblog"]["post_tags"] == ["yes"]
  assert c.posts("frank")["posts"][0]["note_count"] == 3
  only_replies = c.send_api_request("get", "/v2/blog/frank/notifications",
                                    {"types[0]": "reply"})
  assert [n["type"] for n in only_replies["notifications"]] == ["reply"]


def test_drafts_and_queue(server):
  c = client(server)
  draft = c.create_post("frank", state="draft",
                        content=[{"type": "text", "text": "a draft"}])["id"]
  queued = c.create_post("frank", state="queue",
                         content=[{"type": "text", "text": "queued"}])["id"]
  assert [p["id_string"] for p in c.drafts("frank")["posts"]] == [draft]
  assert [p["id_string"] for p in c.queue("frank")["posts"]] == [queued]
  assert c.posts("frank")["total_posts"] == 0
  edited = c.edit_post("frank", draft, state="published",
                       content=[{"type": "text", "text": "published draft"}])
  # Published, it has a new id (tests/test_real_tumblr.py).
  (published,) = c.posts("frank")["posts"]
  assert published["id_string"] == edited["id"] != draft
  assert published["genesis_post_id"] == draft


# ---- writing ----------------------------------------------------------------


def test_npf_limits_are_enforced(server):
  c = client(server)
  too_long = c.create_post("frank", content=[{"type": "text",
                                              "text": "x" * 4097}])
  assert too_long["meta"]["status"] == 400
  assert too_long["errors"][0]["code"] == 8001
  not_blocks = c.create_post("frank", content="just text")
  assert not_blocks["meta"]["status"] == 400
  cannot = c.create_post("alice", content=[{"type": "text", "text": "x"}])
  assert cannot["meta"]["status"] == 403


def test_reblogs_npf_and_legacy_build_the_trail(server):
  root = server.add_post("alice", text="root <i>post</i>",
                         timestamp=JAN_7_2021_11PM - 60)
  c = client(server)
  reblog = c.reblog_post("frank", "alice", root,
                         content=[{"type": "text", "text": "my comment"}],
                         tags=["t1", "t2"])
  reblog_post = server.post(int(reblog["id"]))
  assert [t["blog"]["name"] for t in reblog_post["trail"]] == ["alice"]
  assert reblog_post["reblogged_from_name"] == "alice"
  legacy = c.legacy_reblog("frank", id=int(reblog["id"]),
                           reblog_key=reblog_post["reblog_key"],
                           comment="<p>again</p>")
  again = server.post(legacy["id"])
  thread = text_format.post_to_thread(again)
  assert [(t.author, t.kind, t.text) for t in thread.turns] == [
      ("alice", "posted", "root <i>post</i>"),
      ("frank", "commented", "my comment"),
      ("frank", "commented", "again")]
  # The legacy rendering of the same post reads back the same (legacy trail
  # items carry no timestamps).
  legacy_thread = text_format.post_to_thread(
      server.post(legacy["id"], npf_format=False))
  assert [(t.author, t.kind, t.text, t.tags) for t in legacy_thread.turns] == [
      (t.author, t.kind, t.text, t.tags) for t in thread.turns]
  bad_key = c.reblog_post("frank", "alice", root, reblog_key="wrong",
                          parent_blog_uuid=reblog_post["blog"]["uuid"])
  assert bad_key["meta"]["status"] == 400


def test_generated_reblog_round_trips_through_the_api(server):
  root = server.add_post("alice", text="what should i eat",
                         timestamp=JAN_7_2021_11PM - 3600)
  c = client(server)
  fetched = c.posts("alice", id=root)["posts"][0]
  prompt = text_format.reblog_prompt(text_format.post_to_thread(fetched),
                                     "frank", JAN_7_2021_11PM)
  body = "<b>soup</b>, obviously\n\n<ul><li>hot</li>\n<li>cold</li></ul>"
  continuation = f" #food, #advice\n\n{body}{EOT}"
  created = c.reblog_post("frank", "alice", root,
                          date="2021-01-07T23:15:00Z",
                          **text_format.continuation_to_npf(continuation))
  post = c.posts("frank", id=int(created["id"]))["posts"][0]
  assert text_format.format_thread(text_format.post_to_thread(post)) == (
      prompt + continuation[:-len(EOT)])


def test_asks_answered_through_npf_and_legacy(server):
  c = client(server)
  first = server.add_ask("frank", "what's 2+2?", asker="alice")
  second = server.add_ask("frank", "are you anonymous?")
  asks = c.submission("frank")["posts"]
  assert sorted(p["id"] for p in asks) == [first, second]
  threads = {p["id"]: text_format.post_to_thread(p) for p in asks}
  assert [(t.author, t.kind) for t in threads[first].turns] == [
      ("alice", "asked")]
  assert threads[second].turns[0].author == "Anonymous"
  assert [n["type"] for n in c.notifications("frank")["notifications"]] == [
      "ask", "ask"]

  prompt = text_format.ask_prompt(threads[first], "frank", JAN_7_2021_11PM)
  continuation = " #math\n\nit's <b>4</b>"
  answer = text_format.continuation_to_npf(continuation)
  c.edit_post("frank", first, content=answer["content"], tags=answer["tags"])
  published = server.post(first)
  assert published["state"] == "published"
  published["timestamp"] = JAN_7_2021_11PM
  assert text_format.format_thread(text_format.post_to_thread(published)) == (
      prompt + continuation)

  legacy = text_format.continuation_to_legacy_answer(" #anon\n\nyes")
  c.legacy_edit_post("frank", second, type="answer", state="published",
                     **legacy)
  answered = text_format.post_to_thread(server.post(second, npf_format=False))
  assert [(t.author, t.kind, t.text, t.tags) for t in answered.turns] == [
      ("Anonymous", "asked", "are you anonymous?", ()),
      ("frank", "responded", "yes", ("anon",))]
  assert c.submission("frank")["posts"] == []
  assert len(c.posts("frank")["posts"]) == 2


def test_server_accepts_what_text_to_content_makes(server):
  c = client(server)
  big = "\n\n".join(["paragraph " * 300] * 20) + "\n\n" + "y" * 9000
  content = npf.text_to_content(big)
  created = c.create_post("frank", content=content)
  assert "id" in created, created
  stored = server.post(int(created["id"]))
  assert npf.content_to_text(stored["content"]) == npf.content_to_text(content)


def test_follow_unfollow_blocks_uploads_and_tumblrs_clock(server):
  from bot.tumblr.client import TumblrClient, TumblrError  # pylint: disable=import-outside-toplevel
  c = client(server)
  assert c.follow("alice.tumblr.com")["blog"]["name"] == "alice"
  listed = signed_get(server, "/v2/user/following").json()["response"]
  assert [b["name"] for b in listed["blogs"]] == ["alice"]
  assert listed["total_blogs"] == 1
  c.unfollow("alice.tumblr.com")
  assert server.following() == []
  # A blog that blocked the user answers 403 on every blog route.
  server.block_user("alice")
  blocked = c.posts("alice")
  assert blocked["meta"]["status"] == 403
  # As real Tumblr says it: the message is the `response`, no `errors`.
  assert blocked["response"] == "You do not have permission to view this blog"
  # An NPF post with an uploaded image (multipart: a `json` part and the
  # file named by its identifier), then served from the media path.
  ours = TumblrClient(CREDENTIALS, host=server.url)
  png = b"\x89PNG\r\n\x1a\n" + b"pixels" * 10
  post_id = ours.create_post("frank", content=[
      {"type": "image", "media": [{"type": "image/png",
                                   "identifier": "plot"}]},
      {"type": "text", "text": "a plot"}], media={"plot": ("image/png", png)})
  (image, text) = server.post(int(post_id))["content"]
  assert text["text"] == "a plot"
  assert requests.get(image["media"][0]["url"], timeout=10).content == png
  with pytest.raises(TumblrError, match="no upload for media identifier"):
    ours.create_post("frank", content=[{"type": "image", "media": [
        {"type": "image/png", "identifier": "missing"}]}])
  # The Date header is the server's clock, which its daily limits follow.
  server.clock = lambda: time.time() + 90
  ours.posts("frank")
  assert ours.budget.clock_offset == pytest.approx(90, abs=2)
