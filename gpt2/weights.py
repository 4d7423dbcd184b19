"""Model directories in, model directories out.

Three kinds of directory hold a GPT-2, and `load_model` takes any of them:

- Hugging Face: `config.json` + `model.safetensors` (or `pytorch_model.bin`).
  A `config.json` whose `model_type` is `llama`, `qwen2` or `mistral` is a
  Llama-family checkpoint (`gpt2.llama_weights`: one or sharded safetensors),
  loaded as that family with its `tokenizer.json` and its own end-of-text
  token (`eos_token_id` of config.json, else of generation_config.json, else
  tokenizer_config.json's `eos_token`).
- OpenAI's TensorFlow release: `hparams.json` + `model.ckpt.*` (needs
  TensorFlow installed to read the checkpoint).
- Ours: `model.json` (our config) + `params/` (an orbax checkpoint), written
  by `save_model`; and a training run's `--workdir`, whose latest checkpoint
  is read. A LoRA run's workdir is a model too: its adapters are merged once,
  at load, into the base model its run.json names (itself loaded by name).

Each may hold tokenizer files (see `gpt2.tokenizer`); without them a model
with GPT-2's vocabulary size gets OpenAI's tokenizer.

Wherever a model path is taken, a Hugging Face Hub name (`gpt2`,
`gpt2-medium`, `openai-community/gpt2-xl`, `someone/their-model`) that is no
folder here is fetched with `huggingface_hub` into its cache (only the
config, the safetensors weights and the tokenizer files; `HF_HOME`,
`HF_HUB_CACHE` and `HF_HUB_OFFLINE=1` are honoured) and loaded from there.
Nothing else downloads anything.

Our parameters differ from the PyTorch ones only in that the blocks are
stacked on a leading layer axis (`h/...` has shape `(L, ...)`); HF's Conv1D
weights are already laid out `(in, out)` like a Flax Dense kernel.

Out: our format (`save_model`), Hugging Face's (`export_hf`), and a LoRA
run's adapters as a PEFT adapter directory (`export_peft`), which
`peft.PeftModel.from_pretrained` puts on the base's `GPT2LMHeadModel`.
A Llama-family model goes every way a GPT-2 does: `model.json` holds its
LlamaConfig, `export_hf` writes its family's `config.json` (a
`LlamaForCausalLM`, `Qwen2ForCausalLM` or `MistralForCausalLM`), and its
PEFT adapters sit on the base's `nn.Linear` projections.
"""

import dataclasses
import json
import os
import re
from typing import Optional

import fsspec
import jax
import numpy as np

from gpt2 import family
from gpt2 import llama
from gpt2 import paths
from gpt2.errors import UserError
from gpt2.model import GPT2Config, param_shapes
from gpt2.tokenizer import Tokenizer

OUR_MARKER = "model.json"
OUR_FORMAT = "gpt2-flax"

# Our leaf path within one block -> HF's name within `h.{i}`.
_BLOCK_NAMES = {
    ("ln_1", "scale"): "ln_1.weight",
    ("ln_1", "bias"): "ln_1.bias",
    ("attn", "c_attn", "kernel"): "attn.c_attn.weight",
    ("attn", "c_attn", "bias"): "attn.c_attn.bias",
    ("attn", "c_proj", "kernel"): "attn.c_proj.weight",
    ("attn", "c_proj", "bias"): "attn.c_proj.bias",
    ("ln_2", "scale"): "ln_2.weight",
    ("ln_2", "bias"): "ln_2.bias",
    ("mlp", "c_fc", "kernel"): "mlp.c_fc.weight",
    ("mlp", "c_fc", "bias"): "mlp.c_fc.bias",
    ("mlp", "c_proj", "kernel"): "mlp.c_proj.weight",
    ("mlp", "c_proj", "bias"): "mlp.c_proj.bias",
}
_TOP_NAMES = {
    ("wte", "embedding"): "wte.weight",
    ("wpe", "embedding"): "wpe.weight",
    ("ln_f", "scale"): "ln_f.weight",
    ("ln_f", "bias"): "ln_f.bias",
}
# HF names -> OpenAI's TF variable names.
_OPENAI_SUFFIX = {"weight": "w", "bias": "b"}
_OPENAI_LN = {"weight": "g", "bias": "b"}


