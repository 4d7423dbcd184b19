"""Candidate screens, the mood screen, epsilon-greedy and the reblog gate."""

import random

import pytest

from bot import choice, text_format
from bot.choice import Candidate
from bot.text_format import TURN_DELIMITERS

SCREEN = dict(prompt_text="do you like frogs?", allowed_names=["asker", "bot"],
              turn_delimiters=TURN_DELIMITERS, min_chars=5,
              rejected=["Frogs are my least favourite!"])


@pytest.mark.parametrize("text,verdict", [
    ("", "empty"),
    ("   ", "empty"),
    ("ok", "too short"),
    ("Do you like frogs?", "echoes the prompt"),
    ("do you like frogs? yes i do, they are great", "echoes the prompt"),
    ("yes!\n\n#3 asker asked:\n\nreally?", "turn delimiter"),
    ("yes\n\nWritten 3 PM May 2024 | bot's tags: #x", "turn delimiter"),
    ("frogs are my least favourite", "the operator rejected"),
    ("ask @someone_else about it", "mentions @someone"),
    ("thanks @asker, and hi from @bot", "kept"),
    ("email me at a@b.c? no: frogs are great", "kept"),
    ("i love frogs more than anything", "kept"),
])
def test_screens(text, verdict):
  got = choice.screen(Candidate(text), **SCREEN)
  assert got.startswith(verdict)


# Turns the small models wrote in their own spellings (the demo's console,
# 2026-12-05; the notes of 2026-12-01; the demo's feed), and lines that only
# look a little like them.
@pytest.mark.parametrize("raw,cut_at", [
    (" #fate\n\nI will, my lord.\nO3 bardolph commented:\n\nA jest",
     "I will, my lord."),
    (" #chat\n\nsure thing\n\nb asked:\n\nand then?", "sure thing"),
    (" #x\n\nwell met\n#12 Anonymous asked:\nwho?", "well met"),
    (" #x\n\nwell met\n3 horatio responded:\nso", "well met"),
    (" #x\n\nwell met\n# hamlet posted:  \nso", "well met"),
    (" #x\n\nwell met\n 4 posts |\n#1 a asked:", "well met"),
    (" #x\n\nwell met | 2 posts |", "well met"),
])
def test_a_turn_in_any_spelling_is_cut_and_its_candidate_dropped(raw,
                                                                 cut_at):
  generated = text_format.split_continuation(raw)
  assert generated.body == cut_at
  candidate = Candidate(generated.body + " and more words", raw=raw)
  assert choice.screen(candidate, **SCREEN).startswith("turn delimiter")


@pytest.mark.parametrize("raw", [
    " #x\n\nmy mother asked:\nwhy frogs?",
    " #x\n\nI asked: why frogs? and she commented: because.",
    " #x\n\n3 frogs sang all night",
    " #x\n\nposts | replies | asks",
])
def test_lines_that_only_look_like_turns_are_kept(raw):
  generated = text_format.split_continuation(raw)
  assert generated.body == raw.split("\n\n", 1)[1]
  assert choice.screen(Candidate(generated.body, raw=raw),
                       **SCREEN) == "kept"


def test_a_tags_line_the_model_wrote_mid_line_drops_the_candidate():
  raw = " #act i\n\nIco should','s tags: #act iii, her good help"
  assert choice.screen(Candidate("Ico should, her good help", raw=raw),
                       **SCREEN).startswith("turn delimiter")


def test_unfinished_and_raw_continuations():
  cut = Candidate("a long answer that never", finished=False)
  assert choice.screen(cut, **SCREEN).startswith("unfinished")
  ran_on = Candidate("fine", raw=" #tag\n\nfine\n#1 asker asked:\n")
  ran_on.text = "fine text"
  assert choice.screen(ran_on, **SCREEN).startswith("turn delimiter")


def test_mood_screen_and_survivor_count():
  cands = [Candidate("a happy frog day", sentiment=0.95),
           Candidate("a fine frog day", sentiment=0.6),
           Candidate("a sad frog day", sentiment=0.05),
           Candidate("x", sentiment=0.5)]
  kept = choice.apply_screens(cands, sentiment_range=(0.3, 0.9), **SCREEN)
  assert kept == 1
  assert [c.verdict.split(":")[0].split(" ")[0] for c in cands] == [
      "mood", "kept", "mood", "too"]
  assert choice.mood_rejections(cands) == 2


def test_greedy_picks_the_highest_selector_probability():
  cands = [Candidate("a", selector=0.2), Candidate("b", selector=0.9),
           Candidate("c", selector=0.5, verdict="empty")]
  d = choice.epsilon_greedy(cands, 0.0, random.Random(0))
  assert d.index == 1 and d.survivors == 2
  assert "highest selector probability 0.900" in d.reason


def test_epsilon_explores_at_about_its_rate():
  cands = [Candidate(str(i), selector=s) for i, s in
           enumerate([0.1, 0.9, 0.3, 0.2])]
  rng = random.Random(1)
  picks = [choice.epsilon_greedy(cands, 0.4, rng).index for _ in range(4000)]
  not_best = sum(p != 1 for p in picks) / len(picks)
  # Exploring picks uniformly, so 3/4 of explorations miss the best.
  assert not_best == pytest.approx(0.4 * 0.75, abs=0.03)


def test_nothing_survives():
  d = choice.epsilon_greedy([Candidate("a", verdict="empty")], 0.5,
                            random.Random(0))
  assert d.index is None


def test_reblog_gate_needs_selector_and_coin():
  rng = random.Random(0)
  assert not choice.reblog_gate(Candidate("a", selector=0.3),
                                min_selector=0.5, gate_prob=1.0, rng=rng)[0]
  assert choice.reblog_gate(Candidate("a", selector=0.7), min_selector=0.5,
                            gate_prob=1.0, rng=rng)[0]
  ok, why = choice.reblog_gate(Candidate("a", selector=0.7), min_selector=0.5,
                               gate_prob=0.0, rng=rng)
  assert not ok and "gate" in why


def test_without_a_selector_the_best_mean_logprob_wins():
  cands = [Candidate("a", mean_logprob=-2.5), Candidate("b", mean_logprob=-0.7),
           Candidate("c", mean_logprob=-0.1, verdict="empty"),
           Candidate("d", mean_logprob=None)]
  d = choice.epsilon_greedy(cands, 0.0, random.Random(0))
  assert d.index == 1 and d.survivors == 3
  assert "highest mean log-probability -0.700" in d.reason
  ok, why = choice.reblog_gate(cands[1], min_selector=0.9, gate_prob=1.0,
                               rng=random.Random(0))
  assert ok and "no selector head" in why


def test_a_candidate_naming_an_avoided_user_is_dropped():
  names = {"mallory"}.intersection
  avoided = lambda text: next(iter(names(text.lower().split())), "")
  got = choice.screen(Candidate("i think mallory would agree"),
                      **dict(SCREEN, names_avoided=avoided))
  assert got == "names mallory, who is on the avoid list"
  assert choice.screen(Candidate("i think frogs would agree"),
                       **dict(SCREEN, names_avoided=avoided)) == "kept"
