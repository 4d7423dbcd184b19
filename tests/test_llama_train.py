"""Fine-tuning a Llama-family checkpoint: launch.finetune in full and with
LoRA, a killed run resumed, the workdir loaded and sampled as a model,
converted to Hugging Face's format (transformers) and to PEFT adapters
(peft), the step sharded on 8 simulated devices, compile_check's memory
for the 1B-class LoRA configs and the 8B one, and LoRA on a frozen base
stored as int8 codes.

The checkpoints are tiny and made here by transformers (a Llama with GQA,
llama3 rope scaling and an untied head; a Qwen2 with q/k/v biases and a tied
head), with a byte-level BPE trained on the corpus, a poem repeated.
"""

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

from configs import llama31_8b_int8_lora, llama32_1b_lora, qwen25_15b_lora
from gpt2 import family, llama, sampling, train, weights
from gpt2.errors import UserError
from tests import hf_helpers, processes, tiny_runs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "configs", "gpt2_tiny.py")
LINE = "The woods are lovely, dark and deep, but I have promises to keep. "
VOCAB = 320
SHAPE = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
             num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=128)
ALL_TARGETS = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
STEPS = 24

# configs/gpt2_tiny.py with these settings (`--config.KEY=VALUE` flags for
# launch.finetune, or set in-process); `init` and `data` come per run.
SETTINGS = {
    "seq_len": 32, "batch_size": 4, "accumulate": 2, "val_batch_size": 4,
    "val_max_windows": 8, "val_every": 12, "eval_at_start": True,
    "val_fraction": 0.2, "lr": 1e-2, "warmup": 2, "period": 100,
    "lr_min": 1e-5, "m_mul": 0.5, "only_train_transformer_layers": True,
    "save_every": 4, "keep_checkpoints": 3, "progress": False,
}
LORA = {"lora.rank": 4, "lora.alpha": 16.0, "lora.dropout": 0.1,
        "lora.targets": ALL_TARGETS}


def _config(data, init, **overrides):
  return tiny_runs.config(SETTINGS, data, init, **overrides)


def _flags(data, init, **overrides):
  return tiny_runs.flags(SETTINGS, data, init, **overrides)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """Forty short documents, the same poem in each: a text file."""
  path = tmp_path_factory.mktemp("corpus") / "poems.txt"
  docs = [f"poem {i}. " + LINE * 6 for i in range(40)]
  path.write_text("<|endoftext|>".join(docs), encoding="utf-8")
  return str(path), docs


def _checkpoint(directory, config, docs, special, eos):
  """transformers writes a randomly initialised model of `config` (its own
  init: small weights, norms 1, biases 0) and the test's tokenizer."""
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  torch.manual_seed(0)
  transformers.AutoModelForCausalLM.from_config(config).save_pretrained(
      directory)
  hf_helpers.write_tokenizer(
      directory, hf_helpers.byte_level_bpe(docs, 300, special), eos)
  return directory


@pytest.fixture(scope="module")
def bases(corpus, tmp_path_factory):
  import transformers  # pylint: disable=import-outside-toplevel
  docs = corpus[1]
  return {
      "llama": _checkpoint(
          str(tmp_path_factory.mktemp("llama")), transformers.LlamaConfig(
              **SHAPE, rope_theta=500000.0, tie_word_embeddings=False,
              rope_scaling=dict(rope_type="llama3", factor=8.0,
                                low_freq_factor=1.0, high_freq_factor=4.0,
                                original_max_position_embeddings=64),
              bos_token_id=0, eos_token_id=1),
          docs, ["<|begin_of_text|>", "<|end_of_text|>"], "<|end_of_text|>"),
      # Its config.json names no end-of-text; tokenizer_config.json does.
      "qwen2": _checkpoint(
          str(tmp_path_factory.mktemp("qwen2")), transformers.Qwen2Config(
              **SHAPE, tie_word_embeddings=True, bos_token_id=None,
              eos_token_id=None),
          docs, ["<|endoftext|>", "<|im_start|>"], "<|endoftext|>"),
  }


@pytest.fixture(scope="module")
def full_run(corpus, bases, tmp_path_factory):
  """A full fine-tune of the Qwen2."""
  workdir = str(tmp_path_factory.mktemp("full") / "run")
  summary = train.train_and_evaluate(
      _config(corpus[0], bases["qwen2"], total_steps=STEPS), workdir)
  return workdir, summary


