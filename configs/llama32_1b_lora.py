"""Llama 3.2 1B fine-tuned with LoRA on one 16 GB GPU.

  python -m launch.finetune --config=configs/llama32_1b_lora.py \
      --config.data=docs.jsonl --workdir=runs/blog-llama-1b-lora

The base, Meta's Llama-3.2-1B (`meta-llama/Llama-3.2-1B` on the Hugging Face
Hub, a gated model: accept its licence there and `hf auth login` once; any
local copy or workdir of it does too), stays frozen in bfloat16 with its own
tokenizer and end-of-text; rank-16 adapters on every projection of every
block are trained in float32 with Adam. bf16 matmuls, rematerialised blocks,
4 x 1024 tokens per micro-batch, accumulated 8 times. `model.size` names
the base's shape (gpt2.llama.PRESETS), so that

  python -m launch.compile_check --config=configs/llama32_1b_lora.py \
      --devices=1

shows it fits a 16 GiB card without downloading it (docs/models.md).
"""

from gpt2.train import default_config


def get_config(arg=None):
  del arg
  c = default_config()
  c.init = "meta-llama/Llama-3.2-1B"
  c.model.size = "Llama-3.2-1B"  # the base's shape (compile_check reads it)
  c.model.dtype = "bfloat16"
  c.model.param_dtype = "bfloat16"  # the frozen base's storage
  c.model.remat = True
  c.lora.rank = 16
  c.lora.alpha = 32.0
  c.lora.dropout = 0.05
  c.lora.targets = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
  c.seq_len = 1024
  c.batch_size = 4
  c.accumulate = 8
  c.total_steps = 2000
  c.lr = 2e-4
  c.warmup = 100
  c.period = 2000
  c.lr_min = 1.5e-6
  c.m_mul = 0.1
  c.val_every = 200
  c.val_batch_size = 4
  c.save_every = 100
  c.keep_checkpoints = 1
  return c
