r"""The image, the compose services and a pass through each, checked here.

  python -m bench.container                  # about 10 minutes on 2 cores
  python -m bench.container --keep           # leaves the image and the base

Rootful podman (`apt-get install -y podman runc mmdebstrap`) and a
podman-compose newer than Debian 12's 1.0.3 (`pip install podman-compose`:
1.0.3 gives the console's `network_mode: host` the project's network too,
which podman refuses), with the vfs storage driver and runc, set by a
containers.conf and a storage.conf it writes (CONTAINERS_CONF,
CONTAINERS_STORAGE_CONF). Steps, each timed:

1. base: the official slim Python image if a registry answers; else one
   made from Debian's packages (mmdebstrap, then `podman import`);
2. demo: the demo's model and heads (`launch.demo` with short settings,
   about 2 minutes) unless --demo holds them;
3. build: the Containerfile (--extras), the host's CA bundle mounted so
   pip reaches the package registry;
4. image: its size, its user (not root), and its layers searched for the
   check's credentials and token (written, before the build, into the
   build's directory where a careless build would take them) and the
   tests' credentials;
5. dry pass: the local Tumblr server started on the host with asks for the
   bot; `run_bot --once --dry_run` in the image, the model and heads loaded
   in it from the mounted directory; the answers are read from the feed
   it wrote there;
6. compose: compose.yaml's services (the check's flags added: the local
   Tumblr server, the tiny sampling) on a named volume: the model server,
   healthy; the console, answering on the host's loopback; the bot, live
   against the local server through the model server (its own model path
   points nowhere), `podman kill`ed at its first write and started again:
   each ask is answered exactly once;
7. cleanup: the services, the volume, the project's network, the image,
   the base if it made it.

Containers reach the host's server as host.containers.internal (podman's
name for the host on its networks), so the server listens on every address
for the check's minutes, behind its random credentials.
"""

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request

from absl import flags
import yaml

from bot.tumblr import npf
from gpt2.errors import UserError
from launch import common

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCAL_BASE = "localhost/debian-python:bookworm"
OFFICIAL_BASE = "docker.io/library/python:3.11-slim-bookworm"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
BLOG = "hamlet"
# The check's flags for every service: its config's tiny sampling.
CONFIG = "--config=/app/deploy/container_config.py:tiny"
ONLY_ASKS = ("--config.jobs.notifications=false",
             "--config.jobs.dashboard=false", "--config.jobs.queue=false")
# The bot's sampling for the demo's barely trained model: with tiny's 6
# candidates of 48 tokens most never end (unfinished) and a pass can skip
# every ask (it did, 2026-12-07); 16 of 128 (the demo's length) answer
# nearly all of them, in seconds more.
SAMPLING = ("--config.sampling.n=16", "--config.sampling.max_new_tokens=128")

_WORKDIR = flags.DEFINE_string("check_dir", "runs/container-check",
                               "Where the check's files go (removed after).")
_DEMO = flags.DEFINE_string(
    "demo", "runs/container-demo", "A launch.demo workdir with model/ and "
    "heads/; made with short settings if it lacks them.")
_IMAGE = flags.DEFINE_string("image", "localhost/tumblr-bot:check",
                             "The tag the check builds.")
_EXTRAS = flags.DEFINE_string("extras", "console",
                              "The build's EXTRAS (setup.py's extras).")
_BASE = flags.DEFINE_string(
    "base", "", "The build's BASE; empty: the official image if it can be "
    "pulled, else one made with mmdebstrap.")
_KEEP = flags.DEFINE_bool("keep", False, "Keep the image and the base.")
_TIMEOUT = flags.DEFINE_integer("timeout_s", 600, "Longest wait for a pass.")

STEPS = []  # (name, seconds, what it did)


def _say(message: str) -> None:
  print(f"[container {time.strftime('%H:%M:%S')}] {message}", flush=True)


