"""Platform archives to posts JSONL to training documents, turn by turn.

Each archive is written here as the platform lays it out (file names,
nesting, field names), as a zip and as its unpacked folder, with one quirk
each: a Tumblr reblog trail, a WordPress comment reply, an X/Twitter
self-thread, a Mastodon content warning, a Discord reply to someone else,
Facebook's escaped UTF-8. The expected documents are written by hand from
the text format's rules.
"""

import io
import json
import os
import re
import stat
import subprocess
import sys
import tarfile
import zipfile

import pytest

from bot.corpus import archives, documents, pseudonyms
from bot.corpus.archives import common
from bot.corpus.archives.report import html as report_page
from gpt2.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- helpers ----------------------------------------------------------------


def write_archive(root, files, zipped=True):
  """The archive as the platform hands it out: a zip (`zipped` True), its
  unpacked folder (False), a zip whose files sit in one folder ("nested")
  or a tar.gz ("tar.gz", Mastodon's)."""
  if zipped == "tar.gz":
    path = root / "archive.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
      for name, data in files.items():
        data = data if isinstance(data, bytes) else data.encode()
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return str(path)
  if zipped:
    path = root / "archive.zip"
    prefix = "download-2024-01-02/" if zipped == "nested" else ""
    with zipfile.ZipFile(path, "w") as z:
      for name, data in files.items():
        z.writestr(prefix + name, data)
    return str(path)
  folder = root / "archive"
  for name, data in files.items():
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
  return str(folder)


def imported_texts(kind, path, me, pseudonymize=False, key=None):
  """(the documents' texts, the posts as their JSONL lines read back, the
  report) of importing the archive at `path` as `kind`, every thread kept
  (the corpus's share rule off)."""
  posts, report = archives.import_archive(
      kind, path, common.Options(me), pseudonymize, key)
  posts = [json.loads(json.dumps(p, ensure_ascii=False)) for p in posts]
  return [d.text for d in documents.documents(posts, min_own_fraction=0.0)], \
      posts, report


def import_docs(tmp_path, kind, files, me, zipped=True, pseudonymize=None,
                **options):
  """(documents' texts, posts, report) of an archive, through JSON lines
  and `bot.corpus.documents` as launch.prepare_corpus reads them."""
  path = write_archive(tmp_path, files, zipped)
  posts, report = archives.import_archive(
      kind, path, common.Options(me, **options), pseudonymize,
      str(tmp_path / "posts.jsonl.pseudonym-key"))
  lines = [json.dumps(p, ensure_ascii=False) for p in posts]
  posts = [json.loads(line) for line in lines]
  stats = documents.CorpusStats()
  texts = [d.text for d in documents.documents(
      posts, stats=stats,
      min_own_fraction=options.get("min_own_fraction"))]
  assert stats.kept == len(posts), stats.dropped  # nothing the corpus drops
  return texts, posts, report


def turns(document):
  """[(author, kind, text)] of a document in the text format."""
  parts = re.split(r"(?m)^#\d+ (\S+(?: \S+)*?) (posted|commented|asked|"
                   r"responded):\n\n", document)
  out = []
  for author, kind, text in zip(parts[1::3], parts[2::3], parts[3::3]):
    text = re.sub(r"^(?:Written [^\n]* \| )?[^\n]*'s tags:[^\n]*\n\n", "",
                  text.strip("\n"), count=1)
    out.append((author, kind, text))
  return out


def ytd(name, items):
  return f"window.YTD.{name}.part0 = " + json.dumps(items, indent=2)


# ---- X/Twitter --------------------------------------------------------------

TWITTER_OTHERS = ("bob_the_builder", "Bob Builder", "carol_c", "Carol Crane",
                  "erin_e", "dave_d")


def twitter_files():
  tweets = [
      {"tweet": {
          "id_str": "1001", "created_at": "Wed Oct 10 20:19:24 +0000 2018",
          "full_text": "Long thought, part one: the sea is big &amp; deep "
                       "https://t.co/abc",
          "entities": {"urls": [{"url": "https://t.co/abc",
                                 "expanded_url": "https://example.com/sea"}],
                       "user_mentions": []}, "retweeted": False}},
      {"tweet": {
          "id_str": "1002", "created_at": "Wed Oct 10 20:21:00 +0000 2018",
          "full_text": "@meme_lord part two: and cold.",
          "in_reply_to_status_id_str": "1001",
          "in_reply_to_screen_name": "meme_lord",
          "entities": {"user_mentions": [
              {"screen_name": "meme_lord", "name": "Me Myself",
               "id_str": "100"}]}}},
      {"tweet": {
          "id_str": "1003", "created_at": "Thu Oct 11 09:00:00 +0000 2018",
          "full_text": "@bob_the_builder @carol_c I disagree, dogs are loyal "
                       "and cats plot against us all day long",
          "in_reply_to_status_id_str": "2001",
          "in_reply_to_screen_name": "bob_the_builder",
          "in_reply_to_user_id_str": "200",
          "entities": {"user_mentions": [
              {"screen_name": "bob_the_builder", "name": "Bob Builder",
               "id_str": "200"},
              {"screen_name": "carol_c", "name": "Carol Crane",
               "id_str": "300"}]}}},
      {"tweet": {
          "id_str": "1004", "created_at": "Thu Oct 11 10:00:00 +0000 2018",
          "full_text": "RT @dave_d: something dave said",
          "entities": {"user_mentions": [
              {"screen_name": "dave_d", "name": "Dave D", "id_str": "400"}]}}},
      {"tweet": {
          "id_str": "1005", "created_at": "Fri Oct 12 14:00:00 +0000 2018",
          "full_text": "@erin_e thanks for the photo! https://t.co/pic",
          "in_reply_to_status_id_str": "3001",
          "in_reply_to_screen_name": "erin_e",
          "entities": {"user_mentions": [
              {"screen_name": "erin_e", "name": "Erin E", "id_str": "500"}],
                       "media": [{"url": "https://t.co/pic",
                                  "type": "photo"}]},
          "extended_entities": {"media": [{"url": "https://t.co/pic",
                                           "type": "photo"}]}}},
  ]
  return {
      "data/account.js": ytd("account", [{"account": {
          "username": "meme_lord", "accountId": "100",
          "accountDisplayName": "Me Myself"}}]),
      "data/tweets.js": ytd("tweets", tweets),
      "data/like.js": ytd("like", [{"like": {
          "tweetId": "2001", "fullText": "cats are better than dogs, fight "
                                         "me @carol_c",
          "expandedUrl": "https://twitter.com/i/web/status/2001"}}]),
      "Your archive.html": "<html>the archive's own viewer</html>",
  }


