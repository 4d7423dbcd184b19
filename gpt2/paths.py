"""Local-or-gs:// output directories, created with a one-line error."""

import fsspec

from gpt2.errors import UserError


def output_dir(path: str, what: str = "output directory"):
  """Creates `path` (local or gs://) and returns (fs, root without a slash).

  A failure is a UserError naming `what` and the path.
  """
  fs, root = fsspec.core.url_to_fs(path)
  root = root.rstrip("/")
  try:
    fs.makedirs(root, exist_ok=True)
  except OSError as e:
    raise UserError(f"cannot create the {what} {path}: "
                    f"{e.strerror or e}") from e
  return fs, root
