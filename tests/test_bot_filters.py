"""The word list: leetspeak, spaced-out and no-space spellings, whole words."""

import os

import pytest

from bot.filters import WordFilter
from gpt2.errors import UserError


@pytest.fixture
def word_filter(tmp_path):
  path = tmp_path / "words.txt"
  path.write_text("# words that send a post to review\nheck\nbad word  # a phrase\n"
                  "\nfrog\n")
  return WordFilter.from_file(str(path))


@pytest.mark.parametrize("text,hit", [
    ("what the heck", "heck"),
    ("WHAT THE HECK", "heck"),
    ("h3ck", "heck"),
    ("h e c k", "heck"),
    ("h.e.c.k!", "heck"),
    ("heeeck", "heck"),
    ("a bad word here", "bad word"),
    ("a badword here", "bad word"),
    ("b4d w0rd", "bad word"),
    ("b@d-w0rd", "bad word"),
    ("fr0g", "frog"),
    ("f-r-o-g", "frog"),
])
def test_listed_words_hit_in_their_variants(word_filter, text, hit):
  assert word_filter.hits(text) == [hit]


@pytest.mark.parametrize("text", [
    "check the deck", "frogs? no, frogurt", "a badge of wordplay", "",
    "thecks", "bad, worded",
])
def test_ordinary_text_passes(word_filter, text):
  assert word_filter.hits(text) == []


def test_every_entry_is_reported_once(word_filter):
  assert sorted(word_filter.hits("heck, frog, HECK")) == ["frog", "heck"]


def test_no_list_filters_nothing():
  assert WordFilter.from_file("").hits("heck") == []


def test_missing_file_is_one_clear_line(tmp_path):
  missing = os.path.join(tmp_path, "nope.txt")
  with pytest.raises(UserError, match="nope.txt") as e:
    WordFilter.from_file(missing)
  assert "\n" not in str(e.value)
