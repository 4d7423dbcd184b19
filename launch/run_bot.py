r"""Runs the tumblr bot: one pass (`--once`, for cron) or passes forever.

  python -m launch.run_bot --config=configs/bot.py --config.blog=NAME \
      --config.model=MODEL_DIR --config.heads=HEADS_DIR \
      --config.state=bot.db --once [--dry_run] [--model_server URL]

`--dry_run` sends no write request to Tumblr: what the bot would have posted
goes to the feed (FEED_DIR/feed.jsonl, feed.html, mood.png). Without
`--once` the bot runs a pass every `--interval_s` seconds until stopped; a
pass that fails (an API outage, anything unexpected) is logged and the next
one follows. With `--once` a failure ends the run with a non-zero status.
`--model_server URL` uses a model served by `python -m launch.serve_model`
instead of loading one here. `--record_api=DIR` (with `--once`) writes each
request to Tumblr and its answer to DIR, one JSON file each, credentials
redacted; `--record_pseudonymize` also replaces every blog name
(bot.tumblr.recording).
"""

import logging

from absl import flags
from ml_collections import config_flags

from bot import loop
from bot.tumblr import recording
from bot.tumblr.credentials import load_credentials
from gpt2.errors import UserError
from launch import common

_CONFIG = config_flags.DEFINE_config_file("config", "configs/bot.py",
                                          "Bot config file.")
_ONCE = flags.DEFINE_bool("once", False, "Run a single pass and exit.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False,
                             "Send no write request; write the feed instead.")
_MODEL_SERVER = flags.DEFINE_string(
    "model_server", "", "URL of launch.serve_model (default: the model runs "
    "in this process).")
_INTERVAL = flags.DEFINE_float("interval_s", 600.0,
                               "Seconds between passes without --once.")
_RECORD_API = flags.DEFINE_string(
    "record_api", "", "With --once: write each API request and response to "
    "this folder, one JSON file each, credentials redacted.")
_RECORD_PSEUDONYMIZE = flags.DEFINE_bool(
    "record_pseudonymize", False, "With --record_api: replace blog names "
    "and uuids in the recording with pseudonyms.")


def main(argv):
  del argv
  logging.basicConfig(level=logging.INFO,
                      format="%(asctime)s %(name)s %(levelname)s %(message)s")
  config = _CONFIG.value
  if (_RECORD_API.value or _RECORD_PSEUDONYMIZE.value) and not (
      _ONCE.value and _RECORD_API.value):
    raise UserError("--record_api needs --once (and --record_pseudonymize "
                    "needs --record_api): a recording is one pass")
  loop.check_files(config)
  client = loop.make_client(config, check=False)
  if _RECORD_API.value:
    client.recorder = recording.Recorder(
        _RECORD_API.value, load_credentials(config.credentials or None),
        pseudonymize=_RECORD_PSEUDONYMIZE.value)
  loop.check_client(client, config)
  model = loop.make_model(config, _MODEL_SERVER.value)
  if _ONCE.value:
    try:
      report = loop.run_pass(config, dry_run=_DRY_RUN.value, model=model,
                             client=client)
    finally:
      if client.recorder is not None:
        paths = client.recorder.write()
        print(f"recorded {len(paths)} exchanges in {_RECORD_API.value}",
              flush=True)
    print(report.summary(), flush=True)
    return
  loop.run_passes(config, model=model, client=client, dry_run=_DRY_RUN.value,
                  interval_s=_INTERVAL.value)


if __name__ == "__main__":
  common.run(main)
