"""Direct Preference Optimization of a generator (Rafailov et al., 2023):
a GPT-2 or a Llama-family model (`gpt2.family`), whatever `load_model` takes.

A pair is a prompt and two continuations of it, one preferred (`chosen`)
and one not (`rejected`). DPO trains the policy pi against a frozen
reference model ref (the model it starts from) on

    -log sigmoid(beta * ((log pi(c) - log ref(c)) - (log pi(r) - log ref(r))))

where log pi(x) sums the log-probabilities of a continuation's tokens after
its prompt (each continuation ends with the model's end-of-text token,
<|endoftext|> for GPT-2, as a post the model writes does).
`beta * (log pi - log ref)` is the implicit reward; its difference between
chosen and rejected is the reward margin. With `sft_weight` > 0 a
language-model loss (mean per token) on corpus windows, or on the chosen
texts when there is no corpus, is added so the voice stays the corpus's.

With LoRA (`lora.rank` > 0, the default) the trained tree is the adapters
(on every projection of the model's family unless `lora.targets` names
some, as `gpt2.train` reads them) and the reference is the base with the
adapters off, so it costs no memory of its own; a full fine-tune
(`lora.rank=0`) keeps a frozen copy of the starting weights as its
reference. The workdir is a training workdir like
`gpt2.train`'s (run.json, tokenizer, orbax checkpoints, metrics.jsonl), so
`gpt2.weights.load_model(workdir)` loads the tuned model and a SIGTERM saves
a checkpoint the next start resumes from.

`tune` also measures, on held-out pairs and before and after tuning:
`preference_accuracy` (share of pairs whose chosen text the model gives the
higher log-probability per token), `reward_margin` and `reward_accuracy`
(the implicit reward's, zero before tuning by definition), `kl` (per token,
KL(pi || ref) over the held-out texts), `lm_loss` (held-out corpus windows,
or the held-out chosen texts), plus whatever the caller's `measure(config,
params)` returns (the launch script samples candidates there). They are
written to WORKDIR/metrics.json as {"before": ..., "after": ...}.
"""

import dataclasses
import functools
import json
from typing import Callable, Optional, Sequence, Tuple

import fsspec
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from gpt2 import checkpoints
from gpt2 import data as data_lib
from gpt2 import family as family_lib
from gpt2 import sharding as sharding_lib
from gpt2 import train as train_lib
from gpt2.errors import UserError
from gpt2.model import GPT2Config
from gpt2.sampling_params import MAX_STEPS, SamplingParams
from gpt2.tokenizer import Tokenizer

METRICS_JSON = "metrics.json"
KIND = "preferences"


def default_config() -> ml_collections.ConfigDict:
  """Every key a preference-tuning config may set, with its default."""
  c = ml_collections.ConfigDict()
  c.model = ""        # the generator to tune: any model `load_model` takes
  c.data = ""         # the bot's state file (the pairs)
  # Held-out LM loss and `sft_weight`'s loss: a corpus (text / JSONL / a
  # prepared folder); "" = the model's own training data when it is a
  # training workdir, else the chosen texts.
  c.corpus = ""
  c.test_fraction = 0.2   # of the prompts, by a hash of the prompt
  c.min_pairs = 8
  c.beta = 0.1
  c.sft_weight = 1.0
  c.numerics = ml_collections.ConfigDict(dict(
      dtype="float32", param_dtype="float32", remat=False, scan_layers=True,
      attention="auto"))
  # targets: comma-separated, as gpt2.train's; "" = every projection of
  # the model's family (GPT-2's attn.c_attn, attn.c_proj, mlp.c_fc,
  # mlp.c_proj; a Llama's q/k/v/o_proj, gate/up/down_proj).
  c.lora = ml_collections.ConfigDict(dict(
      rank=16, alpha=32.0, dropout=0.0, targets=""))
  c.only_train_transformer_layers = True  # a full fine-tune's embeddings
  # Tokens of prompt + text (a longer prompt loses its start); 0 = the
  # model's context, at most 512.
  c.seq_len = 0
  c.batch_size = 8        # pairs per micro-batch
  c.sft_batch_size = 8    # LM windows (or chosen texts) per micro-batch
  c.accumulate = 1
  c.total_steps = 200
  c.lr = 5e-5
  c.warmup = 10
  c.period = 0            # 0 = total_steps (one cosine to lr_min)
  c.lr_min = 1e-6
  c.m_mul = 0.1
  c.adam_b1 = 0.9
  c.adam_b2 = 0.999
  c.adam_eps = 1e-8
  c.clip_norm = 1.0
  c.seed = 0
  c.log_every = 1
  c.val_every = 50
  c.val_max_windows = 64  # held-out corpus windows for lm_loss
  c.save_every = 50
  c.keep_checkpoints = 1
  c.async_checkpoints = True
  c.progress = True
  # How the before/after candidates are sampled: the bot's settings
  # (configs/bot.py's sampling group), N per held-out prompt.
  rules = SamplingParams.bot_defaults()
  c.sampling = ml_collections.ConfigDict(dict(
      n=8, max_new_tokens=0, max_steps=MAX_STEPS,
      temperature=rules.temperature, top_p=rules.top_p, top_k=rules.top_k,
      breakruns_tau=rules.breakruns_tau, min_prompts=1, weights="float32"))
  c.eval_prompts = 16     # held-out prompts sampled before and after
  # Phrases whose share among sampled candidates is measured (comma-
  # separated); "" = those the operator turned down (see the launch).
  c.phrases = ""
  c.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, model=1))
  c.sharding_rules = sharding_lib.DEFAULT_RULES
  return c


