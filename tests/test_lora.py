"""LoRA: adapters trained on a frozen base, a LoRA run loaded as a model,
exported in PEFT's format, and the memory of its train step."""

import glob
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt2 import data, sampling, sharding, train, weights
from gpt2.errors import UserError
from gpt2.model import GPT2Config, forward, init_params
from gpt2.tokenizer import Tokenizer
from tests import hf_helpers, processes, tiny_runs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "configs", "gpt2_tiny.py")
ALL_TARGETS = "attn.c_attn,attn.c_proj,mlp.c_fc,mlp.c_proj"
STEPS = 40

# The LoRA run of this module: configs/gpt2_tiny.py with these settings (as
# `--config.KEY=VALUE` flags for launch.finetune, or set in-process).
SETTINGS = {
    "seq_len": 32, "batch_size": 4, "accumulate": 2, "val_batch_size": 4,
    "val_max_windows": 8, "val_every": 20, "eval_at_start": True,
    "lr": 1e-2, "warmup": 2, "period": 100, "lr_min": 1e-5, "m_mul": 0.5,
    "only_train_transformer_layers": True, "save_every": 4,
    "keep_checkpoints": 3, "progress": False,
    "lora.rank": 4, "lora.alpha": 8.0, "lora.dropout": 0.1,
    "lora.targets": ALL_TARGETS,
}


def _config(data_dir, init, **overrides):
  return tiny_runs.config(SETTINGS, data_dir, init, **overrides)


def _flags(data_dir, init, **overrides):
  return tiny_runs.flags(SETTINGS, data_dir, init, **overrides)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  """Four plays tokenized with a 320-token BPE."""
  root = tmp_path_factory.mktemp("lora_data")
  corpus = root / "corpus"
  corpus.mkdir()
  plays = sorted(glob.glob(os.path.join(data.default_corpus(), "**", "*.md"),
                           recursive=True))[:4]
  for play in plays:
    (corpus / os.path.basename(play)).write_bytes(open(play, "rb").read())
  out = str(root / "tokens")
  data.prepare(str(corpus), out, vocab_size=320, val_fraction=0.25,
               progress=False)
  return out


@pytest.fixture(scope="module")
def base_dir(prepared, tmp_path_factory):
  """The frozen base: a tiny random GPT-2 as a Hugging Face directory."""
  directory = str(tmp_path_factory.mktemp("lora_base"))
  config = GPT2Config.preset("tiny", vocab_size=320)
  weights.export_hf(directory, config,
                    jax.device_get(init_params(config, jax.random.PRNGKey(3))),
                    Tokenizer.from_dir(prepared))
  return directory


@pytest.fixture(scope="module")
def lora_run(prepared, base_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("lora_run") / "run")
  summary = train.train_and_evaluate(
      _config(prepared, base_dir, total_steps=STEPS), workdir)
  assert summary["steps"] == STEPS
  return workdir, summary


