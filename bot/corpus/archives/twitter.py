"""X/Twitter's archive (Settings, Your account, Download an archive).

The zip (`twitter-YYYY-MM-DD-<hash>.zip`) holds `data/tweets.js` (older
archives: `data/tweet.js`; very large ones add `data/tweets-part1.js`, ...),
a JavaScript file that is JSON after its first `=`:

    window.YTD.tweets.part0 = [{"tweet": {"id_str": "...", "full_text": ...,
      "created_at": "Wed Oct 10 20:19:24 +0000 2018",
      "in_reply_to_status_id_str": ..., "in_reply_to_screen_name": ...,
      "entities": {"urls": [...], "user_mentions": [...], "media": [...]},
      "extended_entities": {"media": [...]}}}, ...]

`data/account.js` names the account (`username`, `accountDisplayName`),
`data/like.js` keeps the text of the tweets one liked (`fullText`), and
`data/community-tweet.js` one's tweets in Communities (the shape of
tweets.js). A tweet longer than 280 characters is cut in `full_text`; its
whole text is in `data/note-tweet.js`:

    window.YTD.note_tweet.part0 = [{"noteTweet": {"noteTweetId": "...",
      "createdAt": "2023-05-06T07:08:09.000Z", "updatedAt": ...,
      "lifecycle": {...}, "core": {"text": "the whole text", "urls":
      [{"shortUrl": "https://t.co/...", "expandedUrl": ...}], "mentions":
      [...], "hashtags": [...], "cashtags": [], "styletags": []}}}]

The note names no tweet: it is the tweet written the same second whose
text begins as the note does.

Read: retweets (`RT @...`) are skipped; a thread of one's own replies to
oneself is one post, its tweets as paragraphs; a reply to someone else is a
thread under the parent's text where the archive has it (a liked tweet),
kept however short the reply and long the parent, else one's post alone
(counted). The handle in a quoted tweet's address (`x.com/bob/status/1`)
is a person's, pseudonymized as any other. The `@names` Twitter puts at
the start of a reply are dropped (the site hides them too), `t.co` links
are expanded from `entities`, media become `[image]` / `[video]`, and the
`&amp;`, `&lt;`, `&gt;` the archive writes in `full_text` are unescaped.
"""

import datetime
import html
import re
from typing import Dict, List, Optional

from bot.corpus.archives import common
from bot.tumblr import fields

KIND = "twitter"
NAME = "an X/Twitter archive"
EXPECTED = "data/tweets.js"

RETWEET = "retweets"
NO_PARENT = "replies whose parent tweet is not in the archive"
# The tweets' files, newer archives' then older ones'.
_TWEET_FILES = (("data/tweets.js", "data/tweets-part*.js"),
                ("data/tweet.js", "data/tweet-part*.js"))
_COMMUNITY_FILES = ("data/community-tweet.js", "data/community-tweet-part*.js")
_NOTE_FILES = ("data/note-tweet.js", "data/note-tweet-part*.js")
# A tweet's address: the handle of whoever wrote it (a quoted tweet's).
_STATUS_URL = re.compile(r"^https?://(?:www\.|mobile\.)?(?:twitter|x)\.com/"
                         r"([A-Za-z0-9_]{1,15})/status(?:es)?/\d+",
                         re.IGNORECASE)
_SHORT_URL = re.compile(r"https://t\.co/\w+")
# How much of a cut tweet's text must begin its note.
_NOTE_PREFIX = 40


def _ytd(archive: common.Archive, name: str):
  """The JSON of a `window.YTD.x.partN = [...]` file."""
  text = archive.read_text(name)
  head, sep, body = text.partition("=")
  if not sep or not head.strip().startswith("window.YTD."):
    raise common.malformed(archive, name,
                           "a window.YTD.<name>.part0 = [...] file", NAME,
                           KIND)
  data = archive.read_json(name, body)
  if not isinstance(data, list):
    raise common.malformed(archive, name, "a window.YTD list", NAME, KIND)
  return data


