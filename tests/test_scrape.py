"""Scraping against the local API server, tumblr-backup import, the corpus."""

import array
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from bot.tumblr import scrape
from bot.tumblr.credentials import Credentials
from bot.tumblr.server import RateLimit, TumblrServer
from bot.tumblr.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CREDENTIALS = Credentials("consumer-key-0123456789", "consumer-secret-abc",
                          "oauth-token-0123456789", "oauth-secret-xyz")


def seeded_server(post_count, **server_args):
  server = TumblrServer(CREDENTIALS, **server_args)
  server.add_blog("alice")
  server.add_blog("empty")
  ids = [server.add_post("alice", text=f"post {i} ✨ 漢字", tags=[f"t{i}"],
                         timestamp=1_600_000_000 + 60 * i, note_count=i)
         for i in range(post_count)]
  return server, ids


def api_for(server, credentials=CREDENTIALS):
  return scrape.Api(scrape.make_client(credentials, server.url), server.url,
                    report=lambda message: None)


def stored_ids(path):
  with open(path, encoding="utf-8") as f:
    return [json.loads(line)["id"] for line in f]


def test_every_post_once_with_note_counts(tmp_path, capsys):
  server, ids = seeded_server(45)
  out = str(tmp_path / "posts.jsonl")
  with server:
    result = scrape.scrape_blog(api_for(server), "alice", out, progress=True)
  assert "45/45" in capsys.readouterr().err  # the progress bar
  assert result.new_posts == 45 and result.total_posts == 45
  assert sorted(stored_ids(out)) == sorted(ids)
  with open(out, encoding="utf-8") as f:
    posts = [json.loads(line) for line in f]
  assert {p["id"]: p["note_count"] for p in posts} == {
      post_id: i for i, post_id in enumerate(ids)}
  assert posts[0]["content"][0]["text"].endswith("✨ 漢字")


def test_interrupted_scrape_resumes_where_it_stopped(tmp_path):
  server, ids = seeded_server(70)
  out = str(tmp_path / "posts.jsonl")
  pages = []

  def stop_after_two_pages(new_posts):
    pages.append(new_posts)
    if len(pages) == 2:
      raise KeyboardInterrupt

  with server:
    with pytest.raises(KeyboardInterrupt):
      scrape.scrape_blog(api_for(server), "alice", out, progress=False,
                         on_page=stop_after_two_pages)
    stored_before = len(stored_ids(out))
    assert stored_before == sum(len(page) for page in pages) > 0
    result = scrape.scrape_blog(api_for(server), "alice", out, progress=False)
  assert result.new_posts == 70 - stored_before
  assert sorted(stored_ids(out)) == sorted(ids)
  # It went on from the third page: of the posts stored before, only those
  # asked for again on purpose came twice (the two pages' oldest posts, whose
  # second is asked for again, and the newest post, by the final check for
  # new posts).
  first_pages = [p["id"] for page in pages for p in page]
  assert sum(server.posts_served[i] > 1 for i in first_pages) <= 3


def test_post_store_repairs_what_a_crash_left(tmp_path):
  path = tmp_path / "posts.jsonl"
  # Damage in the middle is not a crash's doing: refuse to guess.
  path.write_text('{"id": 1}\nnot json\n{"id": 2}\n')
  with pytest.raises(UserError, match="has a line that is not JSON"):
    scrape.PostStore(str(path))
  # A whole post whose newline was lost; later, half of another post.
  path.write_text('{"id": 1}\n{"id": 2}')
  store = scrape.PostStore(str(path))
  assert store.ids == {"1", "2"}
  store.append([{"id": 2}, {"id": 3}])
  path.write_text(path.read_text() + '{"id": 4, "blo')
  assert scrape.PostStore(str(path)).ids == {"1", "2", "3"}
  assert path.read_text() == '{"id": 1}\n{"id": 2}\n{"id": 3}\n'


def test_second_run_fetches_only_new_posts(tmp_path):
  server, ids = seeded_server(30)
  out = str(tmp_path / "posts.jsonl")
  with server:
    scrape.scrape_blog(api_for(server), "alice", out, progress=False)
    new_ids = [server.add_post("alice", text=f"new {i}",
                               timestamp=1_700_000_000 + i) for i in range(3)]
    server.posts_served.clear()
    result = scrape.scrape_blog(api_for(server), "alice", out, progress=False)
  assert result.new_posts == 3
  assert sorted(stored_ids(out)) == sorted(ids + new_ids)
  # Besides the new posts, only the newest post of the first run (asked for
  # again in case others shared its second) was served.
  assert set(server.posts_served) <= set(new_ids) | {ids[-1]}