@pytest.fixture(scope="module")
def lora_run(corpus, bases, tmp_path_factory):
  """LoRA on every projection of the Llama."""
  workdir = str(tmp_path_factory.mktemp("lora") / "run")
  summary = train.train_and_evaluate(
      _config(corpus[0], bases["llama"], total_steps=STEPS, **LORA), workdir)
  return workdir, summary


def _leaves(tree) -> dict:
  return {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _launch(module, *args, wait=True):
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  cmd = [sys.executable, "-m", module, *args]
  if not wait:
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300, check=False)


def _ours(model, ids, mask, lora=None):
  out = family.of(model.config).forward(
      model.config if lora is None else lora.config, model.params,
      jnp.asarray(ids), attention_mask=jnp.asarray(mask),
      lora=None if lora is None else lora.adapters)
  return np.asarray(out.logits)


def _hf_model(directory):
  import transformers  # pylint: disable=import-outside-toplevel
  return transformers.AutoModelForCausalLM.from_pretrained(
      directory, attn_implementation="eager").eval()


# ---- full fine-tuning --------------------------------------------------------


@pytest.mark.slow
def test_full_fine_tune_learns_and_converts_to_hf_and_int8(
    full_run, bases, tmp_path):
  """The loss falls; the blocks train and the embedding stays the
  checkpoint's; the workdir is a model (its own end-of-text); saved in our
  format and converted to Hugging Face's, transformers gives our logits to
  1e-4; `--quantize=int8` stores int8 codes that load within half a step."""
  workdir, summary = full_run
  assert summary["steps"] == STEPS
  assert summary["last_val_loss"] < summary["first_val_loss"] - 0.3, summary
  base = weights.load_model(bases["qwen2"])
  tuned = weights.load_model(workdir)
  assert tuned.kind == "workdir" and tuned.step == STEPS
  assert tuned.config.model_type == "qwen2" and tuned.config.qkv_bias
  assert tuned.tokenizer.eot_token == "<|endoftext|>"
  assert tuned.tokenizer.eot_id == base.tokenizer.eot_id
  np.testing.assert_array_equal(tuned.params["embed_tokens"]["embedding"],
                                base.params["embed_tokens"]["embedding"])
  bias = tuned.params["layers"]["self_attn"]["q_proj"]["bias"]
  assert np.abs(bias).max() > 1e-3  # trained from transformers' zeros

  ours_dir, hf_dir = str(tmp_path / "ours"), str(tmp_path / "hf")
  weights.save_model(ours_dir, tuned.config, tuned.params, tuned.tokenizer)
  proc = _launch("launch.convert", f"--src={ours_dir}", f"--dst={hf_dir}",
                 "--to=hf")
  assert proc.returncode == 0, proc.stderr[-3000:]
  ids, mask = hf_helpers.padded_batch(VOCAB, length=16)
  real = mask.astype(bool)
  ours = _ours(tuned, ids, mask)
  assert np.abs(ours - _ours(base, ids, mask))[real].max() > 1e-2
  hf = hf_helpers.hf_logits(_hf_model(hf_dir), ids, mask)
  assert np.abs(hf - ours)[real].max() < 1e-4
  assert weights.load_model(hf_dir).tokenizer.eot_id == tuned.tokenizer.eot_id

  int8_dir = str(tmp_path / "int8")
  proc = _launch("launch.convert", f"--src={workdir}", f"--dst={int8_dir}",
                 "--quantize=int8")
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(os.path.join(int8_dir, "model.json"), encoding="utf-8") as f:
    assert json.load(f)["quantization"] == "int8"
  stored = weights.load_model(int8_dir)
  assert stored.config == tuned.config
  got, want = _leaves(stored.params), _leaves(tuned.params)
  assert got.keys() == want.keys()
  for name, value in want.items():
    if name.startswith("layers/") and name.endswith("/kernel"):
      step = np.abs(value).max(axis=-2, keepdims=True) / 127
      assert (np.abs(got[name] - value) <= step / 2 + 1e-7).all(), name
      assert not np.array_equal(got[name], value), name
    else:
      np.testing.assert_array_equal(got[name], value, err_msg=name)


# ---- LoRA --------------------------------------------------------------------


