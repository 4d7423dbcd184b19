"""Facebook's Download Your Information, in JSON (not HTML).

The zip (`facebook-<name>-YYYY-MM-DD-<hash>.zip`) keeps, in its newer
layout under `your_activity_across_facebook/`, in the older one at its top:

- `posts/your_posts__check_ins__photos_and_videos_1.json` (older:
  `posts/your_posts_1.json`): a list of `{"timestamp": 1600000000,
  "data": [{"post": "the text"}], "attachments": [{"data": [{"media":
  {"uri": "photos/..."}}, {"external_context": {"url": ...}}]}],
  "tags": [{"name": "a friend"}], "title": "..."}`;
- `comments_and_reactions/comments.json` (older: `comments/comments.json`):
  `{"comments_v2": [{"timestamp": ..., "data": [{"comment": {"comment":
  "the text", "author": "Your Name"}}], "title": "Your Name commented on
  Bob's post."}]}`;
- `messages/inbox/<name>_<id>/message_1.json` (and `message_2.json`, ...):
  `{"participants": [{"name": ...}], "messages": [{"sender_name": ...,
  "timestamp_ms": ..., "content": ..., "photos": [...], "reactions":
  [{"reaction": "😢", "actor": ..., "timestamp": ...}]}]}`, newest first;
- the friends lists, `connections/friends/your_friends.json` (older:
  `friends_and_followers/friends.json`, `friends/friends.json`) and beside
  them the removed friends and the friend requests sent, received and
  rejected: `{"friends_v2": [{"name": ..., "timestamp": ...}]}` (older:
  `"friends"`; `"deleted_friends_v2"`, `"sent_requests_v2"`,
  `"received_requests_v2"`, ...). Only names: every one of them is
  pseudonymized wherever the text names them, even a friend who never wrote
  (the suggestions, `people_you_may_know.json`, are strangers: not read).

Every string is mojibake: UTF-8 bytes written one `\\u00XX` escape each
(`\\u00c3\\u00a9` for é); it is mended (`common.fix_mojibake`). Posts are
one's own; a comment is one's post alone (what it answers is not in the
download; counted); a conversation of the inbox becomes threads
(`common.conversation_threads`), `--me` being one's name as Facebook writes
it, and is pseudonymized by default. Messages Facebook writes itself
(calls, "X left the group", unsent messages) are skipped, and so are its
notices written as messages. A reaction notice is known by its
structure, in any language: the reactor's own message holding the emoji,
sent the second its reaction on another message is stamped
(`"reactions": [{"actor", "reaction", "timestamp"}]`); without that stamp
(older exports) by its English wording ("Reacted 😢 to your message",
"Andrew reacted 😢 to your message", "Liked a message"). An attachment it
did not keep is known by its wording in English ("You sent an
attachment.") and German ("Hans hat einen Anhang gesendet."), the forms
found in real exports (tests/data/platform_exports.md says where). A post
of only a shared link, or only photos, says nothing of one's own: skipped
and counted.
"""

import hashlib
import re
from typing import Dict, List, Set, Tuple

from bot.corpus.archives import common
from bot.tumblr import fields

KIND = "facebook"
NAME = "a Facebook download (Download Your Information, JSON)"
EXPECTED = ("posts/your_posts_1.json, comments/comments.json or "
            "messages/inbox/*/message_1.json")

NO_PARENT = "comments whose post is not in the archive"
SYSTEM = "messages Facebook wrote (calls, joins, unsent)"
REACTION = "reaction notices"
ATTACHMENT = "attachment notices"
# Notices Messenger writes as a message's content (a trailing space and
# all); the name before them is the sender's own, or "You".
_REACTION = re.compile(r"^(?:\S.* )?(?:[Rr]eacted .{1,24} to (?:your|a)|"
                       r"[Ll]iked a) message\s*$")
_ATTACHMENT = re.compile(
    r"^\S.* (?:sent an attachment|hat einen Anhang gesendet)\.\s*$")
# A reaction notice is sent within this many seconds of the reaction's own
# stamp (the same second in real exports: milliseconds cut to seconds).
_REACTION_SECONDS = 1
_POSTS = ("posts/your_posts*.json",)
_COMMENTS = ("comments/comments*.json", "comments_and_reactions/comments*.json")
_MESSAGES = ("messages/inbox/*/message_*.json",
             "messages/archived_threads/*/message_*.json",
             "messages/e2ee_cutover/*/message_*.json")
_FRIENDS = tuple(f"{folder}/{name}.json" for folder in (
    "connections/friends", "friends_and_followers", "friends")
                 for name in ("your_friends", "friends", "removed_friends",
                              "sent_friend_requests",
                              "received_friend_requests",
                              "rejected_friend_requests"))
