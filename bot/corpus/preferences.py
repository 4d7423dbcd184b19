"""Preference pairs from the operator's choices, for tuning the generator
(issue: a bot that learns from its operator).

Each pair is one prompt, in the text format the generator reads, with a
text the operator preferred (`chosen`) and one they did not (`rejected`),
both as the generator writes them after the prompt (the tags line, a blank
line, the post):

- review: on one job, each text the operator turned down (retried,
  rejected, deleted) against the text they let through (accepted as the
  bot wrote it, or as they edited it: the edit, under the bot's tags);
- console: on one Write, the candidate the operator sent against each one
  they did not send.

`read_pairs(state)` reads them from a bot's state file without writing to
it; equal pairs (spacing aside) count once, and a pair whose two texts are
the same is no preference. `split(pairs, test_fraction)` keeps every pair
of one prompt on the same side, by a hash of the prompt, so the test pairs'
prompts are never trained on.
"""

import collections
import dataclasses
import hashlib
import re
from typing import Dict, List, Tuple

from bot import text_format
from bot.state import DECISION_LABELS, read_only_rows
from gpt2.errors import UserError


@dataclasses.dataclass(frozen=True)
class Pair:
  prompt: str
  chosen: str
  rejected: str
  source: str  # "review" or "console"
  job_key: str


def continuation(tags, body: str) -> str:
  """A post as the generator writes it after the prompt's `tags:`."""
  line = ", ".join(f"#{t}" for t in tags)
  return f" {line}\n\n{body}" if line else f"\n\n{body}"


def _review_pairs(path: str, counts: collections.Counter) -> List[Pair]:
  examples = read_only_rows(path, "SELECT * FROM review_examples ORDER BY id",
                            "review decisions")
  edits = {r["job_key"]: r["text"] for r in read_only_rows(
      path, "SELECT job_key, text FROM decisions WHERE action = 'accept' "
      "AND text IS NOT NULL AND text != '' ORDER BY id", "decisions")}
  by_job: Dict[str, list] = collections.defaultdict(list)
  for e in examples:
    by_job[e["job_key"]].append(e)
  pairs = []
  for key, rows in by_job.items():
    turned_down = [r for r in rows if DECISION_LABELS[r["decision"]] == 1]
    let_through = [r for r in rows if DECISION_LABELS[r["decision"]] == 0]
    if not turned_down or not let_through:
      counts["jobs with one kind of decision"] += 1
      continue
    accepted = let_through[-1]
    chosen = accepted["text"]
    if accepted["decision"] == "accept_edited" and key in edits:
      tags = text_format.split_continuation(chosen).tags
      chosen = continuation(tags, edits[key].strip())
    for r in turned_down:
      pairs.append(Pair(accepted["prompt"], chosen, r["text"], "review", key))
  return pairs


def _console_pairs(path: str) -> List[Pair]:
  import json  # pylint: disable=import-outside-toplevel
  rows = read_only_rows(path, "SELECT job_key, entry FROM written WHERE "
                        "job_key LIKE 'console:%' ORDER BY id", "written")
  pairs = []
  for row in rows:
    entry = json.loads(row["entry"])
    cands, winner = entry.get("candidates") or [], entry.get("winner")
    if winner is None or not entry.get("prompt"):
      continue
    chosen = cands[winner].get("raw", "")
    for i, c in enumerate(cands):
      if i != winner:
        pairs.append(Pair(entry["prompt"], chosen, c.get("raw", ""),
                          "console", row["job_key"]))
  return pairs


def _norm(text: str) -> str:
  return " ".join(text.split())


def read_pairs(path: str) -> Tuple[List[Pair], Dict[str, int]]:
  """(the pairs, counts of what was read and dropped) of a state file."""
  counts = collections.Counter()
  found = _review_pairs(path, counts) + _console_pairs(path)
  pairs, seen = [], set()
  for p in found:
    key = (_norm(p.prompt), _norm(p.chosen), _norm(p.rejected))
    if not _norm(p.chosen) or not _norm(p.rejected) or key[1] == key[2]:
      counts["pairs of equal or empty texts"] += 1
    elif key in seen:
      counts["duplicates"] += 1
    else:
      seen.add(key)
      pairs.append(p)
  counts["pairs"] = len(pairs)
  counts["prompts"] = len({_norm(p.prompt) for p in pairs})
  return pairs, dict(counts)