# ---- examples ----------------------------------------------------------------


@dataclasses.dataclass
class Rows:
  """Token rows and the mask of the tokens each row scores (N, T)."""
  ids: np.ndarray
  mask: np.ndarray

  def __len__(self):
    return len(self.ids)

  def take(self, index) -> "Rows":
    return Rows(self.ids[index], self.mask[index])


def encode(tokenizer: Tokenizer, prompts: Sequence[str], texts: Sequence[str],
           seq_len: int) -> Rows:
  """Each prompt followed by its text and the end-of-text token, scored on
  the text's tokens. A text longer than `seq_len` - 1 loses its end, a prompt
  that does not fit beside it its start."""
  ids = np.zeros((len(texts), seq_len), np.int32)
  mask = np.zeros((len(texts), seq_len), np.float32)
  for i, (prompt, text) in enumerate(zip(prompts, texts)):
    cont = (tokenizer.encode(text) + [tokenizer.eot_id])[:seq_len - 1]
    head = tokenizer.encode(prompt)[-(seq_len - len(cont)):] or \
        [tokenizer.eot_id]
    row = head + cont
    ids[i, :len(row)] = row
    mask[i, len(head):len(row)] = 1
  return Rows(ids, mask)


def windows(stream: data_lib.TokenStream, starts: np.ndarray,
            seq_len: int) -> Rows:
  ids = stream.windows(starts, seq_len).astype(np.int32)
  mask = np.ones(ids.shape, np.float32)
  mask[:, 0] = 0  # the first token has no predecessor in the window
  return Rows(ids, mask)


class PairOrder:
  """Pairs in a fresh random order every epoch; its state resumes it."""

  def __init__(self, n: int, seed: int):
    self.n, self.seed, self.position = n, seed, 0

  def next(self, count: int) -> np.ndarray:
    out = []
    while len(out) < count:
      epoch, offset = divmod(self.position, self.n)
      order = np.random.default_rng([self.seed, epoch]).permutation(self.n)
      take = min(count - len(out), self.n - offset)
      out.extend(order[offset:offset + take])
      self.position += take
    return np.asarray(out)

  def state(self) -> dict:
    return {"position": self.position, "n": self.n}

  def restore(self, state: dict) -> None:
    if state.get("n") != self.n:
      raise UserError(
          f"the run was tuned on {state.get('n')} pairs but now finds "
          f"{self.n}; the state file changed: use a new --workdir")
    self.position = int(state["position"])


# ---- the pure functions ------------------------------------------------------


def sequence_logps(model_config: GPT2Config, params, lora, rows_ids,
                   rows_mask, rng=None):
  """Per row: the summed log-probability of its scored tokens."""
  losses = train_lib.token_losses(model_config, params, rows_ids, rng, lora)
  return -(losses * rows_mask[:, 1:]).sum(axis=1)