@pytest.mark.slow
def test_lora_trains_the_adapters_alone(lora_run, bases):
  """Adapters on all seven projections; the merged workdir is the base
  except their kernels; the validation loss falls."""
  workdir, summary = lora_run
  assert summary["last_val_loss"] < summary["first_val_loss"] - 0.1, summary
  adapters = weights.load_adapters(workdir)
  assert adapters.base == bases["llama"]
  shapes = {n: v.shape for n, v in _leaves(adapters.adapters).items()}
  assert len(shapes) == 14
  assert shapes["layers/self_attn/k_proj/b"] == (2, 4, 16)  # 2 kv heads
  assert shapes["layers/mlp/down_proj/a"] == (2, 64, 4)
  merged = weights.load_model(workdir)
  base = weights.load_model(bases["llama"])
  assert merged.kind == "lora" and merged.config.lora_rank == 0
  kernels = {f"layers/{llama.LORA_TARGETS[t]}/{t}/kernel"
             for t in ALL_TARGETS.split(",")}
  got, want = _leaves(merged.params), _leaves(base.params)
  assert got.keys() == want.keys()
  for name, value in want.items():
    if name in kernels:
      assert not np.array_equal(got[name], value), name
    else:
      np.testing.assert_array_equal(got[name], value, err_msg=name)


@pytest.mark.slow
def test_kill_9_then_resume_matches_the_uninterrupted_run(
    lora_run, corpus, bases, tmp_path):
  """launch.finetune killed after a checkpoint and started again equals
  the uninterrupted run step for step; launch.sample then takes the
  workdir as a model."""
  killed = str(tmp_path / "killed")
  args = [f"--config={TINY}", f"--workdir={killed}"]
  with processes.killed_on_exit(_launch(
      "launch.finetune", *args,
      *_flags(corpus[0], bases["llama"], total_steps=100000, **LORA),
      wait=False)) as proc:
    first = os.path.join(killed, "checkpoints", "4")
    deadline = time.time() + 240
    while not os.path.exists(first):
      assert proc.poll() is None, proc.communicate()[1][-3000:]
      assert time.time() < deadline, "no checkpoint after 240 s"
      time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
  saved = max(int(s) for s in os.listdir(os.path.join(killed, "checkpoints"))
              if s.isdigit())
  assert saved < STEPS, f"the run reached step {saved} before the kill"
  resumed = _launch("launch.finetune", *args, *_flags(
      corpus[0], bases["llama"], total_steps=STEPS, **LORA))
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"resumed {killed} at step" in resumed.stderr

  fields = ("step", "loss", "loss_ema", "lr", "grad_norm")
  got = [[r[k] for k in fields] for r in train.read_metrics(killed)]
  want = [[r[k] for k in fields] for r in train.read_metrics(lora_run[0])]
  assert [g[0] for g in got] == list(range(1, STEPS + 1))
  np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-6)

  sample = _launch("launch.sample", "--model", killed, "--prompt", "poem 3.",
                   "--max_new_tokens", "8", "--top_k", "1", "--json")
  assert sample.returncode == 0, sample.stderr[-3000:]
  merged = weights.load_model(lora_run[0])
  want = sampling.sample(merged.config, merged.params, merged.tokenizer,
                         ["poem 3."], max_new_tokens=8, seed=0, top_k=1)
  assert json.loads(sample.stdout.splitlines()[0])["tokens"] == \
      want[0].tokens


