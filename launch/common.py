"""What every launch script shares: running main with clear user errors."""

import sys

from absl import app

from gpt2.errors import UserError


def run(main):
  """`app.run(main)`, but a `UserError` prints one line and exits with 2."""

  def guarded(argv):
    try:
      return main(argv)
    except UserError as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)

  app.run(guarded)