def _leaves(tree) -> dict:
  return {"/".join(str(getattr(k, "key", k)) for k in path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _stored_tree(path):
  """{leaf path: shape} of an orbax item, from its metadata."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  with ocp.StandardCheckpointer() as ckptr:
    meta = ckptr.metadata(path)
  tree = getattr(meta, "item_metadata", meta)
  return {name: tuple(leaf.shape) for name, leaf in
          _leaves(dict(tree)).items()}


@pytest.mark.slow
def test_lora_trains_only_the_adapters(lora_run, base_dir):
  """The checkpoint and the Adam state hold the adapters alone; the merged
  model is the base, bit for bit, except the target kernels; the validation
  loss falls; metrics.jsonl and the schedule are a full fine-tune's."""
  workdir, summary = lora_run
  with open(os.path.join(workdir, "run.json"), encoding="utf-8") as f:
    run = json.load(f)
  assert run["base"] == base_dir and run["model"]["lora_rank"] == 4

  adapters = weights.load_adapters(workdir)
  step = os.path.join(workdir, "checkpoints", str(STEPS))
  stored = _stored_tree(os.path.join(step, "params"))
  adapter_shapes = {n: tuple(x.shape) for n, x in
                    _leaves(adapters.adapters).items()}
  assert stored == adapter_shapes and len(stored) == 8  # 4 targets x (a, b)
  assert stored["h/attn/c_attn/a"] == (2, 64, 4)
  assert stored["h/attn/c_attn/b"] == (2, 4, 192)
  moments = {shape for name, shape in _stored_tree(
      os.path.join(step, "train_state")).items()
             if "opt_state" in name and shape}  # not Adam's step count
  assert moments and moments <= set(adapter_shapes.values())

  base = weights.load_model(base_dir)
  merged = weights.load_model(workdir)
  assert merged.kind == "lora" and merged.config.lora_rank == 0
  kernels = {f"h/{t.replace('.', '/')}/kernel" for t in ALL_TARGETS.split(",")}
  base_leaves, merged_leaves = _leaves(base.params), _leaves(merged.params)
  assert base_leaves.keys() == merged_leaves.keys()
  for name, value in base_leaves.items():
    if name in kernels:
      assert not np.array_equal(merged_leaves[name], value), name
    else:
      np.testing.assert_array_equal(merged_leaves[name], value, err_msg=name)

  assert summary["last_val_loss"] < summary["first_val_loss"] - 0.05, summary
  records = train.read_metrics(workdir)
  assert [r["step"] for r in records] == list(range(1, STEPS + 1))
  assert [r["step"] for r in records if "val_loss" in r] == [20, 40]
  schedule = train.schedule_from_config(_config("", ""))
  for r in records:
    np.testing.assert_allclose(r["lr"], float(schedule(r["step"])), rtol=1e-6)
    assert np.isfinite(r["b_simple"])  # the noise scale, over 2 micro-batches


@pytest.mark.slow
def test_rank_0_is_the_full_fine_tune_exactly(prepared):
  """With lora.rank=0 the other LoRA settings change nothing: two steps
  give the plain config's parameters and metrics, bit for bit."""
  mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "model": 1},
                            jax.devices()[:1])
  tokens = np.random.default_rng(0).integers(0, 320, (2, 2, 4, 32))
  plain = _config(prepared, "", **{"lora.rank": 0})
  plain.lora = train.default_config().lora  # no LoRA settings at all
  rank_0 = _config(prepared, "", **{"lora.rank": 0, "lora.alpha": 3.0,
                                    "lora.dropout": 0.5})
  runs = []
  for config in (plain, rank_0):
    steps = train.build_steps(
        train.model_config_for(config, 320), config, mesh)
    assert steps.base_shardings is None
    state = steps.init(steps.init_params(jax.random.PRNGKey(0)))
    for batch in tokens:
      state, metrics = steps.train(state, jnp.asarray(batch, jnp.int32), None)
    runs.append(jax.device_get((state["params"], metrics)))
  assert train.model_config_for(rank_0, 320) == train.model_config_for(
      plain, 320)
  (params_a, metrics_a), (params_b, metrics_b) = runs
  assert jax.tree.all(jax.tree.map(np.array_equal, params_a, params_b))
  assert metrics_a == metrics_b


@pytest.fixture(scope="module")
def hub_env(base_dir, tmp_path_factory):
  """The base as the Hub model `gpt2`, in an offline Hugging Face cache."""
  cache = tmp_path_factory.mktemp("hub")
  hf_helpers.write_hub_cache(cache, "gpt2", base_dir)
  return {**os.environ, "JAX_PLATFORMS": "cpu", "HF_HUB_OFFLINE": "1",
          "HF_HUB_CACHE": str(cache)}


def _launch(env, module, *args, wait=True):
  cmd = [sys.executable, "-m", module, *args]
  if not wait:
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300, check=False)


