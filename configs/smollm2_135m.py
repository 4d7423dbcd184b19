"""SmolLM2-135M fine-tuned in full on one accelerator (or a CPU, slowly).

  python -m launch.finetune --config=configs/smollm2_135m.py \
      --config.data=CORPUS --workdir=DIR

The base is Hugging Face's SmolLM2-135M (`HuggingFaceTB/SmolLM2-135M` on the
Hub, fetched once into its cache; any local copy or workdir of it does too),
trained with its own tokenizer and end-of-text; the blocks train, the
embedding (tied to the output head) stays frozen. The batch is
configs/gpt2_124m.py's (8 x 1024 tokens, accumulated 4 times), bf16 matmuls
with rematerialised blocks; `model.size` names the base's shape, so

  python -m launch.compile_check --config=configs/smollm2_135m.py --devices=1

shows what one device needs without downloading it (docs/models.md).
"""

from gpt2.train import default_config


def get_config(arg=None):
  del arg
  c = default_config()
  c.init = "HuggingFaceTB/SmolLM2-135M"
  c.model.size = "SmolLM2-135M"  # the base's shape (compile_check reads it)
  c.model.dtype = "bfloat16"
  c.model.remat = True
  c.seq_len = 1024
  c.batch_size = 8
  c.accumulate = 4
  c.total_steps = 2000
  c.lr = 1e-4
  c.warmup = 100
  c.period = 2000
  c.lr_min = 1.5e-6
  c.m_mul = 0.1
  c.val_every = 200
  c.val_batch_size = 8
  c.save_every = 100
  c.keep_checkpoints = 1
  return c
