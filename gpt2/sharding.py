"""Where each array lives: one device mesh and logical-axis rules.

The mesh has three axes, `('data', 'fsdp', 'model')`:
- `data`: plain data parallelism (parameters replicated across it);
- `fsdp`: data parallelism whose members also split the parameters and the
  optimizer state (ZeRO-3 / FSDP), gathered layer by layer as they are used;
- `model`: tensor parallelism over heads, MLP units and the vocabulary.

The model names the axes of every parameter and activation with logical names
(`gpt2.model.param_logical_axes`); the rules here, or a config's
`sharding_rules`, map those names to mesh axes. A dimension that a mesh axis
does not divide evenly stays unsharded along it (GPT-2's vocabulary, 50257,
divides by nothing), so every preset runs on every mesh.
"""

import math
from typing import Any, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gpt2.errors import UserError

MESH_AXES = ("data", "fsdp", "model")

# FSDP by default: the batch splits over both data axes; parameters split
# their `embed` dimension over `fsdp` and their wide dimensions over `model`.
DEFAULT_RULES = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("embed_act", None),
    ("layers", None),
    ("embed", "fsdp"),
    ("heads", "model"),
    ("kv_heads", "model"),  # the Llama family's key/value heads
    ("mlp", "model"),
    ("vocab", "model"),
    ("positions", None),
    ("norm", None),
    ("lora_rank", None),  # LoRA's adapters: the rank axis is never split
)


def make_mesh(shape: Mapping[str, int], devices: Optional[Sequence] = None
              ) -> Mesh:
  """A `('data', 'fsdp', 'model')` mesh; one axis may be -1 ("the rest")."""
  devices = list(jax.devices() if devices is None else devices)
  unknown = set(shape) - set(MESH_AXES)
  if unknown:
    raise UserError(f"mesh axes must be {', '.join(MESH_AXES)}; got "
                    f"{', '.join(sorted(unknown))}")
  sizes = [int(shape.get(axis, 1)) for axis in MESH_AXES]
  described = ", ".join(f"{a}={s}" for a, s in zip(MESH_AXES, sizes))
  if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
    raise UserError(f"mesh {described}: sizes must be positive, at most one -1")
  if -1 in sizes:
    known = math.prod(s for s in sizes if s != -1)
    if len(devices) % known:
      raise UserError(f"mesh {described} does not divide the {len(devices)} "
                      "devices")
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise UserError(f"mesh {described} needs {math.prod(sizes)} devices but "
                    f"there are {len(devices)}")
  auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
  return jax.make_mesh(tuple(sizes), MESH_AXES, axis_types=auto,
                       devices=devices)


def rules_from_config(rules) -> tuple:
  """Normalises rules from a config (lists from JSON or flags) to tuples."""
  if not rules:
    return DEFAULT_RULES
  out = []
  for rule in rules:
    name, target = rule
    if isinstance(target, (list, tuple)):
      target = tuple(target)
    out.append((str(name), target))
  return tuple(out)


def _axis_size(mesh: Mesh, target) -> int:
  if target is None:
    return 1
  names = target if isinstance(target, tuple) else (target,)
  return math.prod(mesh.shape[n] for n in names)


def logical_to_sharding(logical: PartitionSpec, shape: Sequence[int],
                        mesh: Mesh, rules) -> NamedSharding:
  """The NamedSharding of one array from its logical axis names.

  Mesh axes that do not divide a dimension are dropped for that dimension.
  """
  spec = nn.logical_to_mesh_axes(tuple(logical), rules)
  fitted = []
  for dim, target in zip(shape, tuple(spec) + (None,) * len(shape)):
    fitted.append(target if dim % _axis_size(mesh, target) == 0 else None)
  return NamedSharding(mesh, PartitionSpec(*fitted[:len(shape)]))


def tree_shardings(logical_tree, shape_tree, mesh: Mesh, rules):
  """NamedShardings for a pytree, given its logical specs and shapes."""
  return jax.tree.map(
      lambda logical, s: logical_to_sharding(logical, s.shape, mesh, rules),
      logical_tree, shape_tree,
      is_leaf=lambda x: isinstance(x, PartitionSpec))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def like_params(tree, param_shardings, param_shapes, mesh: Mesh):
  """Shardings for a pytree (e.g. an optimizer state) holding param copies.

  A leaf whose key path ends with a parameter's path and has its shape gets
  that parameter's sharding (Adam's `mu` and `nu`); everything else (step
  counts, scalars) is replicated.
  """
  by_path = {}
  flat_shapes = jax.tree.leaves(param_shapes)
  for (path, sharding), shape in zip(
      jax.tree_util.tree_flatten_with_path(param_shardings)[0], flat_shapes):
    by_path[tuple(k.key for k in path)] = (sharding, tuple(shape.shape))

  def pick(path, leaf):
    keys = []
    for k in reversed(path):
      if not isinstance(k, jax.tree_util.DictKey):
        break
      keys.append(k.key)
    sharding, shape = by_path.get(tuple(reversed(keys)), (None, None))
    if sharding is not None and shape == tuple(leaf.shape):
      return sharding
    return replicated(mesh)

  return jax.tree_util.tree_map_with_path(pick, tree)


def batch_sharding(mesh: Mesh, rules, ndim: int, batch_dim: int = 0
                   ) -> NamedSharding:
  """Token batches: `batch_dim` split like the `batch` activation axis."""
  names = [None] * ndim
  names[batch_dim] = "batch"
  spec = nn.logical_to_mesh_axes(tuple(names), rules)
  return NamedSharding(mesh, spec)


def process_rows(sharding: NamedSharding, global_shape: Sequence[int],
                 dim: int) -> tuple:
  """[lo, hi): the rows along `dim` this process's devices hold.

  Each host loads only these rows of a global batch (multi-host input).
  """
  index_map = sharding.addressable_devices_indices_map(tuple(global_shape))
  starts, stops = [], []
  for index in index_map.values():
    s = index[dim]
    starts.append(0 if s.start is None else s.start)
    stops.append(global_shape[dim] if s.stop is None else s.stop)
  lo, hi = min(starts), max(stops)
  covered = np.zeros(hi - lo, bool)
  for a, b in zip(starts, stops):
    covered[a - lo:b - lo] = True
  if not covered.all():
    raise ValueError("this process's batch rows are not contiguous; use a "
                     "mesh whose batch axes follow the process order")
  return lo, hi


def put_batch(host_rows, global_shape: Sequence[int],
              sharding: NamedSharding, dim: int) -> Any:
  """A global array built from this process's rows only.

  `host_rows(lo, hi)` returns the numpy rows [lo, hi) along `dim`.
  """
  if jax.process_count() == 1:
    return jax.device_put(host_rows(0, global_shape[dim]), sharding)
  lo, hi = process_rows(sharding, global_shape, dim)
  return jax.make_array_from_process_local_data(
      sharding, host_rows(lo, hi), tuple(global_shape))
