"""A Hugging Face Llama, Qwen2 or Mistral directory in, our params out.

The directory holds `config.json` and the weights as `model.safetensors`, or
in shards that `model.safetensors.index.json` lists (its `weight_map` names
each tensor's file). Tensors may be float32, float16 or bfloat16 (the
Hub's Llama 3.x and Qwen2.5 are bfloat16); the params come out in the
config's `param_dtype`.

Each parameter's Hugging Face name follows from its path in our tree
(`gpt2.llama` keeps HF's module names): `layers/self_attn/q_proj/kernel`
of block i is `model.layers.{i}.self_attn.q_proj.weight`, transposed (a
torch Linear keeps (out, in), a Flax kernel (in, out)); `scale` (RMSNorm)
and `embedding` are `weight`; `lm_head` has no `model.` prefix. A tied
model's checkpoint has no `lm_head.weight`: its head is the embedding.
"""

import json

import fsspec
import jax
import numpy as np

from gpt2 import llama
from gpt2 import weights
from gpt2.errors import UserError

INDEX = "model.safetensors.index.json"

# safetensors' dtype names -> numpy's (bfloat16 through ml_dtypes, which
# JAX depends on; safetensors' own numpy reader does not take it).
_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16,
           "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
           "U8": np.uint8, "BOOL": np.bool_}


def _dtype(name: str, file: str):
  if name == "BF16":
    import ml_dtypes  # pylint: disable=import-outside-toplevel
    return np.dtype(ml_dtypes.bfloat16)
  if name not in _DTYPES:
    raise UserError(f"{file} holds tensors of dtype {name}, which this "
                    "version does not read")
  return np.dtype(_DTYPES[name])


def read_safetensors(fs, file: str) -> dict:
  """name -> numpy array of a safetensors file (an 8-byte little-endian
  header length, a JSON header of dtypes, shapes and byte offsets, then the
  data). A local file is memory-mapped, so only the tensors used are read."""
  try:
    if isinstance(fs, fsspec.implementations.local.LocalFileSystem):
      data = np.memmap(file, dtype=np.uint8, mode="r")
    else:
      data = np.frombuffer(fs.cat_file(file), np.uint8)
    size = int.from_bytes(bytes(data[:8]), "little")
    header = json.loads(bytes(data[8:8 + size]))
    start = 8 + size
    tensors = {}
    for name, info in header.items():
      if name == "__metadata__":
        continue
      lo, hi = info["data_offsets"]
      tensors[name] = data[start + lo:start + hi].view(
          _dtype(info["dtype"], file)).reshape(info["shape"])
    return tensors
  except UserError:
    raise
  except FileNotFoundError as e:
    raise UserError(f"{file} does not exist") from e
  except (ValueError, KeyError, TypeError) as e:
    raise UserError(f"{file} is not a readable safetensors file (truncated "
                    f"or corrupt): {str(e).splitlines()[0] if str(e) else e}"
                    ) from e


def read_hf_tensors(path: str) -> dict:
  """HF name -> numpy array, from `model.safetensors` or the shards its
  index names."""
  fs, root = fsspec.core.url_to_fs(path)
  root = root.rstrip("/")
  if fs.exists(f"{root}/model.safetensors"):
    return read_safetensors(fs, f"{root}/model.safetensors")
  if not fs.exists(f"{root}/{INDEX}"):
    raise UserError(f"{path} has config.json but no model.safetensors or "
                    f"{INDEX}")
  index = weights._read_json(  # pylint: disable=protected-access
      fs, f"{root}/{INDEX}", "safetensors index")
  weight_map = index.get("weight_map")
  if not isinstance(weight_map, dict):
    raise UserError(f"{path}/{INDEX} has no weight_map")
  tensors = {}
  for shard in sorted(set(weight_map.values())):
    tensors.update(read_safetensors(fs, f"{root}/{shard}"))
  missing = sorted(set(weight_map) - set(tensors))
  if missing:
    raise UserError(f"{path}/{INDEX} lists {missing[0]!r}, which no shard "
                    "holds")
  return tensors


def hf_name(path: tuple, layer: int = 0) -> str:
  """The HF tensor name of our parameter at `path` (block `layer`'s slice
  for a path under `layers`)."""
  *modules, leaf = path
  suffix = "bias" if leaf == "bias" else "weight"
  if modules[0] == "layers":
    modules = ["layers", str(layer)] + modules[1:]
  name = ".".join(modules + [suffix])
  return name if modules[0] == "lm_head" else f"model.{name}"


def params_from_hf_tensors(tensors: dict, config: llama.LlamaConfig,
                           source: str) -> dict:
  """Our params from HF-named arrays, each checked against the config's
  shape."""
  dtype = np.dtype(config.params_dtype)
  want = jax.tree_util.tree_flatten_with_path(llama.param_shapes(config))[0]
  params = {}

  def take(name, shape, transpose):
    if name not in tensors:
      raise UserError(f"{source} has no tensor {name!r}")
    value = tensors[name]
    if transpose:
      value = value.T
    if value.shape != tuple(shape):
      raise UserError(f"{source}: tensor {name!r} has shape "
                      f"{tuple(tensors[name].shape)}, but the config needs "
                      f"{tuple(shape[::-1] if transpose else shape)}")
    return np.asarray(value, dtype)

  for key_path, spec in want:
    path = tuple(k.key for k in key_path)
    transpose = path[-1] == "kernel"
    if path[0] == "layers":
      value = np.stack([take(hf_name(path, i), spec.shape[1:], transpose)
                        for i in range(config.n_layer)])
    else:
      value = take(hf_name(path), spec.shape, transpose)
    node = params
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = value
  extra = sorted(k for k in tensors
                 if k.startswith(f"model.layers.{config.n_layer}."))
  if extra:
    raise UserError(f"{source} has more layers than num_hidden_layers="
                    f"{config.n_layer} (found {extra[0]!r})")
  return params


def params_to_hf_tensors(params: dict, config: llama.LlamaConfig) -> dict:
  """HF name -> numpy float32 array of our params: `params_from_hf_tensors`
  the other way (kernels transposed back to (out, in), blocks unstacked)."""
  out = {}
  for key_path, value in jax.tree_util.tree_flatten_with_path(params)[0]:
    path = tuple(k.key for k in key_path)
    value = np.asarray(jax.device_get(value), np.float32)
    fix = (lambda a: np.ascontiguousarray(a.T)) if path[-1] == "kernel" \
        else np.ascontiguousarray
    if path[0] == "layers":
      for i in range(config.n_layer):
        out[hf_name(path, i)] = fix(value[i])
    else:
      out[hf_name(path)] = fix(value)
  return out


def load_hf(path: str, **overrides) -> tuple:
  """(LlamaConfig, params) of a local or remote Hugging Face directory;
  `overrides` set the config's numerics (`param_dtype`, ...)."""
  fs, root = fsspec.core.url_to_fs(path)
  root = root.rstrip("/")
  if not fs.isdir(root):
    raise UserError(f"model directory {path} does not exist")
  config = llama.config_from_hf(
      weights._read_json(  # pylint: disable=protected-access
          fs, f"{root}/config.json", "model config"),
      f"{path}/config.json", **overrides)
  return config, params_from_hf_tensors(read_hf_tensors(path), config, path)
