"""Scores candidate texts offline with the heads (selector, sentiment,
autoreviewer).

  python -m launch.score --heads HEADS_DIR --in candidates.jsonl \
      [--out scored.jsonl] [--model MODEL_DIR]

HEADS_DIR holds selector/, sentiment/ and/or autoreviewer/ (head
directories or training workdirs). Each input row needs "text" and may have
"prompt" (read by the generator before the text, not judged); each output
row is the input row plus "selector" (calibrated probability that the post
does well), "sentiment" and "autoreviewer" (calibrated probability that the
operator turns it down), for the heads there are. Without --model the
generator the heads were trained on loads.
"""

import json
import sys

from absl import flags
import fsspec

from gpt2 import weights
from gpt2.errors import UserError
from launch import common
from selector.data import read_jsonl
from selector.score import Heads

flags.DEFINE_string("heads", None, "directory with selector/, sentiment/ "
                    "and/or autoreviewer/")
flags.DEFINE_string("in", None, "JSONL of candidates: {\"text\", \"prompt\"?}")
flags.DEFINE_string("out", "-", "JSONL to write (default: stdout)")
flags.DEFINE_string("model", None, "generator directory (default: the one "
                    "the heads name)")
flags.DEFINE_string("text_field", "text", "the column holding each text")
flags.DEFINE_integer("batch_size", 16, "candidates per head call")


def main(argv):
  del argv
  f = flags.FLAGS
  if not f.heads:
    raise UserError("--heads is required")
  if not f["in"].value:
    raise UserError("--in is required: a JSONL file of candidates")
  model = weights.load_model(f.model) if f.model else None
  heads = Heads.load(f.heads, model=model, batch_size=f.batch_size)
  rows = read_jsonl(f["in"].value)
  texts, prompts = [], []
  for line, row in rows:
    text = row.get(f.text_field)
    if not isinstance(text, str) or not text:
      raise UserError(f"{f['in'].value} line {line} has no text in "
                      f"{f.text_field!r}")
    texts.append(text)
    prompts.append(str(row.get("prompt") or ""))
  scores = heads.score_texts(texts, prompts)
  out = sys.stdout if f.out == "-" else fsspec.open(f.out, "w").open()
  try:
    for i, (_, row) in enumerate(rows):
      if scores.selector is not None:
        row["selector"] = float(scores.selector[i])
      if scores.sentiment is not None:
        row["sentiment"] = float(scores.sentiment[i])
      if scores.autoreviewer is not None:
        row["autoreviewer"] = float(scores.autoreviewer[i])
      out.write(json.dumps(row) + "\n")
  finally:
    if out is not sys.stdout:
      out.close()


if __name__ == "__main__":
  common.run(main)
