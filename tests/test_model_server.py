"""The model server as a service one can expose (launch.serve_model): a
bearer token, limits on what one client may ask, and merged batches that a
bad request cannot spoil. Real sockets on 127.0.0.1 and the session's tiny
trained model; the only sampling is two small calls of one shape."""

import http.client
import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import threading

import pytest

from bot import ml
from bot.tumblr.errors import UserError as TumblrUserError
from configs import bot as bot_configs
from gpt2.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = secrets.token_urlsafe(32)
N = bot_configs.get_config("tiny").sampling.n  # the programs other tests use


@pytest.fixture
def make_server(bot_model):
  """Starts ModelServers on 127.0.0.1 (any port) and stops them after."""
  servers = []

  def make(model=None, **kwargs):
    server = ml.ModelServer(model or bot_model, **kwargs).start()
    servers.append(server)
    return server

  yield make
  for server in servers:
    server.stop()


def private_file(path, text: str, mode: int = 0o600) -> str:
  path.write_text(text)
  path.chmod(mode)
  return str(path)


def address(server) -> tuple:
  return ("127.0.0.1", int(server.url.rsplit(":", 1)[1]))


def read_reply(sock) -> tuple:
  """(status, JSON body) of the reply on `sock`; (None, None) when the
  server closed (or reset) the connection without one."""
  resp = http.client.HTTPResponse(sock)
  try:
    resp.begin()
  except (http.client.RemoteDisconnected, ConnectionResetError):
    return None, None
  return resp.status, json.loads(resp.read())


def exchange(server, head: str, body: bytes = b"", token: str = "") -> tuple:
  """(status, JSON body) for a request sent as raw bytes: `head` is the
  request line and any headers, one a line."""
  lines = head.split("\n") + ["Host: test"]
  if token:
    lines.append(f"Authorization: Bearer {token}")
  with socket.create_connection(address(server), timeout=10) as sock:
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    return read_reply(sock)


def post(server, path: str, obj, token: str = "") -> tuple:
  data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
  return exchange(server, f"POST {path} HTTP/1.1\nContent-Length: "
                  f"{len(data)}", data, token)


def one_line_error(body) -> str:
  assert isinstance(body, dict) and set(body) == {"error"}, body
  assert body["error"] and "\n" not in body["error"], body
  return body["error"]


# ---- who may ask ---------------------------------------------------------------------


def test_only_the_token_opens_the_routes_and_never_shows(make_server,
                                                        tmp_path, caplog):
  caplog.set_level(logging.DEBUG, logger="bot.ml")
  server = make_server(token=TOKEN)
  token_file = private_file(tmp_path / "model.token", TOKEN + "\n")
  remote = ml.RemoteModel(server.url, token_file=token_file)
  assert remote.sentiment(["what a lovely day", "awful"])[0] > 0.5
  assert remote.describe()["limits"]["max_n"] == ml.MAX_N

  wrong = private_file(tmp_path / "wrong.token",
                       TOKEN[:-1] + ("A" if TOKEN[-1] != "A" else "B"))
  for token_file, says in (
      ("", f"model server {server.url} asks for a token: set config key "
           "model_token_file to a copy of the server's --token_file"),
      (wrong, f"model server {server.url} refused this bot's token (config "
              "key model_token_file): name a copy of the server's "
              "--token_file")):
    other = ml.RemoteModel(server.url, token_file=token_file)
    for call in (lambda: other.sentiment(["hi"]), other.describe):
      with pytest.raises(UserError) as e:
        call()
      assert str(e.value) == says
  # Raw: no header, a prefix of the token, another scheme; GET /health too.
  body = json.dumps({"texts": ["hi"]}).encode()
  for auth in ("", f"\nAuthorization: Bearer {TOKEN[:-1]}",
               f"\nAuthorization: Basic {TOKEN}", "\nAuthorization: Bearer"):
    status, answer = exchange(server, "POST /sentiment HTTP/1.1\n"
                              f"Content-Length: {len(body)}{auth}", body)
    assert status == 401 and "bearer token" in one_line_error(answer)
  assert exchange(server, "GET /health HTTP/1.1")[0] == 401
  assert exchange(server, "GET /health HTTP/1.1", token=TOKEN)[0] == 200
  # The health check needs no token and tells nothing about the model.
  assert exchange(server, "GET /healthz HTTP/1.1") == (200, {"ok": True})
  assert post(server, "/sentiment", {"texts": ["hi"]}, TOKEN)[0] == 200
  assert "model server: " in caplog.text  # the server did log its requests
  assert TOKEN not in caplog.text and TOKEN[:-1] not in caplog.text


