"""Scrape a tumblr blog (or import a tumblr-backup folder) to posts JSONL.

    python -m launch.scrape --blog=NAME --out=posts.jsonl
    python -m launch.scrape --tumblr_backup=backups/NAME --out=posts.jsonl

Run again to fetch only new posts; an interrupted run continues where it
stopped. Every request gives up after --timeout_s seconds without an
answer. Credentials come from --credentials (a chmod-600 JSON file) or the
TUMBLR_CONSUMER_KEY / TUMBLR_CONSUMER_SECRET (and optionally
TUMBLR_OAUTH_TOKEN / TUMBLR_OAUTH_SECRET) environment variables.
"""

from absl import flags

from bot.tumblr import credentials, scrape
from gpt2.errors import UserError
from launch import common

_BLOG = flags.DEFINE_string("blog", None, "The blog to scrape: its name.")
_OUT = flags.DEFINE_string("out", None, "The posts JSONL file to add to.")
_TUMBLR_BACKUP = flags.DEFINE_string(
    "tumblr_backup", None,
    "Import this tumblr-backup output folder (its json/ posts) instead of "
    "calling the API.")
_CREDENTIALS = flags.DEFINE_string(
    "credentials", None,
    "A JSON file with consumer_key, consumer_secret[, oauth_token, "
    "oauth_secret]; without it the TUMBLR_* environment variables are used.")
_API_HOST = flags.DEFINE_string(
    "api_host", "https://api.tumblr.com",
    "The Tumblr API to talk to (e.g. a local test server).")
_TIMEOUT = flags.DEFINE_float(
    "timeout_s", 30.0, "Seconds to wait for each answer of the API before "
    "giving up.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")


def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not _OUT.value:
    raise UserError("--out is required (the posts JSONL file)")
  if _TUMBLR_BACKUP.value:
    result = scrape.import_tumblr_backup(_TUMBLR_BACKUP.value, _OUT.value)
    print(f"imported {result.new_posts} new posts from "
          f"{_TUMBLR_BACKUP.value} into {_OUT.value}")
    return
  if not _BLOG.value:
    raise UserError("--blog is required (or --tumblr_backup)")
  if _TIMEOUT.value <= 0:
    raise UserError(f"--timeout_s must be positive, not {_TIMEOUT.value}")
  keys = credentials.load_credentials(_CREDENTIALS.value, require_token=False)
  api = scrape.Api(scrape.make_client(keys, _API_HOST.value.rstrip("/"),
                                      _TIMEOUT.value),
                   _API_HOST.value)
  result = scrape.scrape_blog(api, _BLOG.value, _OUT.value,
                              progress=_PROGRESS.value)
  print(f"{_BLOG.value}: {result.new_posts} new posts, {result.total_posts} "
        f"in {_OUT.value} ({result.requests} requests, "
        f"{result.rate_limit_waits} rate-limit waits)")


if __name__ == "__main__":
  common.run(main)
