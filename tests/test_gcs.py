"""gs:// paths for data and checkpoints, against a local GCS emulator.

The `gcp-storage-emulator` package serves the GCS JSON API on 127.0.0.1.
Everything that touches gs:// runs in subprocesses whose environment points
each client at it:

- gcsfs (fsspec: corpus, shards, tokenizer, metrics, run.json):
  `STORAGE_EMULATOR_HOST`, plus `GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`,
  or gcsfs first asks the (unreachable) storage-control API what kind of
  bucket it is and waits a minute for the answer;
- tensorstore (orbax's array writes): `TENSORSTORE_GCS_HTTP_URL` and
  `GOOGLE_AUTH_TOKEN_FOR_TESTING`;
- google-cloud-storage (tensorboardX's gs:// event writer):
  `STORAGE_EMULATOR_HOST`.

One fidelity fix to the emulator, made where it is started: its media
downloads lack the `x-goog-generation` header that GCS always sends, and
tensorstore's conditional reads of an OCDBT manifest fail without it
("Malformed StorageGeneration").
"""

import glob
import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from gpt2 import data
from tests.processes import free_port

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "configs", "gpt2_tiny.py")

EMULATOR = textwrap.dedent("""
    import sys
    from gcp_storage_emulator import server
    from gcp_storage_emulator.exceptions import NotFound
    from gcp_storage_emulator.handlers import objects

    def with_generation(handler):
      def wrapped(request, response, storage, *args, **kwargs):
        handler(request, response, storage, *args, **kwargs)
        if response.status.value not in (200, 206):
          return
        try:
          obj = storage.get_file_obj(request.params["bucket_name"],
                                     request.params["object_id"])
        except (NotFound, KeyError):
          return
        response["x-goog-generation"] = obj["generation"]
        response["x-goog-metageneration"] = obj["metageneration"]
      return wrapped

    fixed = {objects.get: with_generation(objects.get),
             objects.download: with_generation(objects.download)}
    server.HANDLERS = tuple(
        (route, {method: fixed.get(h, h) for method, h in handlers.items()})
        for route, handlers in server.HANDLERS)
    server.create_server("127.0.0.1", int(sys.argv[1]), in_memory=True,
                         default_bucket="bkt").run()
""")


@pytest.fixture(scope="module")
def gcs_env(tmp_path_factory):
  port = free_port()
  server = subprocess.Popen([sys.executable, "-c", EMULATOR, str(port)],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
  try:
    deadline = time.time() + 30
    while True:
      try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        break
      except OSError:
        assert server.poll() is None and time.time() < deadline
        time.sleep(0.1)
    url = f"http://127.0.0.1:{port}"
    yield {**os.environ, "JAX_PLATFORMS": "cpu",
           "STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url,
           "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",
           "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}
  finally:
    server.kill()
    server.wait()


def _run(env, *args, timeout=300):
  proc = subprocess.run([sys.executable, *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


UPLOAD = textwrap.dedent("""
    import sys, fsspec
    fs = fsspec.filesystem("gs")
    for path in sys.argv[1:]:
      fs.put_file(path, "bkt/corpus/" + path.rsplit("/", 1)[-1])
    print(sorted(fs.ls("bkt/corpus")))
""")

CHECK = textwrap.dedent("""
    import json, fsspec
    from gpt2 import train, weights
    fs = fsspec.filesystem("gs")
    loaded = weights.load_model("gs://bkt/run")
    print(json.dumps({
        "kind": loaded.kind, "n_layer": loaded.config.n_layer,
        "vocab": loaded.tokenizer.vocab_size,
        "steps": [r["step"] for r in train.read_metrics("gs://bkt/run")],
        "val_steps": [r["step"] for r in train.read_metrics("gs://bkt/run")
                      if "val_loss" in r],
        "files": sorted(p.rsplit("/", 1)[-1] for p in fs.ls("bkt/run")),
        "checkpoints": sorted(p.rsplit("/", 1)[-1]
                              for p in fs.ls("bkt/run/checkpoints")),
        "shards": sorted(p.rsplit("/", 1)[-1] for p in fs.ls("bkt/data")),
    }))
""")


@pytest.mark.slow
def test_gs_data_and_checkpoints(gcs_env):
  plays = sorted(glob.glob(os.path.join(data.default_corpus(), "**", "*.md"),
                           recursive=True))[:3]
  _run(gcs_env, "-c", UPLOAD, *plays)
  summary = json.loads(_run(
      gcs_env, "-m", "launch.prepare_data", "--input=gs://bkt/corpus",
      "--output=gs://bkt/data", "--vocab_size=512", "--val_fraction=0.34"))
  assert summary["train_documents"] + summary["val_documents"] == 3
  assert summary["val_documents"] >= 1

  flags = ["-m", "launch.finetune", f"--config={TINY}",
           "--workdir=gs://bkt/run", "--config.data=gs://bkt/data",
           "--config.progress=false", "--config.save_every=3",
           "--config.val_every=3", "--config.val_max_windows=16"]
  first = json.loads(_run(gcs_env, *flags, "--config.total_steps=4"
                          ).splitlines()[-1])
  assert first["steps"] == 4
  second = json.loads(_run(gcs_env, *flags, "--config.total_steps=7"
                           ).splitlines()[-1])
  assert second["steps"] == 7

  found = json.loads(_run(gcs_env, "-c", CHECK).splitlines()[-1])
  assert found["kind"] == "workdir" and found["n_layer"] == 2
  assert found["vocab"] == 512
  assert found["steps"] == list(range(1, 8))  # resumed at 4, not restarted
  assert found["val_steps"] == [3, 4, 6, 7]
  assert found["checkpoints"] == ["6", "7"]   # keep_checkpoints=2
  assert {"run.json", "tokenizer.json", "metrics.jsonl"} <= set(found["files"])
  assert any(f.startswith("events.out.tfevents") for f in found["files"])
  assert {"meta.json", "train-00000.bin", "val-00000.bin"} <= set(
      found["shards"])
