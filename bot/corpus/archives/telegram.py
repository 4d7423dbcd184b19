"""Telegram: Telegram Desktop's "Export chat history" (or Settings,
Advanced, "Export Telegram data"), format JSON.

Both write one `result.json` (in a folder `ChatExport_<date>/` or
`DataExport_<date>/`, beside the media folders). A single chat's export
is the chat itself:

    {"name": "Bob Smith", "type": "personal_chat", "id": 123456,
     "messages": [{"id": 1, "type": "message",
       "date": "2021-09-20T11:29:43", "date_unixtime": "1632137383",
       "from": "Bob Smith", "from_id": "user123456",
       "reply_to_message_id": 41,
       "text": "hi" or ["hi ", {"type": "bold", "text": "you"}],
       "text_entities": [...]},
      {"id": 2, "type": "service", "actor": ..., "action": "pin_message"}]}

The full account's export wraps the chats in
`{"personal_information": {"user_id": ..., "first_name": ...,
"last_name": ..., "username": "@me"}, "contacts": {"list": [...]},
"frequent_contacts": {"list": [...]}, "chats": {"list": [chat, ...]},
"left_chats": {"list": [...]}}`.

`text` is one string where the message has no formatting, else a list of
plain strings and entity objects (`mention`, `mention_name` with its
`user_id`, `hashtag`, `link`, `text_link` with its `href`, `bold`, ...).
Every chat holds everyone's messages, so it becomes conversation threads
(`common.conversation_threads`); a reply (`reply_to_message_id`) to a
message further up brings that message in as the turn answered. The owner
is `--me` (a name as `from` writes it, or a `from_id`), and the full
export's `personal_information` names the owner too. Service messages
(joins, pins, calls) and messages of only media are skipped and counted.
Chats other than public groups and channels are private: pseudonymized by
default.
"""

import html
from typing import List, Optional, Tuple

from bot.corpus.archives import common
from bot.tumblr import fields, html_subset

KIND = "telegram"
NAME = "a Telegram export (Telegram Desktop, JSON)"
EXPECTED = "result.json (Telegram Desktop's chat export, format JSON)"

SERVICE = "service messages (joins, pins, calls)"
MEDIA_ONLY = "messages of only media"
_PUBLIC = ("public_supergroup", "public_channel")
# Entities shown with their formatting; the rest are their text.
_FORMATS = {"bold": "b", "italic": "i"}
_MEDIA_TYPES = {"sticker": "image", "animation": "video", "video_file": "video",
                "video_message": "video", "voice_message": "audio",
                "audio_file": "audio"}


def _markup(text) -> Tuple[str, List[Tuple[str, str, dict]]]:
  """(HTML of a message's `text`, the [(type, text, entity)] of its
  entities)."""
  parts = text if isinstance(text, list) else [text]
  out, entities = [], []
  for part in parts:
    if isinstance(part, str):
      out.append(html.escape(part, quote=False))
      continue
    if not isinstance(part, dict):
      continue
    kind, shown = fields.string(part.get("type")), fields.string(
        part.get("text"))
    entities.append((kind, shown, part))
    escaped = html.escape(shown, quote=False)
    href = html_subset.safe_url(part.get("href"))
    if kind == "text_link" and href:
      out.append(f'<a href="{html.escape(href)}">{escaped}</a>')
    elif kind in _FORMATS:
      out.append(f"<{_FORMATS[kind]}>{escaped}</{_FORMATS[kind]}>")
    else:
      out.append(escaped)
  body = "".join(out).replace("\r\n", "\n")
  paragraphs = [p.replace("\n", "<br>") for p in body.split("\n\n")]
  return "".join(f"<p>{p}</p>" for p in paragraphs if p.strip()), entities


def _media(message: dict) -> Optional[str]:
  """The placeholder kind of a message's photo or file, None without."""
  if "photo" in message:
    return "image"
  media_type = fields.string(message.get("media_type"))
  if media_type in _MEDIA_TYPES:
    return _MEDIA_TYPES[media_type]
  if "file" in message:
    return common.media_kind(fields.string(message.get("file")),
                             fields.string(message.get("mime_type")))
  return None


def _owner(export: dict, result: common.Result) -> Optional[str]:
  """The owner's `from_id` as the full export names it (their names go to
  `result.own_names`); None in a single chat's export."""
  info = export.get("personal_information")
  if not isinstance(info, dict):
    return None
  first = fields.string(info.get("first_name")).strip()
  last = fields.string(info.get("last_name")).strip()
  username = fields.string(info.get("username")).strip().lstrip("@")
  for name in (" ".join(n for n in (first, last) if n), first, username):
    if name:
      result.own_names.add(name)
  user_id = fields.integer(info.get("user_id"))
  return f"user{user_id}" if user_id is not None else None