@contextlib.contextmanager
def _step(name: str):
  """Times a step; what it yields is a list its outcome lines go to."""
  _say(f"{name} ...")
  start, notes = time.monotonic(), []
  try:
    yield notes
  finally:
    seconds = time.monotonic() - start
    STEPS.append((name, seconds, "; ".join(notes)))
    _say(f"{name}: {seconds:.0f} s" + (f" ({'; '.join(notes)})"
                                        if notes else ""))


def _run(args, *, check=True, timeout=3600, quiet=False, env=None, **kw):
  """A command, its output shown unless `quiet` (then returned)."""
  proc = subprocess.run(args, text=True, timeout=timeout,
                        env=dict(os.environ, **(env or {})),
                        capture_output=quiet, check=False, **kw)
  if check and proc.returncode != 0:
    detail = (proc.stderr or "")[-3000:] if quiet else ""
    raise RuntimeError(f"{' '.join(args[:4])} ... exited "
                       f"{proc.returncode}\n{detail}")
  return proc


def _podman(*args, **kw):
  return _run(["podman", *args], **kw)


def _out(*args) -> str:
  return _podman(*args, quiet=True).stdout.strip()


def _configure(workdir: str) -> None:
  """podman's settings for this machine, unless the caller set its own."""
  if "CONTAINERS_CONF" not in os.environ:
    path = os.path.join(workdir, "containers.conf")
    with open(path, "w", encoding="utf-8") as f:
      f.write('[containers]\ndefault_ulimits = []\n\n'
              '[engine]\ncgroup_manager = "cgroupfs"\nruntime = "runc"\n')
    os.environ["CONTAINERS_CONF"] = path
  if "CONTAINERS_STORAGE_CONF" not in os.environ:
    path = os.path.join(workdir, "storage.conf")
    with open(path, "w", encoding="utf-8") as f:
      f.write('[storage]\ndriver = "vfs"\n'
              'runroot = "/run/containers/storage"\n'
              'graphroot = "/var/lib/containers/storage"\n')
    os.environ["CONTAINERS_STORAGE_CONF"] = path


def make_base(workdir: str, notes: list) -> tuple:
  """(the BASE to build on, whether this check made it)."""
  if _BASE.value:
    notes.append(f"given: {_BASE.value}")
    return _BASE.value, False
  if _podman("image", "exists", LOCAL_BASE, check=False).returncode == 0:
    notes.append(f"{LOCAL_BASE} was there")
    return LOCAL_BASE, False
  pulled = _podman("pull", "-q", OFFICIAL_BASE, check=False, quiet=True,
                   timeout=300)
  if pulled.returncode == 0:
    notes.append(f"pulled {OFFICIAL_BASE}")
    return OFFICIAL_BASE, True
  notes.append("no registry answered: mmdebstrap")
  tar = os.path.join(workdir, "base.tar")
  _run(["mmdebstrap", "--variant=apt",
        "--include=python3,python3-venv,ca-certificates", "bookworm", tar],
       quiet=True)
  _podman("import", "-q", tar, LOCAL_BASE, quiet=True)
  os.remove(tar)
  notes.append(f"made {LOCAL_BASE}")
  return LOCAL_BASE, True


def make_demo(demo: str, notes: list) -> None:
  if all(os.path.isdir(os.path.join(demo, d)) for d in ("model", "heads")):
    notes.append(f"{demo} has model/ and heads/")
    return
  _run([sys.executable, "-m", "launch.demo", f"--workdir={demo}",
        "--steps=60", "--head_steps=20", "--head_examples=1800",
        "--candidates=4"], cwd=REPO, env={"JAX_PLATFORMS": "cpu"})
  notes.append(f"trained into {demo} (short settings)")


def write_secrets(directory: str) -> dict:
  """Fresh Tumblr credentials and a model token, mode 0600: {name: value}."""
  os.makedirs(directory, exist_ok=True)
  keys = {k: secrets.token_hex(16) for k in (
      "consumer_key", "consumer_secret", "oauth_token", "oauth_secret")}
  token = secrets.token_urlsafe(32)
  files = {"tumblr_credentials": json.dumps(keys), "model_token": token}
  for name, text in files.items():
    path = os.path.join(directory, name)
    with open(path, "w", encoding="utf-8") as f:
      f.write(text + "\n")
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
  return {**keys, "model_token": token}


