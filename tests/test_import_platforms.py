"""X, WordPress.com, Discord, Facebook and Mastodon exports as they really
are (issue 38, step 3), and their bad files as one line.

The exports are tests/data/x_archive, wordpress_com, discord_exporter,
facebook_messenger and mastodon_archive (tests/data/platform_exports.md
says where each layout was checked; the people are made up: the owner is
Delta Whiskey, the others Bob Smith, Carol Crane and a friend who goes by
Delta). The expected documents are written by hand from the text format's
rules.
"""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from bot.corpus import archives, documents, pseudonyms
from bot.corpus.archives import common
from bot.corpus.archives.report import html as report_page
from gpt2.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, "tests", "data")


def imported(kind, folder, me, pseudonymize=False, key=None, **options):
  """(the documents' texts, posts, report) of the fixture `folder`."""
  posts, report = archives.import_archive(
      kind, os.path.join(DATA, folder) if not os.path.isabs(folder)
      else folder, common.Options(me, **options), pseudonymize, key)
  posts = [json.loads(json.dumps(p, ensure_ascii=False)) for p in posts]
  texts = [d.text for d in documents.documents(posts, min_own_fraction=0.0)]
  return texts, posts, report


def run_launch(*args):
  return subprocess.run([sys.executable, "-m", "launch.import_archive",
                         *args], cwd=REPO, capture_output=True, text=True,
                        timeout=60)


# ---- X: note tweets, community tweets, a short reply, a quote ---------------

NOTE = ("Kettle poems, a thread of one. The kettle sings before it boils, and "
        "the singing is the best part of tea: waiting is where the wanting "
        "lives, and the wanting is half the taste. I have timed it. Four "
        "minutes of song for one minute of drinking, a good trade for anyone "
        "who listens. Nobody writes odes to the cup; they write them to the "
        "pot, the leaves, the steam, and the steam writes the last line "
        "itself, in the air, and then it is gone.")
LIKED = ("Kettle people: I have been thinking about whistles all week, the "
         "high ones and the low ones, the way steam curls over the spout in "
         "the morning light, and whether a silent kettle is a kettle at all. "
         "Thoughts?")
QUOTED = "https://twitter.com/carol_crane/status/1649999999999999002"


def test_x_archive_long_community_reply_and_quote_tweets():
  texts, posts, report = imported("twitter", "x_archive", "delta_whiskey")
  assert texts == [
      # The whole text from note-tweet.js, not the cut full_text.
      "#1 delta_whiskey posted:\n\n"
      "Written 7 AM May 2023 | delta_whiskey's tags:\n\n" + NOTE,
      # data/community-tweet.js is read like tweets.js.
      "#1 delta_whiskey posted:\n\n"
      "Written 10 AM May 2023 | delta_whiskey's tags:\n\n"
      "who else here writes poems about kitchen things? spoons count",
      # Two words under a long liked tweet: kept, the tweet its context.
      " Conversation between bob_smith and delta_whiskey | 2 posts |\n"
      "#1 bob_smith posted:\n\n" + LIKED + "\n\n"
      "#2 delta_whiskey commented:\n\n"
      "Written 12 PM May 2023 | delta_whiskey's tags:\n\nha, same",
      "#1 delta_whiskey posted:\n\n"
      "Written 9 AM May 2023 | delta_whiskey's tags:\n\n"
      f'the best kettle take of the year <a href="{QUOTED}">{QUOTED}</a>',
  ]
  assert [p["id"] for p in posts] == [
      f"twitter-165000000000000000{i}" for i in (1, 2, 3, 4)]
  assert report["skipped"] == {} and report["kept_alone"] == {}


def test_x_reply_under_a_long_parent_is_dropped_only_when_asked():
  # --min_own_fraction=0.5 asks for half of each thread: "ha, same" under
  # the long liked tweet is dropped and counted (by default it is kept).
  texts, _, report = imported("twitter", "x_archive", "delta_whiskey",
                              min_own_fraction=0.5)
  assert not any("ha, same" in t for t in texts) and len(texts) == 3
  assert report["skipped"] == {"threads mostly written by others": 1}