@dataclasses.dataclass
class LoadedModel:
  config: GPT2Config  # or a llama.LlamaConfig (`gpt2.family.of` tells)
  params: dict
  tokenizer: Optional[Tokenizer]
  # "hf", "openai", "ours", "workdir", or "lora" (a LoRA run's workdir,
  # merged onto its base)
  kind: str
  # Where it came from, as the caller named it (a directory or a Hub
  # name), and for a training workdir the step of the checkpoint read.
  source: str = ""
  step: Optional[int] = None


# ---- the HF naming, both ways ----------------------------------------------


def _set(tree: dict, path, value):
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def params_from_hf_tensors(tensors: dict, config: GPT2Config,
                           source: str) -> dict:
  """Our params from HF-named numpy arrays (with or without `transformer.`)."""
  flat = {k[len("transformer."):] if k.startswith("transformer.") else k: v
          for k, v in tensors.items()}
  want = param_shapes(config)
  params = {}

  def take(name, shape):
    if name not in flat:
      raise UserError(f"{source} has no tensor {name!r}")
    value = np.asarray(flat[name])
    if value.shape != tuple(shape):
      raise UserError(f"{source}: tensor {name!r} has shape {value.shape}, "
                      f"but the config needs {tuple(shape)}")
    return value

  for path, name in _TOP_NAMES.items():
    _set(params, path, take(name, _get(want, path).shape))
  for path, name in _BLOCK_NAMES.items():
    shape = _get(want["h"], path).shape[1:]
    layers = [take(f"h.{i}.{name}", shape) for i in range(config.n_layer)]
    _set(params, ("h",) + path, np.stack(layers))
  extra = sorted(k for k in flat if k.startswith(f"h.{config.n_layer}."))
  if extra:
    raise UserError(f"{source} has more layers than n_layer={config.n_layer} "
                    f"(found {extra[0]!r})")
  return params


def params_to_hf_tensors(params: dict, config: GPT2Config) -> dict:
  """HF GPT2LMHeadModel state-dict names -> numpy float32 arrays."""
  out = {}
  get = lambda tree, path: np.asarray(
      jax.device_get(_get(tree, path)), np.float32)
  for path, name in _TOP_NAMES.items():
    out[f"transformer.{name}"] = get(params, path)
  for path, name in _BLOCK_NAMES.items():
    stacked = get(params["h"], path)
    for i in range(config.n_layer):
      out[f"transformer.h.{i}.{name}"] = np.ascontiguousarray(stacked[i])
  return out


def _get(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def check_shapes(params: dict, config: GPT2Config, source: str) -> None:
  """Raises a UserError naming the first tensor whose shape is wrong."""
  want = family.of(config).param_shapes(config)
  flat_want = dict(jax.tree_util.tree_flatten_with_path(want)[0])
  flat_have = dict(jax.tree_util.tree_flatten_with_path(params)[0])
  for path, spec in flat_want.items():
    name = "/".join(str(getattr(k, "key", k)) for k in path)
    if path not in flat_have:
      raise UserError(f"{source} has no parameter {name}")
    shape = tuple(np.shape(flat_have[path]))
    if shape != tuple(spec.shape):
      raise UserError(f"{source}: tensor {name} has shape {shape}, but the "
                      f"config needs {tuple(spec.shape)}")


# ---- Hugging Face directories ----------------------------------------------


def _read_json(fs, path, what):
  try:
    return json.loads(fs.cat_file(path))
  except FileNotFoundError as e:
    raise UserError(f"{what} {path} does not exist") from e
  except (ValueError, UnicodeDecodeError) as e:
    raise UserError(f"{what} {path} is not valid JSON") from e


def config_from_hf(hf: dict, source: str) -> GPT2Config:
  try:
    return GPT2Config(
        vocab_size=int(hf["vocab_size"]), n_positions=int(hf["n_positions"]),
        n_embd=int(hf["n_embd"]), n_layer=int(hf["n_layer"]),
        n_head=int(hf["n_head"]),
        layer_norm_epsilon=float(hf.get("layer_norm_epsilon", 1e-5)))
  except KeyError as e:
    raise UserError(f"{source} lacks the GPT-2 setting {e.args[0]!r}") from e


# config.json's `model_type` of a GPT-2 (a file without one is read as one).
_GPT2_TYPES = ("gpt2", None)


def _load_hf(fs, root, path) -> tuple:
  hf = _read_json(fs, f"{root}/config.json", "model config")
  family = hf.get("model_type") if isinstance(hf, dict) else None
  if family not in _GPT2_TYPES:
    if family not in llama.FAMILIES:
      raise UserError(
          f"{path}/config.json: model_type {family!r} is not one this "
          f"version loads (gpt2, {', '.join(llama.FAMILIES)})")
    from gpt2 import llama_weights  # pylint: disable=import-outside-toplevel
    return llama_weights.load_hf(path)
  config = config_from_hf(hf, f"{path}/config.json")
  st, pt = f"{root}/model.safetensors", f"{root}/pytorch_model.bin"
  if fs.exists(st):
    tensors = _read_safetensors(fs, st, path)
    source = f"{path}/model.safetensors"
  elif fs.exists(pt):
    tensors = _read_torch_bin(fs, pt)
    source = f"{path}/pytorch_model.bin"
  else:
    raise UserError(f"{path} has config.json but no model.safetensors or "
                    "pytorch_model.bin")
  return config, params_from_hf_tensors(tensors, config, source)


def _read_safetensors(fs, file, path):
  from safetensors.numpy import load  # pylint: disable=import-outside-toplevel
  data = fs.cat_file(file)
  try:
    return load(data)
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f"{path}/model.safetensors is not a readable safetensors "
                    f"file (truncated or corrupt): {str(e).splitlines()[0]}") from e