def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected,
             beta: float):
  """(per-pair loss, per-pair reward margin)."""
  margin = beta * ((policy_chosen - ref_chosen) -
                   (policy_rejected - ref_rejected))
  return -jax.nn.log_sigmoid(margin), margin


def _policy(params, reference, lora: bool):
  """`forward`'s (params, lora) of the policy."""
  return (reference, params) if lora else (params, None)


def train_step(state, batch, reference, *, model_config: GPT2Config,
               optimizer, labels, schedule, beta: float, sft_weight: float,
               base_rng):
  """One update from k micro-batches: `batch` holds `ids`/`mask` (k, 2B, T),
  the B chosen rows then the B rejected ones, and `sft_ids`/`sft_mask`
  (k, S, T). `reference` is the frozen model (with LoRA also the base the
  adapters sit on)."""
  lora = bool(model_config.lora_rank)
  ref_config = model_config.without_lora()
  top = train_lib._top_labels(labels)  # pylint: disable=protected-access
  params = state["params"]
  trained = {n: p for n, p in params.items() if top[n] == train_lib.TRAIN}
  frozen = {n: p for n, p in params.items() if top[n] == train_lib.FROZEN}
  step = state["step"] + 1
  rng = jax.random.fold_in(base_rng, step)

  def micro_loss(trained, xs, rng):
    ids, mask, sft_ids, sft_mask = xs
    half = ids.shape[0] // 2
    model, adapters = _policy({**frozen, **trained}, reference, lora)
    ref = jax.lax.stop_gradient(
        sequence_logps(ref_config, reference, None, ids, mask))
    policy = sequence_logps(model_config, model, adapters, ids, mask, rng)
    losses, margin = dpo_loss(policy[:half], policy[half:], ref[:half],
                              ref[half:], beta)
    loss = dpo = losses.mean()
    sft = jnp.zeros(())
    if sft_weight:
      nll = -sequence_logps(model_config, model, adapters, sft_ids, sft_mask,
                            jax.random.fold_in(rng, 1))
      sft = nll.sum() / jnp.maximum(sft_mask[:, 1:].sum(), 1)
      loss = loss + sft_weight * sft
    return loss, {"loss": loss, "dpo_loss": dpo, "sft_loss": sft,
                  "reward_margin": margin.mean(),
                  "reward_accuracy": (margin > 0).mean()}

  grad_fn = jax.value_and_grad(micro_loss, has_aux=True)

  def accumulate(carry, xs):
    grad_sum, metric_sum = carry
    (_, metrics), grads = grad_fn(trained, xs[:4],
                                  jax.random.fold_in(rng, xs[4]))
    return (jax.tree.map(jnp.add, grad_sum, grads),
            jax.tree.map(jnp.add, metric_sum, metrics)), None

  k = batch["ids"].shape[0]
  zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), trained)
  metric_zeros = {n: jnp.zeros(()) for n in (
      "loss", "dpo_loss", "sft_loss", "reward_margin", "reward_accuracy")}
  (grad_sum, metric_sum), _ = jax.lax.scan(
      accumulate, (zeros, metric_zeros),
      (batch["ids"], batch["mask"], batch["sft_ids"], batch["sft_mask"],
       jnp.arange(k)))
  grads = jax.tree.map(lambda g, p: (g / k).astype(p.dtype), grad_sum, trained)
  full_grads = {**jax.tree.map(jnp.zeros_like, frozen), **grads}
  updates, opt_state = optimizer.update(full_grads, state["opt_state"], params)
  new_params = {n: optax.apply_updates(p, updates[n])
                if top[n] == train_lib.TRAIN else p
                for n, p in params.items()}
  metrics = {n: v / k for n, v in metric_sum.items()}
  metrics.update(lr=schedule(step),
                 grad_norm=optax.tree_utils.tree_norm(grads))
  return {**state, "step": step, "params": new_params,
          "opt_state": opt_state}, metrics


