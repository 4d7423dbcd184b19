"""Posts JSONL from the archive a platform hands its users.

    python -m launch.import_archive --kind=twitter \\
        --archive=twitter-2024-05-01-1a2b3c.zip --me=myhandle \\
        --out=posts.jsonl
    python -m launch.prepare_corpus --posts=posts.jsonl --out=docs.jsonl

`--kind` is one of tumblr (the blog export), wordpress (WXR), twitter,
mastodon, discord (DiscordChatExporter JSON or Discord's data package),
facebook (Download Your Information, JSON), telegram (Telegram Desktop's
JSON export, result.json) and whatsapp (Export chat's text file); `--archive` is the zip as
downloaded or the folder it unpacks to. The posts written are those
`launch.scrape` writes (NPF post dicts, one a line), so everything after is
unchanged: a conversation is one post whose trail holds the earlier turns by
their authors and whose last turn is `--me`'s (bot.corpus.archives.common
says how conversations are cut: a thread keeps its latest --max_turns turns
however short your reply, and `launch.prepare_corpus` marks which words are
yours, the only ones trained on).

`--pseudonymize` replaces every other person's name and handle (turn
authors, @mentions, their names in the text) by a stable pseudonym keyed by
OUT.pseudonym-key, made beside the output and reused; it is on by default
when the archive holds direct messages (`--nopseudonymize` turns it off).
An existing key file others can read stops the run. The summary line and
the report hold counts only, never a name or a file of the archive.
A thread met twice (the same turns by the same people) is written once;
`--lang=en` also drops the posts whose own turn is in another language
(langdetect; a text under 20 letters is kept). `--report=PATH` writes what
the import gave (posts, threads and words of yours, public and direct,
what was dropped and why, a histogram of lengths): a page when PATH ends in
.html, else the counts as JSON. The output is written whole or not at all.
A file of the archive that unpacks to more than `--max_file_mb`, or files
past `--max_total_mb` in all, stop the import with one line.
"""

import json
import os

from absl import flags

from atomic_files import atomic_write
from bot.corpus import archives, pseudonyms
from bot.corpus.archives import KINDS
from bot.corpus.archives import common as common_archives
from bot.corpus.archives import report as report_lib
from bot.corpus.archives.common import Options
from gpt2.errors import UserError
from launch import common

_KIND = flags.DEFINE_string(
    "kind", None, f"The archive's platform: {', '.join(KINDS)}.")
_ARCHIVE = flags.DEFINE_string(
    "archive", None, "The archive: the zip as downloaded, or its folder.")
_ME = flags.DEFINE_string(
    "me", None, "Your name or handle as the archive writes it: your turns "
    "are written under it, and it is never pseudonymized.")
_OUT = flags.DEFINE_string("out", None, "The posts JSONL file to write.")
_PSEUDONYMIZE = flags.DEFINE_bool(
    "pseudonymize", None, "Replace other people's names and handles by "
    "stable pseudonyms (default: on when the archive has direct messages).")
_REPORT = flags.DEFINE_string(
    "report", None, "Also write what the import gave to this file: a page "
    "(report.html) or JSON (any other name).")
_LANG = flags.DEFINE_string(
    "lang", None, "Keep only posts written in this language (ISO 639-1, "
    "e.g. en), as langdetect tells.")
_MIN_OWN_FRACTION = flags.DEFINE_float(
    "min_own_fraction", 0.0, "A conversation thread keeps its latest turns "
    "while you wrote at least this share of them; 0 keeps the latest "
    "--max_turns, however little is yours (only your words are trained on, "
    "the rest is their context).")
_MAX_TURNS = flags.DEFINE_integer(
    "max_turns", 10, "The most turns a conversation thread keeps.")
_GAP_MINUTES = flags.DEFINE_integer(
    "gap_minutes", 120, "A silence this long in a conversation starts a new "
    "one.")
_MAX_FILE_MB = flags.DEFINE_integer(
    "max_file_mb", common_archives.MAX_FILE_BYTES // 2**20, "The most one "
    "file of the archive may unpack to (MiB); a larger one (a zip bomb) "
    "stops the import.")
_MAX_TOTAL_MB = flags.DEFINE_integer(
    "max_total_mb", common_archives.MAX_TOTAL_BYTES // 2**20, "The most the "
    "files read from the archive may unpack to in all (MiB).")


def _check_flags():
  if not _KIND.value:
    raise UserError(f"--kind is required: one of {', '.join(KINDS)}")
  if _KIND.value not in KINDS:
    raise UserError(f"--kind {_KIND.value!r} is not one of "
                    f"{', '.join(KINDS)}")
  if not _ARCHIVE.value:
    raise UserError("--archive is required (the zip the platform gave you, "
                    "or its folder)")
  if not (_ME.value or "").strip():
    raise UserError("--me is required (your name or handle as the archive "
                    "writes it)")
  if not _OUT.value:
    raise UserError("--out is required (the posts JSONL file)")
  for flag, path in (("--out", _OUT.value), ("--report", _REPORT.value)):
    if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
      raise UserError(f"the folder of {flag} {path} does not exist")
  if not 0 <= _MIN_OWN_FRACTION.value <= 1:
    raise UserError(f"--min_own_fraction {_MIN_OWN_FRACTION.value} is not "
                    "between 0 and 1")
  if _MAX_TURNS.value < 1:
    raise UserError(f"--max_turns {_MAX_TURNS.value} is less than 1")
  if _LANG.value and _LANG.value not in report_lib.known_languages():
    raise UserError(f"--lang {_LANG.value!r} is not a language code "
                    f"langdetect knows: "
                    f"{', '.join(report_lib.known_languages())}")
  if _GAP_MINUTES.value < 0:
    raise UserError(f"--gap_minutes {_GAP_MINUTES.value} is negative")
  for flag in (_MAX_FILE_MB, _MAX_TOTAL_MB):
    if flag.value < 1:
      raise UserError(f"--{flag.name} {flag.value} is less than 1")


def _write_whole(path: str, lines):
  """Writes `lines` to `path` through a temporary file: all or nothing."""
  with atomic_write(path) as f:
    for line in lines:
      f.write(line + "\n")


def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
  _check_flags()
  options = Options(_ME.value.strip(), _GAP_MINUTES.value * 60,
                    _MAX_TURNS.value, _MIN_OWN_FRACTION.value,
                    _MAX_FILE_MB.value * 2**20, _MAX_TOTAL_MB.value * 2**20)
  posts, report = archives.import_archive(
      _KIND.value, _ARCHIVE.value, options, _PSEUDONYMIZE.value,
      pseudonyms.key_path(_OUT.value), _LANG.value or None)
  _write_whole(_OUT.value, (json.dumps(p, ensure_ascii=False) for p in posts))
  if _REPORT.value:
    if _REPORT.value.lower().endswith((".html", ".htm")):
      page = report_lib.html(report, _OUT.value)
    else:
      page = json.dumps(dict(report, out=_OUT.value), indent=2,
                        ensure_ascii=False)
    _write_whole(_REPORT.value, [page])
  print(archives.summary(report, _OUT.value))


if __name__ == "__main__":
  common.run(main)
