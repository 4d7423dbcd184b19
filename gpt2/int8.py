"""int8 weight-only decoding on a CPU: per-channel quantization and the
matrix product kernel (gpt2/kernels/int8_matmul.cc) registered with XLA.

`quantize(w)` turns a float (O, I) weight into int8 codes and one float32
scale per output row (symmetric: w ~ scale[o] * q[o, i], |q| <= 127);
`quantize_dense` does the same to a dense layer's kernel (..., in, out),
one scale per output column, and `map_dense` applies such a change to
every dense layer of a parameter tree (`quantize_blocks`: to every block's,
as a LoRA run with `lora.base_weights=int8` stores its frozen base).
`matmul(q, scale, x)` is (O, I) x (I, R) -> (O, R) in float32, by the kernel
when it is built, else by XLA on the dequantized weight; `transpose_codes`
lays a layer's codes out for it (as `kernel_qt`, which `gpt2.model.Dense`
multiplies so).

The kernel is compiled on first use with the C++ compiler the machine has
(`c++`, or $CXX) against the XLA FFI headers that ship with jaxlib, into
the cache folder ($XDG_CACHE_HOME or ~/.cache)/tumblr-gpt2-jax, once per
source and jax version (a few seconds). `python -m gpt2.int8` builds it
ahead and says which vector width it uses. Without a compiler, or where the
build fails, `available()` is False and the sampler decodes from the
dequantized weights in float32, having said so once.
"""

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import sys
from typing import Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from atomic_files import atomic_path

log = logging.getLogger("gpt2.int8")

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels",
                      "int8_matmul.cc")
TARGET = "tumblr_gpt2_int8_matmul"
LEVELS = {0: "plain C++", 1: "AVX2", 2: "AVX-512"}
# Products with more rows than this (a prompt's prefill) are XLA's own on
# the dequantized weight: the kernel is made for the few rows of decoding.
MAX_KERNEL_ROWS = 16

_state = {"lib": None, "tried": False, "why": ""}


def _codes(w, axis: int, xp):
  """Symmetric int8 codes of `w` and one float32 scale per slice along
  `axis` (the axis each scale covers), with numpy or jax.numpy (`xp`)."""
  w = xp.asarray(w, xp.float32)
  scale = xp.max(xp.abs(w), axis=axis) / 127.0
  scale = xp.where(scale > 0, scale, 1.0).astype(xp.float32)
  q = xp.clip(xp.round(w / xp.expand_dims(scale, axis)), -127, 127)
  return q.astype(xp.int8), scale


def quantize(w) -> Tuple[np.ndarray, np.ndarray]:
  """(int8 codes (O, I), float32 scales (O,)) of a float weight (O, I),
  symmetric per output row."""
  return _codes(w, -1, np)


def quantize_jnp(w):
  """`quantize` inside a jitted program."""
  return _codes(w, -1, jnp)


def dequantize(q, scale, axis: int = -1):
  """The float32 weight back from codes and their scales (`axis` as in
  `_codes`: -1 for `quantize`'s rows)."""
  return q.astype(jnp.float32) * jnp.expand_dims(scale, axis)


def quantize_dense(p: dict, xp=jnp) -> dict:
  """A dense layer's params with its kernel (..., in, out) as `kernel_q`
  int8 codes and `kernel_scale` (..., out), one scale per output column:
  the codes of `quantize` on each (out, in) transpose."""
  p = dict(p)
  p["kernel_q"], p["kernel_scale"] = _codes(p.pop("kernel"), -2, xp)
  return p


def transpose_codes(p: dict) -> dict:
  """One layer's `quantize_dense` params (codes (in, out)) with the codes
  as `kernel_qt` (out, in), the layout `matmul` reads: transposed once,
  where a decoding's parameters are prepared, not on every step."""
  p = dict(p)
  p["kernel_qt"] = p.pop("kernel_q").T
  return p


def dequantize_dense(p: dict, dtype=jnp.float32, xp=jnp) -> dict:
  """`quantize_dense` undone: `kernel` in `dtype` (layers without codes as
  they are)."""
  if "kernel_q" not in p:
    return p
  p = dict(p)
  q, scale = p.pop("kernel_q"), p.pop("kernel_scale")
  p["kernel"] = (xp.asarray(q, dtype) *
                 xp.expand_dims(xp.asarray(scale, dtype), -2))
  return p


def map_dense(tree, fn):
  """`tree` with each dense layer's dict (one holding `kernel` or
  `kernel_q`) replaced by `fn(that dict)`."""
  if not isinstance(tree, dict):
    return tree
  tree = {k: map_dense(v, fn) for k, v in tree.items()}
  return fn(tree) if "kernel" in tree or "kernel_q" in tree else tree


def quantize_blocks(params: dict, key: str, xp=jnp) -> dict:
  """`params` with every dense kernel of the blocks (`params[key]`, GPT-2's
  "h" or the Llama family's "layers") as `quantize_dense`'s codes and
  scales: the format `launch.convert --quantize=int8` writes. Embeddings
  and a separate output head stay as they are."""
  return {**params, key: map_dense(params[key],
                                   lambda p: quantize_dense(p, xp))}