@pytest.mark.parametrize("zipped", [True, False, "nested"])
def test_twitter_self_thread_is_one_post_and_a_reply_sits_under_its_parent(
    tmp_path, zipped):
  docs, posts, report = import_docs(tmp_path, "twitter", twitter_files(),
                                    "meme_lord", zipped)
  assert docs[0] == (
      "#1 meme_lord posted:\n\n"
      "Written 8 PM October 2018 | meme_lord's tags:\n\n"
      "Long thought, part one: the sea is big & deep "
      '<a href="https://example.com/sea">https://example.com/sea</a>\n\n'
      "part two: and cold.")
  assert turns(docs[1]) == [
      ("bob_the_builder", "posted",
       "cats are better than dogs, fight me @carol_c"),
      ("meme_lord", "commented",
       "I disagree, dogs are loyal and cats plot against us all day long")]
  assert docs[1].startswith(
      " Conversation between bob_the_builder and meme_lord | 2 posts |\n")
  # No parent text in the archive: one's own words alone, the photo a
  # placeholder, the t.co address gone.
  assert turns(docs[2]) == [("meme_lord", "posted",
                             "thanks for the photo!\n\n[image]")]
  assert len(docs) == 3 and len(posts) == 3
  assert report["skipped"] == {"retweets": 1}
  assert report["kept_alone"] == {
      "replies whose parent tweet is not in the archive": 1}
  assert report["pseudonymized"] is False  # no direct messages: names kept


# ---- Mastodon ---------------------------------------------------------------

MASTODON_OTHERS = ("bob@other.example", "dana@third.example", "dana")
PUBLIC = "https://www.w3.org/ns/activitystreams#Public"


def mastodon_files():
  me = "https://example.social/users/tootsie"
  notes = [
      {"type": "Create", "actor": me, "object": {
          "type": "Note", "id": f"{me}/statuses/1",
          "published": "2023-04-05T18:07:08Z", "summary": "finale spoilers",
          "sensitive": True, "inReplyTo": None, "to": [PUBLIC],
          "cc": [f"{me}/followers"],
          "content": "<p>Spoilers for the finale below, you have been "
                     "warned</p><p>the butler did it <a href=\"https://"
                     "example.social/tags/mystery\" class=\"mention hashtag\""
                     " rel=\"tag\">#<span>mystery</span></a></p>",
          "tag": [{"type": "Hashtag", "name": "#mystery"}],
          "attachment": [{"type": "Document", "mediaType": "image/png",
                          "url": "/media_attachments/files/1/original/a.png",
                          "name": "a butler with a candlestick"}]}},
      {"type": "Announce", "actor": me,
       "object": "https://other.example/users/bob/statuses/5"},
      {"type": "Create", "actor": me, "object": {
          "type": "Note", "id": f"{me}/statuses/2",
          "published": "2023-04-05T18:30:00Z", "summary": None,
          "inReplyTo": f"{me}/statuses/1", "to": [PUBLIC],
          "content": "<p>more on that later</p>"}},
      {"type": "Create", "actor": me, "object": {
          "type": "Note", "id": f"{me}/statuses/3",
          "published": "2023-04-06T09:00:00Z", "summary": "",
          "inReplyTo": "https://other.example/users/bob/statuses/9",
          "to": [PUBLIC],
          "content": "<p><span class=\"h-card\"><a href=\"https://other."
                     "example/@bob\" class=\"u-url mention\">@<span>bob"
                     "</span></a></span> I agree with you, entirely, and so "
                     "does <span class=\"h-card\"><a href=\"https://third."
                     "example/@dana\" class=\"u-url mention\">@<span>dana"
                     "</span></a></span></p>",
          "tag": [{"type": "Mention", "href": "https://other.example/users/"
                   "bob", "name": "@bob@other.example"},
                  {"type": "Mention", "href": "https://third.example/users/"
                   "dana", "name": "@dana@third.example"}]}},
  ]
  return {
      "outbox.json": json.dumps({
          "@context": "https://www.w3.org/ns/activitystreams",
          "id": "outbox.json", "type": "OrderedCollection",
          "totalItems": len(notes), "orderedItems": notes}),
      "actor.json": json.dumps({"type": "Person", "id": me,
                                "preferredUsername": "tootsie",
                                "name": "Tootsie"}),
      "likes.json": json.dumps({"type": "OrderedCollection",
                                "orderedItems": []}),
      "media_attachments/files/1/original/a.png": b"\x89PNG",
  }


@pytest.mark.parametrize("zipped", ["tar.gz", False])
def test_mastodon_content_warning_kept_and_boosts_skipped(tmp_path, zipped):
  docs, _, report = import_docs(tmp_path, "mastodon", mastodon_files(),
                                "tootsie", zipped)
  assert docs[0] == (
      "#1 tootsie posted:\n\n"
      "Written 6 PM April 2023 | tootsie's tags: #mystery\n\n"
      "CW: finale spoilers\n\n"
      "Spoilers for the finale below, you have been warned\n\n"
      "the butler did it #mystery\n\n"
      "[image: a butler with a candlestick]\n\n"
      "more on that later")
  # A reply to someone else: its leading @mention (the addressing) dropped.
  assert turns(docs[1]) == [
      ("tootsie", "posted",
       "I agree with you, entirely, and so does @dana")]
  assert len(docs) == 2
  assert report["skipped"] == {"boosts": 1}


# ---- WordPress --------------------------------------------------------------

WORDPRESS_OTHERS = ("Bob Smith", "Carol Jones", "Spammy McSpam")
BOB_ASKS = "Great post! But what about the third paragraph?"
I_ANSWER = "It is covered next week, Bob, with a longer answer than this."


