"""What every launch script shares: one clear line for a user's mistake.

`run(main)` is `absl.app.run(main)`, except that a `UserError` (the model's,
`gpt2.errors`, or the Tumblr layer's, `bot.tumblr.errors`) prints
`error: ...` and exits with status 2, and so do the config-flag mistakes that
ml_collections raises while absl parses flags, before `main` runs (a
`--config.key` the config lacks, a config file that cannot be loaded).
Orbax's and tensorstore's INFO lines (some thirty for each checkpoint read
or written) are dropped; their warnings still show.
"""

import logging
import re
import sys

from absl import app
from absl import logging as absl_logging

from bot.tumblr.errors import UserError as TumblrUserError
from gpt2.errors import UserError


class _QuietLibraries(logging.Filter):
  """Drops orbax's and tensorstore's INFO chatter."""

  def filter(self, record):
    return record.levelno >= logging.WARNING or not any(
        part in record.pathname for part in ("/orbax/", "/tensorstore/"))


def run(main):
  """`app.run(main)` with one-line errors for the user's mistakes."""
  started = []

  def guarded(argv):
    started.append(True)
    absl_logging.get_absl_handler().addFilter(_QuietLibraries())
    try:
      return main(argv)
    except (UserError, TumblrUserError) as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)

  try:
    app.run(guarded)
  except (AttributeError, KeyError, OSError, SyntaxError) as e:
    if started:
      raise
    describe = (_config_file_error if isinstance(e, (OSError, SyntaxError))
                else _config_override_error)
    print(f"error: {describe(e, sys.argv)}", file=sys.stderr)
    sys.exit(2)


def load_config(flag, example: str = "configs/gpt2_tiny.py"):
  """The value of a `config_flags` flag; a file that failed to load is a
  UserError here (ml_collections defers that failure to the config's first
  use)."""
  config = flag.value
  if config is None:
    raise UserError(f"--config is required, e.g. --config={example}")
  try:
    config.keys()
  except OSError as e:
    raise UserError(_config_file_error(e, sys.argv)) from e
  return config


def _config_override_error(error: Exception, argv) -> str:
  """One line for a `--config.key=...` naming a key the config lacks."""
  text = str(error)
  named = re.search(r'instead of \\*"(\w+)', text)
  key = named.group(1) if named else (re.findall(r"\w+", text) or [text])[0]
  hint = re.search(r'Did you mean \\*"(\w+)', text)
  flags_given = [a.split("=")[0] for a in argv[1:]
                 if a.startswith("--config.")]
  flag = next((f for f in flags_given
               if re.search(rf"\.{re.escape(key)}(\.|$)", f)), None)
  line = f"{flag}: " if flag else ""
  line += f"the config has no key {key!r}"
  if hint:
    line += f" (did you mean {hint.group(1)!r}?)"
  return line


def _config_file_error(error: Exception, argv) -> str:
  path = next((a.split("=", 1)[1] for a in argv[1:]
               if a.startswith("--config=")), "?")
  if isinstance(error, SyntaxError):
    reason = f"{error.msg} at line {error.lineno}"
  else:
    reason = str(error).strip().splitlines()[-1].strip()
  return f"--config={path}: cannot load the config file ({reason})"