def _read_torch_bin(fs, file):
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise UserError(f"reading {file} needs PyTorch (pip install torch); "
                    "model.safetensors does not") from e
  import io  # pylint: disable=import-outside-toplevel
  try:
    state = torch.load(io.BytesIO(fs.cat_file(file)), map_location="cpu",
                       weights_only=True)
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f"{file} is not a readable PyTorch checkpoint: "
                    f"{str(e).splitlines()[0]}") from e
  return {k: v.float().numpy() for k, v in state.items()}


def hf_config_dict(config: GPT2Config, eot_id: int) -> dict:
  return {
      "architectures": ["GPT2LMHeadModel"],
      "model_type": "gpt2",
      "activation_function": "gelu_new",
      "vocab_size": config.vocab_size,
      "n_positions": config.n_positions,
      "n_ctx": config.n_positions,
      "n_embd": config.n_embd,
      "n_layer": config.n_layer,
      "n_head": config.n_head,
      "n_inner": None,
      "layer_norm_epsilon": config.layer_norm_epsilon,
      "resid_pdrop": config.resid_pdrop,
      "embd_pdrop": config.embd_pdrop,
      "attn_pdrop": config.attn_pdrop,
      "initializer_range": 0.02,
      "scale_attn_weights": True,
      "tie_word_embeddings": True,
      "bos_token_id": eot_id,
      "eos_token_id": eot_id,
      "torch_dtype": "float32",
  }


def export_hf(path: str, config: GPT2Config, params: dict,
              tokenizer: Optional[Tokenizer]) -> None:
  """Writes a directory `GPT2LMHeadModel.from_pretrained` (a Llama-family
  model: `AutoModelForCausalLM.from_pretrained`) loads unchanged."""
  from safetensors.numpy import save  # pylint: disable=import-outside-toplevel
  if isinstance(config, llama.LlamaConfig):
    _export_llama_hf(path, config, params, tokenizer)
    return
  fs, root = paths.output_dir(path)
  eot = tokenizer.eot_id if tokenizer else config.vocab_size - 1
  with fs.open(f"{root}/config.json", "w") as f:
    json.dump(hf_config_dict(config, eot), f, indent=2)
  data = save(params_to_hf_tensors(params, config), metadata={"format": "pt"})
  with fs.open(f"{root}/model.safetensors", "wb") as f:
    f.write(data)
  if tokenizer is not None:
    tokenizer.save(path)