def test_a_429_is_waited_out(tmp_path):
  server, ids = seeded_server(45, rate_limits=[RateLimit("Perhour", 4, 1.0)])
  out = str(tmp_path / "posts.jsonl")
  with server:
    start = time.monotonic()
    result = scrape.scrape_blog(api_for(server), "alice", out, progress=False)
    elapsed = time.monotonic() - start
  assert sorted(stored_ids(out)) == sorted(ids)
  assert result.rate_limit_waits >= 1
  assert elapsed >= 0.9
  assert any(status == 429 for _, _, status in server.request_log)


def test_empty_blog_and_unknown_blog(tmp_path):
  server, _ = seeded_server(1)
  out = str(tmp_path / "posts.jsonl")
  with server:
    result = scrape.scrape_blog(api_for(server), "empty", out, progress=False)
    assert (result.new_posts, result.total_posts) == (0, 0)
    assert os.path.exists(out) and stored_ids(out) == []
    with pytest.raises(UserError, match="blog nobody not found"):
      scrape.scrape_blog(api_for(server), "nobody", out, progress=False)


def test_wrong_credentials_and_unreachable_api_are_one_line_errors(tmp_path):
  server, _ = seeded_server(1)
  wrong = Credentials(CREDENTIALS.consumer_key, "not-the-secret")
  with server:
    with pytest.raises(UserError) as refused:
      scrape.scrape_blog(api_for(server, wrong), "alice",
                         str(tmp_path / "p.jsonl"), progress=False)
  message = str(refused.value)
  assert "refused the credentials (401" in message and "\n" not in message
  assert "not-the-secret" not in message
  unreachable = scrape.Api(scrape.make_client(CREDENTIALS,
                                              "http://127.0.0.1:9"),
                           "http://127.0.0.1:9")
  with pytest.raises(UserError, match="cannot reach the Tumblr API"):
    scrape.scrape_blog(unreachable, "alice", str(tmp_path / "p.jsonl"),
                       progress=False)


def test_a_request_without_an_answer_times_out(tmp_path):
  server, _ = seeded_server(1)
  answer = threading.Event()
  server.before_request = lambda method, path: answer.wait(10)
  with server:
    api = scrape.Api(scrape.make_client(CREDENTIALS, server.url,
                                        timeout_s=0.3),
                     server.url, report=lambda message: None)
    start = time.monotonic()
    try:
      with pytest.raises(UserError, match="cannot reach the Tumblr API at "
                         "http://127.0.0.1:[0-9]+: ReadTimeout"):
        scrape.scrape_blog(api, "alice", str(tmp_path / "p.jsonl"),
                           progress=False)
    finally:
      answer.set()
  assert time.monotonic() - start < 5
  # Writes are not the scraper's: refused, never sent without a timeout.
  with pytest.raises(NotImplementedError):
    api.client.request.post("/v2/blog/alice.tumblr.com/posts", {})


# ---- the launch script, as a user runs it -----------------------------------


def run_launch(module, *args, env=None):
  return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=60,
                        check=False)


def credential_env(credentials=CREDENTIALS):
  env = {k: v for k, v in os.environ.items() if not k.startswith("TUMBLR_")}
  env.update({"TUMBLR_CONSUMER_KEY": credentials.consumer_key,
              "TUMBLR_CONSUMER_SECRET": credentials.consumer_secret})
  return env


