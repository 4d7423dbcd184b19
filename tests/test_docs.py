"""The documentation: README.md (the front door) and the mkdocs site in docs/.

- the site builds with `mkdocs build --strict` (a broken link or anchor, or
  a page left out of `nav`, fails it: see mkdocs.yml's `validation`);
- every section of the README as it was before the site (its headings,
  written out below) is a heading of some page;
- the README is short and holds the two commands at its top verbatim
  (`.ci/run` runs the second);
- every `python -m launch.<name>` and `python -m bench.<name>` command in the
  README and the pages names a module that exists and only flags that module
  defines, and every `--config.<key>` names a key of the config file the
  command gives (or the module's default one). The flags are absl's own
  answer: one subprocess imports each module once and lists them.
"""

import glob
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")
DOCS = os.path.join(REPO, "docs")

# The section headings (## and deeper, outside code blocks) of README.md at
# 1a3498e, before it became a front door and these pages: each must remain a
# heading (of any level) somewhere in docs/*.md, so no section is lost.
OLD_README_HEADINGS = [
    "The demo",
    "The real path",
    "The same path as a notebook",
    "1. Getting a corpus: scraping, tumblr-backup import, platform archives, "
    "prepare_corpus",
    "Importing a platform's archive: Tumblr, WordPress, X, Mastodon, "
    "Discord, Facebook",
    "What each archive holds, and what is done with it",
    "The text format",
    "2. Training the generator",
    "GPT-2 124M on a GPU, 1.5B on a TPU v3-8",
    "LoRA: GPT-2 1.5B on one 16 GB GPU",
    "Several processes, several hosts",
    "3. Selector and sentiment heads",
    "What the heads learn from (measured on the demo)",
    "4. Running the bot",
    "Conduct: whom the bot answers, how often, and the limits",
    "The console: write live, review, look back",
    "The autoreviewer",
    "Teaching the generator: tuning it on your choices",
    "Sampling: N candidates in one jitted call",
    "int8 decoding on a CPU",
    "Models: a Hub name, or any of three checkpoint kinds",
    "Benchmarks",
    "Layout and tests",
]

# The README's test command: .ci/run runs it verbatim.
TEST_COMMAND = 'pip install -q -e ".[test]" && python -m pytest -x -q'
DEMO_COMMAND = ('python3 -m venv .venv && . .venv/bin/activate && '
                'pip install -q -e ".[demo]" && '
                'python -m launch.demo --workdir=runs/demo')
README_MAX_LINES = 160
MIN_COMMANDS = 40


def _doc_files():
  return [README] + sorted(glob.glob(os.path.join(DOCS, "*.md")))


def _rel(path):
  return os.path.relpath(path, REPO)


def _read(path):
  with open(path, encoding="utf-8") as f:
    return f.read()


_FENCE = re.compile(r"^\s*(```|~~~)")


def _split_fences(text):
  """(fenced, prose): lists of (line number, line); a line is in one only."""
  fenced, prose, marker = [], [], None
  for number, line in enumerate(text.split("\n"), 1):
    m = _FENCE.match(line)
    if m and (marker is None or m.group(1) == marker):
      marker = m.group(1) if marker is None else None
      continue
    (fenced if marker else prose).append((number, line))
  return fenced, prose


def _headings(text):
  _, prose = _split_fences(text)
  return [m.group(1).strip() for _, line in prose
          if (m := re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line))]


def _fenced_blocks(text):
  """The text of each fenced code block, in order."""
  blocks, current, marker = [], None, None
  for line in text.split("\n"):
    m = _FENCE.match(line)
    if m and (marker is None or m.group(1) == marker):
      if marker is None:
        marker, current = m.group(1), []
      else:
        blocks.append("\n".join(current))
        marker = current = None
      continue
    if current is not None:
      current.append(line)
  return blocks


# --- the site ----------------------------------------------------------------