def _export_llama_hf(path: str, config, params: dict,
                     tokenizer: Optional[Tokenizer]) -> None:
  """`export_hf` of a Llama-family model: its config.json names the
  tokenizer's end-of-text, and tokenizer_config.json says it again for
  transformers' AutoTokenizer."""
  from safetensors.numpy import save  # pylint: disable=import-outside-toplevel
  from gpt2 import llama_weights  # pylint: disable=import-outside-toplevel
  if tokenizer is not None:
    config = config.ending_with(tokenizer.eot_id)
  fs, root = paths.output_dir(path)
  with fs.open(f"{root}/config.json", "w") as f:
    json.dump(llama.config_to_hf(config), f, indent=2)
  data = save(llama_weights.params_to_hf_tensors(params, config),
              metadata={"format": "pt"})
  with fs.open(f"{root}/model.safetensors", "wb") as f:
    f.write(data)
  if tokenizer is not None:
    tokenizer.save(path)
    with fs.open(f"{root}/tokenizer_config.json", "w") as f:
      json.dump({"tokenizer_class": "PreTrainedTokenizerFast",
                 "eos_token": tokenizer.eot_token}, f, indent=2)


# ---- LoRA runs: their base, and PEFT's adapter directories ------------------

PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"


@dataclasses.dataclass
class LoraAdapters:
  """A LoRA run's adapters, unmerged: {"h": {"attn": {"c_attn": {"a" (L, in,
  r), "b" (L, r, out)}}, ...}}, and the base model they sit on."""
  config: GPT2Config  # with lora_rank > 0
  adapters: dict
  base: str           # a Hub name, URL or absolute path
  tokenizer: Optional[Tokenizer]


def _peft_names(config, target: str) -> tuple:
  """(our path of a target in the adapters' tree, its HF module name in
  block i as a format string)."""
  if isinstance(config, llama.LlamaConfig):
    module = llama.LORA_TARGETS[target]
    return ("layers", module, target), f"model.layers.{{}}.{module}.{target}"
  module, layer = target.split(".")
  return ("h", module, layer), f"transformer.h.{{}}.{target}"


def adapters_to_peft_tensors(adapters: dict, config: GPT2Config) -> dict:
  """PEFT's state-dict names -> numpy float32: lora_A.weight (r, in) = a.T,
  lora_B.weight (out, r) = b.T, so that PEFT's update B A * alpha / r (on
  GPT-2's Conv1D layers, fan_in_fan_out, its transpose) is our
  a b * alpha / r."""
  out = {}
  for target in config.lora_targets:
    ours, hf = _peft_names(config, target)
    pair = _get(adapters, ours)
    a = np.asarray(jax.device_get(pair["a"]), np.float32)
    b = np.asarray(jax.device_get(pair["b"]), np.float32)
    for i in range(config.n_layer):
      name = f"base_model.model.{hf.format(i)}"
      out[f"{name}.lora_A.weight"] = np.ascontiguousarray(a[i].T)
      out[f"{name}.lora_B.weight"] = np.ascontiguousarray(b[i].T)
  return out


def peft_config_dict(config: GPT2Config, base: str) -> dict:
  return {
      "peft_type": "LORA",
      "task_type": "CAUSAL_LM",
      "base_model_name_or_path": base,
      "r": config.lora_rank,
      "lora_alpha": config.lora_alpha,
      "lora_dropout": config.lora_dropout,
      # Our names are the modules' within a block; PEFT matches a module
      # whose name ends with one, so `attn.c_proj` is not `mlp.c_proj`.
      "target_modules": list(config.lora_targets),
      # GPT-2's Conv1D keeps weights (in, out); the Llama family's Linear
      # (out, in).
      "fan_in_fan_out": not isinstance(config, llama.LlamaConfig),
      "bias": "none",
      "use_rslora": False,
      "use_dora": False,
      "modules_to_save": None,
      "init_lora_weights": True,
      "inference_mode": True,
  }


def export_peft(path: str, lora: LoraAdapters) -> None:
  """Writes a PEFT adapter directory (adapter_config.json,
  adapter_model.safetensors, the tokenizer) that
  `peft.PeftModel.from_pretrained(base GPT2LMHeadModel, path)` loads."""
  from safetensors.numpy import save  # pylint: disable=import-outside-toplevel
  fs, root = paths.output_dir(path)
  with fs.open(f"{root}/{PEFT_CONFIG}", "w") as f:
    json.dump(peft_config_dict(lora.config, lora.base), f, indent=2)
  data = save(adapters_to_peft_tensors(lora.adapters, lora.config),
              metadata={"format": "pt"})
  with fs.open(f"{root}/{PEFT_WEIGHTS}", "wb") as f:
    f.write(data)
  if lora.tokenizer is not None:
    lora.tokenizer.save(path)


