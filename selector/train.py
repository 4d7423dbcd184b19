"""Training a head on the frozen generator's cached activations.

Reads top to bottom: tokens -> activation cache -> stratified split into
train, calibration and test rows -> the bag of words fitted on the train
rows (selector/bag.py) -> AdamW with warmup and cosine decay ->
training loop with orbax checkpoints (a reused workdir resumes, and sees
exactly the batches it would have) -> calibration fitted on the calibration
rows -> metrics on the test rows, beside a bag-of-words baseline fitted on
the same split -> the head and `metrics.json` in the workdir.

Workdir layout:
  run.json           what this run trains on; a resume must match it
  activations/       the activation cache (see selector/data.py)
  checkpoints/       orbax: params, optimizer state, step
  head/              the trained head (selector/score.py reads it)
  metrics.json       test-split metrics, the baseline's beside them
"""

import dataclasses
import hashlib
import json
import logging
import math
import os
import tempfile
import time
from typing import Callable, Optional, Sequence

import fsspec
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from gpt2.errors import UserError
from selector import autoreview
from selector import bag as bag_lib
from selector import baseline as baseline_lib
from selector import data as data_lib
from selector import metrics as metrics_lib
from selector import probe as probe_lib
from selector.model import (HeadConfig, apply_head, init_head_params,
                            resolve_layers)
from selector.score import (BINARY, HEAD_SUBDIR, N_OUT, Head, compiled_head,
                            sentiment_output, sentiment_target,
                            sentiment_value)


@dataclasses.dataclass
class Examples:
  """Texts and their targets: 0/1 (selector, autoreviewer) or real values
  (sentiment)."""
  texts: Sequence[str]
  targets: np.ndarray  # (N,) float32
  prompts: Optional[Sequence[str]] = None  # read before each text, not judged


@dataclasses.dataclass(frozen=True)
class Splits:
  """Row indices of the three parts of a head's data, disjoint by
  construction: the head trains on `train`, its calibration is fitted on
  `calibration` (empty for a head without one), and every metric it reports
  comes from `test`, which neither saw."""
  train: np.ndarray
  calibration: np.ndarray
  test: np.ndarray

  def __post_init__(self):
    parts = (self.train, self.calibration, self.test)
    together = np.concatenate(parts)
    if len(np.unique(together)) != len(together):
      raise ValueError("the train, calibration and test rows overlap")


def split_rows(strata: np.ndarray, test_fraction: float,
               calibration_fraction: float, seed: int) -> Splits:
  """Each stratum shuffled and cut in three: test, calibration, train.

  Every stratum with at least 3 rows gives each part one row at least (two
  rows: test and train; calibration_fraction 0: no calibration rows).
  """
  rng = np.random.default_rng(seed)
  parts = {"train": [], "calibration": [], "test": []}
  for value in np.unique(strata):
    idx = rng.permutation(np.flatnonzero(strata == value))
    n_test = int(round(test_fraction * len(idx)))
    n_cal = int(round(calibration_fraction * len(idx)))
    if len(idx) >= 2:
      n_test = min(max(n_test, 1), len(idx) - 1)
    if calibration_fraction > 0 and len(idx) - n_test >= 2:
      n_cal = min(max(n_cal, 1), len(idx) - n_test - 1)
    else:
      n_cal = 0
    parts["test"].extend(idx[:n_test])
    parts["calibration"].extend(idx[n_test:n_test + n_cal])
    parts["train"].extend(idx[n_test + n_cal:])
  return Splits(**{name: np.sort(np.asarray(rows, np.int64))
                   for name, rows in parts.items()})


def strata_of(kind: str, targets: np.ndarray, n_bins: int = 10) -> np.ndarray:
  """The label for a binary head; a quantile bin of the target for
  sentiment."""
  if kind in BINARY:
    return targets.astype(np.int64)
  edges = np.quantile(targets, np.linspace(0, 1, n_bins + 1)[1:-1])
  return np.searchsorted(edges, targets, side="right")


def weight_decay_mask(params):
  """Decay matrices only: not norms' scales or any bias."""
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(tcfg, total_steps: int):
  """AdamW (no decay on norms and biases), linear warmup then cosine."""
  warmup = int(tcfg.warmup_steps) if tcfg.warmup_steps >= 0 else int(
      round(tcfg.warmup_fraction * total_steps))
  warmup = min(warmup, max(total_steps - 1, 0))
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=tcfg.lr, warmup_steps=warmup,
      decay_steps=max(total_steps, 1), end_value=tcfg.lr * tcfg.min_lr_ratio)
  tx = optax.chain(
      optax.clip_by_global_norm(tcfg.grad_clip),
      optax.adamw(schedule, b1=tcfg.b1, b2=tcfg.b2,
                  weight_decay=tcfg.weight_decay, mask=weight_decay_mask))
  return tx, schedule


