"""Writing a file whole or not at all.

`atomic_write(path)` hands out a file opened on a temporary beside `path`;
when the `with` block ends normally the temporary is flushed to disk and
renamed over `path` in one step, so a reader (or the next run) finds the old
file or the new one, never a part of either. When the block raises, the
temporary is removed and the old file is left as it was.

Each writer gets a temporary of its own (`<path>.<random>.tmp`, created
exclusively), so two writers side by side never write into each other's:
the last to finish wins, whole. A writer killed outright (SIGKILL, a power
cut) cannot clean up: its temporary stays beside `path`, never read, and
`path` itself is untouched.

Plain Python with no import of ours: every room may use it, `bot/tumblr/`
(which must not import the model's package) included.
"""

import contextlib
import os
import secrets
from typing import Iterator, Optional

_ATTEMPTS = 100  # unique names to try before giving up (each is 64 bits)


def _create_temporary(path: str) -> str:
  """Creates an empty, new file beside `path` and returns its name.

  O_EXCL makes it this writer's alone; mode 0o666 lets the umask decide the
  permissions, as `open(path, "w")` would (mkstemp's 0o600 would not).
  """
  for _ in range(_ATTEMPTS):
    temporary = f"{path}.{secrets.token_hex(8)}.tmp"
    try:
      fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
      continue
    os.close(fd)
    return temporary
  raise FileExistsError(f"no free temporary name beside {path}")


def _fsync_path(path: str) -> None:
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def _fsync_directory(path: str) -> None:
  """Makes the rename itself durable; a no-op where directories cannot be
  opened (Windows) or synced (some network file systems)."""
  try:
    _fsync_path(os.path.dirname(os.path.abspath(path)))
  except OSError:
    pass


@contextlib.contextmanager
def _replacing(path: str, synced_by_caller: bool) -> Iterator[str]:
  temporary = _create_temporary(path)
  try:
    yield temporary
    if not synced_by_caller:
      _fsync_path(temporary)
    os.replace(temporary, path)
  except BaseException:
    # KeyboardInterrupt and SystemExit too: nothing half-written stays.
    with contextlib.suppress(FileNotFoundError):
      os.remove(temporary)
    raise
  _fsync_directory(path)


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
  """Yields the name of a new, empty temporary file beside `path` for
  something else to write (a compiler's `-o`, a library's `save(name)`).

  When the block ends normally the temporary is synced to disk and renamed
  over `path`; when it raises, the temporary is removed and the exception
  goes on, `path` untouched.
  """
  with _replacing(path, synced_by_caller=False) as temporary:
    yield temporary


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w", encoding: Optional[str] = None,
                 newline: Optional[str] = None):
  """Yields a file to write `path`'s new contents to, all or nothing.

  Args:
    path: the file to write (or replace); its folder must exist.
    mode: "w" (text) or "wb" (bytes).
    encoding: of a text file; UTF-8 unless given.
    newline: as `open`'s, for a text file.

  When the block ends normally the file is flushed, synced and renamed over
  `path`; when it raises, the partial file is removed and the exception
  goes on, `path` untouched.
  """
  if mode not in ("w", "wb"):
    raise ValueError(f"atomic_write writes a whole file: mode 'w' or 'wb', "
                     f"not {mode!r}")
  text = {} if mode == "wb" else dict(encoding=encoding or "utf-8",
                                      newline=newline)
  with _replacing(path, synced_by_caller=True) as temporary:
    with open(temporary, mode, **text) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