def _running(env, *args):
  return processes.killed_on_exit(
      _launch(env, "launch.finetune", *args, wait=False))


@pytest.mark.slow
def test_kill_9_then_resume_matches_the_uninterrupted_run(
    lora_run, prepared, hub_env, tmp_path):
  """launch.finetune with the base named `gpt2` (the Hub cache's): killed
  after a checkpoint, resumed (which loads the base again by its name), the
  run equals the uninterrupted one; the sampler then takes the workdir as
  a model."""
  killed = str(tmp_path / "killed")
  args = [f"--config={TINY}", f"--workdir={killed}"]
  with _running(hub_env, *args, *_flags(prepared, "gpt2",
                                        total_steps=100000)) as proc:
    first = os.path.join(killed, "checkpoints", "4")
    deadline = time.time() + 240
    while not os.path.exists(first):
      assert proc.poll() is None, proc.communicate()[1][-3000:]
      assert time.time() < deadline, "no checkpoint after 240 s"
      time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
  assert proc.returncode == -signal.SIGKILL
  with open(os.path.join(killed, "run.json"), encoding="utf-8") as f:
    assert json.load(f)["base"] == "gpt2"
  saved = sorted(int(s) for s in os.listdir(os.path.join(killed,
                                                         "checkpoints"))
                 if s.isdigit())
  assert saved[-1] < STEPS, f"the run reached step {saved[-1]} before the kill"

  resumed = _launch(hub_env, "launch.finetune", *args,
                    *_flags(prepared, "gpt2", total_steps=STEPS))
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"resumed {killed} at step" in resumed.stderr

  fields = ("step", "loss", "loss_ema", "lr", "grad_norm", "b_simple")
  got = [[r[k] for k in fields] for r in train.read_metrics(killed)]
  want = [[r[k] for k in fields] for r in train.read_metrics(lora_run[0])]
  assert [g[0] for g in got] == list(range(1, STEPS + 1))
  np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-6)

  sample = _launch(hub_env, "launch.sample", "--model", killed, "--prompt",
                   "KING", "--max_new_tokens", "8", "--top_k", "1", "--json")
  assert sample.returncode == 0, sample.stderr[-3000:]
  merged = weights.load_model(lora_run[0])
  want = sampling.sample(merged.config, merged.params, merged.tokenizer,
                         ["KING"], max_new_tokens=8, seed=0, top_k=1)
  assert json.loads(sample.stdout.splitlines()[0])["tokens"] == \
      want[0].tokens


@pytest.mark.slow
def test_peft_and_merged_exports_match_ours(lora_run, base_dir, tmp_path):
  """`launch.convert --to=peft` loads with peft onto the base's
  GPT2LMHeadModel, and `--to=hf` (merged) in transformers: both give our
  logits to 1e-4, which the adapters move far more than that."""
  import peft  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  workdir = lora_run[0]
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  peft_dir, hf_dir = str(tmp_path / "peft"), str(tmp_path / "merged")
  proc = _launch(env, "launch.convert", f"--src={workdir}",
                 f"--dst={peft_dir}", "--to=peft")
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(os.path.join(peft_dir, "adapter_config.json"),
            encoding="utf-8") as f:
    adapter_config = json.load(f)
  assert adapter_config["base_model_name_or_path"] == base_dir
  assert adapter_config["r"] == 4 and adapter_config["lora_alpha"] == 8.0
  merged = weights.load_model(workdir)
  weights.export_hf(hf_dir, merged.config, merged.params, merged.tokenizer)

  ids, mask = hf_helpers.padded_batch(320, length=16)
  real = mask.astype(bool)
  lora = weights.load_adapters(workdir)
  base = weights.load_model(base_dir, with_tokenizer=False)
  ours = np.asarray(forward(lora.config, base.params, jnp.asarray(ids),
                            attention_mask=jnp.asarray(mask),
                            lora=lora.adapters).logits)
  on_base = np.asarray(forward(base.config, base.params, jnp.asarray(ids),
                               attention_mask=jnp.asarray(mask)).logits)
  assert np.abs(ours - on_base)[real].max() > 1e-2

  hf_base = transformers.GPT2LMHeadModel.from_pretrained(base_dir).eval()
  with_peft = peft.PeftModel.from_pretrained(hf_base, peft_dir).eval()
  assert np.abs(hf_helpers.hf_logits(with_peft, ids, mask) -
                ours)[real].max() < 1e-4
  hf_merged = transformers.GPT2LMHeadModel.from_pretrained(hf_dir).eval()
  assert np.abs(hf_helpers.hf_logits(hf_merged, ids, mask) -
                ours)[real].max() < 1e-4

  proc = _launch(env, "launch.convert", f"--src={base_dir}",
                 f"--dst={tmp_path / 'nothing'}", "--to=peft")
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      f"error: --to=peft writes a LoRA run's adapters, but {base_dir} is no "
      "LoRA run's workdir (one trained with config.lora.rank > 0); --to=hf "
      "writes any model"]


