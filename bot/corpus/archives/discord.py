"""Discord: DiscordChatExporter's JSON, or Discord's own data package.

DiscordChatExporter (`--format Json`) writes one file a channel, e.g.
`Direct Messages - bob [123].json`:

    {"guild": {"id": ..., "name": "Direct Messages"},
     "channel": {"id": ..., "type": "DirectTextChat", "name": "bob"},
     "messages": [{"id": "1", "type": "Default" or "Reply",
       "timestamp": "2023-04-05T06:07:08.123+00:00", "content": "...",
       "author": {"id": "9", "name": "bob", "nickname": "Bob"},
       "attachments": [{"fileName": "cat.png", "url": ...}],
       "mentions": [{"id": ..., "name": ..., "nickname": ...}],
       "reference": {"messageId": "..."}}]}

Everyone's messages are there, so a channel becomes conversation threads
(`common.conversation_threads`): `--me` (an author's name, nickname or id)
is the speaker the model learns, the others are the other turns, and a
reply to a message further up brings that message in as the turn answered.

Discord's data package (Settings, Data & Privacy, Request all of my Data:
`package.zip`) has `messages/index.json` (channel id to a name such as
`Direct Message with bob#1234`), and a folder a channel, `messages/c<ID>/`
(older packages: `messages/<ID>/`) with `channel.json` and `messages.json`
(older: `messages.csv`) of the fields `ID`, `Timestamp`, `Contents`,
`Attachments`. It holds only one's own messages: nothing said to one is in
it, so each burst of messages (a few minutes apart) is a post of one turn,
with no conversation around it. Mentions are raw there (`<@123>`); they are
written `@name` where the package names the person, else `@someone`.

Direct and group messages are pseudonymized by default (see
`launch.import_archive`); system messages (joins, pins, calls) and
messages of only media (an image with no words) are skipped and counted; a
message met twice (one channel exported twice) is read once. Since 2023
the package names a DM partner without a discriminator as `sora_k#0`; a
deleted one as "Unknown Participant", no one's name. The friends listed in
`account/user.json` (`relationships`) are other people too.
"""

import csv
import hashlib
import io
import re
from typing import Dict, List

from bot.corpus.archives import common
from bot.tumblr import fields

KIND = "discord"
NAME = "a Discord archive"
EXPECTED = ("messages/c<ID>/messages.json (Discord's data package) or a "
            "DiscordChatExporter .json export")

SYSTEM = "system messages"
MEDIA_ONLY = "messages of only media"
TWICE = "messages met twice"
# What the package calls a DM partner it no longer knows: no one's name.
UNKNOWN = "Unknown Participant"
BURST_SECONDS = 5 * 60
_DIRECT_CHANNELS = ("DirectTextChat", "DirectGroupTextChat", 1, 3, "DM",
                    "GROUP_DM")
_MESSAGE_TYPES = ("Default", "Reply", 0, 19)
_USER_MENTION = re.compile(r"<@!?(\d+)>")
_CHANNEL_MENTION = re.compile(r"<#(\d+)>")
_ROLE_MENTION = re.compile(r"<@&(\d+)>")
_EMOJI = re.compile(r"<a?:(\w+):\d+>")
_DM_NAME = re.compile(r"^Direct Message with (.+?)(?:#(\d{1,4}))?$")


def _content_blocks(content: str, names: Dict[str, str],
                    attachments: List[str]) -> list:
  content = _USER_MENTION.sub(
      lambda m: "@" + names.get(m.group(1), "someone"), content)
  content = _ROLE_MENTION.sub("@role", content)
  content = _CHANNEL_MENTION.sub("#channel", content)
  content = _EMOJI.sub(r":\1:", content)
  blocks = common.plain_blocks(content)
  return blocks + [common.media_block(common.media_kind(a))
                   for a in attachments]


def _message_text(blocks: list, result: common.Result) -> str:
  """The message's text; empty (counted) where it is media alone."""
  if common.only_links_or_media(blocks) == common.MEDIA_ONLY:
    result.skipped[MEDIA_ONLY] += 1
    return ""
  return common.text_of(blocks)


def _author_names(author: dict) -> List[str]:
  name = fields.string(author.get("name"))
  names = [name, fields.string(author.get("nickname"))]
  discriminator = fields.string(author.get("discriminator"))
  if name and discriminator and discriminator != "0000":
    names.append(f"{name}#{discriminator}")
  return [n for n in names if n]


def _exporter(exports: List[dict], options: common.Options,
              result: common.Result):
  """One channel, from every export of it (a channel exported twice, or
  in parts, is one conversation; a message in two of them is read once)."""
  channel = exports[0]["channel"]
  direct = channel.get("type") in _DIRECT_CHANNELS
  names: Dict[str, str] = {}
  raw, seen = [], set()
  for message in (m for e in exports for m in fields.dicts(e["messages"])):
    message_id = fields.string(message.get("id"))
    if message_id and message_id in seen:
      result.skipped[TWICE] += 1
      continue
    seen.add(message_id)
    author = message.get("author") if isinstance(message.get("author"),
                                                 dict) else {}
    author_id = fields.string(author.get("id"))
    for person in fields.dicts(message.get("mentions")) + [author]:
      person_id = fields.string(person.get("id"))
      person_names = _author_names(person)
      if person_id and person_names:
        names.setdefault(person_id, person_names[0])
        if not options.is_me(person_id):
          common.record_people(result, KIND, [(person_id, person_names)],
                               options)
    if options.is_me(author_id, *_author_names(author)):
      result.own_names.update(_author_names(author))
    if message.get("type", "Default") not in _MESSAGE_TYPES:
      result.skipped[SYSTEM] += 1
      continue
    raw.append((message, author, author_id))
  messages = []
  for message, author, author_id in raw:
    author_names = _author_names(author)
    display = fields.string(author.get("nickname")) or (
        author_names[0] if author_names else "unknown")
    reference = message.get("reference") if isinstance(
        message.get("reference"), dict) else {}
    attachments = [fields.string(a.get("fileName") or a.get("url"))
                   for a in fields.dicts(message.get("attachments"))]
    stickers = [fields.string(a.get("name")) or "sticker"
                for a in fields.dicts(message.get("stickers"))]
    blocks = _content_blocks(fields.string(message.get("content")), names,
                             attachments)
    blocks += [common.media_block("image", s) for s in stickers]
    text = _message_text(blocks, result)
    if not text:
      continue
    messages.append(common.Message(
        author=display,
        text=text,
        timestamp=common.iso_timestamp(message.get("timestamp")),
        own=options.is_me(author_id, *author_names, also=result.own_names),
        id=fields.string(message.get("id")) or None,
        reply_to=fields.string(reference.get("messageId")) or None))
  common.conversation_threads(messages, options, f"{KIND}-{channel['id']}",
                              result, direct=direct)


