"""A file written whole or not at all (atomic_files): a writer that fails
or is killed mid-write leaves the old file as it was."""

import ast
import os
import signal
import subprocess
import sys

import pytest

from atomic_files import atomic_path, atomic_write

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OLD = b"the old contents\n" * 100


def old_file(tmp_path) -> str:
  path = str(tmp_path / "state.json")
  with open(path, "wb") as f:
    f.write(OLD)
  return path


def read(path) -> bytes:
  with open(path, "rb") as f:
    return f.read()


def test_a_write_replaces_the_file_whole_and_leaves_nothing_beside_it(
    tmp_path):
  path = old_file(tmp_path)
  with atomic_write(path) as f:
    f.write("new ")
    assert read(path) == OLD  # nothing shows until the block ends
    f.write("contents é")
  assert read(path) == "new contents é".encode("utf-8")
  assert os.listdir(tmp_path) == ["state.json"]
  with atomic_write(str(tmp_path / "fresh.bin"), "wb") as f:
    f.write(b"\x00\x01")
  assert read(str(tmp_path / "fresh.bin")) == b"\x00\x01"
  with pytest.raises(ValueError, match="mode 'w' or 'wb', not 'a'"):
    with atomic_write(path, "a"):
      pass


def test_an_exception_mid_write_keeps_the_old_file_and_no_temporary(
    tmp_path):
  path = old_file(tmp_path)
  with pytest.raises(RuntimeError, match="disk on fire"):
    with atomic_write(path) as f:
      f.write("half of the new")
      f.flush()
      raise RuntimeError("disk on fire")
  assert read(path) == OLD
  assert os.listdir(tmp_path) == ["state.json"]
  # The same for a path written by someone else (the int8 kernel's build).
  with pytest.raises(KeyboardInterrupt):
    with atomic_path(path) as temporary:
      with open(temporary, "w", encoding="utf-8") as f:
        f.write("half")
      raise KeyboardInterrupt
  assert read(path) == OLD
  assert os.listdir(tmp_path) == ["state.json"]


def test_two_writers_side_by_side_each_write_their_own_temporary(tmp_path):
  path = old_file(tmp_path)
  with atomic_write(path) as first, atomic_write(path) as second:
    assert first.name != second.name
    first.write("first")
    second.write("second")
  # The last to finish (the outer block: `first`) wins, whole.
  assert read(path) == b"first"
  assert os.listdir(tmp_path) == ["state.json"]


# Plain Python (no JAX): writes half of the new contents through the helper,
# says so, and waits to be killed.
WRITER = """
import sys, time
from atomic_files import atomic_write
with atomic_write(sys.argv[1]) as f:
  f.write("x" * 5000)
  f.flush()
  print("half written", flush=True)
  time.sleep(60)
  f.write("y" * 5000)
"""


def test_a_writer_killed_mid_write_leaves_the_old_file_byte_identical(
    tmp_path):
  path = old_file(tmp_path)
  writer = subprocess.Popen([sys.executable, "-c", WRITER, path], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
  try:
    assert writer.stdout.readline() == "half written\n"
    # The half really is on disk, in the writer's own temporary.
    (temporary,) = [n for n in os.listdir(tmp_path) if n != "state.json"]
    assert temporary.startswith("state.json.") and temporary.endswith(".tmp")
    assert read(str(tmp_path / temporary)) == b"x" * 5000
    writer.send_signal(signal.SIGKILL)
    assert writer.wait(timeout=30) == -signal.SIGKILL
  finally:
    if writer.poll() is None:
      writer.kill()
    writer.stdout.close()
  assert read(path) == OLD
  # The next write is whole again; the killed one's temporary is never read.
  with atomic_write(path) as f:
    f.write("after the kill")
  assert read(path) == b"after the kill"


def test_every_whole_file_write_goes_through_the_helper():
  # One way to write a file whole: an `os.replace` of its own elsewhere is
  # the pattern this module replaced (and mostly got the failure path wrong).
  offenders = []
  for room in ("gpt2", "selector", "bot", "launch", "bench", "configs"):
    for root, _, names in os.walk(os.path.join(REPO, room)):
      for name in names:
        if not name.endswith(".py"):
          continue
        path = os.path.join(root, name)
        with open(path, encoding="utf-8") as f:
          tree = ast.parse(f.read(), path)
        offenders += [
            (os.path.relpath(path, REPO), node.lineno)
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr in (
                "replace", "rename") and isinstance(node.value, ast.Name)
            and node.value.id == "os"]
  assert offenders == []