def loss_fn(head_cfg: HeadConfig, kind: str, target: Optional[dict], params,
            hidden, mask, offsets, targets, weights, dropout_rng):
  """Weighted mean cross-entropy (binary heads) or squared error of the
  standardised value (sentiment). `offsets` (B,): the bag of words' output
  for each row, added to the network's last output as the scorer adds it."""
  out = apply_head(head_cfg, params, hidden, mask, deterministic=False,
                   dropout_rng=dropout_rng)  # (B, n_out)
  out = out.at[:, -1].add(offsets)
  if kind in BINARY:
    per_example = optax.softmax_cross_entropy_with_integer_labels(
        out, targets.astype(jnp.int32))
  else:
    value = sentiment_value(out[:, 0], target)
    per_example = ((value - target["mean"]) / target["std"] - targets) ** 2
  return jnp.sum(per_example * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def make_train_step(head_cfg: HeadConfig, kind: str, tx,
                    target: Optional[dict] = None):
  """A jitted (state, batch, rng) -> (state, loss)."""

  def step(state, hidden, mask, offsets, targets, weights, rng):
    dropout_rng = jax.random.fold_in(rng, state["step"])
    loss, grads = jax.value_and_grad(loss_fn, argnums=3)(
        head_cfg, kind, target, state["params"], hidden, mask, offsets,
        targets, weights, dropout_rng)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    return {"params": params, "opt_state": opt_state,
            "step": state["step"] + 1}, loss

  return jax.jit(step, donate_argnums=0)


def predict(head_cfg: HeadConfig, params, cache: data_lib.ActivationCache,
            indices: np.ndarray, length: int, batch_size: int) -> np.ndarray:
  """(len(indices), n_out) head outputs, deterministic, in batches."""
  fn = compiled_head(head_cfg)  # the scorer's compiled head
  out = []
  for begin in range(0, len(indices), batch_size):
    chunk = list(indices[begin:begin + batch_size])
    n = len(chunk)
    hidden, mask = cache.batch(chunk + [-1] * (batch_size - n), length)
    out.append(np.asarray(fn(params, tuple(hidden), mask))[:n])
  return np.concatenate(out) if out else np.zeros((0, head_cfg.n_out))


# Settings a resumed run may change: they do not alter what is learned.
_NOT_RUN_IDENTITY = ("log_every", "checkpoint_every", "extract_batch_size",
                     "eval_batch_size")


def _is_local(path: str) -> bool:
  return "://" not in path or path.startswith("file://")


def _absolute(path: str) -> str:
  """A local path made absolute, so a head finds its generator from anywhere."""
  return os.path.abspath(path) if path and _is_local(path) and os.path.exists(
      path) else path


def _write_json(path: str, obj) -> None:
  with fsspec.open(path, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True)


def _finished_metrics(workdir: str) -> Optional[dict]:
  """The test metrics of a run that trained to its end and saved its head
  (metrics.json is written last), else None."""
  path = f"{workdir}/metrics.json"
  fs, _ = fsspec.core.url_to_fs(path)
  if not (fs.exists(path) and fs.exists(f"{workdir}/{HEAD_SUBDIR}")):
    return None
  with fsspec.open(path, "r") as f:
    return json.load(f)


def _check_run(workdir: str, run: dict) -> None:
  """Writes run.json, or checks that a resumed run trains the same thing."""
  path = f"{workdir}/run.json"
  fs, _ = fsspec.core.url_to_fs(path)
  if fs.exists(path):
    with fsspec.open(path, "r") as f:
      before = json.load(f)
    changed = sorted(k for k in set(before) | set(run)
                     if before.get(k) != run.get(k))
    if changed:
      raise UserError(
          f"workdir {workdir} holds a run with other {', '.join(changed)}; "
          "resume with the same config and data, or pick a new --workdir")
  else:
    _write_json(path, run)


def train_head(config, model, examples: Examples, workdir: str,
               log: Callable = logging.info,
               stop_after_steps: Optional[int] = None,
               progress: bool = False) -> dict:
  """Trains, calibrates and saves a head; returns its test-split metrics.

  config: the ml_collections config (configs/selector.py, sentiment.py or
    autoreviewer.py).
  model: a `gpt2.weights.LoadedModel`; its params are only read.
  stop_after_steps: end this call after that many steps (the run stays
    resumable); None trains to the end.
  progress: progress bars on stderr (activations, then steps with the loss
    and the time left), for a terminal.
  """
  kind, tcfg = config.kind, config.train
  if kind not in N_OUT:
    raise UserError(f"config.kind={kind!r} is not one of {', '.join(N_OUT)}")
  workdir = workdir.rstrip("/")
  if _is_local(workdir):
    workdir = os.path.abspath(workdir.removeprefix("file://"))
  fsspec.core.url_to_fs(workdir)[0].makedirs(workdir, exist_ok=True)
  gen = model.config
  targets = np.asarray(examples.targets, np.float32)

  # Held-out split, stratified by label (or by target quantile); before
  # the activations, so too few examples is said at once.
  binary = kind in BINARY
  cutoffs = (autoreview.check_cutoffs(config.autoreview)
             if kind == "autoreviewer" else None)
  strata = strata_of(kind, targets)
  if binary:
    counts = np.bincount(strata, minlength=2)
    if counts.min() < 2:
      raise UserError(f"the {kind} needs at least 2 examples of each label; "
                      f"the data has {counts[0]} zeros and {counts[1]} ones")
  choose = bool(tcfg.get("choose_epoch", False))
  use_probe = bool(config.head.get("probe", False))
  if use_probe and not binary:
    raise UserError(f"config.head.probe is for the binary heads "
                    f"({', '.join(BINARY)}), not a {kind} head")
  splits = split_rows(strata, tcfg.holdout_fraction,
                      tcfg.calibration_fraction if binary or choose else 0.0,
                      tcfg.seed)
  train_idx = splits.train
  if len(splits.test) < 2 or len(train_idx) < 2 or (
      (binary or choose) and len(splits.calibration) < 2):
    raise UserError(
        f"{len(targets)} examples are too few to hold out "
        f"{tcfg.holdout_fraction:.0%} for testing" +
        (f" and {tcfg.calibration_fraction:.0%} for calibration"
         if binary or choose else ""))

  # What the run trains, checked against a resumed run's before any work:
  # a finished run is answered from its saved metrics.
  layers = resolve_layers(config.layers, gen.n_layer)
  max_len = min(int(config.max_len), gen.n_positions)
  encoded = data_lib.encode_examples(model.tokenizer, examples.texts,
                                     examples.prompts, max_len=max_len)
  fingerprint = data_lib.generator_fingerprint(gen, model.params)
  target = None
  train_targets = targets
  if kind == "sentiment":
    target = sentiment_target(config.get("link", "bounded"),
                              targets[train_idx])
    train_targets = (targets - target["mean"]) / target["std"]
  head_cfg = HeadConfig(
      layers=layers, n_embd=gen.n_embd, n_out=N_OUT[kind],
      n_head=config.head.n_head, pool_width=config.head.pool_width,
      mlp_ratio=config.head.mlp_ratio, dropout=config.head.dropout)
  B = int(tcfg.batch_size)
  steps_per_epoch = max(1, math.ceil(len(train_idx) / B))
  total_steps = int(tcfg.steps) if tcfg.steps > 0 else int(
      tcfg.epochs * steps_per_epoch)
  _check_run(workdir, {
      "kind": kind, "data": data_lib.cache_key(fingerprint, layers, encoded,
                                               config.cache_dtype),
      "targets": hashlib.sha256(targets.tobytes()).hexdigest(),
      "target": target, "bag": ({"buckets": int(config.head.bag_buckets),
                                 "features": bag_lib.FEATURES}
                                if config.head.bag_buckets else 0),
      "head": head_cfg.to_dict(),
      "train": {k: v for k, v in tcfg.to_dict().items()
                if k not in _NOT_RUN_IDENTITY},
      "total_steps": total_steps, **({"probe": True} if use_probe else {})})
  finished = _finished_metrics(workdir)
  if finished is not None:
    log(f"already trained in {workdir}; its test metrics: " + ", ".join(
        f"{k} {v:.4f}" for k, v in finished.items() if isinstance(v, float)))
    return finished

  # Activations of the frozen generator, once.
  cache_dir = config.activation_cache or (
      f"{workdir}/activations" if _is_local(workdir) else os.path.join(
          tempfile.gettempdir(), "selector-activations",
          os.path.basename(workdir)))
  start = time.time()
  cache = data_lib.build_cache(
      cache_dir, gen, model.params, encoded, layers, fingerprint=fingerprint,
      dtype=config.cache_dtype, batch_size=tcfg.extract_batch_size, log=log,
      progress=progress)
  log(f"activations of {len(cache)} examples at layers {layers} ready in "
      f"{time.time() - start:.1f}s ({cache_dir})")

  # The bag of words, fitted first; the network learns what it leaves.
  bag, offsets = None, np.zeros(len(targets), np.float64)
  if config.head.bag_buckets:
    start = time.time()
    bag, offsets = bag_lib.fit(
        examples.texts,
        targets if binary else sentiment_output(targets, target), train_idx,
        binary=binary, buckets=int(config.head.bag_buckets), seed=tcfg.seed)
    log(f"bag of words fitted in {time.time() - start:.1f}s "
        f"({bag.regularisation})")
  offsets = offsets.astype(np.float32)

  # The linear probe on the pooled states (selector/probe.py), fitted on the
  # train rows beside the bag; blended with the network after it trains.
  probe, probe_logits = None, None
  if use_probe:
    start = time.time()
    probe, probe_logits = probe_lib.fit(
        probe_lib.cache_features(cache), offsets, targets, train_idx,
        seed=tcfg.seed)
    log(f"linear probe fitted in {time.time() - start:.1f}s "
        f"({probe.regularisation})")
  tx, schedule = make_optimizer(tcfg, total_steps)

  rng = jax.random.PRNGKey(tcfg.seed)
  params = init_head_params(head_cfg, jax.random.fold_in(rng, 0))
  state = {"params": params, "opt_state": tx.init(params),
           "step": jnp.zeros((), jnp.int32)}
  if choose:  # the best epoch so far on the calibration rows
    state["best"] = {"params": jax.tree.map(jnp.copy, params),
                     "score": jnp.full((), -jnp.inf),
                     "epoch": jnp.zeros((), jnp.int32)}
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  manager = ocp.CheckpointManager(
      f"{workdir}/checkpoints",
      options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))
  if manager.latest_step() is not None:
    state = manager.restore(manager.latest_step(),
                            args=ocp.args.StandardRestore(state))
    log(f"resumed from step {int(state['step'])} in {workdir}")

  # One padded length for every batch: one compile.
  length = data_lib.bucket_length(int(cache.lengths.max()), max_len)
  train_step = make_train_step(head_cfg, kind, tx, target)
  choice_key = baseline_lib.KEY_METRIC[kind]

  def head_outputs(params, idx):  # the network plus the train rows' bag
    out = predict(head_cfg, params, cache, idx, length, tcfg.eval_batch_size)
    out[:, -1] += offsets[idx]
    return out

  def choice_score(params) -> float:
    """The head's key metric on the calibration rows (never the test
    rows): what `choose_epoch` keeps the best epoch by."""
    idx = splits.calibration
    out = head_outputs(params, idx)
    if binary:
      return float(metrics_lib.roc_auc(targets[idx], out[:, 1] - out[:, 0]))
    return float(metrics_lib.regression_metrics(targets[idx], np.asarray(
        sentiment_value(out[:, 0], target), np.float64))[choice_key])
  step = int(state["step"])
  last_step = total_steps if stop_after_steps is None else min(
      total_steps, step + stop_after_steps)
  first_step, start, running = step, time.time(), []
  bar = tqdm.tqdm(total=total_steps, initial=step, unit="step",
                  desc=f"{kind} head", disable=not progress,
                  dynamic_ncols=True)
  while step < last_step:
    epoch, within = divmod(step, steps_per_epoch)
    order = np.random.default_rng([tcfg.seed, epoch]).permutation(train_idx)
    idx = list(order[within * B:(within + 1) * B])
    weights = np.zeros(B, np.float32)
    weights[:len(idx)] = 1.0
    idx += [-1] * (B - len(idx))
    hidden, mask = cache.batch(idx, length)
    y = np.where(np.asarray(idx) >= 0, train_targets[idx], 0.0).astype(
        np.float32)
    bag_out = np.where(np.asarray(idx) >= 0, offsets[idx], 0.0).astype(
        np.float32)
    best = state.pop("best", None)
    state, loss = train_step(state, hidden, mask, bag_out, y, weights, rng)
    step += 1
    if best is not None:
      state["best"] = best
      if step % steps_per_epoch == 0 or step == total_steps:
        score = choice_score(state["params"])
        if score > float(best["score"]):
          state["best"] = {"params": jax.tree.map(jnp.copy, state["params"]),
                           "score": jnp.asarray(score),
                           "epoch": jnp.asarray(-(-step // steps_per_epoch))}
        log(f"epoch {-(-step // steps_per_epoch)}: {choice_key} on the "
            f"calibration rows {score:.4f}")
    running.append(loss)
    bar.update(1)
    if step % tcfg.log_every == 0 or step == last_step:
      mean_loss = float(np.mean(jax.device_get(running)))
      running = []
      bar.set_postfix(loss=f"{mean_loss:.4f}", epoch=epoch)
      log(f"step {step}/{total_steps} epoch {epoch} loss {mean_loss:.4f} "
          f"lr {float(schedule(step)):.2e} "
          f"{(time.time() - start) / (step - first_step):.3f}s/step")
    if step % tcfg.checkpoint_every == 0 or step == last_step:
      manager.save(step, args=ocp.args.StandardSave(state))
  bar.close()
  manager.wait_until_finished()
  manager.close()
  if step < total_steps:
    return {"step": step, "total_steps": total_steps}

  # Calibration on its own rows; every metric on the test rows; the
  # bag-of-words baseline on the same split.
  params = state["params"]
  chosen_epoch = None
  if choose:
    params, chosen_epoch = state["best"]["params"], int(state["best"]["epoch"])
    log(f"kept epoch {chosen_epoch}, the best {choice_key} on the "
        f"calibration rows ({float(state['best']['score']):.4f})")
  if probe is not None:  # the blend, on the calibration rows
    out = head_outputs(params, splits.calibration)
    probe.blend = probe_lib.fit_blend(
        out[:, 1] - out[:, 0], probe_logits[splits.calibration],
        targets[splits.calibration])
    log(f"blend on the calibration rows: {probe.blend[0]:.3f} x network + "
        f"{probe.blend[1]:.3f} x probe")

  def run_head(idx):  # the network and its bag, blended with any probe
    out = head_outputs(params, idx)
    return out if probe is None else probe.outputs(out, probe_logits[idx])

  outputs = run_head(splits.test)
  result = {"n_train": int(len(train_idx)),
            "n_calibration": int(len(splits.calibration)),
            "n_test": int(len(splits.test)), "steps": total_steps,
            "layers": list(layers)}
  if chosen_epoch is not None:
    result["chosen_epoch"] = chosen_epoch
  calibration = None
  if binary:
    logit_diff = lambda out: out[:, 1] - out[:, 0]
    calibration = metrics_lib.fit_platt(
        logit_diff(run_head(splits.calibration)),
        targets[splits.calibration])
    result.update(metrics_lib.selector_metrics(
        targets[splits.test], logit_diff(outputs), calibration,
        n_bins=config.ece_bins))
    result["calibration"] = calibration
    if cutoffs is not None:  # what the bot's cut-offs would have done
      result["cutoffs"] = autoreview.cutoff_metrics(
          targets[splits.test],
          metrics_lib.apply_platt(logit_diff(outputs), calibration), cutoffs)
    result["baseline"] = baseline_lib.selector_baseline(
        examples.texts, targets, train_idx, splits.calibration, splits.test,
        n_bins=config.ece_bins, seed=tcfg.seed, cutoffs=cutoffs)
  else:
    values = np.asarray(sentiment_value(outputs[:, 0], target), np.float64)
    result.update(metrics_lib.regression_metrics(targets[splits.test],
                                                 values))
    result["baseline"] = baseline_lib.sentiment_baseline(
        examples.texts, targets, train_idx, splits.test)
  if bag is not None:  # the bag alone, on the same test rows
    alone = offsets[splits.test].astype(np.float64)
    key = baseline_lib.KEY_METRIC[kind]
    result["bag"] = dict(bag.regularisation, **{key: float(
        metrics_lib.roc_auc(targets[splits.test], alone) if binary else
        metrics_lib.regression_metrics(
            targets[splits.test],
            np.asarray(sentiment_value(alone, target)))[key])})
  if probe is not None:  # the probe alone, on the same test rows
    result["probe"] = dict(probe.regularisation, blend=list(probe.blend),
                           auc=float(metrics_lib.roc_auc(
                               targets[splits.test],
                               probe_logits[splits.test])))
  result["beats_baseline"], line = baseline_lib.verdict(kind, result,
                                                        result["baseline"])
  if not result["beats_baseline"]:
    logging.warning(line)
  head = Head(kind=kind, config=head_cfg, params=params, generator=fingerprint,
              max_len=max_len, calibration=calibration, target=target,
              model=_absolute(config.model), metrics=result, bag=bag,
              probe=probe)
  head.save(f"{workdir}/{HEAD_SUBDIR}")
  _write_json(f"{workdir}/metrics.json", result)
  log("test split: " + ", ".join(
      f"{k} {v:.4f}" for k, v in result.items() if isinstance(v, float)))
  if cutoffs is not None:
    log("at the cut-offs, test split: " + autoreview.describe(
        result["cutoffs"]))
  log(line)
  return result