def load_adapters(path: str) -> Optional[LoraAdapters]:
  """A LoRA run's adapters and the name of its base, unmerged; None when
  `path` is no LoRA run's workdir."""
  from gpt2 import checkpoints  # pylint: disable=import-outside-toplevel
  run = checkpoints.read_run_file(path)
  if run is None or not checkpoints.model_from_run(run, path).lora_rank:
    return None
  config, adapters = checkpoints.latest_params_in_workdir(path)
  return LoraAdapters(config=config, adapters=adapters,
                      base=_lora_base_name(run, path),
                      tokenizer=tokenizer_for(path, config))


def _lora_base_name(run: dict, workdir: str) -> str:
  from gpt2 import checkpoints  # pylint: disable=import-outside-toplevel
  if not run.get("base"):
    raise UserError(f"{workdir}/{checkpoints.RUN_FILE} names no base model "
                    "for its LoRA adapters")
  return run["base"]


def load_lora_base(workdir: str, run: dict, config: GPT2Config) -> dict:
  """The params of the base model a LoRA run's adapters sit on (run.json's
  `base`), checked against the run's model `config`: for a run that stored
  it as int8 (`lora.base_weights`), its block kernels as those codes
  widened, the weights the adapters were trained on."""
  from gpt2 import checkpoints  # pylint: disable=import-outside-toplevel
  name = _lora_base_name(run, workdir)
  base = load_model(name, with_tokenizer=False)
  if checkpoints.describe(base.config) != checkpoints.describe(config):
    raise UserError(
        f"the base model {name} of the LoRA run in {workdir} is not the "
        f"model its adapters were trained on "
        f"({checkpoints.describe(base.config)}, not "
        f"{checkpoints.describe(config)})")
  if run.get("config", {}).get("lora", {}).get("base_weights") == "int8":
    from gpt2 import int8  # pylint: disable=import-outside-toplevel
    layers = family.of(config).layers
    return int8.dequantize_blocks(
        int8.quantize_blocks(base.params, layers, np), layers, np.float32, np)
  return base.params


# ---- OpenAI's TensorFlow release -------------------------------------------


def hf_tensors_from_openai(variables: dict) -> dict:
  """OpenAI TF variable names (`model/h0/attn/c_attn/w`) -> HF names."""
  out = {}
  for name, value in variables.items():
    if not name.startswith("model/"):
      continue
    parts = name[len("model/"):].split("/")
    value = np.asarray(value, np.float32)
    if parts[0] in ("wte", "wpe"):
      out[f"{parts[0]}.weight"] = value
    elif parts[0] == "ln_f":
      out[f"ln_f.{ {'g': 'weight', 'b': 'bias'}[parts[1]]}"] = value
    elif parts[0].startswith("h"):
      layer = int(parts[0][1:])
      leaf = {"g": "weight", "w": "weight", "b": "bias"}[parts[-1]]
      if parts[-1] == "w":
        value = value.reshape(value.shape[-2:])  # conv1d (1, in, out)
      out[f"h.{layer}.{'.'.join(parts[1:-1])}.{leaf}"] = value
  return out


def _load_openai(fs, root, path) -> tuple:
  hp = _read_json(fs, f"{root}/hparams.json", "hparams")
  try:
    config = GPT2Config(vocab_size=int(hp["n_vocab"]),
                        n_positions=int(hp["n_ctx"]), n_embd=int(hp["n_embd"]),
                        n_layer=int(hp["n_layer"]), n_head=int(hp["n_head"]))
  except KeyError as e:
    raise UserError(f"{path}/hparams.json lacks {e.args[0]!r}") from e
  try:
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise UserError(
        f"{path} is an OpenAI TensorFlow checkpoint; reading it needs "
        "TensorFlow (pip install tensorflow-cpu), or convert it elsewhere "
        "with `python -m launch.convert`") from e
  ckpt = tf.train.latest_checkpoint(path)
  if ckpt is None:
    raise UserError(f"{path} has hparams.json but no model.ckpt.* files")
  reader = tf.train.load_checkpoint(ckpt)
  variables = {name: reader.get_tensor(name)
               for name in reader.get_variable_to_shape_map()}
  tensors = hf_tensors_from_openai(variables)
  return config, params_from_hf_tensors(tensors, config, path)


