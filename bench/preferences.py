r"""The generator tuned on its operator's choices, before and after
(launch.tune_preferences), in the purple-elephant world
(bench/preference_world.py):

  python -m bench.preferences            # about two minutes on 2 CPU cores
  python -m bench.preferences --json

A tiny GPT-2 is trained on ask/answer threads, a quarter of whose answers
say "purple elephant"; the operator turned down every answer saying it and
accepted another (120 asks, 240 pairs, a fifth of the asks held out). The
table gives the held-out metrics before tuning, after, and after a control
run on the same decisions shuffled (for a random half of the asks the
operator "preferred" the phrase), where there is nothing to learn.
"""

import json
import os
import tempfile

from absl import app
from absl import flags

_JSON = flags.DEFINE_boolean("json", False, "Print one JSON object.")
_WORKDIR = flags.DEFINE_string("workdir", "", "Where the world goes (a "
                               "temporary folder if empty).")

ROWS = (("turned_down_rate", "candidates saying a turned-down phrase",
         "{:.1%}"),
        ("preference_accuracy", "held-out pairs the model prefers as the "
         "operator did", "{:.2f}"),
        ("reward_margin", "implicit reward margin (beta 0.25)", "{:.2f}"),
        ("kl", "KL to the starting model, nats/token", "{:.3f}"),
        ("lm_loss", "held-out corpus loss, nats/token", "{:.3f}"))


def run(root: str) -> dict:
  from bench import preference_world as world  # pylint: disable=import-outside-toplevel
  model = world.train_model(root)
  out = {}
  for name, shuffled in (("tuned", False), ("shuffled", True)):
    db = os.path.join(root, f"{name}.db")
    world.decisions(db, shuffled=shuffled)
    done = world.tune(model, db, os.path.join(root, name),
                      phrases=world.PHRASE)
    if done.returncode:
      raise SystemExit(done.stderr[-2000:])
    out[name] = json.loads(done.stdout.strip().splitlines()[-1])
  return out


def table(result: dict) -> str:
  tuned, control = result["tuned"], result["shuffled"]
  lines = ["| held out | before | after | after, decisions shuffled |",
           "|---|---:|---:|---:|"]
  for key, label, fmt in ROWS:
    lines.append(f"| {label} | {fmt.format(tuned['before'][key])} | "
                 f"{fmt.format(tuned['after'][key])} | "
                 f"{fmt.format(control['after'][key])} |")
  return "\n".join(lines)


def main(argv):
  del argv
  if _WORKDIR.value:
    os.makedirs(_WORKDIR.value, exist_ok=True)
    result = run(_WORKDIR.value)
  else:
    with tempfile.TemporaryDirectory() as root:
      result = run(root)
  if _JSON.value:
    print(json.dumps(result))
  else:
    print(table(result))


if __name__ == "__main__":
  app.run(main)
