"""No Tumblr secret in anything a command prints or writes.

Every launch script that takes Tumblr credentials (launch.scrape,
launch.run_bot, launch.console; launch.import_archive reads files only, and
launch.demo makes up its own keys) runs once, as a user runs it, at absl's
highest verbosity, against the local Tumblr server with keys that no other
text contains. Neither what it printed (stdout and stderr) nor any file it
wrote (posts, scrape state, the bot's SQLite state and trace, the console's
temporary files) may hold one of them.
"""

import os
import pathlib
import subprocess
import sys
import threading
import time

import pytest
import requests

from bot.tumblr.credentials import ENV_VARS, FIELDS, Credentials
from bot.tumblr.server import TumblrServer
from tests import bot_loop_helpers as helpers
from tests.processes import free_port, killed_on_exit

SECRETS = Credentials("ck-7Qf2Lw9xTz4K", "cs-R8mVb3NpYe6J",
                      "ot-H5sDk1GuWc0A", "os-Z2nXq7EtBr9M")
VERBOSE = "--verbosity=2"  # absl's highest: every DEBUG line and below
BOT = helpers.BOT


def secrets_in(text: str) -> list:
  """The names of the credentials that `text` holds."""
  return [f for f in FIELDS if getattr(SECRETS, f) in text]


def run(module, *args, env):
  return subprocess.run([sys.executable, "-m", module, *args],
                        cwd=helpers.REPO, env=env, capture_output=True,
                        text=True, timeout=240, check=False)


class Lines:
  """What a running process prints (stdout and stderr, merged)."""

  def __init__(self, proc):
    self.lines = []
    self._reader = threading.Thread(
        target=lambda: self.lines.extend(proc.stdout), daemon=True)
    self._reader.start()

  def wait_for(self, words: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and self._reader.is_alive():
      if any(words in line for line in list(self.lines)):
        return True
      time.sleep(0.2)
    return any(words in line for line in list(self.lines))

  def text(self) -> str:
    self._reader.join(30)
    return "".join(self.lines)


@pytest.mark.slow
def test_no_secret_in_what_the_commands_print_or_write(tmp_path,
                                                       bot_model_dir):
  (tmp_path / "tmp").mkdir()
  # The keys come from the environment, as in production; temporary files
  # (the console's, Gradio's) land in tmp_path, where they are searched.
  env = dict(os.environ, JAX_PLATFORMS="cpu", TMPDIR=str(tmp_path / "tmp"),
             **{ENV_VARS[f]: getattr(SECRETS, f) for f in FIELDS})
  server = TumblrServer(SECRETS).start()
  try:
    server.add_blog(BOT, owned=True)
    server.add_blog("alice")
    for i in range(3):
      server.add_post("alice", text=f"post {i}")
    helpers.seed_asks(server, [("do you like frogs?", "alice")])
    cfg = helpers.make_config(server, tmp_path, bot_model_dir)
    port = free_port()
    console = subprocess.Popen(
        [sys.executable, "-m", "launch.console",
         f"--config={helpers.REPO}/configs/bot.py:tiny",
         f"--config.blog={BOT}", f"--config.model={bot_model_dir}",
         f"--config.state={cfg.state}",
         f"--config.tumblr_host={server.url}", f"--config.now={cfg.now}",
         f"--port={port}", VERBOSE],
        cwd=helpers.REPO, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    with killed_on_exit(console):
      printed = Lines(console)
      # The others run while the console loads its model.
      scraped = run("launch.scrape", "--blog=alice",
                    f"--out={tmp_path}/posts.jsonl",
                    f"--api_host={server.url}", "--noprogress", VERBOSE,
                    env=env)
      ran = helpers.run_bot_cli(cfg, VERBOSE, env={
          k: env[k] for k in ["TMPDIR"] + list(ENV_VARS.values())})
      assert printed.wait_for("the console of", 240), printed.text()
      deadline = time.monotonic() + 60
      while True:  # the page, once Gradio serves it
        try:
          page = requests.get(f"http://127.0.0.1:{port}/", timeout=10)
          break
        except requests.ConnectionError:
          assert time.monotonic() < deadline, printed.text()
          time.sleep(0.5)
      console.terminate()
      console.wait(30)
    console_output = printed.text()
  finally:
    server.close()
  assert scraped.returncode == 0, scraped.stderr
  assert "alice: 3 new posts" in scraped.stdout
  assert ran.returncode == 0, ran.stderr
  assert len(server.posts(BOT)) == 1  # the ask, answered
  assert page.status_code == 200
  # Verbose indeed: the client's DEBUG lines (each call's path) are there.
  assert "GET /v2/user/info -> 200" in ran.stderr
  assert "GET /v2/user/info -> 200" in console_output
  for name, output in (("launch.scrape", scraped.stdout + scraped.stderr),
                       ("launch.run_bot", ran.stdout + ran.stderr),
                       ("launch.console", console_output)):
    assert secrets_in(output) == [], (name, output)
  written = [p for p in pathlib.Path(tmp_path).rglob("*") if p.is_file()]
  assert {p.name for p in written} >= {"posts.jsonl",
                                       "posts.jsonl.state.json", "bot.db"}
  for path in written:
    assert secrets_in(path.read_bytes().decode("latin-1")) == [], path