# ---- our own format ----------------------------------------------------------


def _quantized_kernels(params: dict, key: str = "h") -> dict:
  """Every block kernel (..., in, out) (layers stacked or not; the blocks
  under `key`) as `kernel_q` int8 of the same shape and `kernel_scale`
  (..., out) (gpt2.int8.quantize_dense)."""
  from gpt2 import int8  # pylint: disable=import-outside-toplevel
  return int8.quantize_blocks(params, key, np)


def _dequantized_kernels(tree):
  """The float32 kernels back from `_quantized_kernels`' codes."""
  from gpt2 import int8  # pylint: disable=import-outside-toplevel
  return int8.map_dense(
      tree, lambda p: int8.dequantize_dense(p, np.float32, np))


def save_model(path: str, config: GPT2Config, params: dict,
               tokenizer: Optional[Tokenizer], quantize: str = "") -> None:
  """Writes our format: `model.json`, `params/` (orbax), tokenizer files.
  `quantize="int8"` stores the block kernels as int8 codes with their
  per-output-channel scales (a quarter of their bytes); loading gives the
  dequantized float32 weights, which `weights="int8"` decoding quantizes
  back to the same codes."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  if quantize not in ("", "int8"):
    raise UserError(f"quantize={quantize!r} is not int8 (or empty)")
  if quantize and config.lora_rank:
    raise UserError("a LoRA model is saved merged before quantizing")
  params = jax.device_get(params)
  if quantize:
    params = _quantized_kernels(params, family.of(config).layers)
  fs, root = paths.output_dir(path)
  target = os.path.abspath(f"{path.rstrip('/')}/params") if "://" not in path \
      else f"{path.rstrip('/')}/params"
  if fs.exists(f"{root}/params"):
    fs.rm(f"{root}/params", recursive=True)
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(target, params)
  meta = {"format": OUR_FORMAT, "config": config.to_dict()}
  if quantize:
    meta["quantization"] = quantize
  with fs.open(f"{root}/{OUR_MARKER}", "w") as f:
    json.dump(meta, f, indent=2)
  if tokenizer is not None:
    tokenizer.save(path)


def _load_ours(fs, root, path) -> tuple:
  meta = _read_json(fs, f"{root}/{OUR_MARKER}", "model description")
  if meta.get("format") != OUR_FORMAT:
    raise UserError(f"{path}/{OUR_MARKER} is not a {OUR_FORMAT} description")
  config = family.config_from_dict(meta["config"])
  quantization = meta.get("quantization")
  if quantization not in (None, "int8"):
    raise UserError(f"{path}/{OUR_MARKER}: quantization {quantization!r} is "
                    "not one this version reads (int8)")
  return config, restore_params(f"{path.rstrip('/')}/params", config, path,
                                quantized=quantization == "int8")


def restore_params(params_path: str, config: GPT2Config, source: str,
                   quantized: bool = False) -> dict:
  """Reads an orbax params tree, checked against the config's shapes (int8
  kernels, `quantized`, dequantized first)."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  target = os.path.abspath(params_path) if "://" not in params_path \
      else params_path
  try:
    with ocp.StandardCheckpointer() as ckptr:
      if quantized:
        params = _dequantized_kernels(ckptr.restore(target))
        check_shapes(params, config, source)
        dtype = jax.numpy.dtype(config.param_dtype)
        return jax.tree.map(lambda a: jax.numpy.asarray(a, dtype), params)
      meta = ckptr.metadata(target)
      tree = getattr(meta, "item_metadata", meta)
      shapes = jax.tree.map(lambda m: tuple(m.shape), dict(tree),
                            is_leaf=lambda m: hasattr(m, "shape"))
      check_shapes(jax.tree.map(np.empty, shapes,
                                is_leaf=lambda x: isinstance(x, tuple)),
                   config, source)
      return ckptr.restore(target, family.of(config).param_shapes(config))
  except UserError:
    raise
  except FileNotFoundError as e:
    raise UserError(f"{source} has no readable params checkpoint") from e