def test_site_builds_strict(tmp_path):
  env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
  proc = subprocess.run(
      [sys.executable, "-m", "mkdocs", "build", "--strict",
       "-f", os.path.join(REPO, "mkdocs.yml"), "-d", str(tmp_path / "site")],
      capture_output=True, text=True, cwd=str(tmp_path), env=env,
      timeout=120, check=False)
  assert proc.returncode == 0, (
      f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}")
  page = _read(tmp_path / "site" / "demo" / "index.html")
  assert "selector (comedy vs tragedy), AUC" in page
  assert 'src="../demo-screenshot-ask.png"' in page


def test_every_old_readme_section_is_a_page_heading():
  found = set()
  for path in glob.glob(os.path.join(DOCS, "*.md")):
    found.update(_headings(_read(path)))
  missing = [h for h in OLD_README_HEADINGS if h not in found]
  assert not missing, f"old README sections missing from docs/*.md: {missing}"


# --- the front door ----------------------------------------------------------


def test_readme_is_short_and_holds_the_two_commands():
  text = _read(README)
  lines = text.rstrip("\n").split("\n")
  assert len(lines) <= README_MAX_LINES, (
      f"README.md has {len(lines)} lines; at most {README_MAX_LINES}: "
      "move the detail into docs/")
  assert TEST_COMMAND in text
  assert DEMO_COMMAND in text
  # .ci/run runs the README's command verbatim.
  ci = [l for l in _read(os.path.join(REPO, ".ci", "run")).split("\n")
        if "python -m pytest" in l]
  assert ci and all(l.strip() in text for l in ci), ci
  # The docs' front page shows the same block, comments and all.
  first = _fenced_blocks(text)[0]
  assert DEMO_COMMAND in first and TEST_COMMAND in first
  assert first == _fenced_blocks(_read(os.path.join(DOCS, "index.md")))[0]


def test_readme_links_resolve():
  """mkdocs checks the pages' links; the README's relative links (to the
  pages and the screenshot) are checked here."""
  _, prose = _split_fences(_read(README))
  text = "\n".join(line for _, line in prose)
  targets = re.findall(r"\]\(([^)\s]+)\)", text)
  assert targets
  missing = [t for t in targets if not re.match(r"^[a-z]+://", t)
             and not os.path.exists(os.path.join(REPO, t.split("#")[0]))]
  assert not missing, f"README.md links to files that do not exist: {missing}"


# --- commands against the code -----------------------------------------------

_COMMAND = re.compile(r"\bpython3? -m ((?:launch|bench)\.[A-Za-z_]\w*)")


def _logical_lines(numbered):
  """Joins lines continued with a trailing backslash: (first number, text)."""
  out, start, parts = [], None, []
  for number, line in numbered:
    if start is None:
      start = number
    if line.rstrip().endswith("\\"):
      parts.append(line.rstrip()[:-1])
      continue
    parts.append(line)
    out.append((start, " ".join(parts)))
    start, parts = None, []
  if parts:
    out.append((start, " ".join(parts)))
  return out


def _inline_spans(prose):
  """Inline `code` spans of the prose, which may wrap a line: (number, text)."""
  numbers = [n for n, _ in prose]
  text = "\n".join(line for _, line in prose)
  spans = []
  for m in re.finditer(r"`((?:[^`\n]|\n(?![ \t]*\n))+)`", text):
    line = numbers[text.count("\n", 0, m.start())]
    spans.append((line, m.group(1).replace("\n", " ")))
  return spans


def _tokens(rest):
  """The shell words of a command after its module, up to the first `&&`,
  `;`, `|`, `&`, `)`, redirection or comment."""
  lexer = shlex.shlex(rest, posix=True, punctuation_chars=True)
  lexer.whitespace_split = True
  words = []
  try:
    for word in lexer:
      if word and set(word) <= set("();<>|&"):
        break
      words.append(word)
  except ValueError:  # an unbalanced quote: take the plain words
    words = rest.split()
  return words


