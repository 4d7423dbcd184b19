"""The deployment files against the code, in seconds and without podman.

compose.yaml, compose.one-machine.yaml, the Containerfile and the systemd
units under deploy/systemd/ name `launch.*` commands and their flags: every
module exists and every flag (and `--config.<key>`) is one the module
defines, asked of absl as tests/test_docs.py asks it for the docs. The
services agree on the volume, the secrets and the ports; the image runs as a
user that is not root and no ENV or ARG holds a secret. And `run_bot
--once`, for a timer, exits non-zero when its pass fails.

`python -m bench.container` builds and runs the image itself (minutes).
"""

import http.server
import json
import os
import re
import shlex
import threading

import pytest
import yaml

from tests import bot_loop_helpers as helpers
# pylint: disable-next=unused-import
from tests.bot_loop_helpers import credentials_env, server  # fixtures
from tests.test_docs import REPO, _ask_the_code

COMPOSE_FILES = ("compose.yaml", "compose.one-machine.yaml")
UNITS = os.path.join(REPO, "deploy", "systemd")
ENTRYPOINT_CONFIG = "deploy/container_config.py"
# Module names the entrypoint takes as its first word (deploy/entrypoint.sh).
_SECRET_WORDS = re.compile(r"(secret|token|password|passwd|credential|"
                           r"api_?key|consumer_key|oauth)", re.I)


def _read(path):
  with open(os.path.join(REPO, path), encoding="utf-8") as f:
    return f.read()


def _interpolate(text):
  """Compose's `${VAR:-default}` (and `${VAR}`) with the defaults."""
  return re.sub(r"\$\{(\w+)(?::?[-?]([^}]*))?\}",
                lambda m: m.group(2) or "", text)


def _compose(name):
  return yaml.safe_load(_read(name))


def _image_command(words, source):
  """The `launch.*` command the image's entrypoint runs for `words` (its
  first word a module name, or flags for run_bot), with the container's
  config when none is given, as deploy/entrypoint.sh does."""
  words = [_interpolate(w) for w in words]
  if not words or words[0].startswith("-"):
    words = ["run_bot"] + words
  module, flags = words[0], words[1:]
  if module in ("run_bot", "serve_model", "console") and not any(
      f == "--config" or f.startswith("--config=") for f in flags):
    flags = [f"--config={ENTRYPOINT_CONFIG}"] + flags
  return {"source": source, "module": "launch." + module, "words": flags}


def _unit_lines(path):
  """systemd's `Key=value` lines with their continuations joined."""
  out, current = [], ""
  for line in _read(path).split("\n"):
    if line.lstrip().startswith("#") and not current:
      continue
    if line.rstrip().endswith("\\"):
      current += line.rstrip()[:-1] + " "
      continue
    out.append(current + line)
    current = ""
  return out


def _unit_commands(path):
  """The launch.* commands in a unit's ExecStart lines: `python -m
  launch.X ...` from a clone, or `podman run ... IMAGE WORDS...`."""
  commands = []
  for line in _unit_lines(path):
    if not line.startswith("ExecStart="):
      continue
    words = shlex.split(line.split("=", 1)[1])
    if "-m" in words:
      at = words.index("-m")
      commands.append({"source": path, "module": words[at + 1],
                       "words": words[at + 2:]})
    elif "run" in words and words[0].endswith("podman"):
      image = next(i for i, w in enumerate(words) if "BOT_IMAGE" in w)
      commands.append(_image_command(words[image + 1:], path))
  return commands


def _all_commands():
  commands = []
  for name in COMPOSE_FILES:
    for service, spec in _compose(name)["services"].items():
      if "command" in spec:
        commands.append(_image_command(spec["command"], f"{name}:{service}"))
  for name in sorted(os.listdir(UNITS)):
    if name.endswith(".service"):
      commands += _unit_commands(os.path.join("deploy", "systemd", name))
  # The Containerfile's default command.
  cmd = re.search(r"^CMD\s+(\[.*\])\s*$", _read("Containerfile"), re.M)
  commands.append(_image_command(json.loads(cmd.group(1)), "Containerfile"))
  return commands


def _flags(words):
  out = []
  for word in words:
    if word.startswith("--"):
      name, eq, value = word[2:].partition("=")
      out.append((name, value if eq else None))
  return out


