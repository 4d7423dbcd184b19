"""configs/gpt2_tiny.py with a test module's settings ({"lora.rank": 4,
"total_steps": 6, ...}): as a config for a run in the test's process, and
as the `--config.` flags a launch script in a subprocess takes."""

from configs import gpt2_tiny


def config(settings: dict, data: str, init: str, **overrides):
  c = gpt2_tiny.get_config()
  c.data, c.init = data, init
  for key, value in {**settings, **overrides}.items():
    group, _, name = key.rpartition(".")
    (c[group] if group else c)[name] = value
  return c


def flags(settings: dict, data: str, init: str, **overrides) -> list:
  return [f"--config.{key}={value}" for key, value in
          {"data": data, "init": init, **settings, **overrides}.items()]