def _tweet_files(archive: common.Archive):
  for patterns in _TWEET_FILES:
    found = [n for p in patterns for n in archive.glob(p)]
    if found:
      return found
  return []


def _files(archive: common.Archive, patterns) -> List[str]:
  return [n for p in patterns for n in archive.glob(p)]


def _dict(item: dict, key: str) -> dict:
  return item[key] if isinstance(item.get(key), dict) else {}


def _created(value) -> Optional[int]:
  try:
    return common.timestamp_of(datetime.datetime.strptime(
        fields.string(value), "%a %b %d %H:%M:%S %z %Y"))
  except ValueError:
    return None


def _comparable(text: str) -> str:
  """A tweet's words as a note's text and its cut `full_text` share them:
  t.co addresses, the reply's @s, the cut's `…` and spacing aside."""
  text = _SHORT_URL.sub(" ", html.unescape(text))
  text = common.strip_leading_mentions(common.plain_blocks(text))
  words = " ".join(b.text for b in text).rstrip("…. ")
  return " ".join(words.split())


def _notes(archive: common.Archive) -> Dict[int, List[dict]]:
  """The note tweets (`core` each), by the second they were written."""
  out: Dict[int, List[dict]] = {}
  for name in _files(archive, _NOTE_FILES):
    for item in fields.dicts(_ytd(archive, name)):
      note = _dict(item, "noteTweet") or item
      core = _dict(note, "core")
      when = common.iso_timestamp(note.get("createdAt"))
      if when is not None and fields.string(core.get("text")).strip():
        out.setdefault(when, []).append(core)
  return out


def _note_of(tweet: dict, notes: Dict[int, List[dict]]) -> Optional[dict]:
  """The note holding the whole of `tweet`: written the same second, its
  text beginning with the tweet's."""
  cut = _comparable(fields.string(tweet.get("full_text")
                                  or tweet.get("text")))[:_NOTE_PREFIX]
  for core in notes.get(_created(tweet.get("created_at")), ()):
    if cut and _comparable(core["text"]).startswith(cut):
      return core
  return None


def _tweet_text(tweet: dict, note: Optional[dict] = None) -> str:
  """The tweet as canonical text (the whole of it from its `note`, where
  it has one): links expanded, reply @s and media addresses taken out,
  media as placeholders."""
  text = html.unescape(fields.string(tweet.get("full_text")
                                     or tweet.get("text")))
  entities = _dict(tweet, "entities")
  urls = [(fields.string(u.get("url")), fields.string(u.get("expanded_url")))
          for u in fields.dicts(entities.get("urls"))]
  if note is not None:
    text = html.unescape(fields.string(note.get("text")))
    urls = [(fields.string(u.get("shortUrl")),
             fields.string(u.get("expandedUrl")))
            for u in fields.dicts(note.get("urls"))]
  for short, expanded in urls:
    if short:
      text = text.replace(short, expanded or short)
  extended = _dict(tweet, "extended_entities")
  media = fields.dicts(extended.get("media")) or fields.dicts(
      entities.get("media"))
  placeholders = []
  for item in media:
    short = fields.string(item.get("url"))
    if short:
      text = text.replace(short, "")
    kind = "image" if item.get("type", "photo") == "photo" else "video"
    placeholders.append(common.media_block(
        kind, fields.string(item.get("ext_alt_text"))))
  blocks = common.plain_blocks(text)
  if tweet.get("in_reply_to_status_id_str") or tweet.get(
      "in_reply_to_screen_name"):
    blocks = common.strip_leading_mentions(blocks)
  return common.text_of(blocks + placeholders)