def _package_rows(archive: common.Archive, name: str) -> List[dict]:
  if name.lower().endswith(".csv"):
    return list(csv.DictReader(io.StringIO(archive.read_text(name))))
  rows = archive.read_json(name)
  if not isinstance(rows, list):
    raise common.malformed(archive, name, "a list of messages", NAME, KIND)
  return fields.dicts(rows)


def _package(archive: common.Archive, files: List[str],
             options: common.Options, result: common.Result):
  index_file = archive.first("messages/index.json")
  index = archive.read_json(index_file) if index_file else {}
  index = index if isinstance(index, dict) else {}
  user_file = archive.first("account/user.json")
  user = archive.read_json(user_file) if user_file else {}
  user = user if isinstance(user, dict) else {}
  for key in ("username", "global_name"):
    if fields.string(user.get(key)).strip():
      result.own_names.add(user[key].strip())
  for relationship in fields.dicts(user.get("relationships")):
    friend = relationship.get("user") if isinstance(
        relationship.get("user"), dict) else {}
    handle = fields.string(friend.get("username"))
    if fields.string(friend.get("id")) and handle:
      common.record_people(result, KIND, [(friend["id"], (
          handle, fields.string(friend.get("global_name"))))], options)
  for name in files:
    folder = name.rsplit("/", 1)[0]
    channel_id = folder.rsplit("/", 1)[-1].lstrip("cC")
    channel_file = archive.first(f"{folder}/channel.json")
    channel = archive.read_json(channel_file) if channel_file else {}
    if not isinstance(channel, dict) or not isinstance(
        channel.get("recipients", []), (list, type(None))):
      raise common.malformed(archive, channel_file,
                             "a channel.json (an object whose recipients "
                             "are a list)", NAME, KIND)
    direct = channel.get("type") in _DIRECT_CHANNELS
    names: Dict[str, str] = {}
    title = index.get(channel_id) or index.get(f"c{channel_id}")
    match = _DM_NAME.match(fields.string(title))
    recipients = [r for r in (channel.get("recipients") or [])
                  if isinstance(r, str)]
    if match and match.group(1) == UNKNOWN:
      direct = True
    elif match:
      direct = True
      other = match.group(1)
      handles = [other] + ([f"{other}#{match.group(2)}"]
                           if match.group(2) else [])
      others = [r for r in recipients if r != fields.string(user.get("id"))]
      identity = others[0] if len(others) == 1 else f"dm:{other.lower()}"
      common.record_people(result, KIND, [(identity, handles)], options)
      if len(others) == 1:
        names[others[0]] = other
    bursts: List[List[common.Message]] = []
    rows = sorted(_package_rows(archive, name),
                  key=lambda r: common.iso_timestamp(r.get("Timestamp")) or 0)
    seen = set()
    for row in rows:
      if str(row.get("ID", "")) in seen:
        result.skipped[TWICE] += 1
        continue
      seen.add(str(row.get("ID", "")))
      attachments = fields.string(row.get("Attachments")).split()
      text = _message_text(_content_blocks(
          fields.string(row.get("Contents")), names, attachments), result)
      if not common.has_text(text):
        continue
      message = common.Message(options.me, text,
                               common.iso_timestamp(row.get("Timestamp")),
                               True, str(row.get("ID", "")))
      previous = bursts[-1][-1] if bursts else None
      if (previous is not None and message.timestamp is not None
          and previous.timestamp is not None
          and message.timestamp - previous.timestamp <= BURST_SECONDS):
        bursts[-1].append(message)
      else:
        bursts.append([message])
    for burst in bursts:
      result.threads.append(common.single_post(
          options, common.join_texts(m.text for m in burst),
          burst[-1].timestamp, f"{KIND}-{channel_id}-{burst[0].id}",
          direct=direct))


def read(archive: common.Archive, options: common.Options) -> common.Result:
  result = common.Result()
  package = (archive.glob("messages/*/messages.json")
             or archive.glob("messages/*/messages.csv"))
  if package:
    _package(archive, package, options, result)
    return result
  channels: Dict[str, List[dict]] = {}
  for name in archive.names:
    if not name.lower().endswith(".json"):
      continue
    export = archive.read_json(name)
    if (isinstance(export, dict) and isinstance(export.get("messages"), list)
        and isinstance(export.get("channel"), dict)):
      channel_id = fields.string(export["channel"].get("id")) or (
          hashlib.sha1(name.encode("utf-8")).hexdigest()[:12])
      export["channel"]["id"] = channel_id
      channels.setdefault(channel_id, []).append(export)
  if not channels:
    raise common.missing(archive, EXPECTED, NAME, KIND)
  for exports in channels.values():
    _exporter(exports, options, result)
  return result