def dequantize_blocks(params: dict, key: str, dtype=jnp.float32,
                      xp=jnp) -> dict:
  """`quantize_blocks` undone, the kernels in `dtype` (a tree without codes
  as it is)."""
  return {**params, key: map_dense(
      params[key], lambda p: dequantize_dense(p, dtype, xp))}


def quantized_axes(axes: dict, key: str) -> dict:
  """The logical axes (PartitionSpecs) of `quantize_blocks(params, key)`
  from those of `params`: the codes lie as their kernel did, the scales as
  its output axis (and the layer axis before it)."""

  def codes_and_scales(p):
    p = dict(p)
    spec = p.pop("kernel")
    p["kernel_q"] = spec
    p["kernel_scale"] = jax.sharding.PartitionSpec(*spec[:-2], spec[-1])
    return p

  return {**axes, key: map_dense(axes[key], codes_and_scales)}


def _cache_dir() -> str:
  root = os.environ.get("XDG_CACHE_HOME") or os.path.join(
      os.path.expanduser("~"), ".cache")
  return os.path.join(root, "tumblr-gpt2-jax")


def _library_path() -> str:
  with open(SOURCE, "rb") as f:
    digest = hashlib.sha256(f.read() + jax.__version__.encode()).hexdigest()
  return os.path.join(_cache_dir(), f"int8_matmul-{digest[:16]}.so")


def build(path: Optional[str] = None) -> str:
  """Compiles the kernel into `path` (default: the cache's); raises
  RuntimeError saying why it could not."""
  path = path or _library_path()
  compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which(
      "g++") or shutil.which("clang++")
  if not compiler:
    raise RuntimeError("no C++ compiler (c++, g++ or clang++; or set CXX)")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  # Whole, even with builds side by side (each compiles into its own
  # temporary; the last rename wins).
  with atomic_path(path) as temporary:
    done = subprocess.run(
        [compiler, "-O3", "-std=c++17", "-shared", "-fPIC", "-w",
         f"-I{jax.ffi.include_dir()}", SOURCE, "-o", temporary],
        capture_output=True, text=True, check=False)
    if done.returncode:
      errors = [l for l in done.stderr.splitlines() if "error" in l]
      raise RuntimeError(f"{compiler} failed: "
                         f"{errors[0] if errors else done.returncode}")
  return path


def _load():
  if _state["tried"]:
    return _state["lib"]
  _state["tried"] = True
  if os.environ.get("TUMBLR_INT8_KERNEL", "1") == "0":
    _state["why"] = "TUMBLR_INT8_KERNEL=0"
    return None
  try:
    path = _library_path()
    if not os.path.exists(path):
      build(path)
    lib = ctypes.cdll.LoadLibrary(path)
    jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(lib.Int8Matmul),
                                platform="cpu")
  except (OSError, RuntimeError, AttributeError) as e:
    _state["why"] = str(e)
    return None
  _state["lib"] = lib
  return lib


def available() -> bool:
  """Whether the kernel is built and registered (it is built if need be)."""
  return _load() is not None


def why_not() -> str:
  """Why the kernel is not available ("" when it is)."""
  _load()
  return _state["why"]


def level() -> str:
  """The vector width the kernel uses on this CPU."""
  lib = _load()
  return "none" if lib is None else LEVELS[lib.int8_level()]


def set_level(value: int) -> int:
  """Caps the kernel's vector width (2 AVX-512, 1 AVX2, 0 plain C++; -1
  none): the tests compare the paths.

  Returns the width now in use, lower than `value` where this CPU lacks it
  (-1 without the kernel).
  """
  lib = _load()
  return -1 if lib is None else lib.int8_set_level(int(value))


def cpu_level() -> int:
  """The widest vector width this CPU has (a key of LEVELS); -1 without
  the kernel."""
  lib = _load()
  return -1 if lib is None else lib.int8_cpu_level()


def last_level() -> int:
  """The vector width the kernel's latest product ran at (a key of LEVELS),
  as the kernel itself recorded it; -1 before the first or without it."""
  lib = _load()
  return -1 if lib is None else lib.int8_last_level()


def matmul(q, scale, x):
  """(O, I) int8 codes with their (O,) scales times x (I, R) float32:
  (O, R) float32."""
  rows = x.shape[1]
  if rows <= MAX_KERNEL_ROWS and available():
    return jax.ffi.ffi_call(
        TARGET, jax.ShapeDtypeStruct((q.shape[0], rows), jnp.float32))(
            q, scale, x.astype(jnp.float32))
  return dequantize(q, scale) @ x.astype(jnp.float32)


def main() -> None:
  if available():
    print(f"int8 kernel: {_library_path()} ({level()} on this CPU)")
  else:
    print(f"int8 kernel: not available ({why_not()}); int8 decoding uses "
          "the dequantized weights in float32")
    sys.exit(1)


if __name__ == "__main__":
  main()
