"""A Mastodon archive (Preferences, Import and export, Request your archive).

The archive (`archive-YYYYMMDDHHMMSS-<hash>.tar.gz`, or its folder) holds
`outbox.json`, an ActivityStreams `OrderedCollection` of what one did, and
`actor.json`, one's own account (`preferredUsername`, `name`), beside
`media_attachments/`:

    {"type": "OrderedCollection", "orderedItems": [
      {"type": "Create", "object": {"type": "Note", "id": "https://...",
        "content": "<p>HTML</p>", "summary": "the content warning",
        "inReplyTo": "https://..." or null, "published": "2023-...Z",
        "tag": [{"type": "Mention", "href": ..., "name": "@bob@example"}],
        "attachment": [{"mediaType": "image/png", "name": "alt text"}],
        "to": [...], "cc": [...]}},
      {"type": "Announce", "object": "https://..."}]}

Read: boosts (`Announce`) are skipped; a content warning is kept as such, the
first paragraph `CW: ...` above the text; one's replies to oneself are one
post; a reply to someone else is one's post alone (the archive has only
one's own statuses; counted), its leading `@mentions` dropped; mentions and
hashtags are plain `@name` / `#tag`, attachments `[image: alt text]`. The
hashtags (`tag` entries of type `Hashtag`) are the post's tags too. A poll
is a `Question` whose `oneOf` (or `anyOf`, several answers) lists the
options, `{"type": "Note", "name": "the option"}`: they follow its text as
a list. A status addressed to no public and no followers is a direct
message.
"""

from typing import List

from bot.corpus.archives import common
from bot.tumblr import fields, html_subset
from bot.tumblr.html_subset import Block

KIND = "mastodon"
NAME = "a Mastodon archive"
EXPECTED = "outbox.json"

BOOST = "boosts"
NO_PARENT = "replies to others whose status is not in the archive"
PUBLIC = ("https://www.w3.org/ns/activitystreams#Public", "as:Public",
          "Public")


def _addresses(note: dict):
  out = []
  for key in ("to", "cc"):
    value = note.get(key)
    out += [value] if isinstance(value, str) else [
        v for v in (value if isinstance(value, list) else [])
        if isinstance(v, str)]
  return out


def _is_direct(note: dict) -> bool:
  addresses = _addresses(note)
  return bool(addresses) and not any(
      a in PUBLIC or a.endswith("/followers") for a in addresses)


def _note_text(note: dict, is_reply: bool) -> str:
  blocks = common.html_blocks(fields.string(note.get("content")))
  if is_reply:
    blocks = common.strip_leading_mentions(blocks)
  options = fields.dicts(note.get("oneOf")) or fields.dicts(
      note.get("anyOf"))
  blocks += [Block(" ".join(fields.string(o.get("name")).split()),
                   html_subset.UNORDERED) for o in options
             if fields.string(o.get("name")).strip()]
  for attachment in fields.dicts(note.get("attachment")):
    blocks.append(common.media_block(
        common.media_kind(fields.string(attachment.get("url")),
                          fields.string(attachment.get("mediaType"))),
        fields.string(attachment.get("name"))))
  warning = " ".join(fields.string(note.get("summary")).split())
  if warning:
    blocks = common.plain_blocks(f"CW: {warning}") + blocks
  return common.text_of(blocks)


def _hashtags(note: dict) -> List[str]:
  return [fields.string(t.get("name")).lstrip("#").strip()
          for t in fields.dicts(note.get("tag"))
          if t.get("type") == "Hashtag"
          and fields.string(t.get("name")).lstrip("#").strip()]


def read(archive: common.Archive, options: common.Options) -> common.Result:
  result = common.Result()
  name = archive.first("outbox.json")
  if name is None:
    raise common.missing(archive, EXPECTED, NAME, KIND)
  outbox = archive.read_json(name)
  if not isinstance(outbox, dict) or not isinstance(
      outbox.get("orderedItems"), list):
    raise common.malformed(archive, name,
                           "an ActivityStreams collection with orderedItems",
                           NAME, KIND)
  actor_file = archive.first("actor.json")
  actor = archive.read_json(actor_file) if actor_file else {}
  if isinstance(actor, dict):
    for key in ("preferredUsername", "name"):
      if fields.string(actor.get(key)).strip():
        result.own_names.add(actor[key].strip())
  notes = []
  for activity in fields.dicts(outbox["orderedItems"]):
    if activity.get("type") == "Announce":
      result.skipped[BOOST] += 1
      continue
    note = activity.get("object")
    if activity.get("type") != "Create" or not isinstance(note, dict):
      continue
    if not fields.string(note.get("id")):
      continue
    notes.append(note)
    for tag in fields.dicts(note.get("tag")):
      if tag.get("type") != "Mention":
        continue
      handle = fields.string(tag.get("name")).lstrip("@")
      user = handle.split("@")[0]
      if options.is_me(user, handle, also=result.own_names):
        continue
      common.record_people(
          result, KIND,
          [(fields.string(tag.get("href")) or handle, (handle, user))],
          options)
  notes.sort(key=lambda n: common.iso_timestamp(n.get("published")) or 0)
  by_id = {n["id"]: n for n in notes}
  groups = common.own_self_threads(
      [(n["id"], fields.string(n.get("inReplyTo")) or None) for n in notes])
  for group in groups:
    root = by_id[group[0]]
    replies_to_other = bool(fields.string(root.get("inReplyTo")))
    text = common.join_texts(
        _note_text(by_id[i], replies_to_other or i != group[0])
        for i in group)
    if not text:
      result.skipped[common.NO_TEXT] += 1
      continue
    if replies_to_other:
      result.notes[NO_PARENT] += 1
    tags = dict.fromkeys(t for i in group for t in _hashtags(by_id[i]))
    result.threads.append(common.single_post(
        options, text,
        common.iso_timestamp(by_id[group[-1]].get("published")),
        f"{KIND}-{group[0].rstrip('/').rsplit('/', 1)[-1]}", list(tags),
        direct=any(_is_direct(by_id[i]) for i in group)))
  return result
