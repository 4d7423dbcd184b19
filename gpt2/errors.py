"""The one exception type for a user's mistake.

A `UserError` carries a single line that names the file, value or flag at
fault. Launch scripts print it (no traceback) and exit with status 2; code
paths that are not the user's fault raise ordinary exceptions.
"""


class UserError(Exception):
  """A mistake in something the user gave us: a path, a flag, a file."""