def check_enough(pairs: List[Pair], path: str, minimum: int = 8) -> None:
  """Too few pairs, or pairs of one prompt only, is a UserError."""
  prompts = len({_norm(p.prompt) for p in pairs})
  if len(pairs) < minimum or prompts < 2:
    raise UserError(
        f"{path} holds {len(pairs)} preference pairs over {prompts} prompts; "
        f"tuning needs at least {minimum} pairs over 2 or more prompts "
        "(review decisions with both a turned-down and an accepted text, "
        "or candidates sent from the console's Write tab)")


def _position(prompt: str) -> float:
  """Where a prompt falls in [0, 1), by a hash of it (spacing aside)."""
  digest = hashlib.sha256(_norm(prompt).encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big") / 2.0**64


def in_test(prompt: str, test_fraction: float) -> bool:
  return _position(prompt) < test_fraction


def split(pairs: List[Pair], test_fraction: float
          ) -> Tuple[List[Pair], List[Pair]]:
  """(train, test), every pair of one prompt on one side. With two or more
  prompts neither side is empty: the prompt that hashes lowest goes to the
  test side, or the highest to the train side, where the fraction left one
  side without any."""
  test_prompts = {_norm(p.prompt) for p in pairs
                  if in_test(p.prompt, test_fraction)}
  prompts = sorted({_norm(p.prompt) for p in pairs}, key=_position)
  if len(prompts) >= 2 and not test_prompts:
    test_prompts = {prompts[0]}
  elif len(prompts) >= 2 and test_prompts == set(prompts):
    test_prompts.discard(prompts[-1])
  train = [p for p in pairs if _norm(p.prompt) not in test_prompts]
  test = [p for p in pairs if _norm(p.prompt) in test_prompts]
  return train, test


def _words(text: str) -> List[str]:
  return re.findall(r"[a-z0-9']+", text.lower())


def _bigrams(text: str) -> set:
  words = _words(text)
  return {" ".join(words[i:i + 2]) for i in range(len(words) - 1)}


def turned_down_phrases(pairs: List[Pair], limit: int = 10) -> List[str]:
  """Word pairs the operator turned down and never let through: in at
  least two (and a tenth) of the distinct turned-down texts and in none of
  the chosen ones, the most frequent first."""
  rejected = {_norm(p.rejected) for p in pairs}
  chosen = {_norm(p.chosen) for p in pairs}
  counts = collections.Counter()
  for text in rejected:
    counts.update(_bigrams(text))
  in_chosen = set().union(*(_bigrams(t) for t in chosen)) if chosen else set()
  least = max(2, -(-len(rejected) // 10))
  found = [(n, g) for g, n in counts.items()
           if n >= least and g not in in_chosen]
  return [g for _, g in sorted(found, key=lambda x: (-x[0], x[1]))[:limit]]


def holds_phrase(text: str, phrases: List[str]) -> bool:
  """Whether `text` says any of `phrases` (words in order, case and
  punctuation aside)."""
  words = " " + " ".join(_words(text)) + " "
  return any(f" {' '.join(_words(p))} " in words for p in phrases
             if _words(p))


def sampled_share(config, test_prompts: List[str], phrases: List[str]):
  """`measure` for gpt2.dpo.tune (launch.tune_preferences): the share of
  candidates sampled for `test_prompts`, with the bot's sampler and
  `config.sampling`'s settings and the same seed before and after, that
  say one of `phrases`."""
  # pylint: disable=import-outside-toplevel
  from bot import ml
  from gpt2 import weights

  def measure(model_config, params, tokenizer) -> dict:
    if not phrases or not test_prompts:
      return {"turned_down_rate": None, "candidates": 0}
    settings = ml.SamplingSettings.from_config(config.sampling)
    model = ml.LocalModel(weights.LoadedModel(model_config, params, tokenizer,
                                              "tuned"), settings=settings)
    samples = model.generate(test_prompts, config.sampling.n,
                             seed=config.seed)
    texts = [s.raw for per_prompt in samples for s in per_prompt]
    held = sum(holds_phrase(t, phrases) for t in texts)
    return {"turned_down_rate": held / len(texts), "candidates": len(texts)}

  return measure