def wordpress_files():
  def comment(cid, author, content, parent, approved="1", user_id="0",
              date="2020-01-03 10:00:00"):
    return f"""
    <wp:comment>
      <wp:comment_id>{cid}</wp:comment_id>
      <wp:comment_author><![CDATA[{author}]]></wp:comment_author>
      <wp:comment_date>{date}</wp:comment_date>
      <wp:comment_date_gmt>{date}</wp:comment_date_gmt>
      <wp:comment_content><![CDATA[{content}]]></wp:comment_content>
      <wp:comment_approved><![CDATA[{approved}]]></wp:comment_approved>
      <wp:comment_type><![CDATA[comment]]></wp:comment_type>
      <wp:comment_parent>{parent}</wp:comment_parent>
      <wp:comment_user_id>{user_id}</wp:comment_user_id>
    </wp:comment>"""

  xml = f"""<?xml version="1.0" encoding="UTF-8" ?>
<rss version="2.0"
  xmlns:excerpt="http://wordpress.org/export/1.2/excerpt/"
  xmlns:content="http://purl.org/rss/1.0/modules/content/"
  xmlns:wfw="http://wellformedweb.org/CommentAPI/"
  xmlns:dc="http://purl.org/dc/elements/1.1/"
  xmlns:wp="http://wordpress.org/export/1.2/">
<channel>
  <title>My Blog</title>
  <wp:wxr_version>1.2</wp:wxr_version>
  <wp:author><wp:author_id>1</wp:author_id>
    <wp:author_login><![CDATA[mewriter]]></wp:author_login>
    <wp:author_display_name><![CDATA[Me Writer]]></wp:author_display_name>
  </wp:author>
  <item>
    <title>Hello World</title>
    <pubDate>Thu, 02 Jan 2020 03:04:05 +0000</pubDate>
    <dc:creator><![CDATA[mewriter]]></dc:creator>
    <content:encoded><![CDATA[First paragraph.
Second line.

Third paragraph with <em>style</em>.]]></content:encoded>
    <wp:post_id>12</wp:post_id>
    <wp:post_date_gmt>2020-01-02 03:04:05</wp:post_date_gmt>
    <wp:post_type><![CDATA[post]]></wp:post_type>
    <wp:status><![CDATA[publish]]></wp:status>
    <category domain="category" nicename="musings">Musings</category>
    <category domain="post_tag" nicename="life"><![CDATA[life]]></category>
    {comment(31, "Bob Smith", BOB_ASKS, 0)}
    {comment(32, "Me Writer", I_ANSWER, 31, user_id="1",
             date="2020-01-03 11:00:00")}
    {comment(33, "Spammy McSpam", "buy pills", 0, approved="spam")}
    {comment(34, "Carol Jones", "Nice one.", 0)}
  </item>
  <item>
    <title>About</title>
    <dc:creator><![CDATA[mewriter]]></dc:creator>
    <content:encoded><![CDATA[About me.]]></content:encoded>
    <wp:post_id>2</wp:post_id>
    <wp:post_type><![CDATA[page]]></wp:post_type>
    <wp:status><![CDATA[publish]]></wp:status>
  </item>
  <item>
    <title>photo.jpg</title>
    <wp:post_id>3</wp:post_id>
    <wp:post_type><![CDATA[attachment]]></wp:post_type>
    <wp:status><![CDATA[inherit]]></wp:status>
  </item>
</channel>
</rss>
"""
  return {"myblog.wordpress.2024-01-02.000.xml": xml}


@pytest.mark.parametrize("zipped", [True, False])
def test_wordpress_post_and_a_comment_reply_as_a_thread(tmp_path, zipped):
  docs, _, report = import_docs(tmp_path, "wordpress", wordpress_files(),
                                "mewriter", zipped)
  post_text = ("<b>Hello World</b>\n\nFirst paragraph.\nSecond line.\n\n"
               "Third paragraph with <i>style</i>.")
  assert docs[0] == (
      "#1 mewriter posted:\n\n"
      "Written 3 AM January 2020 | mewriter's tags: #Musings, #life\n\n"
      + post_text)
  assert docs[1].startswith(
      " Conversation between mewriter and Bob Smith | 3 posts |\n")
  assert turns(docs[1]) == [
      ("mewriter", "posted", post_text),
      ("Bob Smith", "commented", BOB_ASKS),
      ("mewriter", "commented", I_ANSWER)]
  assert "Written 11 AM January 2020 | mewriter's tags:\n\n" in docs[1]
  # Carol's comment has no answer of mine under it: in no thread.
  assert len(docs) == 2 and not any("Nice one" in d for d in docs)
  assert report["skipped"] == {"attachments and other items": 1, "pages": 1,
                               "comments not approved": 1}


def test_wordpress_bare_xml_file_is_an_archive_too(tmp_path):
  xml = tmp_path / "myblog.WordPress.2024-01-02.xml"
  xml.write_text(wordpress_files()["myblog.wordpress.2024-01-02.000.xml"])
  posts, _ = archives.import_archive("wordpress", str(xml),
                                     common.Options("Me Writer"))
  assert [p["id"] for p in posts] == ["wordpress-12", "wordpress-12-comment-32"]
  assert posts[1]["trail"][1]["blog"]["name"] == "Bob Smith"


# ---- Discord ----------------------------------------------------------------

DISCORD_OTHERS = ("alice_w", "Alice", "bobby99", "carol.k", "Carol K")
ALICE = {"id": "11", "name": "alice_w", "discriminator": "0000",
         "nickname": "Alice", "isBot": False}
BOBBY = {"id": "22", "name": "bobby99", "discriminator": "0042",
         "nickname": "bobby99", "isBot": False}
CAROL = {"id": "33", "name": "carol.k", "discriminator": "0000",
         "nickname": "Carol K", "isBot": False}
ME = {"id": "99", "name": "me_on_discord", "discriminator": "0000",
      "nickname": "Me", "isBot": False}
LONG = "I have so many thoughts about it " * 8


def dce_message(mid, author, time, content, **extra):
  return dict({"id": mid, "type": "Default", "timestamp":
               f"2023-04-05T{time}:00.000+00:00", "timestampEdited": None,
               "isPinned": False, "content": content, "author": author,
               "attachments": [], "embeds": [], "stickers": [],
               "reactions": [], "mentions": []}, **extra)


