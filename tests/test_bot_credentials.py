"""Credentials from files and the environment, and never shown."""

import json
import os

import pytest

from bot.tumblr.credentials import Credentials, load_credentials
from bot.tumblr.errors import UserError

VALUES = {"consumer_key": "ck-123", "consumer_secret": "cs-secret",
          "oauth_token": "ot-123", "oauth_secret": "os-secret"}


def write(path, text, mode=0o600):
  path.write_text(text)
  os.chmod(path, mode)
  return str(path)


def test_json_file(tmp_path):
  path = write(tmp_path / "keys.json", json.dumps(VALUES))
  assert load_credentials(path) == Credentials(**VALUES)


def test_key_value_file_as_pytumblr_writes_it(tmp_path):
  text = "\n".join(f"{k}: '{v}'" for k, v in VALUES.items())
  path = write(tmp_path / ".tumblr", text)
  assert load_credentials(path) == Credentials(**VALUES)


def test_a_file_others_can_read_is_refused(tmp_path):
  path = write(tmp_path / "keys.json", json.dumps(VALUES), mode=0o644)
  with pytest.raises(UserError) as error:
    load_credentials(path)
  assert str(error.value) == (
      f"credentials file {path} is readable by others (mode 644); "
      f"run: chmod 600 {path}")


def test_missing_values_name_the_file_or_variable(tmp_path):
  partial = {k: v for k, v in VALUES.items() if k != "oauth_secret"}
  path = write(tmp_path / "keys.json", json.dumps(partial))
  with pytest.raises(UserError, match=f"'oauth_secret' in credentials file "
                     f"{path} is not set"):
    load_credentials(path)
  assert load_credentials(path, require_token=False).consumer_key == "ck-123"
  environ = {"TUMBLR_CONSUMER_KEY": "ck-123"}
  with pytest.raises(UserError) as error:
    load_credentials(environ=environ)
  assert str(error.value) == (
      "missing Tumblr credential: environment variable "
      "TUMBLR_CONSUMER_SECRET is not set (or pass a credentials file)")
  with pytest.raises(UserError, match="cannot read credentials file"):
    load_credentials(str(tmp_path / "nowhere.json"))


def test_environment(tmp_path):
  environ = {f"TUMBLR_{k.upper()}": v for k, v in VALUES.items()}
  assert load_credentials(environ=environ) == Credentials(**VALUES)


def test_secrets_never_show():
  credentials = Credentials(**VALUES)
  for shown in (repr(credentials), str(credentials), f"{credentials}",
                repr([credentials])):
    assert not any(v in shown for v in VALUES.values())
  assert "consumer_key=<set>" in repr(credentials)
