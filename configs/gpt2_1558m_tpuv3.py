"""GPT-2 1.5B on a TPU v3-8: the original generator fine-tune's flags.

From nostalgebraist-autoresponder's `gpt-2/train.py` invocation:
--batch_size 24 --accumulate_gradients 5 --learning_rate 4.76e-5
--learning_rate_cos --learning_rate_warmup 100 --learning_rate_period 5425
--learning_rate_min 1.5e-6 --learning_rate_m_mul 0.1 --adam_beta1 0.9
--adam_beta2 0.999 --adam_epsilon 1e-8 --avg_loss_beta 0.99 --noise_scale
--only_train_transformer_layers --seed 5 --save_every 100 --val_every 200
--val_batch_size 24 --max_to_keep 1, all dropouts 0, --eot_workaround,
--rob_sampler, --learning_rate_initial_step 1.

Fitting 16 GiB per core: bf16 matmuls, rematerialised blocks, parameters and
Adam state sharded over the 8 cores (FSDP), no Adam state for the frozen
embeddings. Check it without a TPU:

  python -m launch.compile_check --config=configs/gpt2_1558m_tpuv3.py

Run it (see launch/tpu_vm.sh):

  python -m launch.finetune --config=configs/gpt2_1558m_tpuv3.py \
      --config.init=gs://BUCKET/models/1558M --config.data=gs://BUCKET/data \
      --workdir=gs://BUCKET/runs/NAME
"""

from gpt2.train import default_config


def get_config(arg=None):
  del arg
  c = default_config()
  c.model.size = "1558M"
  c.model.dtype = "bfloat16"
  c.model.param_dtype = "float32"
  c.model.remat = True
  c.model.embd_pdrop = 0.0
  c.model.attn_pdrop = 0.0
  c.model.resid_pdrop = 0.0
  c.tokenizer = "gpt2"
  c.seq_len = 1024
  c.batch_size = 24
  c.accumulate = 5
  c.total_steps = 5425
  c.lr = 4.76e-5
  c.warmup = 100
  c.period = 5425
  c.lr_min = 1.5e-6
  c.m_mul = 0.1
  c.adam_b1 = 0.9
  c.adam_b2 = 0.999
  c.adam_eps = 1e-8
  c.clip_norm = 1.0
  c.avg_loss_beta = 0.99
  c.noise_scale = True
  c.only_train_transformer_layers = True
  c.seed = 5
  c.save_every = 100
  c.keep_checkpoints = 1
  c.val_every = 200
  c.val_batch_size = 24
  c.sample_every = 0
  c.mesh.data = 1
  c.mesh.fsdp = -1
  c.mesh.model = 1
  return c