def discord_exporter_files():
  messages = [
      dce_message("1", ALICE, "10:00", "anyone seen the new film?"),
      dce_message("2", BOBBY, "10:01", "@Alice not yet",
                  mentions=[ALICE]),
      dce_message("3", ME, "10:02", "yes! the ending was wild, I loved "
                  "every minute of it"),
      dce_message("4", ME, "10:02", "go see it"),
      dce_message("5", BOBBY, "10:03", "no spoilers please", attachments=[
          {"id": "7", "url": "https://cdn.discordapp.com/attachments/1/7/"
           "spoiler.png", "fileName": "spoiler.png", "fileSizeBytes": 10}]),
      dce_message("6", ME, "10:04", "ok ok, my lips are sealed, promise"),
      dce_message("7", CAROL, "10:05", "what did I miss"),
      dce_message("8", ME, "10:06", "", type="ChannelPinnedMessage"),
      # Five hours later: a long message, and a short answer.
      dce_message("9", ALICE, "15:30", LONG),
      dce_message("10", ME, "15:31", "lol"),
      # Later still: an answer to Alice's question of the morning.
      dce_message("11", CAROL, "20:00", "random chatter here"),
      dce_message("12", ME, "20:05", "also, the soundtrack of that film is "
                  "fantastic, I have it on repeat", type="Reply",
                  reference={"messageId": "1", "channelId": "555",
                             "guildId": "444"}),
  ]
  return {"Friends - general [555].json": json.dumps({
      "guild": {"id": "444", "name": "Friends", "iconUrl": ""},
      "channel": {"id": "555", "type": "GuildTextChat", "categoryId": "1",
                  "category": "Text Channels", "name": "general",
                  "topic": None},
      "dateRange": {"after": None, "before": None},
      "exportedAt": "2024-01-01T00:00:00+00:00",
      "messages": messages, "messageCount": len(messages)}, indent=2)}


@pytest.mark.parametrize("zipped", [True, False])
def test_discord_runs_of_messages_become_threads_and_a_reply_brings_its_turn(
    tmp_path, zipped):
  docs, _, report = import_docs(tmp_path, "discord", discord_exporter_files(),
                                "me_on_discord", zipped)
  assert docs[0].startswith(
      " Conversation between Alice, bobby99 and me_on_discord | 5 posts |\n")
  assert turns(docs[0]) == [
      ("Alice", "posted", "anyone seen the new film?"),
      ("bobby99", "commented", "@Alice not yet"),
      ("me_on_discord", "commented",
       "yes! the ending was wild, I loved every minute of it\n\ngo see it"),
      ("bobby99", "commented", "no spoilers please\n\n[image]"),
      ("me_on_discord", "commented", "ok ok, my lips are sealed, promise")]
  # "lol" under a long message: kept, the message its context (only the
  # owner's words are trained on).
  assert turns(docs[1]) == [("Alice", "posted", LONG.strip()),
                            ("me_on_discord", "commented", "lol")]
  # The reply to Alice's morning question: her message is the turn answered.
  assert turns(docs[2]) == [
      ("Carol K", "posted", "random chatter here"),
      ("Alice", "commented", "anyone seen the new film?"),
      ("me_on_discord", "commented", "also, the soundtrack of that film is "
       "fantastic, I have it on repeat")]
  assert "Written 8 PM April 2023 | me_on_discord's tags:" in docs[2]
  assert len(docs) == 3
  assert report["skipped"] == {"system messages": 1}
  assert report["pseudonymized"] is False  # a server channel, not DMs


def test_discord_own_share_is_a_choice(tmp_path):
  # --me by nickname; --min_own_fraction=0.5 asks for half of each thread:
  # "lol" under a long message is mostly someone else's text, skipped.
  docs, _, report = import_docs(tmp_path, "discord", discord_exporter_files(),
                                "Me", min_own_fraction=0.5)
  assert len(docs) == 2 and not any("lol" in d for d in docs)
  assert turns(docs[1])[-1] == ("Me", "commented", "also, the soundtrack of "
                                "that film is fantastic, I have it on repeat")
  assert report["skipped"] == {"system messages": 1,
                               "threads mostly written by others": 1}


def discord_package_files():
  return {
      "account/user.json": json.dumps({"id": "99",
                                       "username": "me_on_discord"}),
      "messages/index.json": json.dumps({
          "888": "Direct Message with bobby99#0042",
          "777": "general in Friends"}),
      "messages/c888/channel.json": json.dumps({
          "id": "888", "type": 1, "recipients": ["99", "22"]}),
      "messages/c888/messages.json": json.dumps([
          {"ID": 2, "Timestamp": "2023-04-05 10:01:00",
           "Contents": "it has a drawing",
           "Attachments": "https://cdn.discordapp.com/attachments/1/2/"
                          "drawing.png"},
          {"ID": 1, "Timestamp": "2023-04-05 10:00:00",
           "Contents": "hey <@22> did you get my letter? <:wave:123>",
           "Attachments": ""},
          {"ID": 3, "Timestamp": "2023-04-05 18:00:00",
           "Contents": "goodnight", "Attachments": ""}]),
      "messages/c777/channel.json": json.dumps({
          "id": "777", "type": 0, "name": "general",
          "guild": {"id": "444", "name": "Friends"}}),
      "messages/c777/messages.json": json.dumps([
          {"ID": 5, "Timestamp": "2023-04-06 09:00:00.123000+00:00",
           "Contents": "morning all", "Attachments": ""}]),
  }


def test_discord_data_package_has_only_ones_own_messages(tmp_path):
  docs, _, report = import_docs(tmp_path, "discord", discord_package_files(),
                                "me_on_discord")
  # Direct messages: pseudonymized by default, the DM partner included.
  assert report["pseudonymized"] is True
  assert report["people_pseudonymized"] == 1
  # No one else's words: each burst of one's messages is a post of one turn.
  assert all(len(turns(d)) == 1 and turns(d)[0][:2] == (
      "me_on_discord", "posted") for d in docs)
  texts = sorted((turns(d)[0][2] for d in docs),
                 key=lambda t: "letter" not in t)
  assert sorted(texts[1:]) == ["goodnight", "morning all"]
  # Two messages a minute apart are one burst; the DM partner's <@id> is
  # @name, pseudonymized; a custom emoji is :name:.
  match = re.fullmatch(r"hey @(\w+) did you get my letter\? :wave:\n\n"
                       r"it has a drawing\n\n\[image\]", texts[0])
  assert match and re.sub(r"\d+$", "", match.group(1)) in pseudonyms.NAMES
  assert not any("bobby99" in d for d in docs)