def test_killed_scrape_loses_and_duplicates_nothing(tmp_path):
  server, ids = seeded_server(70)
  out = str(tmp_path / "posts.jsonl")
  gate, blocked = threading.Event(), threading.Event()
  page_requests = []

  def hold_third_page(method, path):
    if method == "GET" and path.endswith("/posts"):
      page_requests.append(path)
      if len(page_requests) == 3:
        blocked.set()
        gate.wait(30)

  server.before_request = hold_third_page
  with server:
    args = ["--blog=alice", f"--out={out}", f"--api_host={server.url}",
            "--noprogress"]
    process = subprocess.Popen(
        [sys.executable, "-m", "launch.scrape", *args], cwd=REPO,
        env=credential_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
      assert blocked.wait(30)
    finally:
      process.kill()
      process.communicate()
    gate.set()
    stored_before = len(stored_ids(out))
    assert 20 <= stored_before < 70
    # A crash in the middle of a write leaves half a line behind.
    with open(out, "a", encoding="utf-8") as f:
      f.write('{"id": 1, "blog": {"na')
    server.before_request = None
    finished = run_launch("launch.scrape", *args, env=credential_env())
  assert finished.returncode == 0, finished.stderr
  assert sorted(stored_ids(out)) == sorted(ids)
  assert f"alice: {70 - stored_before} new posts, 70 in" in finished.stdout


def test_launch_wrong_or_missing_credentials(tmp_path):
  server, _ = seeded_server(1)
  with server:
    wrong = Credentials(CREDENTIALS.consumer_key, "a-wrong-secret")
    refused = run_launch("launch.scrape", "--blog=alice",
                         f"--out={tmp_path}/p.jsonl",
                         f"--api_host={server.url}", env=credential_env(wrong))
  assert refused.returncode == 2
  assert refused.stderr.count("\n") == 1
  assert refused.stderr.startswith("error: the Tumblr API at http://127.0.0.1")
  assert "a-wrong-secret" not in refused.stderr + refused.stdout
  env = credential_env()
  del env["TUMBLR_CONSUMER_SECRET"]
  missing = run_launch("launch.scrape", "--blog=alice",
                       f"--out={tmp_path}/p.jsonl", env=env)
  assert missing.returncode == 2
  assert missing.stderr == (
      "error: missing Tumblr credential: environment variable "
      "TUMBLR_CONSUMER_SECRET is not set (or pass a credentials file)\n")


# ---- tumblr-backup import and prepare_corpus --------------------------------


def write_backup(folder):
  """A tumblr-backup folder: json/<id>.json legacy posts, one unreadable."""
  posts = [
      {"id": 1, "blog_name": "alice", "type": "text", "timestamp": 1610061300,
       "tags": ["mine"], "body": "<p>my <b>own</b> words</p>"},
      {"id": 2, "blog_name": "alice", "type": "text", "timestamp": 1610061400,
       "tags": ["Quotes"], "body": "<p>someone famous said this</p>"},
      {"id": 3, "blog_name": "alice", "type": "text", "timestamp": 1610061500,
       "tags": [], "body": "<p>lol</p>",
       "trail": [{"blog": {"name": "bob"}, "is_root_item": True,
                  "content_raw": "<p>" + "a long post by bob " * 20 + "</p>"},
                 {"blog": {"name": "alice"}, "is_current_item": True,
                  "content_raw": "<p>lol</p>"}]},
      {"id": 4, "blog_name": "alice", "type": "answer", "timestamp": 1610061600,
       "tags": ["asks"], "asking_name": "bob", "question": "how are you?",
       "answer": "<p>fine, thank you, and you?</p>"},
      {"id": 5, "blog_name": "alice", "type": "text", "timestamp": 1610061300,
       "tags": ["mine"], "body": "<p>my <b>own</b> words</p>"},
  ]
  os.makedirs(folder / "json")
  for post in posts:
    (folder / "json" / f"{post['id']}.json").write_text(json.dumps(post))
  (folder / "json" / "6.json").write_text('{"id": 6, "cut off')
  return posts


def test_tumblr_backup_import_then_prepare_corpus(tmp_path):
  write_backup(tmp_path / "backup")
  posts_path, docs_path = tmp_path / "posts.jsonl", tmp_path / "docs.jsonl"
  imported = run_launch("launch.scrape", f"--tumblr_backup={tmp_path}/backup",
                        f"--out={posts_path}")
  assert imported.returncode == 0, imported.stderr
  assert "imported 5 new posts" in imported.stdout
  assert "skipping" in imported.stderr and "6.json" in imported.stderr
  again = scrape.import_tumblr_backup(str(tmp_path / "backup"),
                                      str(posts_path))
  assert again.new_posts == 0
  assert sorted(stored_ids(posts_path)) == [1, 2, 3, 4, 5]

  prepared = run_launch("launch.prepare_corpus", f"--posts={posts_path}",
                        f"--out={docs_path}", "--rename=alice:Frank",
                        f"--shards={tmp_path}/shards", "--val_fraction=0",
                        "--tokenizer=gpt2")
  assert prepared.returncode == 0, prepared.stderr
  with open(docs_path, encoding="utf-8") as f:
    documents = [json.loads(line) for line in f]
  assert sorted(d["post_id"] for d in documents) == ["1", "4"]
  by_id = {d["post_id"]: d["text"] for d in documents}
  assert by_id["1"] == ("#1 Frank posted:\n\nWritten 11 PM January 2021 | "
                        "Frank's tags: #mine\n\nmy <b>own</b> words")
  assert by_id["4"] == (
      " Conversation between bob and Frank | 2 posts |\n"
      "#1 bob asked:\n\nhow are you?\n\n"
      "#2 Frank responded:\n\nWritten 11 PM January 2021 | Frank's tags: "
      "#asks\n\nfine, thank you, and you?")
  assert ("dropped 1 duplicate, 1 mostly written by others, 1 tagged to drop"
          in prepared.stdout)
  with open(tmp_path / "shards" / "meta.json", encoding="utf-8") as f:
    meta = json.load(f)
  # Both documents, tokenized, each followed by <|endoftext|> (id 50256).
  tokens = array.array("H", (tmp_path / "shards" /
                             meta["train"]["shards"][0]).read_bytes())
  assert meta["eot_id"] == 50256 and meta["train"]["documents"] == 2
  assert len(tokens) == meta["train"]["tokens"] > 20
  assert tokens.count(50256) == 2 and tokens[-1] == 50256

  bad = run_launch("launch.prepare_corpus", f"--posts={tmp_path}/none*.jsonl",
                   f"--out={docs_path}")
  assert bad.returncode == 2
  assert bad.stderr == (
      f"error: --posts {tmp_path}/none*.jsonl matches no file\n")