def score_rows(params, reference, ids, mask, *, model_config: GPT2Config):
  """Per row: (policy log-prob, reference log-prob, scored tokens, summed
  per-token KL(policy || reference)) of its scored tokens."""
  lora = bool(model_config.lora_rank)
  model, adapters = _policy(params, reference, lora)
  targets = jnp.roll(ids, -1, axis=1)
  weight = jnp.roll(mask, -1, axis=1).at[:, -1].set(0)  # scores token t+1

  forward = family_lib.of(model_config).forward

  def logps(config, p, a):
    logits = forward(config, p, ids, lora=a).logits
    return jax.nn.log_softmax(logits.astype(jnp.float32))

  pol = logps(model_config, model, adapters)
  ref = logps(model_config.without_lora(), reference, None)
  pick = lambda lp: jnp.take_along_axis(lp, targets[..., None], -1)[..., 0]
  kl = (jnp.exp(pol) * (pol - ref)).sum(-1)
  return ((pick(pol) * weight).sum(1), (pick(ref) * weight).sum(1),
          weight.sum(1), (kl * weight).sum(1))


# ---- the run -----------------------------------------------------------------


@dataclasses.dataclass
class Setup:
  """What `prepare` found: the model to tune and its tokenizer."""
  model_config: GPT2Config        # or a LlamaConfig; with the run's LoRA
  tokenizer: Tokenizer
  reference: dict                 # the frozen starting weights (numpy)
  run: dict
  corpus: Optional[str]           # a prepared token folder, or None


def check(config) -> None:
  """A UserError naming the first bad key or value."""
  train_lib.check_config(config, default_config())
  if not config.model:
    raise UserError("config.model is empty: name the generator to tune "
                    "(a model directory, a training workdir or a Hub name)")
  if not config.data:
    raise UserError("config.data is empty: name the bot's state file")
  if config.seq_len < 0 or config.seq_len == 1:
    raise UserError(f"seq_len={config.seq_len} must be 0 (the model's "
                    "context) or at least 2")
  for key in ("beta", "batch_size", "accumulate", "lr"):
    if not config[key] > 0:
      raise UserError(f"{key}={config[key]} must be positive")
  if config.sft_weight < 0:
    raise UserError(f"sft_weight={config.sft_weight} must be >= 0")
  if config.total_steps < 0:
    raise UserError(f"total_steps={config.total_steps} must be >= 0")
  if not 0 < config.test_fraction < 1:
    raise UserError(f"test_fraction={config.test_fraction} must be "
                    "between 0 and 1")


def optimizer_config(config):
  """`config` with `period` 0 read as `total_steps`."""
  c = config.copy_and_resolve_references()
  if not c.period:
    c.period = max(c.total_steps, 1)
  return c


def prepare(config, workdir: str) -> Setup:
  """The model, its tokenizer and reference, and the corpus, for a new or
  resumed run in `workdir` (run.json and the tokenizer written)."""
  from gpt2 import weights  # pylint: disable=import-outside-toplevel
  run = checkpoints.read_run_file(workdir)
  if run is not None and run.get("kind") != KIND:
    raise UserError(f"{workdir} holds another kind of run; tune into a new "
                    "--workdir")
  if run is not None:
    for key in ("model", "data", "corpus"):
      if run["sources"][key] != config[key]:
        raise UserError(
            f"the workdir {workdir} was tuned with {key}="
            f"{run['sources'][key]!r}, not {config[key]!r}; use a new "
            "--workdir")
  loaded = weights.load_model(config.model)
  family = family_lib.of(loaded.config)
  lora = _lora_group(config, family)
  if run is not None and run["lora"] != lora:
    raise UserError(f"the workdir {workdir} was tuned with lora="
                    f"{run['lora']}, not {lora}; use a new --workdir")
  # Checked and read as gpt2.train reads a LoRA run's, for the family.
  model_config = loaded.config.replace(
      **dict(config.numerics), **train_lib.lora_settings(
          ml_collections.ConfigDict({"lora": lora}), family.lora_targets))
  if family is family_lib.LLAMA:
    model_config = model_config.ending_with(loaded.tokenizer.eot_id)
  corpus = _corpus(config, workdir, loaded)
  if run is None:
    run = {"kind": KIND, "model": model_config.to_dict(),
           "init": config.model,
           "sources": {k: config[k] for k in ("model", "data", "corpus")},
           "lora": lora, "config": json.loads(config.to_json_best_effort())}
    if model_config.lora_rank:
      run["base"] = train_lib._base_name(config.model)  # pylint: disable=protected-access
    loaded.tokenizer.save(workdir)
    checkpoints.write_run_file(workdir, run)
  return Setup(model_config, loaded.tokenizer, loaded.params, run, corpus)