# ---- Facebook ---------------------------------------------------------------

FACEBOOK_OTHERS = ("Zoë Dupré", "Zoë", "Dupré", "Émile Zola")


def mojibake(value):
  """What Facebook writes: each UTF-8 byte of a string one code point."""
  if isinstance(value, str):
    return value.encode("utf-8").decode("latin-1")
  if isinstance(value, list):
    return [mojibake(v) for v in value]
  if isinstance(value, dict):
    return {k: mojibake(v) for k, v in value.items()}
  return value


def facebook_files():
  root = "your_activity_across_facebook/"
  posts = [
      {"timestamp": 1_600_000_000,
       "data": [{"post": "Café with Zoë, best croissant in town"},
                {"update_timestamp": 1_600_000_100}],
       "attachments": [{"data": [{"media": {
           "uri": "your_activity_across_facebook/posts/media/x/1.jpg",
           "creation_timestamp": 1_600_000_000, "title": ""}}]}],
       "tags": [{"name": "Zoë Dupré"}],
       "title": "Me Meme was with Zoë Dupré."},
      {"timestamp": 1_600_100_000, "title": "Me Meme updated his profile "
                                            "picture.",
       "data": [{"update_timestamp": 1_600_100_000}]},
  ]
  comments = {"comments_v2": [
      {"timestamp": 1_600_200_000, "data": [{"comment": {
          "timestamp": 1_600_200_000,
          "comment": "Joyeux anniversaire, Émile ! 🎉 à très vite",
          "author": "Me Meme"}}],
       "title": "Me Meme commented on Émile Zola's post."}]}
  inbox = {
      "participants": [{"name": "Zoë Dupré"}, {"name": "Me Meme"}],
      "messages": [
          {"sender_name": "Me Meme", "timestamp_ms": 1_600_300_120_000,
           "content": "À demain alors, j'apporte le gâteau au chocolat",
           "is_geoblocked_for_viewer": False},
          {"sender_name": "Zoë Dupré", "timestamp_ms": 1_600_300_060_000,
           "content": "On se voit demain ?",
           "is_geoblocked_for_viewer": False},
          {"sender_name": "Zoë Dupré", "timestamp_ms": 1_600_300_000_000,
           "content": "Zoë called you.", "type": "Call", "call_duration": 3,
           "is_geoblocked_for_viewer": False},
      ],
      "title": "Zoë Dupré", "is_still_participant": True,
      "thread_path": "inbox/zoedupre_1234567", "magic_words": []}
  return {
      root + "posts/your_posts__check_ins__photos_and_videos_1.json":
          json.dumps(mojibake(posts)),
      root + "comments_and_reactions/comments.json":
          json.dumps(mojibake(comments)),
      root + "messages/inbox/zoedupre_1234567/message_1.json":
          json.dumps(mojibake(inbox)),
      root + "posts/media/x/1.jpg": b"\xff\xd8",
  }


@pytest.mark.parametrize("zipped", [True, False])
def test_facebook_escaped_utf8_posts_comments_and_messages(tmp_path, zipped):
  files = facebook_files()
  # The file holds only ASCII: é is written \u00c3\u00a9, two code points.
  raw = files["your_activity_across_facebook/posts/"
              "your_posts__check_ins__photos_and_videos_1.json"]
  assert "\\u00c3\\u00a9" in raw and "é" not in raw
  docs, _, report = import_docs(tmp_path, "facebook", files, "Me Meme",
                                zipped, pseudonymize=False)
  assert turns(docs[0]) == [
      ("Me Meme", "posted", "Café with Zoë, best croissant in town\n\n"
                            "[image]")]
  assert "Written 12 PM September 2020 | Me Meme's tags:" in docs[0]
  assert turns(docs[1]) == [
      ("Me Meme", "posted", "Joyeux anniversaire, Émile ! 🎉 à très vite")]
  assert turns(docs[2]) == [
      ("Zoë Dupré", "posted", "On se voit demain ?"),
      ("Me Meme", "commented",
       "À demain alors, j'apporte le gâteau au chocolat")]
  assert len(docs) == 3
  assert report["skipped"] == {
      "items with no text": 1,
      "messages Facebook wrote (calls, joins, unsent)": 1}
  assert report["kept_alone"] == {
      "comments whose post is not in the archive": 1}


def test_fix_mojibake_leaves_real_text_alone():
  assert common.fix_mojibake("Caf\u00c3\u00a9") == "Café"
  assert common.fix_mojibake(["na\u00efve"]) == ["na\u00efve"]  # latin-1 ï
  assert common.fix_mojibake({"k": "日本"}) == {"k": "日本"}


# ---- Tumblr export ----------------------------------------------------------

TUMBLR_OTHERS = ("alicewrites", "bobposts")


def tumblr_page(body, footer):
  return ("<!DOCTYPE HTML><html><head><meta charset=\"UTF-8\"><link "
          "rel=\"stylesheet\" type=\"text/css\" href=\"../../style.css\">"
          f"</head><body>{body}<div id=\"footer\">{footer}</div></body>"
          "</html>")


