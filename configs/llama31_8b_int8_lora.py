"""Llama 3.1 8B fine-tuned with LoRA on one 24 GB GPU, its base in int8.

  python -m launch.finetune --config=configs/llama31_8b_int8_lora.py \
      --config.data=docs.jsonl --workdir=runs/blog-llama-8b-lora

The base, Meta's Llama-3.1-8B (`meta-llama/Llama-3.1-8B` on the Hugging
Face Hub, a gated model: accept its licence there and `hf auth login` once;
any local copy or workdir of it does too), stays frozen with its own
tokenizer and end-of-text: its blocks' kernels stored as int8 codes with
one scale per output channel (`lora.base_weights="int8"`, gpt2.int8;
quantized from the loaded weights when the run starts, 7 GB), widened to
bfloat16 next to each matmul; the embedding and the output head in
bfloat16. Rank-16 adapters on every projection of every block are trained
in float32 with Adam. Rematerialised blocks, 2 x 1024 tokens per
micro-batch (the 128k-token vocabulary makes the logits the largest
temporaries), accumulated 16 times. `model.size` names the base's shape
(gpt2.llama.PRESETS), so that

  python -m launch.compile_check --config=configs/llama31_8b_int8_lora.py \
      --devices=1 --device_gib=24

shows it fits a 24 GiB card without downloading it (docs/models.md).
"""

from configs import llama32_1b_lora


def get_config(arg=None):
  """Llama 3.2 1B's LoRA run (configs/llama32_1b_lora.py) on Llama-3.1-8B
  with an int8 base, at half the micro-batch and twice the accumulation."""
  c = llama32_1b_lora.get_config(arg)
  c.init = "meta-llama/Llama-3.1-8B"
  c.model.size = "Llama-3.1-8B"  # the base's shape (compile_check reads it)
  c.lora.base_weights = "int8"
  c.batch_size = 2
  c.accumulate = 16
  c.val_batch_size = 2
  return c