def test_x_short_reply_to_a_liked_tweet_is_trained_on_alone(tmp_path):
  """Issue 38: the two words under a long liked tweet are imported and kept
  by prepare_corpus's defaults, and the token shards weigh their tokens
  (and the end of the document) 1 and the liked tweet's 0; in every
  document the turn lines, which the bot's prompt supplies, weigh 0."""
  from gpt2 import data  # pylint: disable=import-outside-toplevel
  from gpt2.tokenizer import EOT, Tokenizer  # pylint: disable=import-outside-toplevel
  posts, _ = archives.import_archive(
      "twitter", os.path.join(DATA, "x_archive"),
      common.Options("delta_whiskey"), False)
  posts = [json.loads(json.dumps(p, ensure_ascii=False)) for p in posts]
  docs = list(documents.documents(posts))  # prepare_corpus's defaults
  assert len(docs) == 4
  reply = next(d for d in docs if LIKED in d.text)
  assert [reply.text[a:b] for a, b in reply.own_spans] == ["\n\nha, same"]
  corpus = tmp_path / "docs.jsonl"
  corpus.write_text("".join(json.dumps(d.to_json()) + "\n" for d in docs))
  data.prepare(str(corpus), str(tmp_path / "shards"), val_fraction=0.0,
               tokenizer=Tokenizer.gpt2(), progress=False)
  stream = data.TokenStream.open(str(tmp_path / "shards"), "train")
  tokens = stream.read(0, len(stream))
  weights = stream.weight_windows(np.zeros(1, np.int64), len(stream))[0]
  tok = Tokenizer.gpt2()
  ends = np.flatnonzero(tokens == tok.eot_id)
  starts = np.concatenate([[0], ends[:-1] + 1])
  for start, end, doc in zip(starts, ends + 1, docs):
    text, w = tokens[start:end], weights[start:end]
    if doc is reply:
      assert tok.decode(text[w == 1]) == "\n\nha, same" + EOT
      assert tok.decode(text[w == 0]) == doc.text[:-len("\n\nha, same")]
      assert LIKED in tok.decode(text[w == 0])
    else:  # the owner's own posts: all but the turn line the prompt gives
      cut = doc.text.index("tags:") + len("tags:")
      assert tok.decode(text[w == 1]) == doc.text[cut:] + EOT
      assert tok.decode(text[w == 0]) == doc.text[:cut]


# ---- WordPress.com ----------------------------------------------------------


def test_wordpress_com_export_https_namespace_email_and_password():
  # (Bob's long question outweighs the answer: kept with no share asked.)
  texts, posts, report = imported("wordpress", "wordpress_com",
                                  "deltawhiskey", min_own_fraction=0.0)
  poem = ("<b>The Kettle Poem</b>\n\n"
          "It sings before it boils.\nThe song is the best part.")
  assert texts == [
      # The WXR 1.0 tag (domain="tag") beside the category and post_tag.
      "#1 deltawhiskey posted:\n\n"
      "Written 11 AM September 2023 | deltawhiskey's tags: #Poems, "
      "#kettles, #tea\n\n" + poem,
      # "DW" is the owner by the e-mail address of wp:author (the file has
      # no wp:author_id to match wp:comment_user_id against).
      " Conversation between deltawhiskey and Bob Smith | 3 posts |\n"
      "#1 deltawhiskey posted:\n\n" + poem + "\n\n"
      "#2 Bob Smith commented:\n\n"
      "Lovely. Did you write it at the stove, waiting for the water, or did "
      "it come to you later in the day over a cup?\n\n"
      "#3 deltawhiskey commented:\n\n"
      "Written 10 AM September 2023 | deltawhiskey's tags:\n\nAt the stove.",
  ]
  assert [p["id"] for p in posts] == ["wordpress-41", "wordpress-41-comment-8"]
  assert report["skipped"] == {"password-protected posts": 1}


WXR = open(os.path.join(DATA, "wordpress_com",
                        "kettlenotes.wordpress.2024-01-02.000.xml"),
           encoding="utf-8").read()
BOMB = ('<!DOCTYPE rss [<!ENTITY a "kettle"><!ENTITY b "&a;&a;&a;&a;">]>')