# ---- one entry point for every command that takes a model -------------------

def model_kind(path: str) -> Optional[str]:
  fs, root = fsspec.core.url_to_fs(path)
  root = root.rstrip("/")
  for marker, kind in ((OUR_MARKER, "ours"), ("config.json", "hf"),
                       ("hparams.json", "openai")):
    if fs.exists(f"{root}/{marker}"):
      return kind
  return None


# A Hub repository id: `name` or `owner/name` (letters, digits, - _ .).
_HUB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")
# What is fetched of a Hub model: never the TensorFlow, Flax, ONNX or Rust
# copies a repository may also hold. A Llama-family model's weights may
# come in shards (the index and model-00001-of-0000N.safetensors), its
# end-of-text token named in the generation or tokenizer config.
_HUB_FILES = ["config.json", "model.safetensors", "tokenizer.json",
              "vocab.json", "merges.txt", "generation_config.json",
              "tokenizer_config.json", "model.safetensors.index.json",
              "model-*-of-*.safetensors"]


def _holds_model(path: str) -> bool:
  """A file, or a folder `load_model` reads: a model or a training workdir."""
  from gpt2 import checkpoints  # pylint: disable=import-outside-toplevel
  return os.path.exists(path) and (
      not os.path.isdir(path) or model_kind(path) is not None
      or os.path.exists(os.path.join(path, checkpoints.RUN_FILE)))


def hub_name(path: str) -> Optional[str]:
  """`path` as a Hub repository id, or None when it is a local or remote
  path: it has a scheme, starts like a path, is a model folder here, or is
  `a/b` with a folder `a` here (a mistyped local path, not a Hub name). A
  folder here that holds no model does not hide a Hub model of its name
  (`gpt2` run in this repository, whose code is in a folder `gpt2/`)."""
  if ("://" in path or path.startswith(("/", ".", "~")) or _holds_model(path)
      or not _HUB_NAME.fullmatch(path) or path.endswith((".", "-"))):
    return None
  owner = path.partition("/")[0]
  if "/" in path and os.path.isdir(owner):
    return None
  return path


def hub_snapshot(name: str) -> str:
  """The local folder of the Hub model `name`, fetched into the Hugging Face
  cache if it is not there (only `_HUB_FILES`, or `pytorch_model.bin` for a
  repository with no safetensors)."""
  try:
    # pylint: disable=import-outside-toplevel
    import huggingface_hub
    from huggingface_hub import constants as hub_constants
    from huggingface_hub import errors as hub_errors
  except ImportError as e:
    raise UserError(f"{name} is not a folder here, and loading it from the "
                    "Hugging Face Hub needs huggingface_hub "
                    "(pip install huggingface_hub)") from e
  offline = hub_constants.HF_HUB_OFFLINE
  try:
    folder = huggingface_hub.snapshot_download(name, allow_patterns=_HUB_FILES)
    if not os.path.exists(os.path.join(folder, "config.json")):
      raise UserError(f"the Hub model {name} has no config.json: not a "
                      "transformers model")
    if not any(os.path.exists(os.path.join(folder, f)) for f in (
        "model.safetensors", "model.safetensors.index.json")):
      folder = huggingface_hub.snapshot_download(
          name, allow_patterns=_HUB_FILES + ["pytorch_model.bin"])
  except hub_errors.LocalEntryNotFoundError:
    raise UserError(
        f"{name} is not a folder here nor in the Hugging Face cache "
        f"({hub_constants.HF_HUB_CACHE})" +
        (", and HF_HUB_OFFLINE=1 forbids fetching it" if offline else
         ", and the Hub could not be reached to fetch it")) from None
  except (hub_errors.RepositoryNotFoundError,
          hub_errors.RevisionNotFoundError):
    raise UserError(f"{name} is not a folder here nor a model on the "
                    "Hugging Face Hub (a private one needs `hf auth login`)"
                    ) from None
  except (OSError, hub_errors.HfHubHTTPError) as e:
    raise UserError(f"fetching the Hub model {name} failed: "
                    f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"
                    ) from None
  return folder


def resolve(path: str) -> str:
  """A model path as given, or the cached folder of a Hub name."""
  name = hub_name(path)
  return hub_snapshot(name) if name else path


