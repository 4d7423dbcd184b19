"""configs/bot.py with the container's paths (the image's default config).

Everything that lasts is under /data, the image's volume: the state
(/data/bot.db, its trace beside it), the feed (/data/feed), the generator
(/data/model) and the heads (/data/heads). The credentials are a file
mounted at run time, /run/secrets/tumblr_credentials (mode 0600, owned by
the image's user); the model server's token, when the bot uses one, at
/run/secrets/model_token. `--config=/app/deploy/container_config.py:tiny`
is configs/bot.py's tiny variant with the same paths. Every key can still
be set with `--config.KEY=VALUE`.
"""

import ml_collections

from configs import bot

DATA = "/data"
SECRETS = "/run/secrets"


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """configs/bot.py's config (variant `arg`) with the paths above."""
  c = bot.get_config(arg)
  c.state = f"{DATA}/bot.db"
  c.feed_dir = f"{DATA}/feed"
  c.model = f"{DATA}/model"
  c.heads = f"{DATA}/heads"
  c.credentials = f"{SECRETS}/tumblr_credentials"
  return c