def read(archive: common.Archive, options: common.Options) -> common.Result:
  result = common.Result()
  names = _tweet_files(archive)
  if not names:
    raise common.missing(archive, EXPECTED, NAME, KIND)
  account_file = archive.first("data/account.js")
  if account_file:
    for item in fields.dicts(_ytd(archive, account_file)):
      account = _dict(item, "account") or item
      for key in ("username", "accountDisplayName"):
        if fields.string(account.get(key)).strip():
          result.own_names.add(account[key].strip())
  own_handles = {n.lower() for n in result.own_names} | {options.me.lower()}
  liked: Dict[str, str] = {}
  like_file = archive.first("data/like.js")
  if like_file:
    for item in fields.dicts(_ytd(archive, like_file)):
      like = _dict(item, "like") or item
      if fields.string(like.get("tweetId")) and fields.string(
          like.get("fullText")):
        liked[like["tweetId"]] = like["fullText"]

  notes = _notes(archive)
  tweets, seen = [], set()
  for name in names + _files(archive, _COMMUNITY_FILES):
    for item in fields.dicts(_ytd(archive, name)):
      tweet = _dict(item, "tweet") or item
      if not fields.string(tweet.get("id_str")) or tweet["id_str"] in seen:
        continue
      seen.add(tweet["id_str"])
      text = fields.string(tweet.get("full_text") or tweet.get("text"))
      if text.startswith("RT @") or tweet.get("retweeted") is True:
        result.skipped[RETWEET] += 1
        continue
      tweets.append(tweet)
      for mention in fields.dicts(_dict(tweet, "entities").get(
          "user_mentions")):
        handle = fields.string(mention.get("screen_name"))
        if handle.lower() in own_handles:
          continue
        common.record_people(
            result, KIND, [(fields.string(mention.get("id_str")) or handle,
                            (handle, fields.string(mention.get("name"))))],
            options)
      for url in fields.dicts(_dict(tweet, "entities").get("urls")):
        quoted = _STATUS_URL.match(fields.string(url.get("expanded_url")))
        if quoted and quoted.group(1).lower() not in own_handles:
          common.record_people(result, KIND, [(quoted.group(1).lower(),
                                               (quoted.group(1),))], options)
      parent_handle = fields.string(tweet.get("in_reply_to_screen_name"))
      if parent_handle and parent_handle.lower() not in own_handles:
        common.record_people(
            result, KIND,
            [(fields.string(tweet.get("in_reply_to_user_id_str"))
              or parent_handle, (parent_handle,))], options)
  tweets.sort(key=lambda t: (_created(t.get("created_at")) or 0,
                             int(t["id_str"]) if t["id_str"].isdigit() else 0))
  by_id = {t["id_str"]: t for t in tweets}
  groups = common.own_self_threads(
      [(t["id_str"], fields.string(t.get("in_reply_to_status_id_str")) or None)
       for t in tweets])
  for group in groups:
    text = common.join_texts(_tweet_text(by_id[i], _note_of(by_id[i], notes))
                             for i in group)
    if not text:
      result.skipped[common.NO_TEXT] += 1
      continue
    root, last = by_id[group[0]], by_id[group[-1]]
    when = _created(last.get("created_at"))
    parent_id = fields.string(root.get("in_reply_to_status_id_str"))
    parent_handle = fields.string(root.get("in_reply_to_screen_name"))
    if not parent_id or parent_handle.lower() in own_handles:
      result.threads.append(
          common.single_post(options, text, when, f"{KIND}-{group[0]}"))
      if parent_id:
        result.notes[NO_PARENT] += 1  # one's own tweet, since deleted
      continue
    if parent_id in liked:
      parent_text = common.text_of(
          common.plain_blocks(html.unescape(liked[parent_id])))
      imported = common.thread_of(
          [common.Said(parent_handle or "someone", parent_text),
           common.Said(options.me, text, when, own=True)],
          options, f"{KIND}-{group[0]}", result.skipped)
      if imported is not None:
        result.threads.append(imported)
      continue
    result.notes[NO_PARENT] += 1
    result.threads.append(
        common.single_post(options, text, when, f"{KIND}-{group[0]}"))
  return result