def deep_chain(depth):
  """The fixture with a reply chain `depth` comments deep under post 41."""
  chain = "".join(
      f"<wp:comment><wp:comment_id>{100 + i}</wp:comment_id>"
      f"<wp:comment_author>Bob Smith</wp:comment_author>"
      f"<wp:comment_content>reply {i}</wp:comment_content>"
      f"<wp:comment_approved>1</wp:comment_approved>"
      f"<wp:comment_parent>{99 + i if i else 0}</wp:comment_parent>"
      f"</wp:comment>" for i in range(depth))
  return WXR.replace("</item>", chain + "</item>", 1)


@pytest.mark.parametrize("case, expected", [
    # A comment before the document type, past the first 2,048 bytes.
    ("doctype after a comment", "it declares a document type, which "
                                "WordPress never writes"),
    ("doctype in UTF-16", "it declares a document type, which WordPress "
                          "never writes"),
    ("3000 nested replies", "a comment thread nested deeper than 500 "
                            "replies (post 41)"),
])
def test_wordpress_bad_files_are_one_line(tmp_path, case, expected):
  head = '<?xml version="1.0" encoding="UTF-8" ?>\n'
  if case == "doctype after a comment":
    data = (head + "<!--" + " " * 4000 + "-->\n" + BOMB
            + WXR[len(head):]).encode("utf-8")
  elif case == "doctype in UTF-16":
    data = ('<?xml version="1.0" encoding="UTF-16" ?>\n' + BOMB
            + WXR[len(head):]).encode("utf-16")
  else:
    data = deep_chain(3000).encode("utf-8")
  (tmp_path / "site.xml").write_bytes(data)
  out = tmp_path / "posts.jsonl"
  done = run_launch("--kind=wordpress", f"--archive={tmp_path / 'site.xml'}",
                    "--me=deltawhiskey", f"--out={out}")
  assert done.returncode == 2 and not out.exists()
  assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
  assert expected in done.stderr and "Traceback" not in done.stderr


def test_a_wordpress_reply_chain_under_the_cap_is_read(tmp_path):
  # 400 replies deep, the owner's answer at the bottom: one thread.
  data = deep_chain(400).replace(
      "</item>", "<wp:comment><wp:comment_id>999</wp:comment_id>"
      "<wp:comment_author>DW</wp:comment_author><wp:comment_author_email>"
      "delta@example.invalid</wp:comment_author_email><wp:comment_content>"
      "the end of it</wp:comment_content><wp:comment_approved>1"
      "</wp:comment_approved><wp:comment_parent>499</wp:comment_parent>"
      "</wp:comment></item>", 1)
  (tmp_path / "site.xml").write_text(data)
  _, posts, _ = imported("wordpress", str(tmp_path / "site.xml"),
                         "deltawhiskey", max_turns=3,
                         min_own_fraction=0.0)
  assert [p["id"] for p in posts] == ["wordpress-41", "wordpress-41-comment-8",
                                      "wordpress-41-comment-999"]


# ---- Discord ----------------------------------------------------------------


def test_discord_group_chat_exported_twice_and_media_only():
  texts, posts, report = imported("discord", "discord_exporter",
                                  "Delta Whiskey", min_own_fraction=0.0)
  assert texts == [
      " Conversation between Bob Smith, Delta Whiskey and Delta | 4 posts |\n"
      "#1 Bob Smith posted:\n\n"
      "@Delta Whiskey did you finish the kettle poem? the whole group has "
      "been waiting all week to read it\n\n"
      "#2 Delta Whiskey commented:\n\n"
      "yes! finished it this morning, and @Delta helped with the rhymes\n\n"
      "#3 Delta commented:\n\nhappy to help, it was fun\n\n"
      "#4 Delta Whiskey commented:\n\n"
      "Written 10 AM April 2023 | Delta Whiskey's tags:\n\n"
      "thanks again, it would not scan without you"]
  assert [p["id"] for p in posts] == ["discord-777-1100000000000000005"]
  # The drawing posted alone is no "[image]" turn; the message in both
  # exports is read once.
  assert report["skipped"] == {"messages met twice": 1,
                               "messages of only media": 1}