def image_user(image: str) -> tuple:
  user = _out("image", "inspect", "--format", "{{.Config.User}}", image)
  uid, _, gid = user.partition(":")
  return int(uid), int(gid or uid)


def search_layers(image: str, values, workdir: str) -> list:
  """The values found in any layer of the saved image (none, we hope)."""
  archive = os.path.join(workdir, "image.tar")
  _podman("save", "-q", "--format=docker-archive", "-o", archive, image,
          quiet=True)
  wanted = [v.encode() for v in values]
  longest = max(len(w) for w in wanted)
  found = set()
  try:
    with tarfile.open(archive) as outer:
      for member in outer:
        if not member.isfile():
          continue
        f = outer.extractfile(member)
        tail = b""
        while chunk := f.read(1 << 22):
          block = tail + chunk
          found.update(w for w in wanted if w in block)
          tail = block[-longest:]
  finally:
    os.remove(archive)
  return sorted(w.decode() for w in found)


def tests_credentials() -> list:
  """The tests' Tumblr credentials (tests/bot_loop_helpers.py), if there."""
  sys.path.insert(0, REPO)
  try:
    # pylint: disable-next=import-outside-toplevel
    from tests.bot_loop_helpers import CREDS
  except ImportError:
    return []
  finally:
    sys.path.remove(REPO)
  return [getattr(CREDS, k) for k in ("consumer_key", "consumer_secret",
                                      "oauth_token", "oauth_secret")]


def start_tumblr(keys: dict):
  """The local Tumblr server, on every address, seeded with the demo's
  asks for the bot: (server, port, ask ids)."""
  # pylint: disable=import-outside-toplevel,protected-access
  from bot.tumblr import server as server_lib
  from bot.tumblr.credentials import Credentials
  from launch import demo
  server = server_lib.TumblrServer(Credentials(**{
      k: keys[k] for k in ("consumer_key", "consumer_secret", "oauth_token",
                           "oauth_secret")}))
  handler = type("Handler", (server_lib._Handler,), {"app": server})
  server._httpd = server_lib._HTTPServer(("0.0.0.0", 0), handler)
  server._thread = threading.Thread(target=server._httpd.serve_forever,
                                    kwargs={"poll_interval": 0.05},
                                    daemon=True)
  server._thread.start()
  server.add_blog(BLOG, owned=True)
  ids = []
  for asker, question in demo.ASKS:
    server.add_blog(asker)
    ids.append(server.add_ask(BLOG, question, asker=asker))
  return server, server._httpd.server_address[1], ids


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def wait_for(what: str, ready, timeout_s: float, every_s: float = 2.0):
  end = time.monotonic() + timeout_s
  while time.monotonic() < end:
    value = ready()
    if value:
      return value
    time.sleep(every_s)
  raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def http_ok(url: str) -> bool:
  try:
    with urllib.request.urlopen(url, timeout=5) as resp:
      return resp.status == 200
  except OSError:
    return False


def dry_pass(image: str, demo: str, workdir: str, tumblr: str,
             uid: tuple, notes: list) -> int:
  """One --dry_run pass in the image, its model loaded in it."""
  data = os.path.join(workdir, "data")
  os.makedirs(data)
  for d in ("model", "heads"):
    shutil.copytree(os.path.join(demo, d), os.path.join(data, d))
  secrets_dir = os.path.join(workdir, "secrets")
  for root, dirs, files in os.walk(data):
    for name in [root] + [os.path.join(root, n) for n in dirs + files]:
      os.chown(name, *uid)
  _podman("run", "--rm", "--name=tumblr-bot-check-dry",
          f"--volume={data}:/data",
          f"--volume={secrets_dir}/tumblr_credentials:"
          "/run/secrets/tumblr_credentials:ro",
          image, CONFIG, f"--config.blog={BLOG}",
          f"--config.tumblr_host={tumblr}", *ONLY_ASKS, *SAMPLING, "--once",
          "--dry_run", timeout=_TIMEOUT.value)
  with open(os.path.join(data, "feed", "feed.jsonl"), encoding="utf-8") as f:
    entries = [json.loads(line) for line in f if line.strip()]
  answers = [e for e in entries if e.get("winner") is not None]
  if not answers:
    raise RuntimeError("the dry pass wrote no answer to the feed")
  first = answers[0]
  notes.append(f"{len(answers)} answers in /data/feed/feed.jsonl, e.g. "
               f"{first['prompt_shown'][:40]!r} -> "
               f"{first['candidates'][first['winner']]['text'][:40]!r}")
  return len(answers)