@pytest.mark.slow
def test_peft_adapters_and_the_merged_export_match_ours(lora_run, bases,
                                                        tmp_path):
  """`launch.convert --to=peft` loads with peft onto the base's
  LlamaForCausalLM, `--to=hf` (merged) in transformers: both give our
  logits to 1e-4, which the adapters move far more than that; CTranslate2
  converts the merged export."""
  import peft  # pylint: disable=import-outside-toplevel
  workdir = lora_run[0]
  peft_dir, hf_dir = str(tmp_path / "peft"), str(tmp_path / "merged")
  for to, dst in (("peft", peft_dir), ("hf", hf_dir)):
    proc = _launch("launch.convert", f"--src={workdir}", f"--dst={dst}",
                   f"--to={to}")
    assert proc.returncode == 0, proc.stderr[-3000:]
  with open(os.path.join(peft_dir, "adapter_config.json"),
            encoding="utf-8") as f:
    adapter_config = json.load(f)
  assert adapter_config["base_model_name_or_path"] == bases["llama"]
  assert sorted(adapter_config["target_modules"]) == sorted(
      ALL_TARGETS.split(","))
  ids, mask = hf_helpers.padded_batch(VOCAB, length=16)
  real = mask.astype(bool)
  base = weights.load_model(bases["llama"], with_tokenizer=False)
  ours = _ours(base, ids, mask, lora=weights.load_adapters(workdir))
  assert np.abs(ours - _ours(base, ids, mask))[real].max() > 1e-2
  with_peft = peft.PeftModel.from_pretrained(_hf_model(bases["llama"]),
                                             peft_dir).eval()
  assert np.abs(hf_helpers.hf_logits(with_peft, ids, mask) -
                ours)[real].max() < 1e-4
  assert np.abs(hf_helpers.hf_logits(_hf_model(hf_dir), ids, mask) -
                ours)[real].max() < 1e-4
  # CTranslate2's converter takes the export as it is (bench.sampling's
  # CTranslate2 rows convert a Llama the same way).
  import ctranslate2  # pylint: disable=import-outside-toplevel
  ctranslate2.converters.TransformersConverter(hf_dir).convert(
      str(tmp_path / "ct2"))
  assert os.path.exists(tmp_path / "ct2" / "model.bin")


# ---- what is checked before anything runs ------------------------------------


def test_presets_count_their_parameters_and_write_their_config_json():
  """Each released shape's parameter count is its params' (the 1B-class
  ones as published), and `config_to_hf` reads back as the same config."""
  counts = {}
  for name in llama.PRESETS:
    config = llama.preset(name)
    shapes = llama.param_shapes(config)
    assert config.num_params() == sum(
        int(np.prod(x.shape)) for x in jax.tree.leaves(shapes)), name
    assert llama.config_from_hf(llama.config_to_hf(config), name) == config
    counts[name] = config.num_params()
  assert round(counts["Llama-3.2-1B"] / 1e6) == 1236
  assert round(counts["Qwen2.5-1.5B"] / 1e6) == 1544
  assert round(counts["Llama-3.1-8B"] / 1e6) == 8030


def test_llama_settings_mistakes_are_one_line():
  c = _config("", "", **{"model.size": "Llama-3.2-1B", "lora.rank": 4,
                          "lora.targets": "q_proj,attn.c_attn"})
  with pytest.raises(UserError) as e:
    train.model_config_for(c, 512)
  assert str(e.value) == (
      "lora.targets: unknown target 'attn.c_attn'; choose from q_proj, "
      "k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj")
  c = _config("", "", **{"model.size": "Qwen2.5-1.5B",
                          "model.resid_pdrop": 0.1})
  with pytest.raises(UserError) as e:
    train.model_config_for(c, 512)
  assert str(e.value) == ("model.resid_pdrop=0.1: a Llama-family model has "
                          "no dropout (LoRA's is lora.dropout)")
  c = _config("", "", **{"model.size": "Qwen2.5-1.5B", "lora.rank": 8,
                          "lora.targets": "v_proj,q_proj"})
  model = train.model_config_for(c, 512)
  assert model.vocab_size == 151936 and model.lora_targets == ("v_proj",
                                                               "q_proj")


def test_a_run_from_a_checkpoint_refuses_gpt2_settings(corpus, bases,
                                                       tmp_path):
  """Before any data is prepared: GPT-2's tokenizer or LoRA targets on a
  Llama-family checkpoint are one line each."""
  cases = [({"tokenizer": "gpt2"}, "tokenizer='gpt2': a llama model trains "
            "with its own tokenizer; leave config.tokenizer empty "
            "(--config.tokenizer=)"),
           ({"lora.rank": 4, "lora.targets": "attn.c_attn"},
            "lora.targets: unknown target 'attn.c_attn'; choose from q_proj, "
            "k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj")]
  for overrides, message in cases:
    workdir = tmp_path / "w"
    with pytest.raises(UserError) as e:
      train.train_and_evaluate(_config(corpus[0], bases["llama"],
                                       **overrides), str(workdir))
    assert str(e.value) == message
    assert not (workdir / "data").exists()


# ---- on a mesh, and what fits one device -------------------------------------

