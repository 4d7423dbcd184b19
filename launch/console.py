r"""The operator's console: live writing, the review queue and the history.

  pip install -e ".[console]"
  python -m launch.console --config=configs/bot.py --config.blog=NAME \
      --config.model=MODEL_DIR --config.heads=HEADS_DIR \
      --config.state=bot.db [--host=127.0.0.1] [--port=7860] \
      [--post_now] [--dry_run] [--workdir=TRAIN_WORKDIR] [--api]

Then open http://127.0.0.1:7860. It listens on 127.0.0.1 unless told
otherwise; on any other address it asks for a password (user `operator`),
from the TUMBLR_CONSOLE_PASSWORD variable or `--password_file` (mode 0600),
and without one it does not start. `--post_now` carries out a review
decision at once (as soon as no bot pass holds the state) instead of
leaving it to the next pass; `--dry_run` sends nothing to Tumblr.
`--workdir` shows the generator's training curves. Gradio's programmatic
API ("Use via API") is off unless `--api` turns it on: with it, any program
that can reach the console can post through it.
"""

import logging
import os

from absl import flags
from ml_collections import config_flags

from bot import loop, ml
from bot.tumblr.credentials import read_private_file
from gpt2.errors import UserError
from launch import common

_CONFIG = config_flags.DEFINE_config_file("config", "configs/bot.py",
                                          "Bot config file.")
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Address to listen on.")
_PORT = flags.DEFINE_integer("port", 7860, "Port to listen on.")
_POST_NOW = flags.DEFINE_bool("post_now", False, "Carry out review decisions "
                              "at once instead of at the next bot pass.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Send nothing to Tumblr.")
_WORKDIR = flags.DEFINE_string("workdir", "", "The generator's training "
                               "workdir (for its curves).")
_API = flags.DEFINE_bool(
    "api", False, "Open Gradio's programmatic API (its /gradio_api/info and "
    "/gradio_api/call/ routes) to other programs.")
_PASSWORD_FILE = flags.DEFINE_string(
    "password_file", "", "A file (mode 0600) holding the console's password; "
    "or set TUMBLR_CONSOLE_PASSWORD.")

LOOPBACK = ("127.0.0.1", "localhost", "::1")
PASSWORD_ENV = "TUMBLR_CONSOLE_PASSWORD"


def console_password(host: str, password_file: str = "",
                     environ=os.environ) -> str:
  """The password the console asks for ("" on a loopback address without
  one). Any other address without a password is a UserError."""
  password = ""
  if password_file:
    password = read_private_file(password_file, "password file").strip()
    if not password:
      raise UserError(f"password file {password_file} is empty")
  password = password or environ.get(PASSWORD_ENV, "").strip()
  if not password and host not in LOOPBACK:
    raise UserError(f"--host={host} would let others reach the console: "
                    f"set {PASSWORD_ENV} or pass --password_file (mode 0600)"
                    f", or keep --host=127.0.0.1")
  return password


def main(argv):
  del argv
  logging.basicConfig(level=logging.INFO,
                      format="%(asctime)s %(name)s %(levelname)s %(message)s")
  password = console_password(_HOST.value, _PASSWORD_FILE.value)
  config = common.load_config(_CONFIG, "configs/bot.py")
  if not config.blog:
    raise UserError("config key `blog` is empty: name the bot's blog")
  loop.check_files(config)
  try:
    # pylint: disable-next=import-outside-toplevel
    from bot.console import app, core
  except ImportError as e:
    raise UserError(f"the console needs Gradio ({e.name} is missing): "
                    f"pip install -e \".[console]\"") from None
  client = None if _DRY_RUN.value else loop.make_client(config)
  model = ml.LocalModel.load(config.model, config.heads,
                             ml.SamplingSettings.from_config(config.sampling),
                             tuple(config.sentiment_scale))
  console = core.Console(config, model, client, dry_run=_DRY_RUN.value,
                         post_now=_POST_NOW.value, workdir=_WORKDIR.value)
  page = app.build(console, api=_API.value)
  print(f"the console of {config.blog}: http://{_HOST.value}:{_PORT.value}",
        flush=True)
  app.launch(page, _HOST.value, _PORT.value, password, api=_API.value)


if __name__ == "__main__":
  common.run(main)
