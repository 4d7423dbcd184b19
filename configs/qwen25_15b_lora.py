"""Qwen2.5 1.5B fine-tuned with LoRA on one 16 GB GPU.

  python -m launch.finetune --config=configs/qwen25_15b_lora.py \
      --config.data=docs.jsonl --workdir=runs/blog-qwen-1.5b-lora

The base, Qwen's Qwen2.5-1.5B (`Qwen/Qwen2.5-1.5B` on the Hugging Face
Hub, fetched once into its cache; any local copy or workdir of it does
too), stays frozen in bfloat16 with its own tokenizer and end-of-text;
rank-16 adapters on every projection of every block are trained in float32
with Adam. bf16 matmuls, rematerialised blocks, 2 x 1024 tokens per
micro-batch (its 152k-token vocabulary makes the logits the largest
temporaries), accumulated 16 times. `model.size` names
the base's shape (gpt2.llama.PRESETS), so that

  python -m launch.compile_check --config=configs/qwen25_15b_lora.py \
      --devices=1

shows it fits a 16 GiB card without downloading it (docs/models.md).
"""

from gpt2.train import default_config


def get_config(arg=None):
  del arg
  c = default_config()
  c.init = "Qwen/Qwen2.5-1.5B"
  c.model.size = "Qwen2.5-1.5B"  # the base's shape (compile_check reads it)
  c.model.dtype = "bfloat16"
  c.model.param_dtype = "bfloat16"  # the frozen base's storage
  c.model.remat = True
  c.lora.rank = 16
  c.lora.alpha = 32.0
  c.lora.dropout = 0.05
  c.lora.targets = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
  c.seq_len = 1024
  c.batch_size = 2
  c.accumulate = 16
  c.total_steps = 2000
  c.lr = 2e-4
  c.warmup = 100
  c.period = 2000
  c.lr_min = 1.5e-6
  c.m_mul = 0.1
  c.val_every = 200
  c.val_batch_size = 2
  c.save_every = 100
  c.keep_checkpoints = 1
  return c
