"""Tokenize a corpus into train/val token shards for launch.finetune.

    python -m launch.prepare_data --input=docs.jsonl --output=data/blog
    python -m launch.prepare_data --input=gs://bucket/corpus/ \\
        --output=gs://bucket/data/corpus --tokenizer=gpt2
    python -m launch.prepare_data --input=plays/ --output=data/plays \\
        --vocab_size=512          # train a new byte-level BPE

--input: a text file (documents separated by <|endoftext|>), a JSONL file (a
`text` field per line), or a folder of them, local or gs://. Documents are
split into train and val by a hash of their text. --output gets uint16
shards, meta.json and the tokenizer; pass it as --config.data to finetune.
"""

import json

from absl import flags

from gpt2 import data
from gpt2.errors import UserError
from gpt2.tokenizer import Tokenizer
from launch import common

_INPUT = flags.DEFINE_string("input", None, "Corpus file or folder.")
_OUTPUT = flags.DEFINE_string("output", None, "Output folder for the shards.")
_TOKENIZER = flags.DEFINE_string(
    "tokenizer", "gpt2",
    "'gpt2' (OpenAI's vocabulary), or a model or tokenizer directory; "
    "ignored when --vocab_size is set.")
_VOCAB_SIZE = flags.DEFINE_integer(
    "vocab_size", 0, "Train a new byte-level BPE of this size instead.")
_VAL_FRACTION = flags.DEFINE_float(
    "val_fraction", 0.05, "Share of documents held out for validation.")
_SHARD_TOKENS = flags.DEFINE_integer("shard_tokens", data.SHARD_TOKENS,
                                     "Tokens per shard file.")


def _tokenizer():
  if _VOCAB_SIZE.value:
    return None
  if _TOKENIZER.value == "gpt2":
    return Tokenizer.gpt2()
  return Tokenizer.from_dir(_TOKENIZER.value)


def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not _INPUT.value or not _OUTPUT.value:
    raise UserError("--input and --output are required")
  if _SHARD_TOKENS.value <= 0:
    raise UserError(f"--shard_tokens={_SHARD_TOKENS.value} must be positive")
  meta = data.prepare(_INPUT.value, _OUTPUT.value, tokenizer=_tokenizer(),
                      vocab_size=_VOCAB_SIZE.value,
                      val_fraction=_VAL_FRACTION.value,
                      shard_tokens=_SHARD_TOKENS.value)
  print(json.dumps({
      "output": _OUTPUT.value,
      "train_tokens": meta["train"]["tokens"],
      "train_documents": meta["train"]["documents"],
      "val_tokens": meta["val"]["tokens"],
      "val_documents": meta["val"]["documents"],
      "vocab_size": meta["vocab_size"],
      "invalid_utf8_bytes": meta["invalid_utf8_bytes"],
  }))


if __name__ == "__main__":
  common.run(main)
