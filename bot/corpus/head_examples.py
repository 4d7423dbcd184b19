"""Training examples for the heads, from the JSONL a user gives, and the
head training entry point shared by `launch.train_selector` and the demo.

Formats (config.data_format, "auto" looks at row 1): tumblr post dicts
(texts by `bot.text_format`, labels from note counts), records
{text, kind, timestamp, note_count}, or labelled texts {text, label}; any row
may carry a prompt that the generator reads before the judged text. An
autoreviewer also reads the bot's state (an SQLite file): the operator's
review decisions, each the bot's candidate after its prompt, labelled 1 when
the operator turned it down (bot.state.DECISION_LABELS).
"""

from absl import logging

import numpy as np

from gpt2 import weights
from gpt2.errors import UserError
from selector import labels as labels_lib
from selector.data import read_jsonl
from selector.score import BINARY
from selector.train import Examples, train_head

FORMATS = ("auto", "posts", "records", "labeled", "state")


def detect_format(row: dict, config) -> str:
  """The data format of a row: records, labeled (texts) or tumblr posts."""
  if config.text_field in row:
    by_notes = ("kind" in row and config.label_field not in row and
                config.kind == "selector")
    return "records" if by_notes else "labeled"
  # A legacy post has its "type"; an NPF one (the scraper's with npf=true,
  # launch.import_archive's) its "content" blocks.
  if (("type" in row or "content" in row) and
      any(k in row for k in ("blog_name", "id", "id_string"))):
    return "posts"
  raise UserError(
      f"{config.data} line 1 has neither {config.text_field!r} nor the fields "
      "of a tumblr post; see configs/selector.py for the formats")


def _text(row: dict, field: str, where: str) -> str:
  text = row.get(field)
  if not isinstance(text, str) or not text.strip():
    raise UserError(f"{where} has no text in {field!r}")
  return text


def post_example(post: dict) -> dict:
  """A tumblr post dict as a record: the blog's own post is the judged text.

  The thread before the post's own turn, up to its `tags:`, is the prompt,
  exactly as the bot prompts the generator; the tags and the post's text are
  the text, as the sampler generates them (see bot.text_format).
  """
  # pylint: disable=import-outside-toplevel
  from bot import text_format
  from bot.tumblr.thread import ASKED, COMMENTED, POSTED, RESPONDED
  thread = text_format.post_to_thread(post)
  prompt, text = text_format.own_turn_split(thread)
  last = thread.turns[-1]
  kind = {ASKED: "ask", RESPONDED: "ask", POSTED: "original",
          COMMENTED: "reblog"}[last.kind]
  timestamp = post.get("timestamp", thread.timestamp)
  return {"prompt": prompt, "text": text, "kind": kind,
          "timestamp": timestamp, "note_count": thread.note_count}


def _posts_to_rows(rows: list, source: str) -> list:
  """Post dicts -> (line, {"prompt", "text", "kind", "timestamp", ...})."""
  try:
    # pylint: disable-next=import-outside-toplevel,unused-import
    import bot.text_format
  except ImportError as e:
    raise UserError(
        f"{source} holds tumblr posts, and turning them into texts needs "
        "bot.text_format, which is missing; give {text, kind, timestamp, "
        "note_count} rows instead (data_format=records)") from e
  out, empty = [], 0
  for line, post in rows:
    try:
      example = post_example(post)
    except (KeyError, TypeError, ValueError) as e:
      raise UserError(f"{source} line {line} is not a tumblr post this bot "
                      f"can read ({type(e).__name__}: {e})") from e
    if example["text"].strip():
      out.append((line, example))
    else:
      empty += 1
  if empty:
    print(f"skipped {empty} posts with no text of their own")
  if not out:
    raise UserError(f"{source} has no post with text of its own")
  return out


def state_examples(config) -> Examples:
  """An autoreviewer's examples: the review decisions in the bot's state."""
  # pylint: disable-next=import-outside-toplevel
  from bot.state import DECISION_LABELS, read_review_examples
  if config.kind != "autoreviewer":
    raise UserError(
        f"{config.data} is the bot's state: its review decisions train an "
        "autoreviewer (--config=configs/autoreviewer.py), not a "
        f"{config.kind} head")
  rows = [r for r in read_review_examples(config.data) if r["text"].strip()]
  bad = sum(1 for r in rows if r["label"])
  good = len(rows) - bad
  turned_down = sorted(d for d, label in DECISION_LABELS.items() if label)
  accepted = sorted(d for d, label in DECISION_LABELS.items() if not label)
  if not bad or not good:
    raise UserError(
        f"{config.data} holds {len(rows)} review decisions, {good} accepted "
        f"({', '.join(accepted)}) and {bad} turned down "
        f"({', '.join(turned_down)}); the autoreviewer needs both: review "
        "more posts in the console (or by tags on Tumblr's drafts) first")
  logging.info("%d review decisions from %s: %d accepted, %d turned down",
               len(rows), config.data, good, bad)
  return Examples(texts=[r["text"] for r in rows],
                  targets=np.asarray([float(r["label"]) for r in rows],
                                     np.float32),
                  prompts=[r["prompt"] for r in rows])


