"""Child processes a test starts."""

import contextlib


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
