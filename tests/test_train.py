"""The train step, schedule, optimizer and loop (gpt2/train.py), in-process."""

import functools
import glob
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import gpt2_tiny
from gpt2 import checkpoints, data, sharding, train, weights
from gpt2.errors import UserError
from gpt2.model import GPT2Config, init_params
from gpt2.tokenizer import Tokenizer


def formula(s, lr, warmup, period, lr_min, m_mul):
  """The issue's schedule, written independently in float64."""
  if s < warmup:
    value = lr * s / warmup
  else:
    value = 0.5 * lr * m_mul ** math.floor(s / period) * (
        1 + math.cos(math.pi * (s / period - math.floor(s / period))))
  return max(value, lr_min)


@pytest.mark.parametrize("args", [
    (4.76e-5, 100, 5425, 1.5e-6, 0.1),   # the original run
    (1e-3, 7, 5, 1e-5, 0.5),             # warmup longer than a period
    (3e-3, 0, 10, 0.0, 1.0),             # no warmup, no decay across periods
])
def test_schedule_matches_formula(args):
  schedule = jax.jit(train.make_schedule(*args))
  period = args[2]
  steps = np.arange(0, 3 * period + 3)
  got = np.asarray(jax.vmap(schedule)(steps))
  want = np.array([formula(int(s), *args) for s in steps])
  np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-12)


def _small_corpus(root):
  """Four plays from the default corpus (fast to tokenize)."""
  plays = sorted(glob.glob(os.path.join(data.default_corpus(), "**", "*.md"),
                           recursive=True))[:4]
  os.makedirs(root, exist_ok=True)
  for play in plays:
    with open(play, "rb") as src, open(os.path.join(root, os.path.basename(
        play)), "wb") as dst:
      dst.write(src.read())
  return root


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  root = tmp_path_factory.mktemp("train_data")
  corpus = _small_corpus(str(root / "corpus"))
  out = str(root / "tokens")
  data.prepare(corpus, out, vocab_size=320, val_fraction=0.25, progress=False)
  return out


# One schedule for every in-process run here, so they share compiled steps.
SCHEDULE = dict(lr=2e-3, warmup=3, period=4, lr_min=1e-5, m_mul=0.5,
                only_train_transformer_layers=True)


def _config(data_dir, **overrides):
  c = gpt2_tiny.get_config()
  c.data = data_dir
  c.seq_len = 32
  c.batch_size = 4
  c.accumulate = 2
  c.val_batch_size = 4
  c.val_max_windows = 8
  c.val_every = 4
  c.eval_at_start = False
  c.progress = False
  c.async_checkpoints = True
  for key, value in overrides.items():
    c[key] = value
  return c