def _lora_group(config, family: family_lib.Family) -> dict:
  """`config.lora` with empty `targets` read as every projection of the
  model's `family` (as run.json records it, so that a run resumes only
  with the adapters it started with)."""
  lora = dict(config.lora)
  if not str(lora["targets"]).strip():
    lora["targets"] = ",".join(family.lora_targets)
  return lora


def _corpus(config, workdir: str, loaded) -> Optional[str]:
  if config.corpus:
    if data_lib.is_prepared(config.corpus):
      return config.corpus
    out = f"{workdir.rstrip('/')}/corpus"
    if not data_lib.is_prepared(out):
      data_lib.prepare(config.corpus, out, tokenizer=loaded.tokenizer,
                       val_fraction=0.1, progress=False)
    return out
  run = checkpoints.read_run_file(config.model) if loaded.kind in (
      "workdir", "lora") else None
  if run and run.get("data") and data_lib.is_prepared(run["data"]):
    return run["data"]
  return None


class _Jitted:
  """The sharded step functions of one model on one mesh."""

  def __init__(self, model_config: GPT2Config, config, mesh):
    c = optimizer_config(config)
    self.layout = layout = train_lib.state_layout(model_config, c, mesh)
    self.mesh = mesh
    repl = sharding_lib.replicated(mesh)
    self.reference_shardings = (layout.base_shardings if
                                model_config.lora_rank else
                                layout.param_shardings)
    self.rows3 = sharding_lib.batch_sharding(mesh, layout.rules, 3,
                                             batch_dim=1)
    self.rows2 = sharding_lib.batch_sharding(mesh, layout.rules, 2,
                                             batch_dim=0)
    step = functools.partial(
        train_step, model_config=model_config, optimizer=layout.optimizer,
        labels=layout.labels, schedule=train_lib.schedule_from_config(c),
        beta=float(config.beta), sft_weight=float(config.sft_weight),
        base_rng=jax.random.PRNGKey(config.seed))
    batch = {n: self.rows3 for n in ("ids", "mask", "sft_ids", "sft_mask")}
    wrap = functools.partial(train_lib._InMesh, mesh=mesh, rules=layout.rules)  # pylint: disable=protected-access
    self.train = wrap(jax.jit(
        step, in_shardings=(layout.state_shardings, batch,
                            self.reference_shardings),
        out_shardings=(layout.state_shardings, repl), donate_argnums=0))
    self.score = wrap(jax.jit(
        functools.partial(score_rows, model_config=model_config),
        in_shardings=(layout.param_shardings, self.reference_shardings,
                      self.rows2, self.rows2),
        out_shardings=repl))
    self.init = wrap(jax.jit(
        functools.partial(train_lib.init_state, optimizer=layout.optimizer),
        in_shardings=(layout.param_shardings,),
        out_shardings=layout.state_shardings))
    self.init_params = wrap(jax.jit(
        functools.partial(layout.init_fn, model_config),
        out_shardings=layout.param_shardings))

  def put(self, array: np.ndarray, sharding, dim: int):
    return sharding_lib.put_batch(lambda lo, hi: np.take(
        array, np.arange(lo, hi), axis=dim), array.shape, sharding, dim)


def score(jitted: _Jitted, params, reference, rows: Rows, batch: int
          ) -> Tuple[np.ndarray, ...]:
  """`score_rows` over all rows, `batch` at a time (the last padded)."""
  outs = []
  for lo in range(0, len(rows), batch):
    chunk = rows.take(np.arange(lo, min(lo + batch, len(rows))))
    n = len(chunk)
    ids = np.zeros((batch, chunk.ids.shape[1]), np.int32)
    mask = np.zeros(ids.shape, np.float32)
    ids[:n], mask[:n] = chunk.ids, chunk.mask
    got = jitted.score(params, reference, jitted.put(ids, jitted.rows2, 0),
                       jitted.put(mask, jitted.rows2, 0))
    outs.append([np.asarray(x)[:n] for x in jax.device_get(got)])
  return tuple(np.concatenate(parts) for parts in zip(*outs))


