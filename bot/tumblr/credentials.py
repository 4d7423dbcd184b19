"""Tumblr API credentials from a file or the environment, never shown.

A credentials file is JSON, or `key: value` lines as pytumblr's
`interactive_console.py` writes to ~/.tumblr:

    {"consumer_key": "...", "consumer_secret": "...",
     "oauth_token": "...", "oauth_secret": "..."}

It must be readable by its owner only (chmod 600). Without a file, the
variables TUMBLR_CONSUMER_KEY, TUMBLR_CONSUMER_SECRET, TUMBLR_OAUTH_TOKEN and
TUMBLR_OAUTH_SECRET are read. A missing value is one clear `UserError` line
naming the file or variable; secrets never appear in messages or reprs.
"""

import dataclasses
import json
import os
import stat
from typing import Mapping, Optional

from bot.tumblr.errors import UserError

FIELDS = ("consumer_key", "consumer_secret", "oauth_token", "oauth_secret")
ENV_VARS = {f: "TUMBLR_" + f.upper() for f in FIELDS}
# Reading public posts needs only the application's keys.
APP_FIELDS = FIELDS[:2]


@dataclasses.dataclass(frozen=True)
class Credentials:
  """OAuth1 keys: the application's pair and, to act as a user, a token pair."""
  consumer_key: str
  consumer_secret: str
  oauth_token: str = ""
  oauth_secret: str = ""

  def __repr__(self) -> str:
    shown = ", ".join(f"{f}={'<set>' if getattr(self, f) else '<empty>'}"
                      for f in FIELDS)
    return f"Credentials({shown})"

  __str__ = __repr__

  def client_args(self):
    """The positional arguments of pytumblr's and pytumblr2's clients."""
    return (self.consumer_key, self.consumer_secret, self.oauth_token,
            self.oauth_secret)


def _parse_file(path: str, text: str) -> dict:
  try:
    values = json.loads(text)
  except ValueError:
    values = {}
    for line in text.splitlines():
      key, sep, value = line.partition(":")
      if sep and key.strip() in FIELDS:
        values[key.strip()] = value.strip().strip("'\"")
  if not isinstance(values, dict):
    raise UserError(f"credentials file {path} is not a JSON object or "
                    "'key: value' lines")
  return {k: v for k, v in values.items() if k in FIELDS}


def read_private_file(path: str, what: str = "credentials file") -> str:
  """The text of a secrets file that only its owner may read (mode 0600);
  any other mode, or no file, is one UserError line naming it."""
  # The shell leaves the ~ of `--credentials=~/keys.json` as it is.
  path = os.path.expanduser(path)
  try:
    mode = os.stat(path).st_mode
  except OSError as e:
    raise UserError(f"cannot read {what} {path}: {e.strerror or e}") from None
  if mode & (stat.S_IRWXG | stat.S_IRWXO):
    raise UserError(f"{what} {path} is readable by others "
                    f"(mode {stat.S_IMODE(mode):o}); run: chmod 600 {path}")
  try:
    with open(path, encoding="utf-8") as f:
      return f.read()
  except (OSError, UnicodeDecodeError) as e:
    raise UserError(f"cannot read {what} {path}: {e}") from None


def _read_file(path: str) -> dict:
  return _parse_file(os.path.expanduser(path), read_private_file(path))


def load_credentials(path: Optional[str] = None,
                     environ: Optional[Mapping[str, str]] = None,
                     require_token: bool = True) -> Credentials:
  """Credentials from `path`, or from the TUMBLR_* variables without one.

  With `require_token=False` the user token pair may be missing (enough to
  read public blogs).
  """
  if path:
    values, where = _read_file(path), f"credentials file {path}"
    source = lambda field: f"'{field}' in {where}"
  else:
    environ = os.environ if environ is None else environ
    values = {f: environ.get(ENV_VARS[f], "") for f in FIELDS}
    source = lambda field: f"environment variable {ENV_VARS[field]}"
  values = {f: str(values.get(f) or "").strip() for f in FIELDS}
  required = FIELDS if require_token else APP_FIELDS
  missing = [f for f in required if not values[f]]
  if missing:
    hint = "" if path else " (or pass a credentials file)"
    raise UserError(f"missing Tumblr credential: {source(missing[0])} is "
                    f"not set{hint}")
  return Credentials(**values)
