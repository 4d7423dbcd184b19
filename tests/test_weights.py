"""Import, export and conversion of model directories."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt2 import model as M
from gpt2 import weights as W
from gpt2.errors import UserError
from gpt2.tokenizer import Tokenizer
from tests import hf_helpers

SMALL = dict(vocab_size=300, n_positions=32, n_embd=32, n_layer=2, n_head=2)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  directory = tmp_path_factory.mktemp("hf")
  hf_helpers.random_hf_model(directory, seed=3, **SMALL)
  return str(directory)


def _trees_equal(a, b):
  return jax.tree.all(jax.tree.map(
      lambda x, y: np.array_equal(np.asarray(x), np.asarray(y)), a, b))


@pytest.mark.slow
def test_export_loads_in_transformers_with_same_logits(tmp_path):
  import transformers  # pylint: disable=import-outside-toplevel
  cfg = M.GPT2Config(**SMALL)
  params = M.init_params(cfg, jax.random.PRNGKey(7))
  tok = Tokenizer.train(["some text for a tiny vocabulary"] * 20, 300)
  W.export_hf(str(tmp_path), cfg, params, tok)
  hf = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path)).eval()
  ids, mask = hf_helpers.padded_batch(SMALL["vocab_size"], length=10)
  ours = M.forward(cfg, params, jnp.asarray(ids),
                   attention_mask=jnp.asarray(mask)).logits
  diff = np.abs(np.asarray(ours) - hf_helpers.hf_logits(hf, ids, mask))
  assert diff[mask.astype(bool)].max() < 1e-4
  # The exported tokenizer loads in transformers too and agrees with ours.
  hf_tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
  assert hf_tok.encode("some tiny text") == tok.encode("some tiny text")


def test_import_export_import_is_identity(hf_dir, tmp_path):
  first = W.load_model(hf_dir, with_tokenizer=False)
  W.export_hf(str(tmp_path / "hf"), first.config, first.params, None)
  second = W.load_model(str(tmp_path / "hf"), with_tokenizer=False)
  assert second.config == first.config
  assert _trees_equal(first.params, second.params)
  W.save_model(str(tmp_path / "ours"), first.config, first.params, None)
  third = W.load_model(str(tmp_path / "ours"), with_tokenizer=False)
  assert third.kind == "ours" and third.config == first.config
  assert _trees_equal(first.params, third.params)


def test_pytorch_bin_is_read(hf_dir, tmp_path):
  import torch  # pylint: disable=import-outside-toplevel
  from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
  tensors = load_file(os.path.join(hf_dir, "model.safetensors"))
  torch.save({k: torch.from_numpy(v) for k, v in tensors.items()},
             tmp_path / "pytorch_model.bin")
  (tmp_path / "config.json").write_text(
      open(os.path.join(hf_dir, "config.json")).read())
  from_bin = W.load_model(str(tmp_path), with_tokenizer=False)
  from_st = W.load_model(hf_dir, with_tokenizer=False)
  assert _trees_equal(from_bin.params, from_st.params)


def test_openai_variable_names_map_to_ours(hf_dir):
  """OpenAI's TF names (conv1d kernels of shape (1, in, out)) -> our params."""
  from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
  hf = load_file(os.path.join(hf_dir, "model.safetensors"))
  hf = {k.removeprefix("transformer."): v for k, v in hf.items()}
  tf_vars = {"model/wte": hf["wte.weight"], "model/wpe": hf["wpe.weight"],
             "model/ln_f/g": hf["ln_f.weight"], "model/ln_f/b": hf["ln_f.bias"]}
  for i in range(SMALL["n_layer"]):
    for hf_name, tf_name in (("ln_1.weight", "ln_1/g"), ("ln_1.bias", "ln_1/b"),
                             ("ln_2.weight", "ln_2/g"), ("ln_2.bias", "ln_2/b")):
      tf_vars[f"model/h{i}/{tf_name}"] = hf[f"h.{i}.{hf_name}"]
    for mod in ("attn/c_attn", "attn/c_proj", "mlp/c_fc", "mlp/c_proj"):
      dotted = mod.replace("/", ".")
      tf_vars[f"model/h{i}/{mod}/w"] = hf[f"h.{i}.{dotted}.weight"][None]
      tf_vars[f"model/h{i}/{mod}/b"] = hf[f"h.{i}.{dotted}.bias"]
  cfg = M.GPT2Config(**SMALL)
  params = W.params_from_hf_tensors(W.hf_tensors_from_openai(tf_vars), cfg, "x")
  assert _trees_equal(params, W.load_model(hf_dir, with_tokenizer=False).params)


def test_openai_dir_without_tensorflow_is_one_clear_line(tmp_path):
  (tmp_path / "hparams.json").write_text(json.dumps(
      {"n_vocab": 300, "n_ctx": 32, "n_embd": 32, "n_head": 2, "n_layer": 2}))
  try:
    import tensorflow  # pylint: disable=import-outside-toplevel,unused-import
    expected = "no model.ckpt"
  except ImportError:
    expected = "needs TensorFlow"
  with pytest.raises(UserError, match=expected):
    W.load_model(str(tmp_path))


def test_directory_without_weights(tmp_path):
  with pytest.raises(UserError, match="holds no model"):
    W.load_model(str(tmp_path))
  (tmp_path / "config.json").write_text(json.dumps(
      {"vocab_size": 300, "n_positions": 32, "n_embd": 32, "n_layer": 2,
       "n_head": 2}))
  with pytest.raises(UserError, match="no model.safetensors"):
    W.load_model(str(tmp_path))
  with pytest.raises(UserError, match="does not exist"):
    W.load_model(str(tmp_path / "missing"))