def _collect_commands():
  """Every python -m launch.X / bench.X command: dicts with file, line,
  module, flags [(name, value or None)] and text."""
  commands = []
  for path in _doc_files():
    fenced, prose = _split_fences(_read(path))
    pieces = _logical_lines(fenced) + _inline_spans(prose)
    for number, text in pieces:
      for m in _COMMAND.finditer(text):
        flags = []
        for word in _tokens(text[m.end():]):
          word = word.strip("[]")
          if word == "--":
            break  # what follows goes to another program (pytest)
          if not word.startswith("-") or re.match(r"^-\d", word):
            continue  # a value, an argument, a placeholder
          name, _, value = word.lstrip("-").partition("=")
          flags.append((name, value if "=" in word else None))
        commands.append({"file": _rel(path), "line": number,
                         "module": m.group(1), "flags": flags,
                         "text": text.strip()})
  return commands


# Run in one subprocess: imports each module once (JAX-using modules take
# seconds each) and answers with the flags absl would accept for it: those
# its import defines (with those of any launch/bench module it imports, as
# launch.compile_check takes launch.finetune's --config), absl's own, and
# `no<name>` for booleans. bench.training_parity defines its flags under
# `if __name__ == "__main__":` (the tests import it), so it is also run as
# __main__ with absl.app.run stubbed out; bench.suite_under_load uses
# argparse, so its add_argument calls are read from its source (running it
# would start the suite).
_FLAGS_SCRIPT = r'''
import ast, importlib, importlib.util, json, runpy, sys
from absl import app, flags
from ml_collections.config_flags import config_flags

request = json.loads(sys.argv[1])
FLAGS = flags.FLAGS


def names(flag_list):
  out = set()
  for f in flag_list:
    out.add(f.name)
    if f.short_name:
      out.add(f.short_name)
    if f.boolean:
      out.add("no" + f.name)
  return out


def ours(key):
  return key.startswith(("launch.", "bench.")) or key == sys.argv[0]


def main_block_defines_flags(tree):
  """Whether the module defines flags under `if __name__ == "__main__":`."""
  for node in tree.body:
    if (isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)
        and "DEFINE" in ast.unparse(node)):
      return True
  return False


def argparse_options(tree):
  """The option strings of every add_argument call (an argparse module)."""
  options = set()
  for node in ast.walk(tree):
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        and node.func.attr == "add_argument"):
      for arg in node.args:
        if isinstance(arg, ast.Constant) and str(arg.value).startswith("-"):
          options.add(str(arg.value).lstrip("-"))
  return options


builtin = set()
for key, flag_list in FLAGS.flags_by_module_dict().items():
  if key.startswith("absl"):
    builtin |= names(flag_list)
builtin |= {"flagfile", "undefok", "help", "helpshort", "helpfull",
            "helpxml", "?"}

modules = {}
for name in request["modules"]:
  for loaded in [m for m in sys.modules if ours(m)]:
    del sys.modules[loaded]  # so a module's imports define their flags again
  spec = importlib.util.find_spec(name)
  if spec is None:
    modules[name] = None
    continue
  tree = ast.parse(spec.loader.get_source(name))
  if any(isinstance(n, ast.Call) and getattr(n.func, "attr", "") ==
         "ArgumentParser" for n in ast.walk(tree)):
    # argparse, not absl: read its add_argument calls; never imported, as
    # running its main would start the work.
    modules[name] = {"flags": sorted(argparse_options(tree) | {"h", "help"}),
                     "configs": {}}
    continue
  importlib.import_module(name)
  if main_block_defines_flags(tree):
    # Flags defined only when run as a script: run it so, without its main.
    for f in FLAGS.flags_by_module_dict().get(name, []):
      delattr(FLAGS, f.name)
    run, app.run = app.run, lambda *a, **k: None
    try:
      runpy.run_module(name, run_name="__main__", alter_sys=False)
    finally:
      app.run = run
  defined = [f for key, fl in FLAGS.flags_by_module_dict().items()
             if ours(key) for f in fl]
  modules[name] = {
      "flags": sorted(names(defined) | builtin),
      # config_flags.DEFINE_config_file: --NAME=FILE[:ARG], --NAME.key=...
      "configs": {f.name: f.default_unparsed for f in defined
                  if isinstance(f.parser, config_flags.ConfigFileFlagParser)},
  }
  for f in {f.name for f in defined}:
    delattr(FLAGS, f)

# The config files the commands' --config.<key> flags are checked against:
# the one each command gives (--config=FILE[:ARG]), else the module's default.
specs = set()
for module, given in request["commands"]:
  for flag, default in (modules.get(module) or {"configs": {}})["configs"].items():
    if any(name.startswith(flag + ".") for name, _ in given):
      values = [v for name, v in given if name == flag and v is not None]
      if values or default:
        specs.add(values[-1] if values else default)
configs = {}
for spec in sorted(specs):
  try:
    config = config_flags.ConfigFileFlagParser("config").parse(spec)
    keys = []
    def walk(node, prefix):
      for key, value in node.items():
        keys.append(prefix + key)
        if hasattr(value, "items"):
          walk(value, prefix + key + ".")
    walk(config, "")
    configs[spec] = sorted(keys)
  except Exception as e:  # a placeholder path, a file that fails to load
    configs[spec] = {"error": f"{type(e).__name__}: {e}"}

print("FLAGS-JSON " + json.dumps({"modules": modules, "configs": configs}))
'''