def held_out(jitted: _Jitted, params, reference, chosen: Rows,
             rejected: Rows, lm: Optional[Rows], beta: float,
             batch: int) -> dict:
  """The held-out preference metrics and LM loss of the policy `params`
  (on the `lm` rows, or None: on the chosen texts)."""
  pc, rc, nc, klc = score(jitted, params, reference, chosen, batch)
  pr, rr, nr, klr = score(jitted, params, reference, rejected, batch)
  margin = beta * ((pc - rc) - (pr - rr))
  lp, nl = pc, nc
  if lm is not None:
    lp, _, nl, _ = score(jitted, params, reference, lm, batch)
  return {
      "preference_accuracy": float(np.mean(pc / nc > pr / nr)),
      "reward_margin": float(np.mean(margin)),
      "reward_accuracy": float(np.mean(margin > 0)),
      "kl": float((klc.sum() + klr.sum()) / (nc.sum() + nr.sum())),
      "lm_loss": float(-lp.sum() / nl.sum()),
  }


def _corpus_rows(corpus: str, config, seq_len: int) -> Rows:
  """The held-out windows of a prepared corpus, for `lm_loss`."""
  stream = data_lib.TokenStream.open(corpus, "val")
  data_lib.check_fits(stream, seq_len)
  starts = data_lib.eval_starts(len(stream), seq_len, config.val_max_windows)
  return windows(stream, starts, seq_len)


def merged(model_config: GPT2Config, params, reference) -> tuple:
  """(config, params) of the policy as one plain model."""
  if model_config.lora_rank:
    return family_lib.of(model_config).merge_lora(model_config, reference,
                                                  params)
  return model_config, params


