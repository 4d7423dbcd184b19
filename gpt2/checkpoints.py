"""A training run's workdir: its description, checkpoints and newest params.

A workdir describes itself, so any command that takes a model takes it:

  WORKDIR/run.json            {"format": "gpt2-flax-run", "model": GPT2Config
                               or LlamaConfig (gpt2.family reads either),
                               "init": ..., "data": ..., "config": ...,
                               and for a LoRA run "base": the model its
                               adapters sit on, as any process finds it}
  WORKDIR/tokenizer.json ...  the run's tokenizer (HF layout)
  WORKDIR/checkpoints/STEP/   orbax: params (a LoRA run's: its adapters),
                               train_state (optimizer state, step, loss and
                               noise-scale EMAs), sampler (JSON)
  WORKDIR/metrics.jsonl, events.out.tfevents.*, data/ (when the run tokenized
                               its own corpus)

Checkpoints are written asynchronously by an orbax `CheckpointManager` that
keeps the newest N. Paths may be local or `gs://` (orbax writes through
tensorstore; for a GCS emulator set `TENSORSTORE_GCS_HTTP_URL` and
`GOOGLE_AUTH_TOKEN_FOR_TESTING` besides `STORAGE_EMULATOR_HOST`).
"""

import json
import os
import socket
from typing import Optional, Tuple

import fsspec
import jax

from gpt2.errors import UserError
from gpt2 import family
from gpt2.model import GPT2Config

RUN_FILE = "run.json"
RUN_FORMAT = "gpt2-flax-run"
ITEMS = ("params", "train_state", "sampler")


def _join(path: str, *parts: str) -> str:
  return "/".join([path.rstrip("/"), *parts])


def absolute(path: str) -> str:
  """Local paths made absolute (orbax wants them); URLs unchanged."""
  return path if "://" in path else os.path.abspath(path)


# ---- run.json ----------------------------------------------------------------


def read_run_file(workdir: str) -> Optional[dict]:
  """The run description, or None when `workdir` holds none."""
  fs, root = fsspec.core.url_to_fs(workdir)
  file = _join(root, RUN_FILE)
  if not fs.isfile(file):
    return None
  try:
    run = json.loads(fs.cat_file(file))
  except ValueError as e:
    raise UserError(f"{workdir}/{RUN_FILE} is not valid JSON") from e
  if run.get("format") != RUN_FORMAT:
    raise UserError(f"{workdir}/{RUN_FILE} is not a {RUN_FORMAT} description")
  return run


def write_run_file(workdir: str, run: dict) -> None:
  fs, root = fsspec.core.url_to_fs(workdir)
  with fs.open(_join(root, RUN_FILE), "w") as f:
    json.dump({"format": RUN_FORMAT, **run}, f, indent=2)


def ensure_writable(workdir: str) -> None:
  """Creates `workdir`, or says in one line why it cannot be written."""
  fs, root = fsspec.core.url_to_fs(workdir)
  # A probe of this process's own: the processes of a multi-host run probe
  # one workdir at once, and one's `rm` must not take another's file.
  probe = _join(root, f".write-probe-{socket.gethostname()}-{os.getpid()}")
  try:
    fs.makedirs(root, exist_ok=True)
    with fs.open(probe, "wb") as f:
      f.write(b"ok")
    fs.rm(probe)
  except (OSError, PermissionError) as e:
    reason = getattr(e, "strerror", None) or str(e).splitlines()[0]
    raise UserError(f"cannot write to the workdir {workdir}: {reason}") from e


# ---- checkpoints -------------------------------------------------------------