@pytest.mark.slow
def test_accumulation_equals_one_big_batch_and_frozen_params(prepared):
  """k micro-batches of B give the update of one batch of k*B; the
  embeddings and ln_f stay bit-identical and get no Adam state; the noise
  scale fields match the micro-batch gradients computed here directly."""
  model_config = GPT2Config.preset("tiny", vocab_size=320)
  mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "model": 1},
                            jax.devices()[:1])
  config = _config(prepared, **SCHEDULE)
  steps = train.build_steps(model_config, config, mesh)
  params = jax.device_get(steps.init_params(jax.random.PRNGKey(0)))
  tokens = np.random.default_rng(0).integers(0, 320, (8, 32)).astype(np.int32)

  def one_step(batch):
    state = steps.init(jax.device_put(params, steps.param_shardings))
    state, metrics = steps.train(state, jnp.asarray(batch), None)
    return jax.device_get(state), jax.device_get(metrics)

  acc_state, acc = one_step(tokens.reshape(2, 4, 32))
  big_state, big = one_step(tokens.reshape(1, 8, 32))
  np.testing.assert_allclose(acc["loss"], big["loss"], rtol=1e-5)
  np.testing.assert_allclose(acc["grad_norm"], big["grad_norm"], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(acc_state["params"]),
                  jax.tree.leaves(big_state["params"])):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)

  # Frozen: bit-identical, and no Adam moments of their shapes anywhere.
  for name in ("wte", "wpe", "ln_f"):
    for a, b in zip(jax.tree.leaves(acc_state["params"][name]),
                    jax.tree.leaves(params[name])):
      assert np.array_equal(a, b)
  changed = [not np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(acc_state["params"]["h"]), jax.tree.leaves(params["h"]))]
  assert all(changed)
  opt_shapes = {tuple(x.shape) for x in jax.tree.leaves(acc_state["opt_state"])}
  assert params["wte"]["embedding"].shape not in opt_shapes
  assert params["wpe"]["embedding"].shape not in opt_shapes
  assert params["h"]["mlp"]["c_fc"]["kernel"].shape in opt_shapes

  # The noise scale, from the two micro-batch gradients computed directly.
  @jax.jit
  def grads_of(batch):
    def loss(h):
      return train.token_losses(model_config, {**params, "h": h},
                                batch).mean()
    return jax.grad(loss)(params["h"])

  g1, g2 = grads_of(tokens[:4]), grads_of(tokens[4:])
  sq = lambda t: float(sum(np.sum(np.asarray(x, np.float64) ** 2)
                           for x in jax.tree.leaves(t)))
  g_small = (sq(g1) + sq(g2)) / 2
  g_big = sq(jax.tree.map(lambda a, b: (a + b) / 2, g1, g2))
  np.testing.assert_allclose(acc["g_small_sq"], g_small, rtol=1e-4)
  np.testing.assert_allclose(acc["g_big_sq"], g_big, rtol=1e-4)
  b_small, b_big = 4, 8
  g2_est = (b_big * g_big - b_small * g_small) / (b_big - b_small)
  s_est = (g_small - g_big) / (1 / b_small - 1 / b_big)
  np.testing.assert_allclose(acc["b_simple"], s_est / g2_est, rtol=1e-3)
  assert "b_simple" not in big  # one micro-batch: no noise scale


@pytest.mark.slow
def test_restarts_follow_the_schedule(prepared, tmp_path, caplog):
  """A run stopped and resumed twice: one line per step, lr = formula(step),
  the workdir a loadable model. From random init every parameter trains
  (only_train_transformer_layers applies to a run started from `init`); a
  second stage from it keeps the embeddings and ln_f bit-identical."""
  workdir = str(tmp_path / "run")
  sched = SCHEDULE
  for total in (5, 10, 14):
    summary = train.train_and_evaluate(
        _config(prepared, total_steps=total, save_every=3, **sched), workdir)
    assert summary["steps"] == total
  assert "config.init is empty: training every parameter" in caplog.text
  records = train.read_metrics(workdir)
  assert [r["step"] for r in records] == list(range(1, 15))
  for r in records:
    want = formula(r["step"], sched["lr"], sched["warmup"], sched["period"],
                   sched["lr_min"], sched["m_mul"])
    np.testing.assert_allclose(r["lr"], want, rtol=2e-6)
    assert {"loss", "loss_ema", "grad_norm", "tokens_per_sec"} <= set(r)
  assert [r["step"] for r in records if "val_loss" in r] == [4, 5, 8, 10, 12,
                                                             14]
  assert summary["last_val_loss"] == records[-1]["val_loss"]

  loaded = weights.load_model(workdir)
  assert loaded.kind == "workdir"
  assert loaded.tokenizer.vocab_size == 320
  # The run's init: GPT-2's random init from the config's seed, jitted.
  init = jax.device_get(jax.jit(functools.partial(init_params, loaded.config))(
      jax.random.PRNGKey(5)))
  for name in ("wte", "wpe", "ln_f", "h"):
    for a, b in zip(jax.tree.leaves(loaded.params[name]),
                    jax.tree.leaves(init[name])):
      assert not np.array_equal(a, b), name

  # A workdir of a different model size says so.
  with pytest.raises(UserError, match="holds a checkpoint of a different "
                     "model .*n_layer=2.*n_layer=4"):
    config = _config(prepared, total_steps=20)
    config.model.size = "small"
    train.train_and_evaluate(config, workdir)

  # Two-stage fine-tune: another run starts from this workdir, and exports
  # a Hugging Face directory at the end.
  second = str(tmp_path / "second")
  summary = train.train_and_evaluate(
      _config(prepared, total_steps=2, init=workdir, val_every=0,
              export_hf=str(tmp_path / "hf"), **sched), second)
  assert summary["steps"] == 2
  hf = weights.load_model(str(tmp_path / "hf"))
  assert hf.kind == "hf" and hf.config.n_layer == 2
  # Frozen in the second stage: the init's values, exactly.
  for name in ("wte", "wpe", "ln_f"):
    for a, b in zip(jax.tree.leaves(hf.params[name]),
                    jax.tree.leaves(loaded.params[name])):
      np.testing.assert_array_equal(a, b)
  assert not np.array_equal(hf.params["h"]["mlp"]["c_fc"]["kernel"],
                            loaded.params["h"]["mlp"]["c_fc"]["kernel"])
  run = json.load(open(os.path.join(second, "run.json"), encoding="utf-8"))
  assert run["init"] == workdir


