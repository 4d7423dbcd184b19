r"""Serves the bot's generator and heads over HTTP, batching requests.

  python -c "import secrets; print(secrets.token_urlsafe(32))" > model.token \
      && chmod 600 model.token
  python -m launch.serve_model --config=configs/bot.py \
      --config.model=MODEL_DIR --config.heads=HEADS_DIR \
      --host=0.0.0.0 --port=8765 --token_file=model.token

Then point the bot at it: `python -m launch.run_bot ... --model_server
http://HOST:8765 --config.model_token_file=model.token` (a copy of the
file, mode 0600). On 127.0.0.1 (the default) the token may be left out; on
any other address the server does not start without one. Routes: POST
/generate {prompts, n, seeds} (candidates with their selector and sentiment
scores), POST /score {texts, prompts}, POST /sentiment {texts}, POST
/autoreview {texts, prompts}, POST /logprob {prefixes, continuations}, GET
/health (the model and the limits), and GET /healthz ({"ok": true}, no
token needed). Requests that arrive together are sampled in one call. Each
request is limited (a body of --max_body_mb, 64 prompts, 256 texts, n in
[1, 64], --timeout_s to arrive) and at most --max_connections are handled
at once; a request past a limit gets a 4xx and a one-line JSON error.
"""

import logging

from absl import flags
from ml_collections import config_flags

from bot import ml
from launch import common

_CONFIG = config_flags.DEFINE_config_file("config", "configs/bot.py",
                                          "Bot config file (model, heads, "
                                          "sampling).")
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Address to listen on "
                            "(any but a loopback one needs --token_file).")
_PORT = flags.DEFINE_integer("port", 8765, "Port to listen on (0: any).")
_TOKEN_FILE = flags.DEFINE_string(
    "token_file", "", "A file (mode 0600) holding the bearer token clients "
    "must send (the bot's config key model_token_file names a copy).")
_TIMEOUT_S = flags.DEFINE_float(
    "timeout_s", 10.0, "Seconds a connection has to send each request (and "
    "may wait idle between them) before it is answered 408 or dropped.")
_MAX_CONNECTIONS = flags.DEFINE_integer(
    "max_connections", 32, "Connections handled at once; more wait for one "
    "to end, then get 503.")
_MAX_BODY_MB = flags.DEFINE_float(
    "max_body_mb", ml.MAX_BODY_BYTES / 2**20, "Largest request body, in MiB "
    "(413 beyond).")


def main(argv):
  del argv
  logging.basicConfig(level=logging.INFO,
                      format="%(asctime)s %(name)s %(levelname)s %(message)s")
  # The token and the address first: a refusal costs no model load.
  token = ml.read_token(_TOKEN_FILE.value) if _TOKEN_FILE.value else ""
  ml.check_bind(_HOST.value, token)
  config = common.load_config(_CONFIG, "configs/bot.py")
  model = ml.LocalModel.load(config.model, config.heads,
                             ml.SamplingSettings.from_config(config.sampling),
                             tuple(config.sentiment_scale))
  server = ml.ModelServer(model, host=_HOST.value, port=_PORT.value,
                          token=token, timeout_s=_TIMEOUT_S.value,
                          max_connections=_MAX_CONNECTIONS.value,
                          max_body_bytes=int(_MAX_BODY_MB.value * 2**20))
  print(f"serving {config.model} at {server.url} "
        f"({'a bearer token' if token else 'no token'}; GET /healthz)",
        flush=True)
  try:
    server.serve_forever()
  except KeyboardInterrupt:
    server.stop()


if __name__ == "__main__":
  common.run(main)
