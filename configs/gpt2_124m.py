"""GPT-2 124M fine-tuned from a pretrained model on one accelerator.

  python -m launch.finetune --config=configs/gpt2_124m.py \
      --config.init=gpt2 --config.data=CORPUS --workdir=DIR

`gpt2` is OpenAI's 124M on the Hugging Face Hub (fetched once into its
cache); any model directory does too. The original's optimizer and schedule; the batch is smaller than the 1.5B
run's (8 x 1024 tokens, accumulated 4 times). With rematerialised blocks it
needs ~5.5 GiB (`python -m launch.compile_check --config=configs/gpt2_124m.py
--devices=1`); without, ~25 GiB: on a big GPU add --config.model.remat=false.
"""

from gpt2.train import default_config


def get_config(arg=None):
  del arg
  c = default_config()
  c.model.size = "124M"
  c.tokenizer = "gpt2"
  c.seq_len = 1024
  c.batch_size = 8
  c.accumulate = 4
  c.total_steps = 2000
  c.lr = 1e-4
  c.warmup = 100
  c.period = 2000
  c.lr_min = 1.5e-6
  c.m_mul = 0.1
  c.model.dtype = "bfloat16"
  c.model.remat = True
  c.val_every = 200
  c.val_batch_size = 8
  c.save_every = 100
  c.keep_checkpoints = 1
  return c