@pytest.mark.slow
def test_lora_mistakes_are_one_line(lora_run, prepared, base_dir, tmp_path):
  cases = [
      ({"lora.rank": -1}, base_dir,
       "lora.rank=-1 must be >= 0 (0: no LoRA)"),
      ({"lora.targets": "attn.c_attn,attn.q"}, base_dir,
       "lora.targets: unknown target 'attn.q'; choose from attn.c_attn, "
       "attn.c_proj, mlp.c_fc, mlp.c_proj"),
      ({}, "", "lora.rank=4 trains adapters on a base model, but config.init "
       "is empty; set it to the base (a model directory, a training workdir "
       "or a Hub name such as gpt2-xl)"),
  ]
  for overrides, init, message in cases:
    with pytest.raises(UserError) as raised:
      train.train_and_evaluate(_config(prepared, init, **overrides),
                               str(tmp_path / "w"))
    assert str(raised.value) == message
  # A LoRA run resumed with other adapters, or as a full fine-tune.
  for overrides, asked in (({"lora.rank": 8}, "LoRA rank 8"),
                           ({"lora.rank": 0}, "a full fine-tune")):
    with pytest.raises(UserError, match=f"holds LoRA rank 4, alpha 8 on "
                       f"attn.c_attn, .*, but the config asks for {asked}"):
      train.train_and_evaluate(
          _config(prepared, base_dir, total_steps=STEPS + 1, **overrides),
          lora_run[0])


# Runs in a fresh process: compile_check sets XLA_FLAGS at import.
MEMORY = textwrap.dedent("""
    import json, sys
    sys.argv = [sys.argv[0], "--devices=1"]
    from launch import compile_check
    from configs import gpt2_tiny
    out = {}
    for rank in (0, 8):
      c = gpt2_tiny.get_config()
      c.model.size, c.model.scan_layers = "small", True
      c.seq_len, c.batch_size, c.accumulate = 128, 8, 2
      c.lora.rank, c.lora.targets = rank, "%s"
      out[rank] = compile_check.compile_train_step(c)
    print(json.dumps(out))
""" % ALL_TARGETS)


@pytest.mark.slow
def test_lora_step_needs_less_memory_than_the_full_one():
  """launch.compile_check's measure of the `small` preset's step, at the
  same shape and dtypes: LoRA saves at least the blocks' Adam moments."""
  proc = subprocess.run([sys.executable, "-c", MEMORY], cwd=REPO,
                        capture_output=True, text=True, timeout=600,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  full, lora = out["0"], out["8"]
  config = GPT2Config.preset("small", vocab_size=512)
  blocks = config.num_params() - (512 + config.n_positions + 2) * config.n_embd
  assert lora["trained_params"] < 0.05 * full["trained_params"]
  assert full["per_device_bytes"] - lora["per_device_bytes"] > 2 * 4 * blocks
  assert lora["devices"] == full["devices"] == 1
