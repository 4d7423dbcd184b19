"""Facebook's friends lists, notices in the account's language, and the
short forms of friends' names (issue 38, what was left of steps 2 and 4).

The download is tests/data/facebook_friends (its README.md says where its
layout was found; the people are made up: the owner Greta
Vogel, her friends Robert Klein, Jürgen Maier and Will Hartmann, a removed
friend Ilse Brandt, and a suggested stranger Otto Normal). Its account is in
German. The expected documents are written by hand from the text format's
rules; a fixed key makes the pseudonyms fixed.
"""

import json
import os
import re

import pytest

from bot.corpus import archives, pseudonyms
from bot.corpus.archives.report import html as report_page
from bot.tumblr.thread import Thread, Turn
from tests import test_import_archive as base

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRIENDS = os.path.join(REPO, "tests", "data", "facebook_friends")
KEY = "0f" * 32
ME = "Greta Vogel"
GRETA = ("Ja, {bobby}, er ist gestern gesprungen. {jurgen} sagt, {jurgen2} "
         "hätte es gewusst, und {ilse} lacht. Ich will einen neuen, I will go "
         "tomorrow.")


def fixed_key(tmp_path) -> str:
  path = str(tmp_path / "posts.jsonl.pseudonym-key")
  descriptor = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
  with os.fdopen(descriptor, "w") as f:
    f.write(KEY + "\n")
  return path


def imported(folder, pseudonymize=False, key=None):
  return base.imported_texts("facebook", folder, ME, pseudonymize, key)


def conversation(robert, greta):
  return (f" Conversation between {robert} and {ME} | 2 posts |\n"
          f"#1 {robert} posted:\n\nWie geht es dem alten Wasserkocher?\n\n"
          "😢 sag nicht, dass er kaputt ist\n\n"
          f"#2 {ME} commented:\n\n"
          f"Written 11 AM September 2023 | {ME}'s tags:\n\n{greta}")


def test_notices_in_the_accounts_language_are_dropped():
  texts, _, report = imported(FRIENDS)
  # The reaction notice is known by its stamp (any language); the German
  # attachment notice by its words; Robert's own 😢 message, sent earlier
  # than his reaction, is his and is kept.
  assert texts == [conversation("Robert Klein", GRETA.format(
      bobby="Bobby", jurgen="Jürgen", jurgen2="JÜRGEN", ilse="Ilse"))]
  assert report["skipped"] == {"attachment notices": 1,
                               "reaction notices": 1}


def test_friends_lists_and_short_names_are_pseudonymized(tmp_path):
  texts, posts, report = imported(FRIENDS, pseudonymize=True,
                                  key=fixed_key(tmp_path))
  # Bobby is Robert's short form; Jürgen never wrote (a friends list names
  # him), Ilse is a removed friend; "will" is a word, not Will Hartmann.
  assert texts == [conversation("Jesse", GRETA.format(
      bobby="Jesse", jurgen="Ari", jurgen2="Ari", ilse="Zion"))]
  assert report["people_pseudonymized"] == 3
  written = "\n".join([json.dumps(posts, ensure_ascii=False), *texts,
                       archives.summary(report, "posts.jsonl"),
                       report_page(report, "posts.jsonl"),
                       json.dumps(report, ensure_ascii=False)])
  for name in ("Robert", "Klein", "Bobby", "Jürgen", "Maier", "Ilse",
               "Brandt", "Hartmann", "robertklein"):
    assert not re.search(rf"(?i)(?<![^\W_]){re.escape(name)}", written), name


def test_an_older_friends_file_and_a_stranger(tmp_path):
  """`friends/friends.json` with `"friends"` (older downloads) is read; the
  suggestions (`people_you_may_know.json`) are strangers and are not."""
  inbox = tmp_path / "messages" / "inbox" / "bob_1"
  inbox.mkdir(parents=True)
  (inbox / "message_1.json").write_text(json.dumps({
      "participants": [{"name": "Bob Smith"}, {"name": ME}],
      "messages": [
          {"sender_name": ME, "timestamp_ms": 1600000060000,
           "content": "Mina and Otto said the same, and Minnie too"},
          {"sender_name": "Bob Smith", "timestamp_ms": 1600000000000,
           "content": "hi"}]}))
  (tmp_path / "friends").mkdir()
  (tmp_path / "friends" / "friends.json").write_text(json.dumps(
      {"friends": [{"name": "Mina Kov\u00c3\u00a1\u00c4\u008d",
                    "timestamp": 1500000000}]}))
  (tmp_path / "friends" / "people_you_may_know.json").write_text(json.dumps(
      {"people_you_may_know_v2": [{"name": "Otto Normal",
                                   "timestamp": 1500000000}]}))
  texts, _, _ = imported(str(tmp_path), pseudonymize=True,
                         key=fixed_key(tmp_path))
  assert texts[0].endswith("Val and Otto said the same, and Minnie too")


@pytest.mark.parametrize("friend, text, expected", [
    ("Bob Smith", "Bobby and BOBBIE and Robert and Rob", "Oakley and Oakley "
     "and Oakley and Oakley"),
    # A common word in a name is matched only as a name is written.
    ("Will Hartmann", "I will go, Will. Billy and William, bill me",
     "I will go, Oakley. Oakley and Oakley, bill me"),
    # A name's pet form is made from a short name alone; words stay words.
    ("Jack Lee", "Jacky, Jackie and Jack hit the jackpot",
     "Oakley, Oakley and Oakley hit the jackpot"),
    ("Kit Moss", "Kitty fed the kitty", "Oakley fed the kitty"),
])
def test_short_forms_of_a_friends_given_name(friend, text, expected):
  people = pseudonyms.People()
  people.add("x:friend", friend)
  thread = Thread((Turn("Delta Whiskey", "posted", text),), "Delta Whiskey",
                  "1")
  out, _ = pseudonyms.pseudonymize([thread], people, bytes.fromhex(KEY),
                                   keep=["Delta Whiskey"], platform="x")
  assert out[0].turns[0].text == expected


def test_the_owners_short_forms_are_never_anothers():
  """The owner is Robert: a friend called Bob keeps his own name replaced,
  but Rob, Robbie and Bobby are the owner's and stay."""
  people = pseudonyms.People()
  people.add("x:bob", "Bob Smith")
  thread = Thread((Turn("Robert Jones", "posted",
                        "Bob met Rob, Robbie, Bobby and Bobbie"),),
                  "Robert Jones", "1")
  out, _ = pseudonyms.pseudonymize([thread], people, bytes.fromhex(KEY),
                                   keep=["Robert Jones"], platform="x")
  assert out[0].turns[0].text == "Frankie met Rob, Robbie, Bobby and Frankie"