def compose_file(workdir: str, tumblr: str) -> str:
  """compose.yaml's services with the check's flags added to their
  commands (and the bot's own model path pointing nowhere)."""
  with open(os.path.join(REPO, "compose.yaml"), encoding="utf-8") as f:
    compose = yaml.safe_load(f)
  extra = {"model": [CONFIG],
           "bot": [CONFIG, f"--config.tumblr_host={tumblr}",
                   "--config.model=/data/no-model-here", *ONLY_ASKS,
                   *SAMPLING],
           "console": [CONFIG, f"--config.tumblr_host={tumblr}"]}
  for name, spec in compose["services"].items():
    command = spec["command"]
    spec["command"] = command[:1] + extra[name] + command[1:]
    spec["build"]["context"] = REPO
  path = os.path.join(workdir, "compose.yaml")
  with open(path, "w", encoding="utf-8") as f:
    yaml.safe_dump(compose, f, sort_keys=False)
  return path


def volume_jobs(volume: str) -> dict:
  """{job key: status} from the bot's state on a named volume."""
  mount = _out("volume", "inspect", "--format", "{{.Mountpoint}}", volume)
  db = sqlite3.connect(os.path.join(mount, "bot.db"))
  try:
    return dict(db.execute("SELECT key, status FROM jobs"))
  finally:
    db.close()


def check_exactly_once(published: list, jobs: dict, ask_ids: list) -> list:
  """What breaks exactly-once: an ask posted twice, a post no job made, a
  job left unfinished (lost), a done job without its post."""
  problems = []
  doubles = sorted({i for i in published if published.count(i) > 1})
  if doubles:
    problems.append(f"posted twice: {doubles}")
  if set(published) - set(ask_ids):
    problems.append(f"posts no ask asked for: {set(published) - set(ask_ids)}")
  for i in ask_ids:
    status = jobs.get(f"ask:{i}")
    if status in (None, "seen", "chosen", "sending"):
      problems.append(f"ask {i} left {status or 'unknown'} (lost)")
    if (status == "done") != (i in published):
      problems.append(f"ask {i} is {status} but published: {i in published}")
  return problems


def container(project: str, service: str) -> str:
  return _out("ps", "-a", "--filter",
              f"label=com.docker.compose.project={project}", "--filter",
              f"label=com.docker.compose.service={service}",
              "--format", "{{.Names}}").split("\n")[0]


