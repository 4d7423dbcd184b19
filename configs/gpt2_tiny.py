"""A tiny GPT-2 trained from scratch on a CPU in about a minute.

Trains its own 512-token byte-level BPE on the corpus (Shakespeare's plays by
default), then a 2-layer, 64-wide model on 128-token windows. The schedule and
optimizer are the original's, shortened: `period` follows `total_steps`.

  python -m launch.finetune --config=configs/gpt2_tiny.py --workdir=/tmp/tiny
"""

from gpt2.train import default_config


def get_config(arg=None):
  del arg
  c = default_config()
  c.model.size = "tiny"
  c.model.scan_layers = False  # on a CPU the unrolled blocks train faster
  c.tokenizer_vocab_size = 512
  c.val_fraction = 0.1
  c.seq_len = 128
  c.batch_size = 16
  c.accumulate = 2
  c.total_steps = 300
  c.lr = 3e-3
  c.warmup = 20
  c.period = 1000
  c.lr_min = 1e-4
  c.m_mul = 0.5
  c.only_train_transformer_layers = False  # from scratch: train everything
  c.val_every = 100
  c.val_batch_size = 16
  c.val_max_windows = 128
  c.eval_at_start = True
  c.save_every = 100
  c.keep_checkpoints = 2
  return c
