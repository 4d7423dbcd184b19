r"""Serves the bot's generator and heads over HTTP, batching requests.

  python -m launch.serve_model --config=configs/bot.py \
      --config.model=MODEL_DIR --config.heads=HEADS_DIR --port=8765

Then point the bot at it: `python -m launch.run_bot ... --model_server
http://HOST:8765`. Routes: POST /generate {prompts, n, seed} (candidates with
their selector and sentiment scores), POST /score {texts, prompts}, POST
/sentiment {texts}, GET /health. Requests that arrive together are sampled
in one call.
"""

import logging

from absl import flags
from ml_collections import config_flags

from bot import ml
from launch import common

_CONFIG = config_flags.DEFINE_config_file("config", "configs/bot.py",
                                          "Bot config file (model, heads, "
                                          "sampling).")
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Address to listen on.")
_PORT = flags.DEFINE_integer("port", 8765, "Port to listen on (0: any).")


def main(argv):
  del argv
  logging.basicConfig(level=logging.INFO,
                      format="%(asctime)s %(name)s %(levelname)s %(message)s")
  config = _CONFIG.value
  model = ml.LocalModel.load(config.model, config.heads,
                             ml.SamplingSettings.from_config(config.sampling),
                             tuple(config.sentiment_scale))
  server = ml.ModelServer(model, host=_HOST.value, port=_PORT.value)
  print(f"serving {config.model} at {server.url}", flush=True)
  try:
    server.serve_forever()
  except KeyboardInterrupt:
    server.stop()


if __name__ == "__main__":
  common.run(main)