def package_files(root, channel_extra=None):
  files = {
      "Account/user.json": {
          "id": "99", "username": "delta.w", "global_name": "Delta Whiskey",
          "relationships": [{"id": "22", "type": 1, "nickname": None,
                             "user": {"id": "22", "username": "sora_k",
                                      "global_name": "Sora Kim",
                                      "discriminator": "0"}}]},
      "Messages/index.json": {
          "888": "Direct Message with sora_k#0",
          "889": "Direct Message with Unknown Participant", "890": None},
      "Messages/c888/channel.json": dict(
          {"id": "888", "type": "DM", "recipients": ["99", "22"]},
          **(channel_extra or {})),
      "Messages/c888/messages.json": [
          {"ID": "3", "Timestamp": "2023-04-05 10:02:00",
           "Contents": "", "Attachments": "https://cdn.discordapp.com/"
           "attachments/888/3/kettle.png"},
          {"ID": "2", "Timestamp": "2023-04-05 10:01:00",
           "Contents": "hey <@22>, Sora Kim and sora_k are one person",
           "Attachments": ""},
          {"ID": "2", "Timestamp": "2023-04-05 10:01:00",
           "Contents": "hey <@22>, Sora Kim and sora_k are one person",
           "Attachments": ""}],
      "Messages/c889/channel.json": {"id": "889", "type": "DM",
                                     "recipients": ["99", "Deleted User"]},
      "Messages/c889/messages.json": [
          {"ID": "5", "Timestamp": "2023-04-06 09:00:00",
           "Contents": "are you still there?", "Attachments": ""}],
  }
  for name, data in files.items():
    path = root / "package" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
  return str(root / "package")


def test_discord_package_discriminator_zero_and_unknown_participant(tmp_path):
  path = package_files(tmp_path)
  texts, _, _ = imported("discord", path, "delta.w")
  assert "hey @sora_k, Sora Kim and sora_k are one person" in texts[0]
  with common.Archive(path) as archive:
    people = archives.KINDS["discord"].read(archive, common.Options(
        "delta.w")).people
  assert people.all_names() == {"sora_k", "sora_k#0", "Sora Kim"}
  # Nor is it anyone's name where another importer lets it through.
  unknown = pseudonyms.People()
  unknown.add("discord:1", "Unknown Participant")
  assert pseudonyms.Pseudonymizer(unknown, b"k" * 32, []).text(
      "Unknown Participant left") == "Unknown Participant left"
  texts, _, report = imported("discord", path, "delta.w", pseudonymize=True,
                              key=str(tmp_path / "key"))
  # sora_k#0 is sora_k (and Sora Kim, from the friends list); the
  # "Unknown Participant" of a deleted account is no one.
  assert report["people_pseudonymized"] == 1
  (first,) = [t for t in texts if "hey" in t]
  who = re.search(r"hey @(\w+), (\w+) and (\w+) are one person", first)
  assert who and len({who.group(1), who.group(2), who.group(3)}) == 1
  assert re.sub(r"\d+$", "", who.group(1)) in pseudonyms.NAMES
  assert not re.search(r"(?i)sora|kim|unknown participant", "".join(texts))
  assert report["skipped"] == {"messages met twice": 1,
                               "messages of only media": 1}


def test_discord_recipients_of_the_wrong_type_is_one_line(tmp_path):
  path = package_files(tmp_path, {"recipients": 5})
  out = tmp_path / "posts.jsonl"
  done = run_launch("--kind=discord", f"--archive={path}", "--me=delta.w",
                    f"--out={out}")
  assert (done.returncode, done.stderr) == (
      2, f"error: {path}: Messages/c888/channel.json is not a channel.json "
         "(an object whose recipients are a list): not a Discord archive "
         "(--kind=discord)\n")
  assert not out.exists()


def test_json_nested_200000_deep_is_one_line(tmp_path):
  (tmp_path / "export").mkdir()
  (tmp_path / "export" / "general [1].json").write_text(
      "[" * 200_000 + "]" * 200_000)
  done = run_launch("--kind=discord", f"--archive={tmp_path / 'export'}",
                    "--me=delta.w", f"--out={tmp_path / 'posts.jsonl'}")
  assert (done.returncode, done.stderr) == (
      2, f"error: {tmp_path / 'export'}: general [1].json is JSON nested "
         "too deeply to read\n")