def tumblr_files():
  trail = (
      '<p><a class="tumblr_blog" href="https://bobposts.tumblr.com/post/1/'
      'lovely">bobposts</a>:</p><blockquote><p><a class="tumblr_blog" '
      'href="https://alicewrites.tumblr.com/post/0">alicewrites</a>:</p>'
      "<blockquote><p>a poem about <b>rain</b></p></blockquote>"
      "<p>this is lovely</p></blockquote>"
      "<p>agreed, and I wrote a reply poem about the sun</p>")
  return {
      "posts/posts_index.html": "<html><body>index</body></html>",
      "posts/html/111.html": tumblr_page(
          trail, '<span id="timestamp"> December 1st, 2016 11:03pm </span>'
          '<span class="tag">poetry</span><span class="tag">rain</span>'),
      "posts/html/112.html": tumblr_page(
          "<h1>A title</h1><p>my cat &amp; me</p><figure><img src=\"../../"
          "media/112.jpg\" alt=\"a cat\"></figure>",
          '<span id="timestamp"> March 3rd, 2019 9:05am </span>'),
      "posts/html/113.html": tumblr_page(
          '<p><a class="tumblr_blog" href="https://bobposts.tumblr.com/post/'
          '2">bobposts</a>:</p><blockquote><p>reblogged as is</p>'
          "</blockquote>",
          '<span id="timestamp"> March 4th, 2019 1:00pm </span>'),
      "media/112.jpg": b"\xff\xd8",
      "messages/messages.json": json.dumps([{
          "id": 42, "participants": [{"name": "sunnyblog"},
                                     {"name": "bobposts"}],
          "messages": [
              {"participant": "bobposts", "type": "TEXT",
               "message": "hi! loved your poem", "ts": 1_600_000_000},
              {"participant": "sunnyblog", "type": "TEXT",
               "message": "thank you so much, that means a lot to me",
               "ts": 1_600_000_060}]}]),
  }


@pytest.mark.parametrize("zipped", [True, False])
def test_tumblr_export_reblog_trail_tags_and_messages(tmp_path, zipped):
  docs, posts, report = import_docs(tmp_path, "tumblr", tumblr_files(),
                                    "sunnyblog", zipped, pseudonymize=False)
  assert docs[0] == (
      " Conversation between alicewrites, bobposts and sunnyblog | 3 posts |\n"
      "#1 alicewrites posted:\n\n"
      "a poem about <b>rain</b>\n\n"
      "#2 bobposts commented:\n\n"
      "this is lovely\n\n"
      "#3 sunnyblog commented:\n\n"
      "Written 11 PM December 2016 | sunnyblog's tags: #poetry, #rain\n\n"
      "agreed, and I wrote a reply poem about the sun")
  assert posts[0]["id"] == "111"  # Tumblr's own id: scraped posts dedupe
  # The page's `&amp;` is the text's `&`; the image is a placeholder.
  assert docs[1] == ("#1 sunnyblog posted:\n\n"
                     "Written 9 AM March 2019 | sunnyblog's tags:\n\n"
                     "<b>A title</b>\n\nmy cat & me\n\n[image: a cat]")
  assert turns(docs[2]) == [
      ("bobposts", "posted", "hi! loved your poem"),
      ("sunnyblog", "commented", "thank you so much, that means a lot to me")]
  assert len(docs) == 3
  assert report["skipped"] == {"reblogs that add nothing": 1}
  assert report["pseudonymized"] is False  # as asked, messages or not


# ---- Telegram and WhatsApp (their exports are in tests/data) ------------------


def fixture_files(folder):
  """{path: text} of a fixture export under tests/data."""
  root = os.path.join(REPO, "tests", "data", folder)
  files = {}
  for where, _, names in os.walk(root):
    for name in names:
      path = os.path.join(where, name)
      with open(path, encoding="utf-8") as f:
        files[os.path.relpath(path, root).replace(os.sep, "/")] = f.read()
  return files


def telegram_files():
  return fixture_files("telegram_export/DataExport_2021-09-22")


def whatsapp_files():
  return fixture_files("whatsapp_export/android")


WHATSAPP_OTHERS = ("Bob Smith", "Bob", "Smith", "bob_smith", "Carol Crane",
                   "Carol", "Crane")
TELEGRAM_OTHERS = WHATSAPP_OTHERS + ("carol_crane",)


# ---- pseudonyms -------------------------------------------------------------

ARCHIVES = {
    "twitter": (twitter_files, "meme_lord", TWITTER_OTHERS),
    "mastodon": (mastodon_files, "tootsie", MASTODON_OTHERS),
    "wordpress": (wordpress_files, "mewriter", WORDPRESS_OTHERS),
    "discord": (discord_exporter_files, "me_on_discord", DISCORD_OTHERS),
    "facebook": (facebook_files, "Me Meme", FACEBOOK_OTHERS),
    "tumblr": (tumblr_files, "sunnyblog", TUMBLR_OTHERS),
    "telegram": (telegram_files, "Delta Whiskey", TELEGRAM_OTHERS),
    "whatsapp": (whatsapp_files, "Delta Whiskey", WHATSAPP_OTHERS),
}


@pytest.mark.parametrize("kind", sorted(ARCHIVES))
def test_pseudonymized_output_names_no_one_else(tmp_path, kind):
  files, me, others = ARCHIVES[kind]
  files = files()
  readable = "\n".join(
      json.dumps(common.fix_mojibake(json.loads(v)), ensure_ascii=False)
      if name.endswith(".json") else v
      for name, v in files.items() if isinstance(v, str))
  for name in others:  # the names are there to be found
    assert name.lower() in readable.lower(), name
  docs, posts, report = import_docs(tmp_path, kind, files, me,
                                    pseudonymize=True, min_own_fraction=0.0)
  written = json.dumps(posts, ensure_ascii=False) + json.dumps(report)
  written += "\n".join(docs) + report_page(report, "out")
  for name in others:
    assert name.lower() not in written.lower(), name
  assert me in written  # one's own name stays
  assert report["names_replaced"] > 0
  key_file = tmp_path / "posts.jsonl.pseudonym-key"
  assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600


def test_same_person_same_pseudonym_across_threads_and_runs(tmp_path):
  files = discord_exporter_files()
  first, _, _ = import_docs(tmp_path, "discord", files, "me_on_discord",
                            pseudonymize=True)
  alice = turns(first[0])[0][0]
  assert alice not in ("Alice", "alice_w")
  assert re.sub(r"\d+$", "", alice) in pseudonyms.NAMES
  assert turns(first[1])[0][0] == alice  # her long message, answered "lol"
  assert turns(first[2])[1][0] == alice  # her question, in the later thread
  # Her name in Bobby's "@Alice" is hers too.
  assert turns(first[0])[1][2] == f"@{alice} not yet"
  (tmp_path / "archive.zip").unlink()
  again, _, _ = import_docs(tmp_path, "discord", files, "me_on_discord",
                            pseudonymize=True)
  assert again == first  # the key beside the output is reused
  other = tmp_path / "elsewhere"
  other.mkdir()
  fresh, _, _ = import_docs(other, "discord", files, "me_on_discord",
                            pseudonymize=True)
  assert [len(turns(d)) for d in fresh] == [len(turns(d)) for d in first]


