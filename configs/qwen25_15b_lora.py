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

from configs import llama32_1b_lora


def get_config(arg=None):
  """Llama 3.2 1B's LoRA run (configs/llama32_1b_lora.py) on Qwen2.5-1.5B,
  at half the micro-batch and twice the accumulation."""
  c = llama32_1b_lora.get_config(arg)
  c.init = "Qwen/Qwen2.5-1.5B"
  c.model.size = "Qwen2.5-1.5B"  # the base's shape (compile_check reads it)
  c.batch_size = 2
  c.accumulate = 16
  c.val_batch_size = 2
  return c
