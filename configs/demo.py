"""The demo's generator: a small GPT-2 that learns the plays' style on 2 cores.

Four layers, 128 wide, 256-token context, a 2048-token byte-level BPE trained
on the corpus; the original's optimizer and schedule with a from-scratch
learning rate. About 3 minutes for 1200 steps on a 2-core CPU.

`configs/demo.py:llama` is the same size as a Llama-style decoder
(`gpt2.llama`'s "Llama-mini": RMSNorm, rotary positions, a SwiGLU MLP, 4
query heads on 2 key/value heads, a tied head) with the same tokenizer and
schedule; `launch.demo --config.family=llama` trains it.

  python -m launch.demo --workdir=runs/demo
  python -m launch.finetune --config=configs/demo.py --workdir=runs/demo-gen
  python -m launch.finetune --config=configs/demo.py:llama \\
      --workdir=runs/demo-llama-gen
"""

from configs import gpt2_tiny

FAMILIES = ("gpt2", "llama")


def get_config(arg=None):
  family = arg or "gpt2"
  if family not in FAMILIES:
    raise ValueError(f"configs/demo.py takes no argument or one of "
                     f"{', '.join(FAMILIES)}, not {arg!r}")
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
  if family == "llama":
    c.model.size = "Llama-mini"
    c.model.vocab_size = c.tokenizer_vocab_size  # the corpus's BPE
  return c