# Runs in a fresh process: XLA_FLAGS must be set before JAX is imported.
SHARDED_VS_SINGLE = textwrap.dedent("""
    import os
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + (
        " --xla_force_host_platform_device_count=8")
    os.environ["JAX_PLATFORMS"] = "cpu"
    import json
    import jax
    import numpy as np
    from configs import gpt2_tiny
    from gpt2 import llama, sharding, train

    config = gpt2_tiny.get_config()
    config.seq_len, config.batch_size, config.accumulate = 32, 8, 1
    config.lr, config.warmup, config.adam_eps = 1e-3, 0, 1e-3
    model = llama.LlamaConfig(vocab_size=256, n_embd=64, n_layer=2, n_head=4,
                              n_kv_head=2, n_inner=128, n_positions=64,
                              lora_rank=4, lora_alpha=8.0,
                              lora_targets=("k_proj", "down_proj"))
    base = jax.device_get(llama.init_params(model, jax.random.PRNGKey(0)))
    batches = np.random.default_rng(0).integers(0, 256, (2, 1, 8, 32))
    out = {}
    for name, shape, devices in [
        ("single", dict(data=1, fsdp=1, model=1), jax.devices()[:1]),
        ("sharded", dict(data=2, fsdp=2, model=2), jax.devices())]:
      mesh = sharding.make_mesh(shape, devices)
      steps = train.build_steps(model, config, mesh)
      state = steps.init(steps.init_params(jax.random.PRNGKey(1)))
      on_mesh = jax.device_put(base, steps.base_shardings)
      for batch in batches:
        state, metrics = steps.train(
            state, jax.device_put(batch.astype(np.int32),
                                  steps.batch_sharding), on_mesh)
      k = state["params"]["layers"]["self_attn"]["k_proj"]
      spec = lambda x: [str(a) for a in x.sharding.spec]
      out[name] = {
          "loss": float(metrics["loss"]),
          "leaves": [np.asarray(x).tolist() for x in
                     jax.tree.leaves(jax.device_get(state["params"]))],
          "a_spec": spec(k["a"]), "b_spec": spec(k["b"]),
          "k_spec": spec(on_mesh["layers"]["self_attn"]["k_proj"]["kernel"]),
          "gate_spec": spec(on_mesh["layers"]["mlp"]["gate_proj"]["kernel"])}
    print(json.dumps(out))
""")


@pytest.mark.slow
def test_sharded_lora_step_equals_the_single_device_step():
  """On data=2, fsdp=2, model=2: the base splits by its logical axes (the
  key/value heads over `model`), the adapters like the layers they adapt,
  and two steps equal the single-device ones."""
  proc = subprocess.run([sys.executable, "-c", SHARDED_VS_SINGLE], cwd=REPO,
                        capture_output=True, text=True, timeout=600,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  sharded, one = out["sharded"], out["single"]
  assert sharded["k_spec"] == ["None", "fsdp", "model"]
  assert sharded["gate_spec"] == ["None", "fsdp", "model"]
  assert sharded["a_spec"] == ["None", "fsdp", "None"]
  assert sharded["b_spec"] == ["None", "None", "model"]
  assert abs(sharded["loss"] - one["loss"]) <= 1e-5 * abs(one["loss"])
  for a, b in zip(sharded["leaves"], one["leaves"]):
    np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-5)


# Runs in a fresh process: compile_check sets XLA_FLAGS at import.
MEMORY = textwrap.dedent("""
    import json, sys
    sys.argv = [sys.argv[0], "--devices=1"]
    from launch import compile_check
    from configs import llama32_1b_lora, qwen25_15b_lora
    print(json.dumps({
        name: compile_check.compile_train_step(module.get_config())
        for name, module in (("llama", llama32_1b_lora),
                             ("qwen", qwen25_15b_lora))}))
""")