@pytest.mark.slow
def test_a_setting_that_changes_the_step_compiles_a_new_one(prepared):
  """The compiled steps are cached per config: every setting the loop does
  not read is in the key, a new setting too, so a changed one never reuses
  a stale program; the loop's own settings reuse it."""
  model_config = GPT2Config.preset("tiny", vocab_size=320)
  mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "model": 1},
                            jax.devices()[:1])
  key = lambda config: train.steps_key(model_config, config, mesh)
  base = key(_config(prepared, **SCHEDULE))
  assert key(_config(prepared, total_steps=9, log_every=3, save_every=2,
                     batch_size=2, init="elsewhere", **SCHEDULE)) == base
  names = [name for name in train.default_config()
           if name not in train._LOOP_KEYS]
  assert {"clip_norm", "lr", "adam_eps", "seed", "model"} <= set(names)
  for name in names:
    config = _config(prepared, **SCHEDULE)
    value = config[name]
    if isinstance(value, bool):
      config[name] = not value
    elif isinstance(value, (int, float)):
      config[name] = value * 2 + 1
    elif isinstance(value, str):
      config[name] = value + "x"
    elif hasattr(value, "keys"):  # a group of settings
      config[name]["extra"] = 1
    else:  # the sharding rules
      config[name] = tuple(value) + (("extra", None),)
    assert key(config) != base, name
  future = _config(prepared, **SCHEDULE)
  future.a_setting_added_later = 1
  assert key(future) != base

  # A real recompile: the program built for a 100x learning rate uses it
  # (Adam's first update moves an entry by the step's lr, whatever its
  # gradient's size).
  params = jax.device_get(train.build_steps(
      model_config, _config(prepared, **SCHEDULE), mesh).init_params(
          jax.random.PRNGKey(0)))
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, 320, (2, 4, 32)),
                       jnp.int32)

  def first_update(**change):
    steps = train.build_steps(model_config,
                              _config(prepared, **{**SCHEDULE, **change}),
                              mesh)
    state, metrics = steps.train(
        steps.init(jax.device_put(params, steps.param_shardings)), tokens,
        None)
    kernel = np.asarray(state["params"]["h"]["mlp"]["c_fc"]["kernel"])
    return (np.abs(kernel - params["h"]["mlp"]["c_fc"]["kernel"]).max(),
            float(metrics["lr"]))

  (moved, lr), (moved_100, lr_100) = first_update(), first_update(
      lr=100 * SCHEDULE["lr"])
  assert lr_100 == pytest.approx(100 * lr)
  assert moved_100 == pytest.approx(100 * moved, rel=0.05)