def tune(config, workdir: str, train_pairs: Sequence[tuple],
         test_pairs: Sequence[tuple],
         measure: Optional[Callable[[GPT2Config, dict, Tokenizer], dict]] = None,
         info: Optional[dict] = None) -> dict:
  """Tunes `config.model` on `train_pairs` ((prompt, chosen, rejected)
  strings) in `workdir`, resuming it if it holds this run. Returns the
  summary written to WORKDIR/metrics.json: `before`, `after` (held-out
  metrics and `measure`'s), `steps`, `preempted`, and `info`'s keys."""
  check(config)
  workdir = checkpoints.absolute(workdir)
  checkpoints.ensure_writable(workdir)
  setup = prepare(config, workdir)
  model_config, tok = setup.model_config, setup.tokenizer
  seq = config.seq_len or min(512, model_config.n_positions)
  if seq > model_config.n_positions:
    raise UserError(f"seq_len={seq} is longer than the model's n_positions="
                    f"{model_config.n_positions}")
  mesh = sharding_lib.make_mesh(dict(config.mesh))
  ways = mesh.shape["data"] * mesh.shape["fsdp"]
  for key in ("batch_size", "sft_batch_size"):
    if config[key] % ways:
      raise UserError(f"{key}={config[key]} is not divisible by the {ways} "
                      "data-parallel devices (mesh data x fsdp)")
  jitted = _Jitted(model_config, config, mesh)
  layout = jitted.layout
  dtype = model_config.params_dtype
  on_devices = train_lib._on_devices  # pylint: disable=protected-access
  reference = on_devices(setup.reference, dtype, jitted.reference_shardings)

  def texts(pairs, which: int) -> Rows:  # 1: the chosen texts, 2: rejected
    return encode(tok, [p[0] for p in pairs], [p[which] for p in pairs], seq)

  chosen, rejected = texts(train_pairs, 1), texts(train_pairs, 2)
  test_chosen, test_rejected = texts(test_pairs, 1), texts(test_pairs, 2)
  lm = (_corpus_rows(setup.corpus, config, seq) if setup.corpus is not None
        else None)  # None: the held-out chosen texts
  if setup.corpus is not None:
    sft_stream = data_lib.TokenStream.open(setup.corpus, "train")
    data_lib.check_fits(sft_stream, seq)
    sft_sampler = data_lib.WindowSampler(len(sft_stream), seq, config.seed)
  else:
    sft_stream, sft_sampler = None, PairOrder(len(chosen), config.seed + 1)

  order = PairOrder(len(chosen), config.seed)
  store = checkpoints.Checkpoints(workdir, keep=config.keep_checkpoints,
                                  async_save=config.async_checkpoints)
  start = store.latest_step()
  if start is not None:
    state, sampler_state = store.restore(start, layout.abstract_state)
    order.restore(sampler_state["pairs"])
    sft_sampler.restore(sampler_state["sft"])
    logging.info("resumed %s at step %d", workdir, start)
  else:
    start = 0
    if model_config.lora_rank:
      params = jitted.init_params(jax.random.PRNGKey(config.seed))
    else:
      # Its own buffers: the step donates the state, never the reference.
      params = on_devices(setup.reference, dtype, layout.param_shardings)
    state = jitted.init(params)

  def evaluate(params, extra: bool) -> dict:
    result = held_out(jitted, params, reference, test_chosen, test_rejected,
                      lm, float(config.beta), config.batch_size * 2)
    if extra and measure is not None:
      c, p = merged(model_config, params, reference)
      result.update(measure(c, jax.device_get(p), tok))
    return result

  if "before" not in setup.run:
    setup.run["before"] = evaluate(state["params"], extra=True)
    checkpoints.write_run_file(workdir, setup.run)
  logging.info("before tuning: %s", setup.run["before"])

  metrics_log = train_lib.MetricsLog(workdir, start)
  k, b, s = config.accumulate, config.batch_size, config.sft_batch_size
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  total = config.total_steps
  bar = tqdm(total=total, initial=min(start, total), unit="step",
             disable=not config.progress, dynamic_ncols=True)
  step, saved, preempted = start, start, False

  def sampler_state():
    return {"pairs": order.state(), "sft": sft_sampler.state()}

  with train_lib._Preemption() as preemption:  # pylint: disable=protected-access
    while step < total:
      index = order.next(k * b).reshape(k, b)
      ids = np.concatenate([chosen.ids[index], rejected.ids[index]], axis=1)
      mask = np.concatenate([chosen.mask[index], rejected.mask[index]],
                            axis=1)
      if sft_stream is not None:
        sft = windows(sft_stream, sft_sampler.next_starts(k * s), seq)
        sft_ids, sft_mask = (sft.ids.reshape(k, s, seq),
                             sft.mask.reshape(k, s, seq))
      else:
        pick = sft_sampler.next(k * s).reshape(k, s)
        sft_ids, sft_mask = chosen.ids[pick], chosen.mask[pick]
      batch = {n: jitted.put(a, jitted.rows3, 1) for n, a in (
          ("ids", ids), ("mask", mask), ("sft_ids", sft_ids),
          ("sft_mask", sft_mask))}
      state, metrics = jitted.train(state, batch, reference)
      step += 1
      record = None
      if step % config.log_every == 0 or step == total:
        record = {"step": step, **{n: float(v) for n, v in
                                   jax.device_get(metrics).items()}}
        bar.set_postfix(loss=f"{record['loss']:.3f}",
                        margin=f"{record['reward_margin']:.2f}")
      if config.val_every and (step % config.val_every == 0 or step == total):
        record = record or {"step": step}
        got = evaluate(state["params"], extra=False)
        record.update({f"val_{n}": v for n, v in got.items()})
      if record is not None:
        metrics_log.write(record)
      bar.update(1)
      preempted = preemption.requested
      if (config.save_every and step % config.save_every == 0) or \
          step == total or preempted:
        store.save(step, state, sampler_state())
        saved = step
      if preempted:
        logging.warning("preempted: saved step %d and stopping", step)
        break
  bar.close()
  if saved != step or store.latest_step() is None:
    store.save(step, state, sampler_state())
  store.wait()
  store.close()
  metrics_log.flush()
  summary = {"steps": step, "preempted": preempted, **(info or {}),
             "before": setup.run["before"]}
  if not preempted:
    summary["after"] = evaluate(state["params"], extra=True)
    fs, root = fsspec.core.url_to_fs(workdir)
    with fs.open(f"{root}/{METRICS_JSON}", "w") as f:
      json.dump({k: v for k, v in summary.items() if k != "preempted"}, f,
                indent=2)
  return summary