def _record_contacts(export: dict, options: common.Options,
                     result: common.Result):
  """The people of the contact lists (a friend list a person would know by
  name)."""
  for key in ("contacts", "frequent_contacts"):
    listed = export.get(key) if isinstance(export.get(key), dict) else {}
    for contact in fields.dicts(listed.get("list")):
      name = " ".join(n for n in (
          fields.string(contact.get("name")),
          fields.string(contact.get("first_name")).strip(),
          fields.string(contact.get("last_name")).strip()) if n)
      user_id = fields.integer(contact.get("user_id")
                               if "user_id" in contact else
                               contact.get("id") if contact.get("type") ==
                               "user" else None)
      identity = f"user{user_id}" if user_id is not None else (
          f"name:{name.lower()}")
      if name:
        common.record_people(result, KIND, [(identity, (name,))], options)


def _chat(chat: dict, owner_id: Optional[str], options: common.Options,
          result: common.Result):
  chat_type = fields.string(chat.get("type"))
  chat_id = fields.integer(chat.get("id"))
  if chat_type == "personal_chat" and chat_id is not None:
    common.record_people(result, KIND, [
        (f"user{chat_id}", (fields.string(chat.get("name")),))], options)

  def mine(name: str, from_id: str) -> bool:
    return bool(owner_id and from_id == owner_id) or options.is_me(
        name, from_id, from_id[4:] if from_id.startswith("user") else "",
        also=result.own_names)

  messages = []
  for message in fields.dicts(chat.get("messages")):
    name = fields.string(message.get("from") or message.get("actor"))
    from_id = fields.string(message.get("from_id")
                            or message.get("actor_id"))
    own = mine(name, from_id)
    if own and name:
      result.own_names.add(name)
    elif from_id and name:
      common.record_people(result, KIND, [(from_id, (name,))], options)
    if message.get("type") != "message":
      for member in message.get("members") or []:
        if isinstance(member, str) and member:
          common.record_people(result, KIND, [
              (f"name:{member.lower()}", (member,))], options)
      result.skipped[SERVICE] += 1
      continue
    markup, entities = _markup(message.get("text"))
    for kind, shown, part in entities:
      if kind == "mention_name" and shown:
        common.record_people(result, KIND, [
            (f"user{fields.integer(part.get('user_id'))}", (shown,))],
                             options)
      elif kind == "mention" and shown.startswith("@"):
        common.record_people(result, KIND, [
            (f"handle:{shown[1:].lower()}", (shown[1:],))], options)
    blocks = common.html_blocks(markup)
    media = _media(message)
    if not blocks:
      result.skipped[MEDIA_ONLY if media else common.NO_TEXT] += 1
      continue
    if media:
      blocks.append(common.media_block(media))
    reply_to = fields.integer(message.get("reply_to_message_id"))
    messages.append(common.Message(
        author=name or "unknown", text=common.text_of(blocks),
        timestamp=(fields.timestamp(message.get("date_unixtime"))
                   or common.iso_timestamp(message.get("date"))),
        own=own, id=str(fields.integer(message.get("id"))),
        reply_to=str(reply_to) if reply_to is not None else None))
  common.conversation_threads(
      messages, options, f"{KIND}-{chat_id if chat_id is not None else 0}",
      result, direct=chat_type not in _PUBLIC)


def read(archive: common.Archive, options: common.Options) -> common.Result:
  result = common.Result()
  name = archive.first("result.json")
  if name is None:
    raise common.missing(archive, EXPECTED, NAME, KIND)
  export = archive.read_json(name)
  if not isinstance(export, dict):
    raise common.malformed(archive, name, "a chat export (an object)", NAME,
                           KIND)
  if isinstance(export.get("messages"), list):
    chats = [export]
  else:
    chats = [chat for key in ("chats", "left_chats")
             if isinstance(export.get(key), dict)
             for chat in fields.dicts(export[key].get("list"))]
    if not chats and not isinstance(export.get("chats"), dict):
      raise common.malformed(
          archive, name, "a chat export (messages, or chats with a list)",
          NAME, KIND)
  owner_id = _owner(export, result)
  _record_contacts(export, options, result)
  for chat in chats:
    _chat(chat, owner_id, options, result)
  return result
