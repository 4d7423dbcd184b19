"""Selector head: will a post do well (notes)? See selector/ and issue 6.

  python -m launch.train_selector --config=configs/selector.py \
      --config.model=MODEL_DIR --config.data=posts.jsonl \
      --workdir=heads/selector

`--config=configs/selector.py:tiny` sizes everything for a tiny CPU generator
(tests, demos).

Data (config.data, JSONL; config.data_format picks, "auto" looks at row 1):
  posts:    tumblr API post dicts, as the scraper writes them; texts by
            bot.text_format, labels from note counts.
  records:  {"text", "kind": ask|reblog|original, "timestamp", "note_count"},
            labels from note counts.
  labeled:  {"text", "label": 0 or 1} (config.label_field), any label.
Any row may carry a "prompt" (config.prompt_field): read by the generator
before the text, not judged (as a candidate's thread before its reply).
"""

import ml_collections


def base_config(kind: str) -> ml_collections.ConfigDict:
  """Settings shared by the selector and the sentiment head."""
  c = ml_collections.ConfigDict()
  c.kind = kind
  c.model = ""  # the generator: any directory gpt2.weights.load_model takes
  c.data = ""  # JSONL, local or gs://
  c.data_format = "auto"
  c.text_field = "text"
  c.prompt_field = "prompt"
  c.label_field = "label"

  # Generator layers the head reads: 0 embeddings, i block i, -1 the last.
  c.layers = (-9, -1)
  c.max_len = 512  # tokens of prompt + text; longer ones lose their start
  c.cache_dtype = "float32"  # or "float16": half the disk for the cache
  c.activation_cache = ""  # default: WORKDIR/activations

  c.head = ml_collections.ConfigDict()
  c.head.n_head = 8  # attention-pooling heads per layer
  c.head.pool_width = 0  # pooled width per layer; 0: the generator's n_embd
  c.head.mlp_ratio = 1.0  # residual MLP width / concatenated pooled width
  c.head.dropout = 0.1
  # The head's bag of words (selector/bag.py): a linear model on the judged
  # text's word counts, hashed into this many columns, fitted before the
  # network, whose output it is added to; 0: the network alone.
  c.head.bag_buckets = 2**18
  # Binary heads (the selector, an autoreviewer): a linear probe on each
  # layer's mean, first and last judged state (and the bag's output),
  # blended with the network on the calibration rows (selector/probe.py).
  c.head.probe = False

  c.train = ml_collections.ConfigDict()
  c.train.seed = 0
  # Rows held out: the test split every metric comes from, and (selector)
  # the calibration split the Platt scaling is fitted on; disjoint.
  c.train.holdout_fraction = 0.1
  c.train.calibration_fraction = 0.1
  c.train.batch_size = 16
  c.train.epochs = 4
  c.train.steps = 0  # > 0 overrides epochs
  # Keep the epoch whose head scores best (AUC, or Pearson) on the
  # calibration rows rather than the last; the test rows never choose. A
  # sentiment head then holds out calibration_fraction rows for it too.
  c.train.choose_epoch = False
  c.train.lr = 1e-4
  c.train.warmup_fraction = 0.1
  c.train.warmup_steps = -1  # >= 0 overrides warmup_fraction
  c.train.min_lr_ratio = 0.1
  c.train.weight_decay = 0.025
  c.train.b1 = 0.9
  c.train.b2 = 0.999
  c.train.grad_clip = 1.0
  c.train.log_every = 50
  c.train.checkpoint_every = 500
  c.train.extract_batch_size = 8
  c.train.eval_batch_size = 32

  c.ece_bins = 10
  return c


def tiny(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """For GPT2Config.preset("tiny") generators on a CPU."""
  c.layers = (1, 2)
  c.max_len = 128
  c.head.n_head = 4
  c.train.lr = 1e-3
  c.train.epochs = 6
  c.train.log_every = 20
  c.train.checkpoint_every = 100
  c.train.extract_batch_size = 32
  return c


def get_config(arg=None):
  c = base_config("selector")
  # Note-count labels: a post against its own kind's trailing window.
  c.labels = ml_collections.ConfigDict()
  c.labels.window_days_ask = 14.0
  c.labels.window_days_reblog = 14.0
  c.labels.window_days_original = 42.0
  c.labels.low_quantile = 0.25
  c.labels.high_quantile = 0.75
  if arg == "tiny":
    c = tiny(c)
  elif arg:
    raise ValueError(f"unknown config variant {arg!r}; use :tiny or nothing")
  return c
