"""The demo's generator: a small GPT-2 that learns the plays' style on 2 cores.

Four layers, 128 wide, 256-token context, a 2048-token byte-level BPE trained
on the corpus; the original's optimizer and schedule with a from-scratch
learning rate. About 3 minutes for 1200 steps on a 2-core CPU.

  python -m launch.demo --workdir=runs/demo
  python -m launch.finetune --config=configs/demo.py --workdir=runs/demo-gen
"""

from configs import gpt2_tiny


def get_config(arg=None):
  del arg
  c = gpt2_tiny.get_config()
  c.model.size = "mini"
  c.tokenizer_vocab_size = 2048
  c.seq_len = 128
  c.batch_size = 16
  c.accumulate = 1
  c.total_steps = 1200
  c.lr = 2e-3
  c.warmup = 50
  c.period = 1200  # one cosine over the run
  c.lr_min = 5e-5
  c.m_mul = 1.0
  c.val_every = 200
  c.val_max_windows = 128
  c.save_every = 200
  c.progress = False
  return c