@pytest.mark.slow
def test_loss_on_the_owners_tokens(prepared, tmp_path):
  """With token weights the loss is the weighted mean of the targets'
  losses: a context target changes nothing, an owner's target does, all-1
  weights give the unweighted numbers exactly; a run on weighted shards
  trains, validates on the owner's tokens, checkpoints and resumes, and
  with loss_on=all it is the unweighted run."""
  model_config = GPT2Config.preset("tiny", vocab_size=320)
  mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "model": 1},
                            jax.devices()[:1])
  steps = train.build_steps(model_config, _config(prepared, **SCHEDULE), mesh)
  params = jax.device_get(steps.init_params(jax.random.PRNGKey(0)))
  tokens = np.random.default_rng(0).integers(0, 320, (2, 4, 32)).astype(
      np.int32)
  own = np.zeros(tokens.shape, np.uint8)
  own[:, :, :20] = 1  # the owner's words, then context to the window's end
  own[0, 1] = 0

  def loss(batch, token_weights=None):
    state = steps.init(jax.device_put(params, steps.param_shardings))
    _, metrics = steps.train(state, jnp.asarray(batch), None, token_weights)
    return float(metrics["loss"]), float(metrics["grad_norm"])

  assert loss(tokens, np.ones_like(own)) == loss(tokens)  # exactly
  weighted = loss(tokens, own)
  flat = tokens.reshape(8, 32)
  losses = np.asarray(train.token_losses(model_config, params, flat))
  targets = own.reshape(8, 32)[:, 1:]
  np.testing.assert_allclose(weighted[0], (losses * targets).sum() /
                             targets.sum(), rtol=1e-5)
  context = tokens.copy()  # targets of weight 0 (nothing after them counts)
  context[:, :, 20:] = (context[:, :, 20:] + 7) % 320
  context[0, 1] = (context[0, 1] + 7) % 320
  assert loss(context, own) == weighted
  owner = tokens.copy()
  owner[1, 2, 9] = (owner[1, 2, 9] + 7) % 320
  assert loss(owner, own)[0] != weighted[0]

  # `prepared`'s documents with spans: the same tokens, and weight shards.
  with open(tmp_path / "spans.jsonl", "w", encoding="utf-8") as f:
    for text in data.iter_documents(
        os.path.join(os.path.dirname(prepared), "corpus")):
      spans = [[a, min(a + 300, len(text))] for a in range(0, len(text), 700)]
      f.write(json.dumps({"text": text, "own_spans": spans}) + "\n")
  spanned = str(tmp_path / "spans")
  data.prepare(str(tmp_path / "spans.jsonl"), spanned, val_fraction=0.25,
               tokenizer=Tokenizer.from_dir(prepared), progress=False)
  for split in ("train", "val"):
    np.testing.assert_array_equal(
        data.TokenStream.open(spanned, split).read(0, 1000),
        data.TokenStream.open(prepared, split).read(0, 1000))
  run = lambda data_dir, workdir, **o: train.train_and_evaluate(
      _config(data_dir, val_every=2, save_every=2, **{**SCHEDULE, **o}),
      str(tmp_path / workdir))
  run(spanned, "own", total_steps=2)
  summary = run(spanned, "own", total_steps=3)  # resumed
  assert summary["steps"] == 3 and checkpoints.checkpoint_step_in_workdir(
      str(tmp_path / "own")) == 3
  records = train.read_metrics(str(tmp_path / "own"))
  assert [r["step"] for r in records] == [1, 2, 3]
  for r in records[1:]:
    assert r["val_loss"] == r["val_loss_own"] != r["val_loss_all"]
  every = run(spanned, "all", total_steps=2, loss_on="all")
  before = run(prepared, "plain", total_steps=2)
  assert every["last_loss"] == before["last_loss"]
  assert every["last_val_loss"] == before["last_val_loss"]
  assert records[0]["loss"] != train.read_metrics(
      str(tmp_path / "all"))[0]["loss"]
  with pytest.raises(UserError, match="loss_on='mine' is not one of own, "
                     "all"):
    run(spanned, "bad", loss_on="mine")


def test_bad_inputs(prepared, tmp_path):
  config = _config(prepared)
  config.unknown_setting = 1
  with pytest.raises(UserError, match="unknown config key 'unknown_setting'"):
    train.train_and_evaluate(config, str(tmp_path / "w"))

  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  with pytest.raises(UserError, match=f"cannot write to the workdir "
                     f"{blocker}/run: Not a directory"):
    train.train_and_evaluate(_config(prepared), str(blocker / "run"))

  with pytest.raises(UserError, match="mesh data=1, fsdp=3, model=1 needs 3 "
                     "devices but there are 1"):
    sharding.make_mesh({"fsdp": 3}, jax.devices()[:1])

  other = Tokenizer.train(["some other text entirely"] * 20, 300)
  model_dir = str(tmp_path / "model")
  model_config = GPT2Config.preset("tiny", vocab_size=300)
  params = jax.eval_shape(functools.partial(init_params, model_config),
                          jax.random.PRNGKey(0))
  weights.save_model(model_dir, model_config,
                     jax.tree.map(lambda p: np.zeros(p.shape, p.dtype), params),
                     other)
  with pytest.raises(UserError, match="different tokenizer"):
    train.train_and_evaluate(_config(prepared, init=model_dir),
                             str(tmp_path / "w2"))