def test_every_command_names_a_module_and_flags_that_exist():
  commands = _all_commands()
  assert {c["module"] for c in commands} >= {
      "launch.run_bot", "launch.serve_model", "launch.console"}
  for c in commands:
    c["flags"] = _flags(c["words"])
  answer = _ask_the_code(commands)
  problems = []
  for c in commands:
    known = answer["modules"].get(c["module"])
    if known is None:
      problems.append(f"{c['source']}: no module {c['module']}")
      continue
    for name, _ in c["flags"]:
      config_flag = name.split(".", 1)[0]
      if "." in name and config_flag in known["configs"]:
        given = [v for n, v in c["flags"] if n == config_flag and v]
        spec = given[-1] if given else known["configs"][config_flag]
        keys = answer["configs"].get(spec)
        if isinstance(keys, dict):
          problems.append(f"{c['source']}: config {spec}: {keys['error']}")
        elif name.split(".", 1)[1] not in keys:
          problems.append(f"{c['source']}: {c['module']}: --{name} is no "
                          f"key of {spec}")
      elif name not in known["flags"]:
        problems.append(f"{c['source']}: {c['module']} has no flag --{name}")
  assert not problems, "\n".join(problems)


def test_the_bot_is_pointed_at_the_model_server():
  compose = _compose("compose.yaml")
  services = compose["services"]
  model = services["model"]["command"]
  port = next(w.split("=")[1] for w in model if w.startswith("--port="))
  assert "--host=0.0.0.0" in model
  # The server takes a token on a non-loopback address: the bot sends it.
  token = next(w.split("=")[1] for w in model
               if w.startswith("--token_file="))
  for name in ("bot", "console"):
    words = [_interpolate(w) for w in services[name]["command"]]
    url = next(w.split("=", 1)[1] for w in words
               if w.startswith("--config.model_server="))
    assert url.rstrip("/").endswith(":" + port), (name, url)
    assert f"--config.model_token_file={token}" in words, name
  bot_url = next(_interpolate(w) for w in services["bot"]["command"]
                 if w.startswith("--config.model_server="))
  assert f"//model:{port}" in bot_url
  # Published on the host (the console, on the host's network, uses it).
  published = [_interpolate(p) for p in services["model"]["ports"]]
  assert any(p.endswith(f":{port}:{port}") for p in published), published
  # The health check asks the route the server answers without a token.
  check = " ".join(services["model"]["healthcheck"]["test"])
  assert f":{port}/healthz" in check
  assert services["bot"]["depends_on"]["model"]["condition"] == (
      "service_healthy")


def test_the_services_share_the_state_and_mount_the_secrets():
  for name in COMPOSE_FILES:
    compose = _compose(name)
    assert list(compose["volumes"]) == ["bot-data"], name
    for service, spec in compose["services"].items():
      mounts = [_interpolate(v) for v in spec["volumes"]]
      assert "bot-data:/data" in mounts, (name, service)
      secrets = spec.get("secrets", [])
      for secret in secrets:
        assert secret in compose["secrets"], (name, service, secret)
      files = set(secrets) | {
          os.path.basename(m.split(":")[1]) for m in mounts
          if m.split(":")[1] == "/run/secrets"}
      words = " ".join(_interpolate(w) for w in spec["command"])
      for path in re.findall(r"/run/secrets/(\w+)", words):
        assert path in secrets or "secrets" in files, (name, service, path)
      if spec["command"][0] in ("run_bot", "console"):
        # the credentials the container config names
        assert "tumblr_credentials" in secrets or "secrets" in files
  # The console: the host's loopback by default, a password beside any
  # other address.
  for name in COMPOSE_FILES:
    console = _compose(name)["services"]["console"]
    assert console["network_mode"] == "host"
    words = [_interpolate(w) for w in console["command"]]
    assert "--host=127.0.0.1" in words
    assert any(w.startswith("--password_file=") for w in console["command"])


def test_the_container_config_keeps_everything_under_data():
  # pylint: disable-next=import-outside-toplevel
  from ml_collections.config_flags import config_flags
  config = config_flags.ConfigFileFlagParser("config").parse(
      os.path.join(REPO, ENTRYPOINT_CONFIG))
  for key in ("state", "feed_dir", "model", "heads"):
    assert config[key].startswith("/data/"), key
  assert config.credentials.startswith("/run/secrets/")
  tiny = config_flags.ConfigFileFlagParser("config").parse(
      os.path.join(REPO, ENTRYPOINT_CONFIG) + ":tiny")
  assert tiny.state == config.state and tiny.sampling.n == 6


def _containerfile():
  """The Containerfile's instructions: (NAME, text), continuations joined."""
  out, current = [], ""
  for line in _read("Containerfile").split("\n"):
    if not current and (not line.strip() or line.lstrip().startswith("#")):
      continue
    if line.rstrip().endswith("\\"):
      current += line.rstrip()[:-1] + " "
      continue
    text = current + line
    current = ""
    name, _, rest = text.strip().partition(" ")
    out.append((name.upper(), rest.strip()))
  return out


