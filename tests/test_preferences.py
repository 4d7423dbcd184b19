"""Preference pairs from the bot's state (bot.corpus.preferences): the
operator's review decisions and console sends, written into a real state
file by the bot's own Store, read back without writing to it."""

import os

import pytest

from bot.corpus import preferences as P
from bot.state import Store
from gpt2.errors import UserError


def ask_prompt(i: int) -> str:
  return (f"#1 asker{i} asked:\n\nquestion number {i}?\n\n#2 mybot "
          f"responded:\n\nWritten 1 PM May 2026 | mybot's tags:")


def write_state(path: str) -> None:
  store = Store(path, clock=lambda: 1_800_000_000.0)
  # Job 1: retried twice, then accepted as written.
  store.add_review_example("ask:1", ask_prompt(1), " #frogs\n\npurple elephant",
                           "retry", "console")
  store.add_review_example("ask:1", ask_prompt(1), " #frogs\n\nno, never",
                           "retry", "console")
  store.add_review_example("ask:1", ask_prompt(1), " #frogs\n\nyes, I do",
                           "accept", "console")
  # Job 2: rejected, then (a later draft) accepted after an edit: the
  # operator's text under the bot's tags is what they chose.
  store.add_review_example("ask:2", ask_prompt(2), " #tea\n\npurple elephant",
                           "reject", "tumblr")
  store.add_decision("ask:2", "accept", "Earl Grey, hot.")
  store.add_review_example("ask:2", ask_prompt(2), " #tea\n\ncoffee?",
                           "accept_edited", "console")
  # Job 3: only accepted: no pair. Job 4: the same retry twice: one pair.
  store.add_review_example("ask:3", ask_prompt(3), "\n\nfine", "accept",
                           "console")
  for _ in range(2):
    store.add_review_example("ask:4", ask_prompt(4), "\n\nbad  answer",
                             "retry", "console")
  store.add_review_example("ask:4", ask_prompt(4), "\n\ngood answer",
                           "published", "tumblr")
  # A Write sent from the console: candidate 1 of three.
  store.record_written("console:abc", {
      "prompt": ask_prompt(5), "winner": 1, "candidates": [
          {"raw": " #a\n\nfirst"}, {"raw": " #a\n\nsecond"},
          {"raw": " #a\n\nsecond"}]})
  store.close()


def test_pairs_from_reviews_and_console_sends(tmp_path):
  path = str(tmp_path / "bot.db")
  write_state(path)
  before = os.stat(path).st_mtime_ns
  pairs, counts = P.read_pairs(path)
  assert os.stat(path).st_mtime_ns == before  # only read
  got = {(p.job_key, p.chosen, p.rejected) for p in pairs}
  assert got == {
      ("ask:1", " #frogs\n\nyes, I do", " #frogs\n\npurple elephant"),
      ("ask:1", " #frogs\n\nyes, I do", " #frogs\n\nno, never"),
      ("ask:2", " #tea\n\nEarl Grey, hot.", " #tea\n\npurple elephant"),
      ("ask:4", "\n\ngood answer", "\n\nbad  answer"),
      ("console:abc", " #a\n\nsecond", " #a\n\nfirst"),
  }
  assert {p.source for p in pairs} == {"review", "console"}
  assert all(p.prompt == ask_prompt(int(p.job_key[-1])) for p in pairs
             if p.source == "review")
  # ask:4's repeat and the console's copy of the sent text are dropped.
  assert counts == {"pairs": 5, "prompts": 4, "duplicates": 1,
                    "pairs of equal or empty texts": 1,
                    "jobs with one kind of decision": 1}
  # The generator reads the chosen text after the prompt as it wrote it.
  chosen = P.Pair(ask_prompt(2), " #tea\n\nEarl Grey, hot.", "", "", "")
  from bot import text_format  # pylint: disable=import-outside-toplevel
  parsed = text_format.split_continuation(chosen.chosen)
  assert parsed.tags == ["tea"] and parsed.body == "Earl Grey, hot."


def test_a_prompts_pairs_stay_on_one_side_of_the_split(tmp_path):
  pairs = [P.Pair(ask_prompt(i % 40), f"good {i}", f"bad {i}", "review",
                  f"ask:{i % 40}") for i in range(400)]
  train, test = P.split(pairs, 0.25)
  assert len(train) + len(test) == 400 and 40 < len(test) < 160
  assert not {p.prompt for p in train} & {p.prompt for p in test}
  # The same split every time, whatever the order.
  again_train, _ = P.split(list(reversed(pairs)), 0.25)
  assert {p.chosen for p in again_train} == {p.chosen for p in train}


def test_too_few_pairs_or_one_prompt_is_one_line(tmp_path):
  path = str(tmp_path / "bot.db")
  write_state(path)
  pairs, _ = P.read_pairs(path)
  with pytest.raises(UserError, match=r"holds 5 preference pairs over 4 "
                     r"prompts; tuning needs at least 8 pairs"):
    P.check_enough(pairs, path)
  one = [P.Pair(ask_prompt(1), f"good {i}", "bad", "review", "ask:1")
         for i in range(10)]
  with pytest.raises(UserError, match="over 1 prompts"):
    P.check_enough(one, path)
  P.check_enough(pairs * 2 + one, path)  # enough: no error
  with pytest.raises(UserError, match="does not exist"):
    P.read_pairs(str(tmp_path / "nowhere.db"))
  not_state = tmp_path / "other.db"
  import sqlite3  # pylint: disable=import-outside-toplevel
  sqlite3.connect(not_state).execute("CREATE TABLE t (x)").connection.close()
  with pytest.raises(UserError, match="is not the bot's state"):
    P.read_pairs(str(not_state))


def test_both_sides_of_the_split_hold_a_prompt():
  two = [P.Pair(ask_prompt(i), "good", "bad", "review", f"ask:{i}")
         for i in (1, 2)]
  for fraction in (1e-9, 0.5, 1 - 1e-9):
    train, test = P.split(two, fraction)
    assert len(train) == len(test) == 1
  one = two[:1] * 3
  assert P.split(one, 1e-9) == (one, [])


def test_turned_down_phrases_are_those_never_let_through():
  pairs = [P.Pair(ask_prompt(i), f"a calm answer {i}",
                  f"the Purple  elephant! says {i}", "review", f"ask:{i}")
           for i in range(20)]
  pairs.append(P.Pair(ask_prompt(30), "elephant says hi", "purple rain",
                      "review", "ask:30"))
  # "elephant says" was once let through; "purple elephant" never was.
  assert P.turned_down_phrases(pairs) == ["purple elephant", "the purple"]
  assert P.holds_phrase("I saw THE purple elephant.", ["purple elephant"])
  assert not P.holds_phrase("a purple-ish elephant", ["purple elephant"])
  assert not P.holds_phrase("purpleelephant", ["purple elephant"])
  assert not P.holds_phrase("anything", [" ", ""])