_SYSTEM_TYPES = ("Call", "Subscribe", "Unsubscribe")
# `Bob commented on Alice's post.`: whose post a comment answers.
_WHOSE = re.compile(r"\b(?:on|to) (.+?)'s? \w+")


def _load(archive: common.Archive, name: str):
  """A file's JSON with its mojibake mended."""
  return common.fix_mojibake(archive.read_json(name))


def _attachment_blocks(attachments) -> list:
  """Placeholders for a post's photos and videos, its shared links as
  links."""
  blocks = []
  for attachment in fields.dicts(attachments):
    for data in fields.dicts(attachment.get("data")):
      media = data.get("media") if isinstance(data.get("media"), dict) else {}
      if media:
        blocks.append(common.media_block(common.media_kind(
            fields.string(media.get("uri")))))
      context = data.get("external_context") if isinstance(
          data.get("external_context"), dict) else {}
      if fields.string(context.get("url")):
        blocks += common.plain_blocks(context["url"])
  return blocks


def _posts(archive: common.Archive, names: List[str],
           options: common.Options, result: common.Result):
  for name in names:
    items = _load(archive, name)
    if isinstance(items, dict):  # some years wrap the list
      items = next((v for v in items.values() if isinstance(v, list)), [])
    if not isinstance(items, list):
      raise common.malformed(archive, name, "a list of posts", NAME, KIND)
    for number, item in enumerate(fields.dicts(items)):
      for tag in fields.dicts(item.get("tags")):
        name_tagged = fields.string(tag.get("name"))
        common.record_people(result, KIND,
                             [(name_tagged.lower(), (name_tagged,))], options)
      texts = [fields.string(d.get("post")) for d in fields.dicts(
          item.get("data")) if fields.string(d.get("post")).strip()]
      blocks = common.plain_blocks("\n\n".join(texts))
      blocks += [b for b in _attachment_blocks(item.get("attachments"))
                 if b.text not in "\n".join(texts)]  # a link shown once
      nothing_of_its_own = common.only_links_or_media(blocks)
      if nothing_of_its_own:
        result.skipped[nothing_of_its_own] += 1
        continue
      text = common.text_of(blocks)
      if not common.has_text(text):
        result.skipped[common.NO_TEXT] += 1
        continue
      when = fields.timestamp(item.get("timestamp"))
      result.threads.append(common.single_post(
          options, text, when, f"{KIND}-post-{when}-{number}"))


def _comments(archive: common.Archive, names: List[str],
              options: common.Options, result: common.Result):
  for name in names:
    data = _load(archive, name)
    items = (data.get("comments_v2") or data.get("comments")
             if isinstance(data, dict) else data)
    if not isinstance(items, list):
      raise common.malformed(archive, name, "a comments_v2 list", NAME, KIND)
    for number, item in enumerate(fields.dicts(items)):
      whose = _WHOSE.search(fields.string(item.get("title")))
      if whose:
        common.record_people(result, KIND, [(whose.group(1).lower(),
                                             (whose.group(1),))], options)
      for entry in fields.dicts(item.get("data")):
        comment = entry.get("comment") if isinstance(
            entry.get("comment"), dict) else {}
        text = common.text_of(
            common.plain_blocks(fields.string(comment.get("comment")))
            + _attachment_blocks(item.get("attachments")))
        if not common.has_text(text):
          result.skipped[common.NO_TEXT] += 1
          continue
        when = fields.timestamp(comment.get("timestamp") or item.get(
            "timestamp"))
        result.notes[NO_PARENT] += 1
        result.threads.append(common.single_post(
            options, text, when, f"{KIND}-comment-{when}-{number}"))


def _message_text(message: dict) -> str:
  blocks = common.plain_blocks(fields.string(message.get("content")))
  for key, kind in (("photos", "image"), ("gifs", "image"),
                    ("videos", "video"), ("audio_files", "audio"),
                    ("files", "embed")):
    blocks += [common.media_block(kind)
               for _ in fields.dicts(message.get(key))]
  if isinstance(message.get("sticker"), dict):
    blocks.append(common.media_block("image", "sticker"))
  share = message.get("share") if isinstance(message.get("share"),
                                             dict) else {}
  if fields.string(share.get("link")) and share["link"] not in fields.string(
      message.get("content")):
    blocks += common.plain_blocks(share["link"])
  return common.text_of(blocks)