def load_examples(config) -> Examples:
  """Texts and targets from config.data, in the format config.data_format."""
  if config.data_format not in FORMATS:
    raise UserError(f"--config.data_format={config.data_format!r} is not one "
                    f"of {', '.join(FORMATS)}")
  # pylint: disable-next=import-outside-toplevel
  from bot.state import is_sqlite
  if config.data_format == "state" or (config.data_format == "auto" and
                                       is_sqlite(config.data)):
    return state_examples(config)
  rows = read_jsonl(config.data)
  source = config.data
  fmt = config.data_format
  if fmt == "auto":
    fmt = detect_format(rows[0][1], config)
  text_field, prompt_field = config.text_field, config.prompt_field
  if fmt == "posts":
    rows = _posts_to_rows(rows, source)
    fmt = "records"
    text_field, prompt_field = "text", "prompt"
  has_prompts = any(prompt_field in row for _, row in rows)

  texts, prompts, targets = [], [], []
  if config.kind == "selector" and fmt == "records":
    records = [labels_lib.post_record(row, f"{source} line {line}")
               for line, row in rows]
    window_days = {k: config.labels[f"window_days_{k}"]
                   for k in labels_lib.KINDS}
    labelled = labels_lib.note_count_labels(
        records, window_days, config.labels.low_quantile,
        config.labels.high_quantile)
    logging.info(
        "%d posts: %d labelled, %d in the middle band (dropped), %d without a "
        "note count (skipped)", len(rows), len(labelled.labelled),
        labelled.n_dropped, labelled.n_without_notes)
    if labelled.n_without_notes:
      print(f"skipped {labelled.n_without_notes} posts without a note count")
    for i in labelled.labelled:
      line, row = rows[i]
      texts.append(_text(row, text_field, f"{source} line {line}"))
      prompts.append(str(row.get(prompt_field) or ""))
      targets.append(float(labelled.labels[i]))
  else:
    from_vader = config.kind == "sentiment" and config.get(
        "sentiment_from", "column") == "vader"
    if config.kind == "sentiment" and config.sentiment_from not in (
        "vader", "column"):
      raise UserError(f"--config.sentiment_from={config.sentiment_from!r} is "
                      "not vader or column")
    for line, row in rows:
      where = f"{source} line {line}"
      texts.append(_text(row, text_field, where))
      prompts.append(str(row.get(prompt_field) or ""))
      if from_vader:
        continue
      if config.label_field not in row:
        raise UserError(f"{where} has no label column {config.label_field!r}")
      value = row[config.label_field]
      label_where = f"{where}: {config.label_field!r}"
      targets.append(labels_lib.binary_label(value, label_where)
                     if config.kind in BINARY else
                     labels_lib.numeric_label(value, label_where))
    if from_vader:
      targets = list(labels_lib.vader_sentiment(texts))
  if not texts:
    raise UserError(f"{source} gave no labelled examples")
  return Examples(texts=texts, targets=np.asarray(targets, np.float32),
                  prompts=prompts if has_prompts else None)


def train_from_config(config, workdir: str, model=None,
                      progress: bool = False) -> dict:
  """Reads config.data, loads config.model (unless `model` is given: a
  `gpt2.weights.LoadedModel`), trains the head into `workdir`; returns
  the test-split metrics. `progress`: bars on stderr (a terminal)."""
  if not config.model and model is None:
    raise UserError("--config.model is required: the generator directory")
  if not config.data:
    raise UserError("--config.data is required: a JSONL file of examples"
                    + (" or the bot's state (bot.db)"
                       if config.kind == "autoreviewer" else ""))
  examples = load_examples(config)  # before the model: data errors come fast
  logging.info("%d %s examples from %s", len(examples.texts), config.kind,
               config.data)
  if model is None:
    model = weights.load_model(config.model)
  return train_head(config, model, examples, workdir, progress=progress)