class Checkpoints:
  """Saves and restores (train state, sampler state) in WORKDIR/checkpoints."""

  def __init__(self, workdir: str, keep: int = 1, async_save: bool = True,
               read_only: bool = False):
    import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
    self._ocp = ocp
    self.directory = _join(absolute(workdir), "checkpoints")
    # A reader neither creates nor deletes anything (orbax's own read_only
    # mode logs three warnings per open).
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None if read_only else keep, create=not read_only,
        enable_async_checkpointing=async_save and not read_only)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=ITEMS)

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def save(self, step: int, state: dict, sampler_state: dict) -> None:
    """Starts saving (asynchronously) the state after update `step`."""
    ocp = self._ocp
    train_state = {k: v for k, v in state.items() if k != "params"}
    self.manager.save(step, force=True, args=ocp.args.Composite(
        params=ocp.args.StandardSave(state["params"]),
        train_state=ocp.args.StandardSave(train_state),
        sampler=ocp.args.JsonSave(sampler_state)))

  def restore(self, step: int, abstract_state: dict) -> Tuple[dict, dict]:
    """(state, sampler state) at `step`, placed as `abstract_state` says.

    `abstract_state` holds `jax.ShapeDtypeStruct`s with shardings.
    """
    ocp = self._ocp
    abstract_train = {k: v for k, v in abstract_state.items() if k != "params"}
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(
          params=ocp.args.StandardRestore(abstract_state["params"]),
          train_state=ocp.args.StandardRestore(abstract_train),
          sampler=ocp.args.JsonRestore()))
    except (ValueError, KeyError) as e:
      raise UserError(
          f"the checkpoint at step {step} in {self.directory} does not fit "
          f"this model and optimizer: {str(e).splitlines()[0]}") from e
    state = {"params": restored["params"], **restored["train_state"]}
    return state, dict(restored["sampler"])

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def reached_preemption(self, step: int) -> bool:
    return self.manager.reached_preemption(step)

  def close(self) -> None:
    self.manager.close()


def latest_params_in_workdir(path: str) -> Optional[tuple]:
  """(config, params) of the newest checkpoint in a training workdir.

  For a LoRA run (`config.lora_rank` > 0) the params are its adapters, to
  be merged onto run.json's `base` (`gpt2.weights.load_model` does).
  Returns None when `path` is not a training workdir.
  """
  run = read_run_file(path)
  if run is None:
    return None
  config = model_from_run(run, path)
  ocp_dir = _join(path, "checkpoints")
  fs, root = fsspec.core.url_to_fs(ocp_dir)
  if not fs.isdir(root):
    raise UserError(f"the training workdir {path} has no checkpoint yet")
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  store = Checkpoints(path, read_only=True, async_save=False)
  try:
    step = store.latest_step()
    if step is None:
      raise UserError(f"the training workdir {path} has no checkpoint yet")
    functions = family.of(config)
    target = (functions.lora_shapes(config) if config.lora_rank else
              functions.param_shapes(config))
    params = store.manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(target)))["params"]
  finally:
    store.close()
  return config, jax.device_get(params)


def checkpoint_step_in_workdir(path: str) -> Optional[int]:
  """The newest checkpointed step of a workdir, or None."""
  if read_run_file(path) is None:
    return None
  fs, root = fsspec.core.url_to_fs(_join(path, "checkpoints"))
  if not fs.isdir(root):
    return None
  store = Checkpoints(path, read_only=True, async_save=False)
  try:
    return store.latest_step()
  finally:
    store.close()


def describe(config: GPT2Config) -> str:
  # A Llama-family model names its type: its sizes may be a GPT-2's.
  kind = (f"model_type={config.model_type}, "
          if family.of(config) is family.LLAMA else "")
  return (f"{kind}n_layer={config.n_layer}, n_embd={config.n_embd}, "
          f"n_head={config.n_head}, vocab_size={config.vocab_size}, "
          f"n_positions={config.n_positions}")


def model_from_run(run: dict, workdir: str) -> GPT2Config:
  try:
    return family.config_from_dict(run["model"])
  except (KeyError, TypeError) as e:
    raise UserError(f"{workdir}/{RUN_FILE} has no valid model config") from e

