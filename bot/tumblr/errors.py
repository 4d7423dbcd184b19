"""The Tumblr layer's exception for a user's mistake.

It plays the part of `gpt2.errors.UserError` (one line naming the file,
value or key at fault; launch scripts print it without a traceback and exit
with status 2) for code that must not import the model's package.
"""


class UserError(Exception):
  """A mistake in something the user gave the Tumblr layer."""