def test_the_image_runs_as_a_user_and_holds_no_secret():
  steps = _containerfile()
  args = {}
  for name, rest in steps:
    if name == "ARG":
      key, _, value = rest.partition("=")
      args[key] = value
  users = [rest for name, rest in steps if name == "USER"]
  assert users, "the image needs a USER"
  user = users[-1].split(":")[0]
  user = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), ""), user)
  assert user and user not in ("0", "root"), users[-1]
  # The last stage ends as that user, after everything that needs root.
  last = max(i for i, (name, _) in enumerate(steps) if name == "FROM")
  assert any(name == "USER" for name, _ in steps[last:])
  assert args["BASE"].startswith("python:"), "Docker builds with no argument"
  for name, rest in steps:
    if name in ("ENV", "ARG"):
      for key in re.findall(r"(?:^|\s)(\w+)=", rest) or [rest.split("=")[0]]:
        assert not _SECRET_WORDS.search(key), f"{name} {key} looks secret"
  volumes = [rest for name, rest in steps if name == "VOLUME"]
  assert volumes == ["/data"]
  entry = json.loads(next(rest for name, rest in steps
                          if name == "ENTRYPOINT"))
  copied = " ".join(rest for name, rest in steps if name == "COPY")
  assert os.path.relpath(entry[0], "/app") in copied
  assert os.access(os.path.join(REPO, "deploy", "entrypoint.sh"), os.X_OK)
  # What the build reads is a list of names: never runs, secrets or a venv.
  ignore = _read(".dockerignore").split("\n")
  assert ignore[ignore.index("*") - 0] == "*"
  allowed = [l[1:].rstrip("/") for l in ignore if l.startswith("!")]
  for path in allowed:
    assert os.path.exists(os.path.join(REPO, path)), path
    assert not re.search(r"runs|secret|venv|token", path), path
  for source in re.findall(r"COPY (?!--from)(\S+)", copied):
    if source == ".":
      continue
    assert any(source == a or source.startswith(a + "/") for a in allowed), (
        f"COPY {source} is left out by .dockerignore")


def test_the_timers_start_their_services():
  names = os.listdir(UNITS)
  timers = [n for n in names if n.endswith(".timer")]
  assert len(timers) == 2
  for timer in timers:
    service = timer[:-len(".timer")] + ".service"
    assert service in names
    lines = _unit_lines(os.path.join("deploy", "systemd", service))
    assert "Type=oneshot" in lines
    assert any("--once" in l for l in lines if l.startswith("ExecStart="))
  container = _unit_lines(os.path.join("deploy", "systemd",
                                       "tumblr-bot-container.service"))
  run = next(l for l in container if l.startswith("ExecStart="))
  assert "--rm" in run and ":/data" in run
  assert "/run/secrets/tumblr_credentials:ro" in run


# --- run_bot --once for a timer -------------------------------------------------


class _BrokenModelServer(http.server.BaseHTTPRequestHandler):
  """Describes a model, then fails every request for work (500)."""

  def do_GET(self):  # pylint: disable=invalid-name
    body = json.dumps({"heads": [], "kind": "gpt2"}).encode()
    self.send_response(200)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(body)))
    self.end_headers()
    self.wfile.write(body)

  def do_POST(self):  # pylint: disable=invalid-name
    self.rfile.read(int(self.headers.get("Content-Length", 0)))
    self.send_response(500)
    self.send_header("Content-Length", "0")
    self.end_headers()

  def log_message(self, *args):
    pass


@pytest.fixture
def broken_model_server():
  httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                          _BrokenModelServer)
  thread = threading.Thread(target=httpd.serve_forever, daemon=True)
  thread.start()
  yield f"http://127.0.0.1:{httpd.server_address[1]}"
  httpd.shutdown()
  httpd.server_close()


def test_once_exits_non_zero_when_its_pass_fails(server, tmp_path,
                                                 broken_model_server):
  """A timer shows a failed pass: the model fails in the middle of it."""
  helpers.seed_asks(server)
  cfg = helpers.make_config(server, tmp_path)
  proc = helpers.run_bot_cli(cfg, f"--model_server={broken_model_server}",
                             "--dry_run", timeout=120)
  assert proc.returncode not in (0, None), proc.stdout + proc.stderr[-2000:]
  assert "model server" in proc.stderr and "500" in proc.stderr
