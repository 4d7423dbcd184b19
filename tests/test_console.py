"""The operator's console in a real browser: Debian's Chromium, headless,
driven by Playwright, against the console on 127.0.0.1 with the tiny model,
the local Tumblr server and a real SQLite state.

Set CONSOLE_SCREENSHOTS=DIR to keep the screenshots of the tabs (the
docs' come from there).
"""

import os
import shutil
import subprocess
import sys
import threading
import time

import pytest
import requests
from playwright import sync_api as playwright_api

from bot import loop
from bot.console import app, core
from bot.state import Store
from tests import bot_loop_helpers as helpers
from tests.processes import free_port
# pylint: disable-next=unused-import
from tests.bot_loop_helpers import credentials_env, server  # fixtures
from tests.bot_loop_helpers import answered, make_config, seed_asks

BOT = helpers.BOT
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
  assert os.path.exists(CHROMIUM), (
      "the browser tests need Debian's Chromium: apt-get install -y chromium")
  with playwright_api.sync_playwright() as p:
    b = p.chromium.launch(executable_path=CHROMIUM, args=[
        "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"])
    yield b
    b.close()


@pytest.fixture
def cfg(server, tmp_path):
  config = make_config(server, tmp_path)
  config.choice.min_chars = 1
  return config


class Running:
  """A console page served on 127.0.0.1, and a browser tab on it."""

  def __init__(self, console, browser, password=""):
    self.console = console
    self.port = free_port()
    self.page = app.build(console)
    app.launch(self.page, "127.0.0.1", self.port, password, block=False)
    self.url = f"http://127.0.0.1:{self.port}/"
    self.tab = browser.new_page(viewport={"width": 1280, "height": 900})
    self.tab.goto(self.url)

  def close(self):
    self.tab.close()
    self.page.close()

  def open_tab(self, name):
    self.tab.get_by_role("tab", name=name).click()

  def shot(self, tmp_path, name):
    path = tmp_path / f"console-{name}.png"
    self.tab.screenshot(path=str(path), full_page=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    keep = os.environ.get("CONSOLE_SCREENSHOTS")
    if keep:
      os.makedirs(keep, exist_ok=True)
      shutil.copy(path, keep)


@pytest.fixture
def console(browser, bot_model, cfg):
  """console(post_now=..., dry_run=...) -> a Running console."""
  made = []

  def start(**kw):
    client = None if kw.get("dry_run") else loop.make_client(cfg)
    made.append(Running(core.Console(cfg, bot_model, client, **kw), browser))
    return made[-1]

  yield start
  for r in made:
    r.close()


def parked(cfg, server, model, asks):
  """One pass with every post held for review: the asks' ids."""
  cfg.review.all = True
  ids = seed_asks(server, asks)
  report = loop.run_pass(cfg, model=model)
  assert sorted(report.drafted) == sorted(f"ask:{i}" for i in ids)
  return ids


def choose(tab, key):
  tab.click("#review-refresh")
  tab.wait_for_function(
      "document.querySelector('#review-card').innerText.includes('ask:')")
  tab.click("#parked input")
  tab.get_by_role("option", name=f"{key} ").first.click()
  tab.wait_for_function(
      f"document.querySelector('#review-card').innerText.includes('{key}')")


def status_says(tab, words):
  tab.wait_for_function(
      "w => document.querySelector('#review-status textarea').value"
      ".includes(w)", arg=words)


def puts_to(server, post_id):
  return [w for w in server.arrived if w[0] == "PUT" and str(post_id) in w[1]]


# ---- Write -----------------------------------------------------------------------------


@pytest.mark.slow
def test_write_types_the_candidates_out_then_scores_them(console, server,
                                                         tmp_path):
  r = console()
  tab = r.tab
  tab.fill("#text textarea", "do you like frogs?")
  tab.fill("#name textarea", "alice")
  # Every value the first candidate's box shows, sampled every 5 ms.
  tab.evaluate("""() => { window.seen = [];
      setInterval(() => { const t = document.querySelector(
          '#candidate-0 textarea'); if (t && t.value &&
          window.seen[window.seen.length - 1] !== t.value)
        window.seen.push(t.value); }, 5); }""")
  tab.click("#write")
  tab.wait_for_selector("#scores-0 .scores", timeout=120_000)
  seen = tab.evaluate("window.seen")
  final = tab.input_value("#candidate-0 textarea")
  assert seen[-1] == final and final.strip()
  partial = {s for s in seen[:-1] if final.startswith(s) and s != final}
  assert len(partial) >= 3, seen
  scores = tab.inner_text("#scores-0")
  for word in ("selector", "sentiment", "mood:", "filters:", "word list:"):
    assert word in scores
  assert tab.locator(".scores .pick").count() == 1  # the bot's pick
  assert "the bot would pick" in tab.inner_text("#verdict")
  r.shot(tmp_path, "write")
  # Sent to the blog as a draft, once, as a job of the state.
  tab.fill("#send-which input", "1")
  tab.click("#send")
  tab.wait_for_function(
      "document.querySelector('#sent textarea').value.startsWith('sent')")
  (draft,) = server.posts(BOT, "draft")
  assert draft["content"][0]["text"] == "alice: do you like frogs?"
  # The candidate after the ask, each paragraph a block (the sampled text
  # may hold several, depending on the date in the prompt).
  store = Store(r.console.config.state)
  ((job, entry),) = store.history()
  store.close()
  assert entry["winner"] == 1 and job.post_id == str(draft["id"])
  assert "\n\n".join(block["text"] for block in draft["content"][1:]) == (
      entry["candidates"][1]["text"])


def sent_says(tab, words):
  tab.wait_for_function(
      "w => document.querySelector('#sent textarea').value.startsWith(w)",
      arg=words)


@pytest.mark.slow
def test_each_tab_sends_its_own_candidate_once(console, browser, server):
  r = console()
  second = browser.new_page()  # another browser session on the console
  try:
    second.goto(r.url)
    for tab, asker, ask in ((r.tab, "alice", "do you like frogs?"),
                            (second, "bob", "what is the sea like?")):
      tab.fill("#text textarea", ask)
      tab.fill("#name textarea", asker)
      tab.click("#write")
    for tab in (r.tab, second):
      tab.wait_for_selector("#scores-0 .scores", timeout=120_000)
    # The first tab sends what it shows, though the second wrote since.
    r.tab.click("#send")
    sent_says(r.tab, "sent candidate 0 as draft")
    r.tab.click("#send")
    sent_says(r.tab, "already sent: candidate 0 is post")
    second.click("#send")
    sent_says(second, "sent candidate 0 as draft")
  finally:
    second.close()
  asks = sorted(d["content"][0]["text"] for d in server.posts(BOT, "draft"))
  assert asks == ["alice: do you like frogs?", "bob: what is the sea like?"]


def written_for(console_, ask, asker):
  """A Write of `console_` (the bot's sampling, 4 candidates) for an ask."""
  prompt, said, author = console_.prompt("ask", asker, ask)
  settings = core.WriteSettings(max_new_tokens=console_.max_new_tokens())
  *_, (_, written) = console_.write(prompt, said, author, settings)
  return written


def test_a_candidate_is_sent_once_and_never_beside_a_pass(server, cfg,
                                                          bot_model):
  live = core.Console(cfg, bot_model, loop.make_client(cfg))
  written = written_for(live, "do you like frogs?", "alice")
  # A bot pass holds the state: nothing is sent until it is done.
  holder = Store(cfg.state)
  holder.lock()
  try:
    assert live.send(written, 1, "draft", lock_wait_s=0.2) == (
        "not sent: a pass of the bot holds the state; send again when it "
        "is done")
    assert server.posts(BOT, "draft") == []
  finally:
    holder.close()
  sent = live.send(written, 1, "draft")
  assert sent.startswith("sent candidate 1 as draft (post ")
  post_id = sent.split("(post ")[1].rstrip(")")
  for state in ("draft", "published"):
    assert live.send(written, 1, state) == (
        f"already sent: candidate 1 is post {post_id} (draft); nothing sent "
        f"again")
  # The same candidates written again are the same posts.
  again = written_for(live, "do you like frogs?", "alice")
  assert again.keys == written.keys
  assert live.send(again, 1, "draft").startswith("already sent")
  assert len(server.posts(BOT, "draft")) == 1 and server.posts(BOT) == []
  assert len(helpers.writes_to(server, "/posts")) == 1


def test_the_daily_cap_holds_for_the_console(server, cfg, bot_model):
  cfg.client.daily_cap = 1
  live = core.Console(cfg, bot_model, loop.make_client(cfg))
  written = written_for(live, "do you like frogs?", "alice")
  assert len(set(written.keys)) == len(written.keys)
  assert live.send(written, 0, "published").startswith(
      "sent candidate 0 as published")
  assert live.send(written, 1, "published") == (
      "not sent: the daily cap of 1 posts is reached (a draft can still be "
      "sent)")
  assert len(server.posts(BOT)) == 1
  assert live.send(written, 1, "draft").startswith("sent candidate 1 as draft")


def test_nothing_is_sent_in_a_dry_run(console):
  r = console(dry_run=True)
  assert r.tab.locator("#send").is_disabled()
  assert r.console.send(None, 0, "published") == "dry run: nothing is sent"


# ---- Review ----------------------------------------------------------------------------


@pytest.mark.slow
def test_an_accepted_edit_is_posted_once_beside_a_bot_pass(console, server,
                                                           cfg, bot_model,
                                                           tmp_path):
  (ask,) = parked(cfg, server, bot_model, [("do you like frogs?", "alice")])
  r = console(post_now=True)
  r.open_tab("Review")
  choose(r.tab, f"ask:{ask}")
  r.shot(tmp_path, "review")
  # A bot pass stops in the middle, holding the state's lock ...
  release, holding = threading.Event(), threading.Event()

  def hold(method, path):
    server.arrived.append((method, path))
    if "submission" in path and not release.is_set():
      holding.set()
      release.wait(60)
  server.before_request = hold
  cfg.review.all = False
  running_pass = threading.Thread(target=loop.run_pass, args=(cfg,),
                                  kwargs={"model": bot_model})
  running_pass.start()
  assert holding.wait(60)
  # ... while the operator accepts an edited text.
  r.tab.fill("#review-text textarea", "an edited answer about frogs")
  r.tab.click("#accept")
  status_says(r.tab, "carrying it out now")
  time.sleep(1.5)  # the console waits for the lock
  assert answered(server, [ask], "published") == {}
  release.set()
  running_pass.join(60)
  store = Store(cfg.state)
  deadline = time.time() + 60
  while time.time() < deadline and store.job(f"ask:{ask}").status != "done":
    time.sleep(0.2)
  (example,) = store.review_examples()
  store.close()
  assert answered(server, [ask]) == {ask: ["an edited answer about frogs"]}
  assert len(puts_to(server, ask)) == 2  # the draft, then the accepted edit
  while r.console._carrying_out.locked():  # pylint: disable=protected-access
    time.sleep(0.1)
  loop.run_pass(cfg, model=bot_model)
  assert len(puts_to(server, ask)) == 2
  assert (example["decision"], example["label"]) == ("accept_edited", 0)


@pytest.mark.slow
def test_a_retry_shows_new_candidates_and_the_limit_holds(console, server, cfg,
                                                          bot_model):
  (ask,) = parked(cfg, server, bot_model, [("do you like frogs?", "alice")])
  cfg.review.max_retries = 1
  r = console(post_now=True)
  r.open_tab("Review")
  choose(r.tab, f"ask:{ask}")
  before = r.tab.inner_text("#review-card")
  r.tab.click("#retry")
  status_says(r.tab, "carrying it out now")
  deadline = time.time() + 120
  while time.time() < deadline:
    r.tab.click("#review-refresh")
    time.sleep(0.5)
    card = r.tab.inner_text("#review-card")
    if "retries 1" in card:
      break
  assert "retries 1" in card and card != before
  assert len(puts_to(server, ask)) == 2  # the draft, edited in place
  r.tab.click("#retry")
  status_says(r.tab, "no retries left (1 of 1)")
  store = Store(cfg.state)
  assert [e["decision"] for e in store.review_examples()] == ["retry"]
  store.close()


@pytest.mark.slow
def test_reject_deletes_the_draft(console, server, cfg, bot_model):
  (ask,) = parked(cfg, server, bot_model, [("do you like frogs?", "alice")])
  r = console(post_now=True)
  r.open_tab("Review")
  choose(r.tab, f"ask:{ask}")
  r.tab.click("#reject")
  status_says(r.tab, "reject")
  store = Store(cfg.state)
  deadline = time.time() + 60
  while time.time() < deadline and store.job(f"ask:{ask}").status != "done":
    time.sleep(0.2)
  assert store.job(f"ask:{ask}").status == "done"
  assert [e["label"] for e in store.review_examples()] == [1]
  store.close()
  assert server.posts(BOT, "draft") == [] and server.posts(BOT) == []


# ---- untrusted text and the history ----------------------------------------------------


@pytest.mark.slow
def test_an_ask_with_markup_is_shown_as_text(console, server, cfg, bot_model,
                                             tmp_path):
  evil = ("<script>window.pwned=1</script> hello "
          "<img src=x onerror=\"window.pwned=2\">")
  (ask,) = parked(cfg, server, bot_model, [(evil, "mallory")])
  r = console()
  r.open_tab("Review")
  choose(r.tab, f"ask:{ask}")
  r.open_tab("History")
  r.tab.click("#search-go")
  r.tab.wait_for_function(
      "document.querySelector('#history').innerText.includes('mallory')")
  assert "<script>window.pwned=1</script>" in r.tab.inner_text("#history")
  assert r.tab.evaluate("typeof window.pwned") == "undefined"
  assert r.tab.locator("#history img, #history script").count() == 0


@pytest.mark.slow
def test_history_lists_a_dry_run_with_its_candidates(console, server, cfg,
                                                     bot_model, tmp_path):
  seed_asks(server)
  report = loop.run_pass(cfg, model=bot_model, dry_run=True)
  assert len(report.would_post) == 3
  r = console(dry_run=True)
  r.open_tab("History")
  r.tab.click("#search-go")
  r.tab.wait_for_function(
      "document.querySelectorAll('#history .card').length == 3")
  text = r.tab.inner_text("#history")
  assert text.count("would post:") == 3
  assert "do you like frogs?" in text and "selector" in text
  assert r.tab.locator("#history tr.pick").count() == 3
  r.tab.fill("#search textarea", "alice")
  r.tab.click("#search-go")
  deadline = time.time() + 60
  while time.time() < deadline:
    cards = r.tab.locator("#history .card").count()
    if cards == 1:
      break
    time.sleep(0.2)
  assert cards == 1, (cards, r.tab.input_value("#search textarea"),
                      r.tab.inner_text("#history")[:300])
  r.shot(tmp_path, "history")


# ---- who may open it -----------------------------------------------------------------


def test_another_host_needs_a_password(cfg, bot_model, tmp_path):
  args = [sys.executable, "-m", "launch.console",
          f"--config={helpers.REPO}/configs/bot.py:tiny",
          f"--config.blog={BOT}", f"--config.state={cfg.state}",
          "--host=0.0.0.0", "--port=1"]
  env = {k: v for k, v in os.environ.items()
         if k != "TUMBLR_CONSOLE_PASSWORD"}
  proc = subprocess.run(args, cwd=helpers.REPO, env=env, capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      "error: --host=0.0.0.0 would let others reach the console: set "
      "TUMBLR_CONSOLE_PASSWORD or pass --password_file (mode 0600), or keep "
      "--host=127.0.0.1"]
  # With a password, nothing answers before the login.
  console = core.Console(cfg, bot_model, None, dry_run=True)
  page = app.build(console)
  port = free_port()
  app.launch(page, "0.0.0.0", port, "s3cret-words", block=False)
  try:
    base = f"http://127.0.0.1:{port}"
    assert requests.get(base + "/config", timeout=10).status_code == 401
    session = requests.Session()
    session.post(base + "/login", data={"username": "operator",
                                        "password": "wrong"}, timeout=10)
    assert session.get(base + "/config", timeout=10).status_code == 401
    session.post(base + "/login", data={"username": "operator",
                                        "password": "s3cret-words"},
                 timeout=10)
    assert session.get(base + "/config", timeout=10).status_code == 200
  finally:
    page.close()


def test_the_api_is_closed_unless_asked_for(cfg, bot_model):
  console = core.Console(cfg, bot_model, None, dry_run=True)
  for api in (False, True):
    page = app.build(console, api=api)
    port = free_port()
    app.launch(page, "127.0.0.1", port, block=False, api=api)
    try:
      base = f"http://127.0.0.1:{port}"
      info = requests.get(base + "/gradio_api/info", timeout=10)
      call = requests.post(base + "/gradio_api/call/send",
                           json={"data": [0, "draft"]}, timeout=10)
      footer = requests.get(base + "/config", timeout=10).json()[
          "footer_links"]
    finally:
      page.close()
    if api:
      assert info.status_code == 200 and call.status_code == 200
      assert "/send" in info.json()["named_endpoints"] and "api" in footer
    else:
      assert (info.status_code, call.status_code) == (403, 403)
      assert "api" not in footer  # no "Use via API" link


def test_p_reject_is_shown_beside_the_other_scores_where_there_is_one():
  # pylint: disable-next=import-outside-toplevel
  from bot.choice import Candidate
  reviewed = [Candidate("yes", 0.7, 0.6, p_reject=0.125),
              Candidate("no", 0.2, 0.4, p_reject=0.875)]
  table = app.candidates_html({"candidates": [c.as_dict() for c in reviewed],
                               "winner": 0})
  assert "<th>P(reject)</th>" in table
  assert "<td>0.125</td>" in table and "<td>0.875</td>" in table
  plain = app.candidates_html({"candidates": [Candidate("yes").as_dict()]})
  assert "P(reject)" not in plain  # no autoreviewer, no column
  written = core.Written("hi", "hi", "alice", reviewed, [[], []], 0, "", 0.5,
                         (0.0, 1.0))
  assert "P(reject) 0.875" in app._scores_html(written, 1)  # pylint: disable=protected-access
  written.candidates = [Candidate("yes", 0.7, 0.6)]
  assert "P(reject)" not in app._scores_html(written, 0)  # pylint: disable=protected-access


def test_written_by_names_the_model_its_step_and_heads():
  # pylint: disable-next=import-outside-toplevel
  from bot.records import written_by
  assert written_by({}) == ""  # entries from before provenance was kept
  assert written_by({"model": "runs/blog", "model_step": 1200,
                     "heads": "heads"}) == (
      "model runs/blog at step 1200, heads heads")
  assert written_by({"model": "gpt2", "model_step": None}) == "model gpt2"