# ---- Facebook ---------------------------------------------------------------


def test_facebook_reactions_attachment_notices_and_link_only_posts():
  texts, _, report = imported("facebook", "facebook_messenger",
                              "Delta Whiskey")
  assert texts == [
      "#1 Delta Whiskey posted:\n\n"
      "Written 4 PM September 2023 | Delta Whiskey's tags:\n\n"
      "New poem up: the kettle one. Thank you all for waiting.",
      " Conversation between Bob Smith and Delta Whiskey | 2 posts |\n"
      "#1 Bob Smith posted:\n\nhow is the old kettle?\n\n"
      "#2 Delta Whiskey commented:\n\n"
      "Written 11 AM September 2023 | Delta Whiskey's tags:\n\n"
      "it cracked this morning, I am in mourning"]
  assert report["skipped"] == {"attachment notices": 1, "link-only posts": 1,
                               "reaction notices": 2}


# ---- Mastodon ---------------------------------------------------------------


def test_mastodon_hashtags_are_tags_and_polls_keep_their_options():
  texts, posts, _ = imported("mastodon", "mastodon_archive", "delta")
  assert texts == [
      "#1 delta posted:\n\n"
      "Written 11 AM September 2023 | delta's tags: #kettles, #TeaTime\n\n"
      'the best essay on kettles, by @ftrain: <a href="https://www.ftrain.com'
      '/kettles">https://www.ftrain.com/kettles</a> #kettles #TeaTime',
      "#1 delta posted:\n\n"
      "Written 8 AM September 2023 | delta's tags:\n\n"
      "which kettle should the next poem be about?\n\n"
      "<ul><li>the whistling one</li>\n<li>the silent electric</li></ul>"]
  assert posts[0]["tags"] == ["kettles", "TeaTime"]


# ---- after --pseudonymize, no one else's name anywhere ----------------------

# Every form of the others' names a reader would recognize, per fixture.
OTHERS = {
    ("twitter", "x_archive", "delta_whiskey"):
        ("bob_smith", "Bob Smith", "carol_crane"),
    ("wordpress", "wordpress_com", "deltawhiskey"):
        ("Bob Smith", "bob", "Carol Crane", "carol"),
    ("discord", "discord_exporter", "Delta Whiskey"):
        ("Bob Smith", "bob_smith", "bob", "deltaforce"),
    ("facebook", "facebook_messenger", "Delta Whiskey"):
        ("Bob Smith", "Bob", "bobsmith"),
    ("mastodon", "mastodon_archive", "delta"): ("@ftrain",),
}


@pytest.mark.parametrize("kind, folder, me", sorted(OTHERS))
def test_pseudonymized_outputs_name_no_one_else(tmp_path, kind, folder, me):
  key = str(tmp_path / "posts.jsonl.pseudonym-key")
  texts, posts, report = imported(kind, folder, me, pseudonymize=True,
                                  key=key, min_own_fraction=0.0)
  written = "\n".join([json.dumps(posts, ensure_ascii=False), *texts,
                       archives.summary(report, "posts.jsonl"),
                       report_page(report, "posts.jsonl"),
                       json.dumps(report, ensure_ascii=False)])
  for name in OTHERS[(kind, folder, me)]:
    assert not re.search(rf"(?i)(?<![^\W_]){re.escape(name)}(?![^\W_])",
                         written), name
  assert report["people_pseudonymized"] >= 1
  if kind == "discord":
    # The owner's display name stays whole; the friend called Delta is not.
    assert "@Delta Whiskey did you" in texts[0]
    assert not re.search(r"\bDelta\b(?! Whiskey)", written)
  if kind == "mastodon":
    # The site of an address is left as it is.
    assert written.count("ftrain") == written.count("www.ftrain.com")
    assert "https://www.ftrain.com/kettles" in texts[0]
  with pytest.raises(UserError):  # the key is private: reused as it is
    os.chmod(key, 0o644)
    pseudonyms.load_key(key)