def load_model(path: str, with_tokenizer: bool = True) -> LoadedModel:
  """Loads a model directory of any kind (local or gs://), or a Hugging Face
  Hub model by its name."""
  source, step = path, None
  path = resolve(path)
  fs, root = fsspec.core.url_to_fs(path)
  root = root.rstrip("/")
  if not fs.isdir(root):
    raise UserError(f"model directory {path} does not exist")
  kind = model_kind(path)
  loaders = {"ours": _load_ours, "hf": _load_hf, "openai": _load_openai}
  if kind is not None:
    config, params = loaders[kind](fs, root, path)
  else:
    from gpt2 import checkpoints  # pylint: disable=import-outside-toplevel
    found = checkpoints.latest_params_in_workdir(path)
    if found is not None:
      config, params = found
      kind = "workdir"
      step = checkpoints.checkpoint_step_in_workdir(path)
      if config.lora_rank:  # the adapters, merged into their base once
        base = load_lora_base(path, checkpoints.read_run_file(path), config)
        config, params = family.of(config).merge_lora(config, base, params)
        params = jax.device_get(params)
        kind = "lora"
    else:
      raise UserError(
          f"{path} holds no model: expected config.json + model.safetensors "
          "(Hugging Face), hparams.json + model.ckpt.* (OpenAI), model.json + "
          "params/ (ours), or a training workdir with checkpoints")
  tokenizer = None
  if with_tokenizer:
    tokenizer = tokenizer_for(path, config)
  return LoadedModel(config=config, params=params, tokenizer=tokenizer,
                     kind=kind, source=source, step=step)


def tokenizer_for(path: str, config: GPT2Config) -> Tokenizer:
  """The tokenizer stored with a model, else GPT-2's for a GPT-2 vocabulary."""
  if isinstance(config, llama.LlamaConfig):
    return _llama_tokenizer(path, config)
  try:
    tok = Tokenizer.from_dir(path)
  except UserError as e:
    if not str(e).startswith("no vocabulary"):
      raise
    if config.vocab_size != 50257:
      raise UserError(
          f"{path} has no tokenizer files (tokenizer.json, or vocab.json + "
          f"merges.txt, or encoder.json + vocab.bpe) and its vocabulary size "
          f"{config.vocab_size} is not GPT-2's") from e
    tok = Tokenizer.gpt2()
  if tok.vocab_size > config.vocab_size:
    raise UserError(f"the tokenizer in {path} has {tok.vocab_size} tokens but "
                    f"the model only {config.vocab_size}")
  return tok


def _llama_tokenizer(path: str, config) -> Tokenizer:
  """A Llama-family checkpoint's `tokenizer.json`, ending a text with the
  model's own end-of-text token (`end_of_text`)."""
  fs, root = fsspec.core.url_to_fs(path)
  root = root.rstrip("/")
  if not fs.exists(f"{root}/tokenizer.json"):
    raise UserError(f"{path} has no tokenizer.json (a {config.model_type} "
                    "model is read with its own tokenizer)")
  tok = Tokenizer.from_dir(path, eot=end_of_text(path, config))
  if tok.vocab_size > config.vocab_size:
    raise UserError(f"the tokenizer in {path} has {tok.vocab_size} tokens but "
                    f"the model only {config.vocab_size}")
  return tok


def end_of_text(path: str, config):
  """The token a Llama-family model ends a text with, as its id or text:
  the first `eos_token_id` of config.json, else of generation_config.json,
  else tokenizer_config.json's `eos_token`."""
  if config.eos_token_ids:
    return int(config.eos_token_ids[0])
  fs, root = fsspec.core.url_to_fs(path)
  root = root.rstrip("/")
  for name, key in (("generation_config.json", "eos_token_id"),
                    ("tokenizer_config.json", "eos_token")):
    if not fs.exists(f"{root}/{name}"):
      continue
    value = _read_json(fs, f"{root}/{name}", "model config").get(key)
    if isinstance(value, list):
      value = value[0] if value else None
    if isinstance(value, dict):  # an AddedToken, as older files write it
      value = value.get("content")
    if isinstance(value, (int, str)):
      return value
  raise UserError(f"{path} names no end-of-text token (eos_token_id in "
                  "config.json or generation_config.json, or eos_token in "
                  "tokenizer_config.json)")