def test_shape_mismatch_names_the_tensor(hf_dir, tmp_path):
  config = json.load(open(os.path.join(hf_dir, "config.json")))
  config["n_embd"] = 64  # the weights are 32 wide
  (tmp_path / "config.json").write_text(json.dumps(config))
  os.symlink(os.path.join(hf_dir, "model.safetensors"),
             tmp_path / "model.safetensors")
  with pytest.raises(UserError) as e:
    W.load_model(str(tmp_path), with_tokenizer=False)
  assert str(e.value).endswith(
      "tensor 'wte.weight' has shape (300, 32), but the config needs (300, 64)")


def test_truncated_safetensors(hf_dir, tmp_path):
  data = open(os.path.join(hf_dir, "model.safetensors"), "rb").read()
  (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
  (tmp_path / "config.json").write_text(
      open(os.path.join(hf_dir, "config.json")).read())
  with pytest.raises(UserError, match="truncated or corrupt"):
    W.load_model(str(tmp_path))


def test_missing_tokenizer_for_custom_vocab(hf_dir):
  with pytest.raises(UserError, match="no tokenizer files"):
    W.load_model(hf_dir)  # vocab 300 is not GPT-2's, and no vocab files


def _convert(*args):
  return subprocess.run([sys.executable, "-m", "launch.convert", *args],
                        capture_output=True, text=True, cwd=REPO, check=False)


@pytest.mark.slow
def test_convert_cli_between_kinds(hf_dir, tmp_path):
  tok = Tokenizer.train(["a few words for the vocabulary"] * 10, 300)
  tok.save(hf_dir)
  ours, back = str(tmp_path / "ours"), str(tmp_path / "back")
  done = _convert("--src", hf_dir, "--dst", ours)
  assert done.returncode == 0, done.stderr
  done = _convert("--src", ours, "--dst", back, "--to", "hf")
  assert done.returncode == 0, done.stderr
  assert _trees_equal(W.load_model(hf_dir).params, W.load_model(back).params)
  assert W.load_model(back).tokenizer.encode("a few") == tok.encode("a few")
  bad = _convert("--src", str(tmp_path / "nowhere"), "--dst", back)
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines() == [
      f"error: model directory {tmp_path / 'nowhere'} does not exist"]


def test_our_checkpoint_with_other_config_names_the_tensor(hf_dir, tmp_path):
  loaded = W.load_model(hf_dir, with_tokenizer=False)
  W.save_model(str(tmp_path), loaded.config, loaded.params, None)
  meta = json.loads((tmp_path / "model.json").read_text())
  meta["config"]["n_layer"] = 3
  (tmp_path / "model.json").write_text(json.dumps(meta))
  with pytest.raises(UserError) as e:
    W.load_model(str(tmp_path), with_tokenizer=False)
  assert "has shape (2," in str(e.value) and "needs (3," in str(e.value)


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
  """A Hugging Face Hub cache folder of the test's own, in offline mode: a
  Hub name loads from it or not at all, and nothing reaches the network."""
  from huggingface_hub import constants  # pylint: disable=import-outside-toplevel
  cache = tmp_path / "hub-cache"
  cache.mkdir()
  monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
  monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
  monkeypatch.chdir(tmp_path)  # a name is looked for as a folder here first
  return cache


def test_a_hub_name_loads_from_the_hugging_face_cache(hf_dir, offline_hub,
                                                      tmp_path):
  local = W.load_model(hf_dir, with_tokenizer=False)
  hf_helpers.write_hub_cache(offline_hub, "gpt2", hf_dir)
  hf_helpers.write_hub_cache(offline_hub, "someone/tiny-blog", hf_dir)
  # A folder of that name holding no model (this repository's own code is
  # in gpt2/) does not hide the Hub's.
  (tmp_path / "gpt2").mkdir()
  (tmp_path / "gpt2" / "__init__.py").write_text("")
  for name in ("gpt2", "someone/tiny-blog"):
    loaded = W.load_model(name, with_tokenizer=False)
    assert loaded.kind == "hf" and loaded.config == local.config
    assert _trees_equal(loaded.params, local.params)
  # A repository with PyTorch weights only is read from those.
  import torch  # pylint: disable=import-outside-toplevel
  from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
  bin_dir = tmp_path / "bin-only"
  bin_dir.mkdir()
  tensors = load_file(os.path.join(hf_dir, "model.safetensors"))
  torch.save({k: torch.from_numpy(v) for k, v in tensors.items()},
             bin_dir / "pytorch_model.bin")
  (bin_dir / "config.json").write_text(
      open(os.path.join(hf_dir, "config.json"), encoding="utf-8").read())
  hf_helpers.write_hub_cache(offline_hub, "someone/old-model", bin_dir)
  assert _trees_equal(
      W.load_model("someone/old-model", with_tokenizer=False).params,
      local.params)


def test_a_name_that_is_nowhere_is_one_line(offline_hub, tmp_path):
  with pytest.raises(UserError) as e:
    W.load_model("gpt2-medium")
  assert str(e.value) == (
      f"gpt2-medium is not a folder here nor in the Hugging Face cache "
      f"({offline_hub}), and HF_HUB_OFFLINE=1 forbids fetching it")
  # A mistyped local path is not taken for a Hub name.
  (tmp_path / "runs").mkdir()
  with pytest.raises(UserError, match="^model directory runs/model does not "
                     "exist$"):
    W.load_model("runs/model")
  assert W.hub_name("gpt2") == "gpt2"
  assert W.hub_name("openai-community/gpt2-xl") == "openai-community/gpt2-xl"
  for path in ("runs/model", "./gpt2", "/abs/gpt2", "gs://bkt/gpt2",
               "a/b/c", "~/gpt2", "name with space"):
    assert W.hub_name(path) is None, path