def compose_check(image, demo, workdir, server, port, ask_ids) -> None:
  """compose.yaml's services; the bot killed at its first write."""
  project = "tumblr-bot-check"
  tumblr = f"http://host.containers.internal:{port}"
  path = compose_file(workdir, tumblr)
  model_port, console_port = free_port(), free_port()
  env = {"BOT_IMAGE": image, "BOT_BLOG": BLOG, "BOT_INTERVAL_S": "600",
         "SECRETS_DIR": os.path.join(workdir, "secrets"),
         "MODEL_PORT": str(model_port), "CONSOLE_PORT": str(console_port)}
  compose = ["podman-compose", "-p", project, "-f", path]
  try:
    with _step("compose: the model's volume") as notes:
      volume = f"{project}_bot-data"
      _podman("volume", "create", volume, quiet=True)
      _podman("run", "--rm", f"--volume={volume}:/data",
              f"--volume={os.path.abspath(demo)}:/import:ro",
              "--entrypoint=sh", image, "-c",
              "cp -r /import/model /import/heads /data/", quiet=True)
      notes.append(f"model/ and heads/ copied into {volume}")
    with _step("compose: the model server, healthy") as notes:
      _run(compose + ["up", "-d", "model"], env=env, quiet=True)
      wait_for("/healthz", lambda: http_ok(
          f"http://127.0.0.1:{model_port}/healthz"), _TIMEOUT.value)
      name = container(project, "model")
      health = _podman("healthcheck", "run", name, check=False, quiet=True)
      notes.append(f"{name}: GET /healthz 200 on the host's port "
                   f"{model_port}; its compose health check exits "
                   f"{health.returncode}")
      if health.returncode != 0:
        raise RuntimeError(f"the health check failed: {health.stderr}")
    killed = []

    def kill_at_first_write(method, path_):
      if method != "GET" and "/posts" in path_ and not killed:
        killed.append(path_)
        _podman("kill", container(project, "bot"), quiet=True)

    server.before_request = kill_at_first_write
    with _step("compose: the bot's pass through the model server, killed "
               "at its first write, started again") as notes:
      _run(compose + ["up", "-d", "bot", "console"], env=env, quiet=True)
      wait_for("the bot's first write", lambda: killed, _TIMEOUT.value, 1)
      bot = container(project, "bot")
      notes.append(f"podman kill {bot} at {killed[0]}")
      time.sleep(3)
      if _out("inspect", "--format", "{{.State.Running}}", bot) == "true":
        notes.append("started again by its restart policy")
      else:
        _podman("start", bot, quiet=True)
        notes.append("started again (podman start)")
      def restarted_pass_done():
        logs = _podman("logs", bot, quiet=True, check=False)
        return "pass done" in logs.stdout + logs.stderr and logs
      logs = wait_for("the restarted bot's pass", restarted_pass_done,
                      _TIMEOUT.value)
      text = logs.stdout + logs.stderr
      # An answered ask is published under a new id; its genesis id is the
      # ask's (a post with none is one no ask asked for).
      published = [int(npf.genesis_id(p)) for p in server.posts(BLOG)]
      jobs = volume_jobs(f"{project}_bot-data")
      problems = check_exactly_once(published, jobs, ask_ids)
      if problems:
        raise RuntimeError("; ".join(problems) + "\n" + text[-3000:])
      outcomes = sorted(jobs[f"ask:{i}"] for i in ask_ids)
      notes.append(f"{len(ask_ids)} asks: {len(published)} published once "
                   f"each, none twice, none left open (the jobs: "
                   f"{', '.join(outcomes)}); the bot's own model path is "
                   f"empty, so its candidates came from the model server")
      if "landed before the crash" in text:
        notes.append("the post sent before the kill was found landed")
    with _step("compose: the console on the host's loopback") as notes:
      # podman-compose goes on (exit 0) when a container fails to start.
      if not container(project, "console"):
        raise RuntimeError("compose started no console container")
      wait_for("the console", lambda: http_ok(
          f"http://127.0.0.1:{console_port}/"), _TIMEOUT.value)
      notes.append(f"GET http://127.0.0.1:{console_port}/ 200")
  finally:
    server.before_request = None
    _run(compose + ["down", "-v"], env=env, check=False, quiet=True)
    _podman("volume", "rm", "-f", f"{project}_bot-data", check=False,
            quiet=True)
    # Not every podman-compose removes the network `up` made.
    _podman("network", "rm", "-f", f"{project}_default", check=False,
            quiet=True)


def compose_version() -> tuple:
  """podman-compose's version, (0,) if it does not say."""
  out = _run(["podman-compose", "version"], check=False, quiet=True).stdout
  # 1.0.3 says "podman-composer version  1.0.3", 1.6.0 "podman-compose ...".
  m = re.search(r"^podman-composer? version\s+(\d+)\.(\d+)\.(\d+)", out,
                re.MULTILINE)
  return tuple(int(g) for g in m.groups()) if m else (0,)


