"""The house rules of the layout: Tumblr's room knows nothing of the model,
and the repository stands on its own."""

import ast
import os
import pkgutil
import subprocess
import sys

import bot.tumblr

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORBIDDEN = ("jax", "flax", "gpt2", "selector", "optax", "orbax")


def tumblr_modules() -> list:
  return [f"bot.tumblr.{m.name}"
          for m in pkgutil.iter_modules(bot.tumblr.__path__)]


def test_the_tumblr_room_never_imports_the_model():
  modules = tumblr_modules()
  assert {"bot.tumblr.client", "bot.tumblr.server", "bot.tumblr.npf",
          "bot.tumblr.scrape"} <= set(modules)
  # Every import statement, also those inside functions ...
  for name in modules:
    path = os.path.join(REPO, *name.split(".")) + ".py"
    with open(path, encoding="utf-8") as f:
      tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        roots = [a.name.split(".")[0] for a in node.names]
      elif isinstance(node, ast.ImportFrom):
        roots = [(node.module or "").split(".")[0]]
      else:
        continue
      assert not set(roots) & set(FORBIDDEN), (name, roots, node.lineno)
  # ... and what importing them all pulls in, in a fresh interpreter.
  code = ("import sys\n" + "".join(f"import {m}\n" for m in modules) +
          f"print(sorted(m for m in sys.modules if m.split('.')[0] in "
          f"{FORBIDDEN!r}))")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True,
                       capture_output=True, text=True).stdout
  assert out.strip() == "[]"


def repository_files() -> list:
  """Every file of the project: in a git checkout what git tracks or would
  (so nothing a tool writes to an ignored folder, such as a test run's
  caches); elsewhere every file but the virtualenv, caches and runs."""
  # A clone's .git is a folder; a worktree's (git worktree add) a file.
  if os.path.exists(os.path.join(REPO, ".git")):
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, check=True, capture_output=True).stdout
    return [n for n in listed.decode("utf-8").split("\0") if n]
  skip = {".git", ".venv", "__pycache__", "runs", "build", "dist",
          ".hypothesis", ".pytest_cache"}
  out = []
  for root, dirs, names in os.walk(REPO):
    dirs[:] = [d for d in dirs if d not in skip and not d.endswith(
        ".egg-info")]
    out += [os.path.relpath(os.path.join(root, n), REPO) for n in names]
  return out


def test_nothing_in_the_repository_names_a_path_outside_it():
  outside = ("/work/", "../shared", "..\\shared")
  offenders = []
  for name in repository_files():
    if name.startswith("tests/data/") or name == "tests/test_layout.py":
      continue  # copied documents read as data; this test's own patterns
    try:
      with open(os.path.join(REPO, name), encoding="utf-8") as f:
        text = f.read()
    except (UnicodeDecodeError, FileNotFoundError):
      continue
    offenders += [(name, p) for p in outside if p in text]
  assert offenders == []
