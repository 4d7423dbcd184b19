"""Child processes a test starts."""

import contextlib
import socket


@contextlib.contextmanager
def killed_on_exit(proc):
  """Yields `proc` (a subprocess.Popen); kills it if it still runs when the
  block ends, so a failing test leaves no process behind."""
  try:
    yield proc
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.communicate()


def free_port() -> int:
  """A TCP port on 127.0.0.1 that nothing listens on now."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]