@pytest.mark.slow
def test_1b_class_lora_configs_fit_one_16_gib_device():
  """launch.compile_check (the step compiled for the shapes, nothing
  downloaded or allocated): each LoRA step with its bfloat16 base needs at
  most 14 GiB of one device, and trains the rank-16 adapters alone."""
  proc = subprocess.run([sys.executable, "-c", MEMORY], cwd=REPO,
                        capture_output=True, text=True, timeout=600,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  for name, module in (("llama", llama32_1b_lora), ("qwen", qwen25_15b_lora)):
    config = module.get_config()
    model = train.model_config_for(config, 0)
    adapters = sum(int(np.prod(x.shape))
                   for x in jax.tree.leaves(llama.lora_shapes(model)))
    assert out[name]["trained_params"] == adapters
    assert out[name]["params"] == model.num_params()
    assert out[name]["devices"] == 1
    assert out[name]["per_device_bytes"] <= 14 * 2**30, (name, out[name])
    # The bf16 base alone is most of a GiB per 0.5B parameters.
    assert out[name]["argument_bytes"] >= 2 * model.num_params()


# ---- a frozen base stored as int8 --------------------------------------------

INT8_MODEL = llama.LlamaConfig(vocab_size=256, n_embd=64, n_layer=2, n_head=4,
                               n_kv_head=2, n_inner=128, n_positions=64,
                               lora_rank=4, lora_alpha=8.0,
                               lora_targets=("q_proj", "down_proj"))


def _int8_steps(base_weights):
  from gpt2 import sharding  # pylint: disable=import-outside-toplevel
  config = _config("", "", **LORA, **{"lora.base_weights": base_weights})
  config.seq_len, config.batch_size, config.accumulate = 32, 4, 1
  mesh = sharding.make_mesh(dict(data=1, fsdp=1, model=1), jax.devices()[:1])
  return config, train.build_steps(INT8_MODEL, config, mesh)


@pytest.mark.slow
def test_lora_step_on_an_int8_base_equals_it_on_the_widened_codes():
  """`lora.base_weights=int8`: the step takes the blocks' kernels as int8
  codes and float32 scales (a byte a weight), quantized from the loaded
  base when the run starts; the adapters' update equals the one on the
  float32 base those codes widen to, and differs from the unquantized
  base's."""
  from gpt2 import int8  # pylint: disable=import-outside-toplevel
  # pylint: disable=protected-access
  base = jax.device_get(llama.init_params(INT8_MODEL, jax.random.PRNGKey(0)))
  config, steps = _int8_steps("int8")
  q_proj = steps.abstract_base["layers"]["self_attn"]["q_proj"]
  assert set(q_proj) == {"kernel_q", "kernel_scale"}
  assert q_proj["kernel_q"].dtype == jnp.int8
  assert q_proj["kernel_q"].shape == (2, 64, 64)
  assert q_proj["kernel_scale"].shape == (2, 64)
  assert steps.abstract_base["embed_tokens"]["embedding"].dtype == jnp.float32

  def setup(params):
    return train._RunSetup(INT8_MODEL, None, "", None, {}, params)

  stored = train._base_on_devices(setup(base), steps, config)
  assert stored["layers"]["mlp"]["up_proj"]["kernel_q"].dtype == jnp.int8
  widened = int8.dequantize_blocks(int8.quantize_blocks(base, "layers", np),
                                   "layers", np.float32, np)
  tokens = np.random.default_rng(0).integers(0, 256, (1, 4, 32))
  adapters, losses = {}, {}
  for name, (kind, params) in {"int8": ("int8", base),
                               "widened": ("", widened),
                               "float": ("", base)}.items():
    config, steps = _int8_steps(kind)
    state = steps.init(steps.init_params(jax.random.PRNGKey(1)))
    on_device = train._base_on_devices(setup(params), steps, config)
    for _ in range(2):
      state, metrics = steps.train(state, jnp.asarray(tokens, jnp.int32),
                                   on_device)
    adapters[name] = _leaves(state["params"])
    losses[name] = float(metrics["loss"])
    if name == "int8":  # the merged model widens the codes first
      _, merged = train._model_params(state, on_device, INT8_MODEL)
      _, want = llama.merge_lora(INT8_MODEL, widened, state["params"])
      for key, value in _leaves(want).items():
        np.testing.assert_allclose(_leaves(merged)[key], value, atol=1e-6,
                                   err_msg=key)
  assert abs(losses["int8"] - losses["widened"]) < 1e-6
  for key, value in adapters["widened"].items():
    np.testing.assert_allclose(adapters["int8"][key], value, atol=1e-6,
                               err_msg=key)
  assert abs(losses["int8"] - losses["float"]) > 1e-6


@pytest.mark.slow
def test_a_lora_run_on_an_int8_base_loads_as_the_model_it_trained(
    corpus, bases, tmp_path):
  """launch.finetune's loop with `lora.base_weights=int8`: the loss falls,
  and the workdir loads as the base's widened codes with the adapters
  merged in, the weights the run trained (not the float base's)."""
  workdir = str(tmp_path / "run")
  summary = train.train_and_evaluate(_config(
      corpus[0], bases["llama"], total_steps=8, val_every=8,
      **{**LORA, "lora.targets": "q_proj,down_proj",
         "lora.base_weights": "int8"}), workdir)
  assert summary["last_val_loss"] < summary["first_val_loss"] - 0.05, summary
  with open(os.path.join(workdir, "run.json"), encoding="utf-8") as f:
    assert json.load(f)["config"]["lora"]["base_weights"] == "int8"
  base = weights.load_model(bases["llama"], with_tokenizer=False)
  merged = weights.load_model(workdir)
  got, floats = _leaves(merged.params), _leaves(base.params)
  for name, value in floats.items():
    if name.startswith("layers/") and name.endswith("/kernel"):
      step = np.abs(value).max(axis=-2, keepdims=True) / 127
      if "q_proj" in name or "down_proj" in name:
        assert np.abs(got[name] - np.round(value / step) * step).max() > 1e-4
      else:
        np.testing.assert_allclose(got[name], np.round(value / step) * step,
                                   rtol=1e-6, atol=1e-8, err_msg=name)
        assert not np.array_equal(got[name], value), name
    else:
      np.testing.assert_array_equal(got[name], value, err_msg=name)


def test_an_int8_base_is_for_lora_only():
  c = _config("", "", **{"model.size": "Llama-3.2-1B",
                          "lora.base_weights": "int8"})
  with pytest.raises(UserError) as e:
    train.model_config_for(c, 512)
  assert str(e.value) == (
      "lora.base_weights=int8 stores a LoRA run's frozen base as int8, but "
      "lora.rank=0 is a full fine-tune, which trains every weight; set "
      "lora.rank > 0 or lora.base_weights=''")
  with pytest.raises(UserError) as e:
    _int8_steps("int4")
  assert str(e.value) == "lora.base_weights='int4' is not int8 (or empty)"


# Runs in a fresh process: compile_check sets XLA_FLAGS at import.
MEMORY_8B = textwrap.dedent("""
    import json, sys
    sys.argv = [sys.argv[0], "--devices=1"]
    from launch import compile_check
    from configs import llama31_8b_int8_lora
    out = {}
    for base_weights in ("int8", ""):
      c = llama31_8b_int8_lora.get_config()
      c.lora.base_weights = base_weights
      out[base_weights or "bfloat16"] = compile_check.compile_train_step(c)
    print(json.dumps(out))
""")


@pytest.mark.slow
def test_8b_lora_config_fits_one_24_gib_device_with_an_int8_base():
  """launch.compile_check of configs/llama31_8b_int8_lora.py: its LoRA step
  needs at most 22 GiB of one device with the base's blocks as int8 codes,
  which take a byte a weight (about 6.5 GiB less than in bfloat16); the
  same step with the bfloat16 base does not fit."""
  proc = subprocess.run([sys.executable, "-c", MEMORY_8B], cwd=REPO,
                        capture_output=True, text=True, timeout=600,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  model = train.model_config_for(llama31_8b_int8_lora.get_config(), 0)
  assert model.n_embd == 4096 and model.n_layer == 32
  assert model.n_kv_head == 8 and model.n_inner == 14336
  assert model.rope_type == "llama3" and model.rope_factor == 8.0
  assert not model.tie_word_embeddings and model.vocab_size == 128256
  int8, wide = out["int8"], out["bfloat16"]
  adapters = sum(int(np.prod(x.shape))
                 for x in jax.tree.leaves(llama.lora_shapes(model)))
  assert int8["trained_params"] == wide["trained_params"] == adapters
  assert int8["devices"] == 1
  assert int8["per_device_bytes"] <= 22 * 2**30, int8
  assert wide["per_device_bytes"] > 22 * 2**30, wide
  embeddings = 2 * model.vocab_size * model.n_embd
  blocks = model.num_params() - embeddings - model.n_embd
  # The bfloat16 base's block kernels in 2 bytes, the int8 one's in 1.
  assert wide["argument_bytes"] - int8["argument_bytes"] >= 0.99 * blocks