def test_token_files_and_open_addresses_are_refused_in_one_line(bot_model,
                                                               tmp_path):
  loose = private_file(tmp_path / "loose.token", TOKEN, 0o644)
  with pytest.raises(TumblrUserError) as e:
    ml.RemoteModel("http://127.0.0.1:1", token_file=loose)
  assert str(e.value) == (f"model token file {loose} is readable by others "
                          f"(mode 644); run: chmod 600 {loose}")
  empty = private_file(tmp_path / "empty.token", "\n")
  with pytest.raises(UserError, match="^model token file .* is empty; make "
                     "one: python -c"):
    ml.read_token(empty)
  assert ml.read_token(private_file(tmp_path / "ro.token", TOKEN + "\n",
                                    0o400)) == TOKEN
  with pytest.raises(UserError, match="would let others reach the model"):
    ml.ModelServer(bot_model, host="0.0.0.0")


@pytest.mark.parametrize("flags, says", [
    (["--host=0.0.0.0"],
     "error: --host=0.0.0.0 would let others reach the model server: pass "
     "--token_file (mode 0600), or keep --host=127.0.0.1"),
    (["--host=0.0.0.0", "--token_file={loose}"],
     "error: model token file {loose} is readable by others (mode 640); "
     "run: chmod 600 {loose}"),
], ids=["open_address_without_token", "token_file_readable_by_group"])
def test_serve_model_refuses_before_loading_anything(tmp_path, flags, says):
  loose = private_file(tmp_path / "model.token", TOKEN, 0o640)
  # No model named: getting past the refusal would fail otherwise.
  proc = subprocess.run(
      [sys.executable, "-m", "launch.serve_model",
       "--config=configs/bot.py:tiny", "--port=0"]
      + [f.format(loose=loose) for f in flags],
      cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr.strip().splitlines() == [says.format(loose=loose)]
  assert TOKEN not in proc.stderr + proc.stdout


# ---- what one request may ask --------------------------------------------------------


BIG = "Content-Length: 1000000000"
# (what, request line and headers, body, status)
BAD = [
    ("a gigabyte declared, ten bytes sent", f"POST /generate HTTP/1.1\n{BIG}",
     b"0123456789", 413),
    ("a negative length", "POST /generate HTTP/1.1\nContent-Length: -1",
     b"", 400),
    ("a length that is no number",
     "POST /generate HTTP/1.1\nContent-Length: ten", b"", 400),
    ("no length", "POST /generate HTTP/1.1", b"", 400),
    ("a chunked body", "POST /generate HTTP/1.1\nTransfer-Encoding: chunked",
     b"0\r\n\r\n", 400),
    ("no such route", "POST /shell HTTP/1.1\nContent-Length: 2", b"{}", 404),
]
BAD_BODIES = [
    ("not JSON", "/generate", b"{nope", 400),
    ("a JSON list", "/generate", [], 400),
    ("5,000 prompts", "/generate", {"prompts": ["hi"] * 5000, "n": 1}, 400),
    ("n = -3", "/generate", {"prompts": ["hi"], "n": -3}, 400),
    ("n = 65", "/generate", {"prompts": ["hi"], "n": 65}, 400),
    ("n a string", "/generate", {"prompts": ["hi"], "n": "3"}, 400),
    ("n true", "/generate", {"prompts": ["hi"], "n": True}, 400),
    ("no n", "/generate", {"prompts": ["hi"]}, 400),
    ("a prompt not a string", "/generate", {"prompts": [3], "n": 1}, 400),
    ("an empty prompt", "/generate", {"prompts": [""], "n": 1}, 400),
    ("prompts a string", "/generate", {"prompts": "hi", "n": 1}, 400),
    ("max_new_tokens asked for", "/generate",
     {"prompts": ["hi"], "n": 1, "max_new_tokens": 10**9}, 400),
    ("a seed short", "/generate",
     {"prompts": ["a", "b"], "n": 1, "seeds": [1]}, 400),
    ("a negative seed", "/generate",
     {"prompts": ["a"], "n": 1, "seeds": [-1]}, 400),
    ("a seed past 2**63", "/generate",
     {"prompts": ["a"], "n": 2, "seeds": [2**63 - 1]}, 400),
    ("5,000 texts", "/sentiment", {"texts": ["hi"] * 5000}, 400),
    ("texts not strings", "/score", {"texts": [{"a": 1}]}, 400),
    ("prompts not matching texts", "/autoreview",
     {"texts": ["a", "b"], "prompts": ["a"]}, 400),
    ("pairs of two lengths", "/logprob",
     {"prefixes": ["a"], "continuations": []}, 400),
]


@pytest.mark.slow  # samples (the first call compiles)
def test_each_bad_request_gets_its_4xx_while_a_good_one_is_served(
    make_server):
  server = make_server(window_s=0.3)
  remote = ml.RemoteModel(server.url)
  good = {}
  # A good request in the sampler while the bad ones arrive.
  sampling = threading.Thread(target=lambda: good.update(
      candidates=remote.generate(["dear bot, hello?"], N, seed=5)))
  sampling.start()
  for what, head, body, status in BAD:
    got, answer = exchange(server, head, body)
    assert got == status, what
    one_line_error(answer)
  for what, path, obj, status in BAD_BODIES:
    got, answer = post(server, path, obj)
    assert got == status, (what, answer)
    one_line_error(answer)
  sampling.join(timeout=300)
  assert [len(c) for c in good["candidates"]] == [N]
  assert server.batches == [1]  # nothing bad reached the sampler
  assert post(server, "/generate", {"prompts": [], "n": 1}) == (
      200, {"candidates": []})


def test_idle_and_stalled_connections_are_dropped_without_new_threads(
    make_server):
  server = make_server(timeout_s=1.0, max_connections=4)
  before = threading.active_count()
  idle = [socket.create_connection(address(server), timeout=10)
          for _ in range(6)]
  stalled = socket.create_connection(address(server), timeout=10)
  stalled.sendall(b"POST /sentiment HTTP/1.1\r\nHost: test\r\n"
                  b"Content-Length: 100\r\n\r\n{\"texts\":")
  try:
    # Four handle connections; the rest wait in the kernel's queue, not in
    # threads. A good request waits for the idle ones to be dropped.
    assert len(ml.RemoteModel(server.url).sentiment(["hi"])) == 1
    assert threading.active_count() - before <= 4
    assert server.connections <= 4
    assert read_reply(stalled)[0] in (408, None)
    for sock in idle:  # each closed by the server (or told it is busy)
      data = sock.recv(64)
      assert data == b"" or data.startswith(b"HTTP/1.1 503"), data
  finally:
    for sock in idle + [stalled]:
      sock.close()


# ---- batches a bad request cannot spoil ----------------------------------------------


class FailsOn:
  """The session's model, except that a sampler call holding a prompt with
  `poison` in it fails (as one whose prompt the sampler chokes on would)."""

  def __init__(self, model, poison: str):
    self.model = model
    self.poison = poison
    self.calls = []  # prompts per sampler call asked for

  def generate(self, prompts, n, *, seed):
    self.calls.append(len(prompts))
    if any(self.poison in p for p in prompts):
      raise RuntimeError("the sampler choked")
    return self.model.generate(prompts, n, seed=seed)

  def __getattr__(self, name):
    return getattr(self.model, name)


@pytest.mark.slow  # samples (the first call compiles)
def test_a_merged_call_that_fails_is_retried_request_by_request(
    make_server, bot_model):
  model = FailsOn(bot_model, "POISON")
  server = make_server(model, window_s=0.5)
  answers = {}
  barrier = threading.Barrier(3)

  def ask(name, obj):
    barrier.wait()
    answers[name] = post(server, "/generate", obj)

  threads = [threading.Thread(target=ask, args=args) for args in (
      ("good", {"prompts": ["dear bot, hello?"], "n": N, "seeds": [5]}),
      ("culprit", {"prompts": ["POISON"], "n": N, "seeds": [7]}),
      ("invalid", {"prompts": ["dear bot?"], "n": -3}))]
  for t in threads:
    t.start()
  for t in threads:
    t.join(timeout=300)
  status, body = answers["good"]
  assert status == 200 and [len(c) for c in body["candidates"]] == [N]
  status, body = answers["culprit"]
  assert status == 500 and "choked" in one_line_error(body)
  assert answers["invalid"][0] == 400
  # Their merged call failed; then each alone (the good one sampled).
  assert sorted(model.calls) == [1, 1, 2] and model.calls[0] == 2
  assert server.batches == [1]