def test_pseudonymizer_replaces_handles_in_links_but_not_markup():
  people = pseudonyms.People()
  people.add("x:1", "li", "bob")
  people.add("x:2", "Alice Smith")
  names = pseudonyms.Pseudonymizer(people, b"k" * 32, keep=["me"])
  text = ('<ul><li>bob said hi to Alice</li>\n<li>@Bob and '
          '<a href="https://bob.tumblr.com/">Alice Smith</a></li></ul>')
  out = names.text(text)
  bob, alice = names.pseudonym["x:1"], names.pseudonym["x:2"]
  assert out == (f'<ul><li>{bob} said hi to {alice}</li>\n<li>@{bob} and '
                 f'<a href="https://{bob}.tumblr.com/">{alice}</a></li></ul>')
  assert names.author("BOB") == bob and names.author("me") == "me"


# ---- the launch script: end to end, and its one-line errors -----------------


def run_launch(*args):
  return subprocess.run([sys.executable, "-m", "launch.import_archive",
                         *args], cwd=REPO, capture_output=True, text=True,
                        timeout=60)


def test_launch_writes_posts_that_prepare_corpus_reads(tmp_path):
  archive = write_archive(tmp_path, twitter_files())
  out, report = tmp_path / "posts.jsonl", tmp_path / "report.json"
  done = run_launch("--kind=twitter", f"--archive={archive}",
                    "--me=meme_lord", f"--out={out}", f"--report={report}",
                    "--pseudonymize")
  assert done.returncode == 0, done.stderr
  summary = done.stdout.strip()
  assert summary.startswith(f"wrote 3 posts (1 with several turns; 32 words "
                            f"of yours) to {out}; skipped 1 retweets")
  assert re.search(r"pseudonymized 2 people \(\d+ names replaced", summary)
  counts = json.loads(report.read_text())
  assert counts["posts"] == 3 and counts["people_pseudonymized"] == 2
  for name in TWITTER_OTHERS:
    assert name.lower() not in (out.read_text() + report.read_text()
                                + summary).lower()
  docs = tmp_path / "docs.jsonl"
  prepared = subprocess.run(
      [sys.executable, "-m", "launch.prepare_corpus", f"--posts={out}",
       f"--out={docs}"], cwd=REPO, capture_output=True, text=True, timeout=60)
  assert prepared.returncode == 0, prepared.stderr
  texts = [json.loads(line)["text"] for line in docs.read_text().splitlines()]
  assert len(texts) == 3
  parent, reply = turns(texts[1])
  assert parent[0] not in ("bob_the_builder", "meme_lord")
  assert parent[2].startswith("cats are better than dogs, fight me @")
  assert reply[0] == "meme_lord" and reply[2].startswith("I disagree")


def test_the_heads_read_imported_posts_as_posts(tmp_path):
  # launch.train_selector --config.data=posts.jsonl takes an import as it
  # takes a scrape: the rows are NPF posts, each text one's own turn.
  # pylint: disable-next=import-outside-toplevel
  from bot.corpus import head_examples
  from configs import sentiment
  config = sentiment.get_config()
  config.data = "posts.jsonl"
  posts, _ = archives.import_archive(
      "twitter", write_archive(tmp_path, twitter_files()),
      common.Options("meme_lord"), False, str(tmp_path / "key"))
  assert {head_examples.detect_format(p, config) for p in posts} == {"posts"}
  rows = [head_examples.post_example(p) for p in posts]
  assert rows[1]["text"].strip().startswith("I disagree")
  assert "meme_lord" not in rows[1]["text"] and rows[1]["prompt"]


def test_launch_wrong_kind_is_one_line_and_writes_nothing(tmp_path):
  archive = write_archive(tmp_path, mastodon_files())
  out = tmp_path / "posts.jsonl"
  done = run_launch("--kind=twitter", f"--archive={archive}", "--me=x",
                    f"--out={out}")
  assert done.returncode == 2
  assert done.stderr == (f"error: {archive} has no data/tweets.js: not an "
                         "X/Twitter archive (--kind=twitter)\n")
  assert os.listdir(tmp_path) == ["archive.zip"]


def test_launch_malformed_archive_is_one_line_and_writes_nothing(tmp_path):
  files = twitter_files()
  files["data/tweets.js"] = "window.YTD.tweets.part0 = [{\"tweet\": {"
  archive = write_archive(tmp_path, files)
  out = tmp_path / "posts.jsonl"
  out.write_text("an older import\n")
  done = run_launch("--kind=twitter", f"--archive={archive}", "--me=x",
                    f"--out={out}")
  assert done.returncode == 2
  assert done.stderr == (f"error: {archive}: data/tweets.js is not JSON at "
                         "line 1\n")
  assert out.read_text() == "an older import\n"
  assert sorted(os.listdir(tmp_path)) == ["archive.zip", "posts.jsonl"]


@pytest.mark.parametrize("kind, files, expected", [
    ("mastodon", {"outbox.json": '{"type": "OrderedCollection"}'},
     "outbox.json is not an ActivityStreams collection with orderedItems: "
     "not a Mastodon archive (--kind=mastodon)"),
    ("wordpress", {"blog.xml": "<rss><channel><item>"},
     "blog.xml is not well-formed XML"),
    ("wordpress", {"feed.xml": "<rss><channel><title>x</title></channel>"
                               "</rss>"},
     "feed.xml is not an RSS file with wp: elements (WordPress's WXR): not "
     "a WordPress export (WXR) (--kind=wordpress)"),
    ("facebook", {"posts/your_posts_1.html": "<html></html>"},
     "posts/your_posts_1.html is not JSON (this download is in HTML: ask "
     "Facebook for Format: JSON)"),
    ("discord", {"notes.txt": "hello"},
     "has no messages/c<ID>/messages.json (Discord's data package) or a "
     "DiscordChatExporter .json export: not a Discord archive"),
    ("tumblr", {"data/tweets.js": "[]"},
     "has no posts/html/<id>.html, posts/posts.xml or "
     "conversations/<convo>.html: not a "
     "Tumblr blog export (--kind=tumblr)"),
])
def test_wrong_or_malformed_archives_name_the_file(tmp_path, kind, files,
                                                   expected):
  archive = write_archive(tmp_path, files)
  with pytest.raises(UserError) as raised:
    archives.import_archive(kind, archive, common.Options("me"))
  assert str(raised.value).startswith(archive)
  assert expected in str(raised.value)
  assert "\n" not in str(raised.value)


