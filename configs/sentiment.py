"""Sentiment head: the mood of a text, as a real value (VADER's scale).

  python -m launch.train_selector --config=configs/sentiment.py \
      --config.model=MODEL_DIR --config.data=texts.jsonl \
      --workdir=heads/sentiment

Same architecture and training as the selector (configs/selector.py), one
output, squared error. Targets: VADER's compound score of each text,
computed offline (config.sentiment_from = "vader"), or a numeric column the
user provides (config.sentiment_from = "column", named by config.label_field).
Data rows: {"text"} (+ the column), or tumblr post dicts (data_format posts).
"""

from configs import selector


def get_config(arg=None):
  c = selector.base_config("sentiment")
  c.sentiment_from = "vader"  # or "column"
  # Output to value: "bounded" (within the training targets' range, through
  # a sigmoid) or "linear" (see selector.score.sentiment_target).
  c.link = "bounded"
  if arg == "tiny":
    c = selector.tiny(c)
  elif arg:
    raise ValueError(f"unknown config variant {arg!r}; use :tiny or nothing")
  return c
