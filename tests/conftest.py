import atexit
import fcntl
import os
import shutil
import tempfile

# Tests run on the CPU whatever the machine has; multi-device tests start
# their own subprocess with XLA_FLAGS set before JAX is imported.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# One persistent compilation cache for the whole run, set before JAX is
# imported: the tests and every process they start (the demo, launch
# scripts, the multi-host pair, pytest-xdist's workers) compile a program
# once and read it from here after. A folder of this run's own, so nothing
# compiled by another version of the code is read back.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _cache = tempfile.mkdtemp(prefix="tests-jax-cache-")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
# Hypothesis keeps what it writes (its example database is off, but it
# also caches the constants it finds in the project's files, paths and
# all) in a folder of this run's own, never in the clone.
if "HYPOTHESIS_STORAGE_DIRECTORY" not in os.environ:
  _hypothesis = tempfile.mkdtemp(prefix="tests-hypothesis-")
  os.environ["HYPOTHESIS_STORAGE_DIRECTORY"] = _hypothesis
  atexit.register(shutil.rmtree, _hypothesis, ignore_errors=True)
# Artefacts the whole run shares (a trained tiny model, ...): a folder of
# this run's own that pytest-xdist's workers inherit like the cache above;
# the first worker to ask builds one, under a lock, and every test only
# reads it (see `shared_build`).
if "TESTS_SHARED_DIR" not in os.environ:
  _shared = tempfile.mkdtemp(prefix="tests-shared-")
  os.environ["TESTS_SHARED_DIR"] = _shared
  atexit.register(shutil.rmtree, _shared, ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# The tests' programs are tiny and most are run a few times, so compiling
# them is most of the suite's time: LLVM's cheapest optimisation level
# (XLA's own graph passes all still run, and the arithmetic is the same IEEE
# arithmetic) takes about a fifth off. Appended to what XLA_FLAGS holds; a
# test that starts a process with more devices appends its count to this.
FAST_COMPILE_FLAGS = ("--xla_backend_optimization_level=0",
                      "--xla_llvm_disable_expensive_passes=true")
os.environ["XLA_FLAGS"] = " ".join(
    [f for f in os.environ.get("XLA_FLAGS", "").split()
     if f not in FAST_COMPILE_FLAGS] + list(FAST_COMPILE_FLAGS))

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

# The modules that take longest (each run's `--durations` shows them), in
# that order, before the rest: with two workers (pytest.ini) the long ones
# start at once and the short ones fill in around them, so the workers end
# together instead of one running the demo alone at the end.
_LONGEST_FIRST = ("test_demo.py", "test_demo_llama.py", "test_train_runs.py",
                  "test_multihost.py",
                  "test_model.py", "test_lora.py", "test_llama_train.py",
                  "test_tune_preferences.py",
                  "test_notebook.py",
                  "test_autoreviewer.py",
                  "test_bot_crashes.py", "test_selector_launch.py",
                  "test_gcs.py", "test_training_parity.py", "test_bench.py")


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def shared_build(name: str, build) -> str:
  """The directory TESTS_SHARED_DIR/NAME, made by `build(directory)` once
  for the whole run, whichever worker asks first (the others wait for it
  on a lock); a build that failed is tried again by the next one to ask."""
  directory = os.path.join(os.environ["TESTS_SHARED_DIR"], name)
  done = os.path.join(directory, ".built")
  with open(directory + ".lock", "w", encoding="utf-8") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not os.path.exists(done):
      shutil.rmtree(directory, ignore_errors=True)
      os.makedirs(directory)
      build(directory)
      with open(done, "w", encoding="utf-8"):
        pass
  return directory


@pytest.fixture(scope="session")
def bot_model_dir():
  """A tiny GPT-2 that has learned the bot's text format (trained once for
  the whole run, read by every test that takes it; see
  bot_loop_helpers.train_tiny_model)."""
  from tests import bot_loop_helpers  # pylint: disable=import-outside-toplevel
  return shared_build("tiny_bot_model", bot_loop_helpers.train_tiny_model)


@pytest.fixture(scope="session")
def bot_model(bot_model_dir):
  """That model loaded once, so the sampler compiles once per shape."""
  # pylint: disable=import-outside-toplevel
  from bot import ml
  from configs import bot as bot_configs
  cfg = bot_configs.get_config("tiny")
  return ml.LocalModel.load(bot_model_dir, "",
                            ml.SamplingSettings.from_config(cfg.sampling))