def main(argv):
  del argv
  if not shutil.which("podman") or not shutil.which("podman-compose"):
    raise UserError("podman and podman-compose are needed: apt-get install -y"
                    " podman runc mmdebstrap; pip install podman-compose")
  if compose_version() <= (1, 0, 3):
    raise UserError("podman-compose 1.0.3 or older (Debian 12's) cannot "
                    "start compose.yaml's console (network_mode: host): "
                    "pip install podman-compose, and put it first in PATH")
  start = time.monotonic()
  workdir = os.path.abspath(_WORKDIR.value)
  demo = os.path.abspath(_DEMO.value)
  if os.path.exists(workdir):
    shutil.rmtree(workdir)
  os.makedirs(workdir)
  conf_dir = tempfile.mkdtemp(prefix="podman-conf-")
  _configure(conf_dir)
  made_base, outcome = False, "failed"
  server = None
  try:
    with _step("base") as notes:
      base, made_base = make_base(workdir, notes)
    with _step("demo") as notes:
      make_demo(demo, notes)
    # Before the build, where a careless build would take them.
    values = write_secrets(os.path.join(workdir, "secrets"))
    with _step("build") as notes:
      _podman("build", "-q", "-f", os.path.join(REPO, "Containerfile"),
              f"--build-arg=BASE={base}", f"--build-arg=EXTRAS={_EXTRAS.value}",
              f"--volume={CA_BUNDLE}:{CA_BUNDLE}:ro", "-t", _IMAGE.value, REPO,
              quiet=True)
      notes.append(f"{_IMAGE.value} on {base}, EXTRAS={_EXTRAS.value}")
    with _step("image") as notes:
      size = int(_out("image", "inspect", "--format", "{{.Size}}",
                      _IMAGE.value))
      uid = image_user(_IMAGE.value)
      ran_as = _out("run", "--rm", "--network=none", _IMAGE.value, "python3",
                    "-c", "import os; print(os.getuid())")
      if uid[0] == 0 or ran_as != str(uid[0]):
        raise RuntimeError(f"the image runs as {ran_as} (User {uid})")
      found = search_layers(_IMAGE.value, list(values.values())
                            + tests_credentials(), workdir)
      if found:
        raise RuntimeError(f"the image holds {len(found)} credential values")
      notes.append(f"{size / 1e9:.2f} GB; runs as uid {ran_as}; no "
                   f"credential or token in its layers")
    for d in ("secrets",):
      for name in os.listdir(os.path.join(workdir, d)):
        os.chown(os.path.join(workdir, d, name), *uid)
    server, port, ask_ids = start_tumblr(values)
    with _step("dry pass in the image") as notes:
      dry_pass(_IMAGE.value, demo, workdir,
               f"http://host.containers.internal:{port}", uid, notes)
      if server.write_requests:
        raise RuntimeError("the dry pass sent a write request")
    compose_check(_IMAGE.value, demo, workdir, server, port, ask_ids)
    outcome = "passed"
  finally:
    if server is not None:
      server.close()
    with _step("cleanup") as notes:
      _podman("rm", "-f", "tumblr-bot-check-dry", check=False, quiet=True)
      if not _KEEP.value:
        _podman("rmi", "-f", _IMAGE.value, check=False, quiet=True)
        notes.append(f"removed {_IMAGE.value}")
        if made_base:
          _podman("rmi", "-f", base, check=False, quiet=True)
          notes.append(f"removed {base}")
        _podman("image", "prune", "-f", check=False, quiet=True)
      shutil.rmtree(workdir, ignore_errors=True)
    shutil.rmtree(conf_dir, ignore_errors=True)
    total = time.monotonic() - start
    print(f"\n{'step':<75} {'seconds':>8}")
    for name, seconds, _ in STEPS:
      print(f"{name:<75} {seconds:>8.0f}")
    print(f"{'total':<75} {total:>8.0f}\n{outcome} on "
          f"{time.strftime('%Y-%m-%d')}")


if __name__ == "__main__":
  common.run(main)
