"""Scraped posts to training documents in the generator's text format.

    python -m launch.prepare_corpus --posts=posts.jsonl --out=docs.jsonl \\
        --rename=myblog:Frank

Reads posts JSONL (from launch.scrape), drops posts mostly written by others,
posts tagged #quotes and duplicates, and writes one JSON object a line with
the document in `text` (plus `post_id`, `blog` and `note_count`). Posts
from launch.import_archive are kept however little of them the owner wrote,
and their documents carry `own_spans`, the [start, end) character spans of
`text` that are the owner's: the token shards weigh those tokens 1 and the
rest 0, so training (`config.loss_on=own`) learns the owner's words with the
others' as context. Documents
are joined with <|endoftext|> when they are tokenized: by launch.finetune
(`--config.data=docs.jsonl`), or here with `--shards=DIR`, which writes the
token shards of `gpt2.data.prepare` (OpenAI's GPT-2 vocabulary unless
--tokenizer names another tokenizer directory).

`--ocr` reads the text in the posts' images (bot.images: fetched from
Tumblr's media hosts, cached in OUT.images.db) into the documents as
`[image: ALT | text: ...]`, as the bot writes it into its prompts.
"""

import datetime
import glob
import json
import os
import zoneinfo

from absl import flags

from atomic_files import atomic_write
from bot import images
from bot.corpus import documents
from gpt2 import data as data_lib
from gpt2 import tokenizer as tokenizer_lib
from gpt2.errors import UserError
from launch import common

_POSTS = flags.DEFINE_list(
    "posts", None, "Posts JSONL files (globs allowed), comma-separated.")
_OUT = flags.DEFINE_string("out", None, "The documents JSONL file to write.")
_RENAME = flags.DEFINE_list(
    "rename", [],
    "author:name pairs: write the blog `author` as `name` (e.g. the bot's "
    "name when training a bot on a person's blog).")
_MIN_OWN_FRACTION = flags.DEFINE_float(
    "min_own_fraction", None,
    "Drop posts in which the blog wrote less than this share of the text "
    "(default: 0.5 for scraped posts, 0 for posts from launch.import_archive, "
    "whose documents mark the owner's words so that only those are trained "
    "on); a value given applies to both.")
_DROP_TAGS = flags.DEFINE_list("drop_tags", ["quotes"],
                               "Drop posts carrying any of these tags.")
_TIMEZONE = flags.DEFINE_string(
    "timezone", "UTC", "The time zone of the `Written ...` lines (IANA name).")
_SHARDS = flags.DEFINE_string(
    "shards", None, "Also tokenize the documents into train/val token shards "
    "in this directory (local or gs://).")
_TOKENIZER = flags.DEFINE_string(
    "tokenizer", "gpt2", "With --shards: 'gpt2' (OpenAI's vocabulary) or a "
    "tokenizer directory.")
_VAL_FRACTION = flags.DEFINE_float(
    "val_fraction", 0.05, "With --shards: the share of documents held out.")
_OCR = flags.DEFINE_bool(
    "ocr", False, "Read the text in images into the documents (needs "
    "`pip install -e \".[ocr]\"`).")
_IMAGE_HOSTS = flags.DEFINE_list(
    "image_hosts", ["*.media.tumblr.com", "media.tumblr.com"],
    "With --ocr: the hosts images may be fetched from (host[:port] "
    "patterns).")


def _name_map(pairs):
  mapping = {}
  for pair in pairs:
    author, sep, name = pair.partition(":")
    if not sep or not author.strip() or not name.strip():
      raise UserError(f"--rename {pair!r} is not author:name")
    mapping[author.strip()] = name.strip()
  return mapping


def _post_files(patterns):
  paths = []
  for pattern in patterns:
    matches = sorted(glob.glob(pattern))
    if not matches:
      raise UserError(f"--posts {pattern} matches no file")
    paths += matches
  return paths


def _read_posts(paths):
  for path in paths:
    with open(path, encoding="utf-8") as f:
      for number, line in enumerate(f, start=1):
        if not line.strip():
          continue
        try:
          post = json.loads(line)
        except ValueError:
          raise UserError(f"{path} line {number} is not JSON") from None
        if not isinstance(post, dict):
          raise UserError(f"{path} line {number} is not a post object")
        yield post


def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not _POSTS.value:
    raise UserError("--posts is required (posts JSONL from launch.scrape)")
  if (_MIN_OWN_FRACTION.value is not None
      and not 0 <= _MIN_OWN_FRACTION.value <= 1):
    raise UserError(f"--min_own_fraction {_MIN_OWN_FRACTION.value} is not "
                    "between 0 and 1")
  if not _OUT.value:
    raise UserError("--out is required (the documents JSONL file)")
  if _SHARDS.value and not _OUT.value.endswith(data_lib.JSONL_SUFFIXES):
    # gpt2.data reads a file by its suffix.
    raise UserError(f"--out {_OUT.value} must end in .jsonl to be tokenized "
                    "with --shards")
  try:
    tz = (datetime.timezone.utc if _TIMEZONE.value == "UTC"
          else zoneinfo.ZoneInfo(_TIMEZONE.value))
  except (zoneinfo.ZoneInfoNotFoundError, ValueError):
    raise UserError(f"--timezone {_TIMEZONE.value} is not a known time "
                    "zone") from None
  paths = _post_files(_POSTS.value)
  out_dir = os.path.dirname(os.path.abspath(_OUT.value))
  if not os.path.isdir(out_dir):
    raise UserError(f"the folder of --out {_OUT.value} does not exist")
  stats = documents.CorpusStats()
  posts = _read_posts(paths)
  if _OCR.value:
    if not images.available():
      raise UserError("--ocr needs the OCR engine: pip install -e \".[ocr]\"")
    reader = images.ImageReader(_OUT.value + ".images.db", _IMAGE_HOSTS.value)
    posts = (images.annotate(post, reader) for post in posts)
  with atomic_write(_OUT.value) as f:
    for document in documents.documents(
        posts, name_map=_name_map(_RENAME.value),
        min_own_fraction=_MIN_OWN_FRACTION.value,
        drop_tags=_DROP_TAGS.value, tz=tz, stats=stats):
      f.write(json.dumps(document.to_json(), ensure_ascii=False) + "\n")
  dropped = ", ".join(f"{n} {why}" for why, n in sorted(stats.dropped.items()))
  print(f"wrote {stats.kept} documents to {_OUT.value}"
        + (f"; dropped {dropped}" if dropped else ""))
  if _SHARDS.value:
    tokenizer = (tokenizer_lib.Tokenizer.gpt2() if _TOKENIZER.value == "gpt2"
                 else tokenizer_lib.Tokenizer.from_dir(_TOKENIZER.value))
    meta = data_lib.prepare(_OUT.value, _SHARDS.value, tokenizer=tokenizer,
                            val_fraction=_VAL_FRACTION.value)
    print(f"wrote {meta['train']['tokens']} train and {meta['val']['tokens']} "
          f"validation tokens to {_SHARDS.value}")


if __name__ == "__main__":
  common.run(main)