def test_a_me_the_archive_never_names_is_a_clear_error(tmp_path):
  archive = write_archive(tmp_path, discord_exporter_files())
  with pytest.raises(UserError, match=r"has nothing of --me nobody's to "
                     r"import \(skipped .*\): is --me nobody your name"):
    archives.import_archive("discord", archive, common.Options("nobody"))


def test_the_module_registry_matches_the_flag():
  assert sorted(archives.KINDS) == sorted(ARCHIVES)


def test_a_download_cut_short_is_named(tmp_path):
  whole = write_archive(tmp_path, twitter_files())
  cut = tmp_path / "twitter-cut.zip"
  cut.write_bytes(open(whole, "rb").read()[:100])
  with pytest.raises(UserError, match=r"twitter-cut.zip is not a readable "
                     r"zip or tar file \(a download cut short\?\)$"):
    archives.import_archive("twitter", str(cut), common.Options("me"))


# ---- dedupe, --lang and the report ---------------------------------------------


def statuses_archive(root, texts):
  """A Mastodon export of one's own statuses, `texts` in order."""
  me = "https://example.social/users/tootsie"
  notes = [{"type": "Create", "actor": me, "object": {
      "type": "Note", "id": f"{me}/statuses/{i}",
      "published": f"2023-05-01T{i:02d}:00:00Z", "inReplyTo": None,
      "to": [PUBLIC], "content": f"<p>{text}</p>"}}
           for i, text in enumerate(texts)]
  files = {"outbox.json": json.dumps({
      "type": "OrderedCollection", "totalItems": len(notes),
      "orderedItems": notes}),
           "actor.json": json.dumps({"type": "Person", "id": me,
                                     "preferredUsername": "tootsie"})}
  return write_archive(root, files)


ENGLISH = ("the butler did it, and I knew it from the first chapter",
           "I made soup tonight and it was far too salty to eat",
           "my cat has learned to open the kitchen door by herself")
FRENCH = "le majordome l'a fait, je le savais depuis le premier chapitre"


def test_duplicates_and_other_languages_are_dropped_and_counted(tmp_path):
  texts = [*ENGLISH, "The  butler did it, and I knew it from the FIRST "
           "chapter", FRENCH, "lol"]
  archive = statuses_archive(tmp_path, texts)
  options = common.Options("tootsie")
  posts, report = archives.import_archive("mastodon", archive, options,
                                          lang="en")
  kept = [p["content"][0]["text"] for p in posts]
  # The repeat (case and spacing aside) and the French post are dropped;
  # "lol" is too short to tell its language, so it stays.
  assert kept == [*ENGLISH, "lol"]
  assert report["skipped"] == {"duplicates": 1,
                               "in another language than en": 1}
  assert report["words"] == sum(len(t.split()) for t in kept)
  assert report["lengths"]["counts"] == [1, 0, 3, 0, 0, 0, 0, 0, 0]
  assert report["sources"]["public posts"] == {
      "posts": 4, "threads": 0, "words": report["words"]}
  # Without --lang only the repeat goes.
  posts, report = archives.import_archive("mastodon", archive, options)
  assert len(posts) == 5 and report["skipped"] == {"duplicates": 1}


def test_a_language_langdetect_does_not_know_is_one_line(tmp_path):
  archive = statuses_archive(tmp_path, ENGLISH)
  out = tmp_path / "posts.jsonl"
  done = run_launch("--kind=mastodon", f"--archive={archive}", "--me=tootsie",
                    f"--out={out}", "--lang=english")
  assert done.returncode == 2 and not out.exists()
  (line,) = done.stderr.strip().splitlines()
  assert line.startswith("error: --lang 'english' is not a language code")
  assert " en," in line


@pytest.mark.slow
def test_the_html_report_in_a_browser(tmp_path):
  # pylint: disable-next=import-outside-toplevel
  from playwright import sync_api as playwright_api
  texts = [*ENGLISH, ENGLISH[0], FRENCH, " ".join(ENGLISH * 4)]
  archive = statuses_archive(tmp_path, texts)
  out, page_path = tmp_path / "posts.jsonl", tmp_path / "report.html"
  done = run_launch("--kind=mastodon", f"--archive={archive}", "--me=tootsie",
                    f"--out={out}", f"--report={page_path}", "--lang=en")
  assert done.returncode == 0, done.stderr
  assert "; skipped 1 duplicates, 1 in another language than en" in (
      done.stdout)
  with playwright_api.sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                args=["--no-sandbox"])
    try:
      tab = browser.new_page()
      tab.goto(page_path.as_uri())
      assert tab.inner_text("h1") == "4 posts from your mastodon archive"
      sources = tab.inner_text("#sources")
      assert "public posts\t4\t0\t175" in sources, sources
      assert "direct messages" not in sources  # none in this archive
      body = tab.inner_text("body")
      assert "duplicates\t1" in body and "in another language than en\t1" \
          in body
      assert "175 words of yours is little" in body
      # One bar per length bin; the tallest is 10-19 words, then 100-199.
      heights = tab.eval_on_selector_all(
          "rect.bar", "bars => bars.map(b => +b.getAttribute('height'))")
      titles = tab.eval_on_selector_all(
          "rect.bar", "bars => bars.map(b => b.textContent)")
      assert len(heights) == 9 and heights.index(max(heights)) == 2
      assert titles[2] == "3 posts" and titles[5] == "1 post"
      assert tab.locator("script").count() == 0
      tab.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    finally:
      browser.close()
