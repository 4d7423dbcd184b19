"""GPT-2 1.5B fine-tuned with LoRA on one 16 GB GPU.

  python -m launch.finetune --config=configs/gpt2_1558m_lora.py \
      --config.data=docs.jsonl --workdir=runs/blog-1558m-lora

The base, OpenAI's 1.5B (`gpt2-xl` on the Hugging Face Hub, fetched once
into its cache; any model directory or workdir does too), stays frozen in
bfloat16; rank-16 adapters on all four dense layers of every block
(19.7M parameters, 1.3% of the model) are trained in float32 with Adam.
bf16 matmuls, rematerialised blocks, 4 x 1024 tokens per micro-batch,
accumulated 8 times (32 sequences per update). It fits a 16 GiB card
(13.3 GiB as the CPU compiler counts it, which errs high; see docs/training.md):

  python -m launch.compile_check --config=configs/gpt2_1558m_lora.py --devices=1

The schedule is the original's in shape, with a learning rate for adapters
(LoRA's usual 2e-4 rather than a full fine-tune's 4.76e-5).
"""

from gpt2.train import default_config


def get_config(arg=None):
  del arg
  c = default_config()
  c.init = "gpt2-xl"
  c.model.size = "1558M"  # the base's shape (compile_check reads it)
  c.model.dtype = "bfloat16"
  c.model.param_dtype = "bfloat16"  # the frozen base's storage
  c.model.remat = True
  c.lora.rank = 16
  c.lora.alpha = 32.0
  c.lora.dropout = 0.05
  c.lora.targets = "attn.c_attn,attn.c_proj,mlp.c_fc,mlp.c_proj"
  c.tokenizer = "gpt2"
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
  c.mesh.data = 1
  c.mesh.fsdp = -1
  c.mesh.model = 1
  return c