def _ask_the_code(commands):
  """{"modules": {name: {"flags", "configs"} or None}, "configs": {spec:
  keys or {"error"}}}, from one subprocess."""
  request = {"modules": sorted({c["module"] for c in commands}),
             "commands": [[c["module"], c["flags"]] for c in commands]}
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "-c", _FLAGS_SCRIPT, json.dumps(request)],
      capture_output=True, text=True, cwd=REPO, env=env, timeout=300,
      check=False)
  line = [l for l in proc.stdout.split("\n") if l.startswith("FLAGS-JSON ")]
  assert proc.returncode == 0 and line, (
      f"listing the modules' flags failed:\n{proc.stdout}\n{proc.stderr}")
  return json.loads(line[0][len("FLAGS-JSON "):])


def _config_spec(command, config_flag, default):
  given = [value for name, value in command["flags"]
           if name == config_flag and value is not None]
  return given[-1] if given else default


def test_commands_in_the_docs_match_the_code():
  commands = _collect_commands()
  assert len(commands) >= MIN_COMMANDS, (
      f"found {len(commands)} python -m launch./bench. commands in the docs; "
      f"expected at least {MIN_COMMANDS}: is the collector broken?")

  problems = []
  for c in commands:
    if importlib.util.find_spec(c["module"]) is None:
      problems.append(f"{c['file']}:{c['line']}: no module {c['module']}")
  answer = _ask_the_code(commands)
  configs = answer["configs"]

  for c in commands:
    info = answer["modules"].get(c["module"])
    if not info:
      continue
    where = f"{c['file']}:{c['line']}: {c['module']}"
    for name, _ in c["flags"]:
      head = name.split(".")[0]
      if head in info["configs"] and "." in name:
        spec = _config_spec(c, head, info["configs"][head])
        if not spec:
          problems.append(f"{where}: --{name} but no --{head}= file given "
                          "and the module has no default")
          continue
        keys = configs.get(spec)
        if isinstance(keys, dict):
          problems.append(f"{where}: --{head}={spec} does not load: "
                          f"{keys['error']}")
        elif name.split(".", 1)[1] not in keys:
          problems.append(f"{where}: --{name}: {spec} has no key "
                          f"{name.split('.', 1)[1]!r}")
      elif name not in info["flags"]:
        problems.append(f"{where}: --{name} is not a flag of {c['module']}")
  assert not problems, "commands in the docs that the code does not take:\n" \
      + "\n".join(problems)