def _reactions(messages: List[dict]) -> Set[Tuple[str, str, int]]:
  """(actor, emoji, second) of every stamped reaction in a conversation."""
  out = set()
  for message in messages:
    for reaction in fields.dicts(message.get("reactions")):
      when = fields.integer(reaction.get("timestamp"))
      emoji = fields.string(reaction.get("reaction")).strip()
      if when is not None and emoji:
        out.add((fields.string(reaction.get("actor")), emoji, when))
  return out


def _reaction_notice(message: dict, reactions) -> bool:
  """Whether `message` is the notice of one of its sender's `reactions`:
  it holds the emoji and was sent as the reaction was stamped."""
  content = fields.string(message.get("content"))
  milliseconds = fields.integer(message.get("timestamp_ms"))
  if milliseconds is None or not content:
    return False
  sender = fields.string(message.get("sender_name"))
  return any(actor == sender and emoji in content
             and abs(milliseconds // 1000 - when) <= _REACTION_SECONDS
             for actor, emoji, when in reactions)


def _messages(archive: common.Archive, names: List[str],
              options: common.Options, result: common.Result):
  conversations: Dict[str, List[str]] = {}
  for name in names:
    conversations.setdefault(name.rsplit("/", 1)[0], []).append(name)
  for folder, files in sorted(conversations.items()):
    items = []  # every file's messages, for the reactions they stamp
    for name in sorted(files):
      data = _load(archive, name)
      if not isinstance(data, dict) or not isinstance(
          data.get("messages"), list):
        raise common.malformed(archive, name,
                               "a conversation with a messages list", NAME,
                               KIND)
      for person in fields.dicts(data.get("participants")):
        who = fields.string(person.get("name"))
        common.record_people(result, KIND, [(who.lower(), (who,))], options)
      items += fields.dicts(data["messages"])
    reactions = _reactions(items)
    for actor, _, _ in reactions:
      common.record_people(result, KIND, [(actor.lower(), (actor,))], options)
    messages = []
    for message in items:
      if (message.get("type") in _SYSTEM_TYPES or message.get("is_unsent")
          or message.get("is_geoblocked_for_viewer")):
        result.skipped[SYSTEM] += 1
        continue
      content = fields.string(message.get("content"))
      notice = (REACTION if _reaction_notice(message, reactions)
                or _REACTION.match(content) else
                ATTACHMENT if _ATTACHMENT.match(content) else None)
      if notice:
        result.skipped[notice] += 1
        continue
      sender = fields.string(message.get("sender_name")) or "unknown"
      common.record_people(result, KIND, [(sender.lower(), (sender,))],
                           options)
      milliseconds = fields.integer(message.get("timestamp_ms"))
      messages.append(common.Message(
          sender, _message_text(message),
          milliseconds // 1000 if milliseconds is not None else None,
          options.is_me(sender)))
    # The folder's name is the friend's: the post ids carry a hash of it.
    digest = hashlib.sha256(folder.encode("utf-8")).hexdigest()[:12]
    common.conversation_threads(messages, options, f"{KIND}-messages-{digest}",
                                result, direct=True)


def _friends(archive: common.Archive, names: List[str],
             options: common.Options, result: common.Result):
  """Every name in the friends lists, as people to pseudonymize."""
  for name in names:
    data = _load(archive, name)
    if not isinstance(data, dict):
      raise common.malformed(archive, name, 'a friends list ({"friends_v2": '
                             "[...]})", NAME, KIND)
    for entries in data.values():
      for entry in fields.dicts(entries if isinstance(entries, list) else []):
        who = " ".join(fields.string(entry.get("name")).split())
        if who:
          common.record_people(result, KIND, [(who.lower(), (who,))],
                               options)


def read(archive: common.Archive, options: common.Options) -> common.Result:
  result = common.Result()
  posts = [n for p in _POSTS for n in archive.glob(p)]
  comments = [n for p in _COMMENTS for n in archive.glob(p)]
  messages = [n for p in _MESSAGES for n in archive.glob(p)]
  friends = sorted({n for p in _FRIENDS for n in archive.glob(p)})
  if not (posts or comments or messages):
    in_html = (archive.glob("posts/your_posts*.html")
               + archive.glob("messages/inbox/*/message_*.html"))
    if in_html:
      raise common.malformed(
          archive, in_html[0],
          "JSON (this download is in HTML: ask Facebook for Format: JSON)",
          NAME, KIND)
    raise common.missing(archive, EXPECTED, NAME, KIND)
  _posts(archive, sorted(posts), options, result)
  _comments(archive, sorted(comments), options, result)
  _messages(archive, sorted(messages), options, result)
  _friends(archive, friends, options, result)
  return result
