"""Choosing one post among sampled candidates.

In order, as the original did:
  1. drop candidates that cannot be posted: empty or too short, cut off by
     the token budget, text that runs into another turn of the conversation
     (a generated turn delimiter), an echo of the prompt, an @-mention of
     anyone but the person being answered and the bot itself, or a text the
     operator already turned down;
  2. the mood screen: drop candidates whose sentiment is outside the range
     the current mood allows;
  3. epsilon-greedy over the calibrated selector probabilities: with
     probability epsilon (per job type) a uniformly random survivor, else
     the most likely to be liked. Without a selector head (candidates with
     no selector score) the best is the one the generator found most
     likely: the highest mean log-probability per token.
Every candidate gets a verdict ("kept" or why it was dropped) so the trace and
the feed can say why the winner won. All functions here are pure; the random
draw comes from the `rng` passed in.
"""

import dataclasses
import random
import re
from typing import Callable, Optional, Sequence

_MENTION = re.compile(r"(?<![\w/])@([A-Za-z0-9][A-Za-z0-9-]*)")
_WORDS = re.compile(r"[^\w]+")


@dataclasses.dataclass
class Candidate:
  """One sampled post and what the models said about it."""
  text: str
  selector: Optional[float] = None  # P(liked), calibrated; None: no head
  sentiment: float = 0.5    # P(positive)
  mean_logprob: Optional[float] = None
  verdict: str = "kept"
  tags: list = dataclasses.field(default_factory=list)  # generated tags
  raw: str = ""  # the continuation as sampled
  finished: bool = True  # it ended with end-of-text
  kept_id: Optional[int] = None  # a kept candidate of an earlier post
  # The autoreviewer's P(the operator turns it down), from the same forward
  # as the other scores; None without an autoreviewer head.
  p_reject: Optional[float] = None

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Decision:
  """The outcome of a choice: the winner's index (or None) and why."""
  index: Optional[int]
  reason: str
  survivors: int


def _normalized(text: str) -> str:
  return " ".join(_WORDS.sub(" ", text.lower()).split())


def is_echo(candidate: str, prompt_text: str) -> bool:
  """Whether a candidate repeats what it answers (or is contained in it)."""
  c, p = _normalized(candidate), _normalized(prompt_text)
  if not c or not p:
    return False
  return c == p or c in p or (len(p) >= 12 and p in c)


def mentions(text: str) -> list:
  """Blog names @-mentioned in a text, lowercased."""
  return [m.lower() for m in _MENTION.findall(text)]


def screen(candidate: Candidate, *, prompt_text: str, allowed_names,
           min_chars: int, turn_delimiters: Sequence[re.Pattern] = (),
           rejected: Sequence[str] = (),
           names_avoided: Callable[[str], str] = lambda text: "") -> str:
  """The first reason to drop a candidate, or "kept".

  `turn_delimiters` are searched in the raw continuation (a match means the
  generator ran on into another turn); `rejected` are texts an operator
  turned down before; `names_avoided(text)` is an avoided user the text
  names, or "".
  """
  text = candidate.text.strip()
  if not text:
    return "empty"
  if len(text) < min_chars:
    return f"too short ({len(text)} < {min_chars} chars)"
  if not candidate.finished:
    return "unfinished (no end of text within max_new_tokens)"
  for pattern in turn_delimiters:
    m = pattern.search(candidate.raw or candidate.text)
    if m:
      return f"turn delimiter {m.group(0).strip()!r}"
  if is_echo(text, prompt_text):
    return "echoes the prompt"
  allowed = {n.lower() for n in allowed_names if n}
  others = [m for m in mentions(text) if m not in allowed]
  if others:
    return f"mentions @{others[0]}"
  avoided = names_avoided(text)
  if avoided:
    return f"names {avoided}, who is on the avoid list"
  if _normalized(text) in {_normalized(r) for r in rejected if r}:
    return "the operator rejected this text"
  return "kept"


def mood_screen(candidate: Candidate, sentiment_range: tuple) -> str:
  lo, hi = sentiment_range
  if not lo <= candidate.sentiment <= hi:
    return (f"mood: sentiment {candidate.sentiment:.2f} outside "
            f"[{lo:.2f}, {hi:.2f}]")
  return "kept"


def apply_screens(candidates: Sequence[Candidate], *,
                  sentiment_range: Optional[tuple], **screen_args) -> int:
  """Sets each candidate's verdict; returns how many survive all screens.

  `screen_args` are `screen`'s keyword arguments.
  """
  for c in candidates:
    c.verdict = screen(c, **screen_args)
    if c.verdict == "kept" and sentiment_range is not None:
      c.verdict = mood_screen(c, sentiment_range)
  return sum(c.verdict == "kept" for c in candidates)


def mood_rejections(candidates: Sequence[Candidate]) -> int:
  return sum(c.verdict.startswith("mood:") for c in candidates)


def _ranking(candidates: Sequence[Candidate], kept: list) -> tuple:
  """How kept candidates are ranked: (name, score of candidate i)."""
  if all(candidates[i].selector is not None for i in kept):
    return "selector probability", lambda i: candidates[i].selector
  return "mean log-probability", lambda i: (
      -float("inf") if candidates[i].mean_logprob is None
      else candidates[i].mean_logprob)


def epsilon_greedy(candidates: Sequence[Candidate], epsilon: float,
                   rng: random.Random) -> Decision:
  """Picks among the kept candidates: explore with prob. epsilon, else best."""
  kept = [i for i, c in enumerate(candidates) if c.verdict == "kept"]
  if not kept:
    return Decision(None, "no candidate survived the screens", 0)
  name, score = _ranking(candidates, kept)
  best = max(kept, key=score)
  if len(kept) > 1 and rng.random() < epsilon:
    pick = rng.choice(kept)
    return Decision(pick, f"explore (epsilon={epsilon:g}): random among "
                    f"{len(kept)} survivors; {name} {score(pick):.3f} vs "
                    f"best {score(best):.3f}", len(kept))
  runner_up = max((score(i) for i in kept if i != best), default=None)
  why = f"highest {name} {score(best):.3f}"
  if runner_up is not None:
    why += f" (next {runner_up:.3f}) among {len(kept)} survivors"
  return Decision(best, why, len(kept))


def reblog_gate(winner: Candidate, *, min_selector: float, gate_prob: float,
                rng: random.Random) -> tuple:
  """Dashboard reblogs need the selector and the config's coin to agree.

  Returns (reblog?, reason). Without a selector head only the coin counts.
  """
  if winner.selector is not None and winner.selector < min_selector:
    return False, (f"selector {winner.selector:.3f} below the reblog "
                   f"threshold {min_selector:.3f}")
  draw = rng.random()
  if draw >= gate_prob:
    return False, f"probability gate said no ({draw:.3f} >= {gate_prob:g})"
  if winner.selector is None:
    return True, f"no selector head; gate {draw:.3f} < {gate_prob:g}"
  return True, (f"selector {winner.selector:.3f} >= {min_selector:.3f} and "
                f"gate {draw:.3f} < {gate_prob:g}")
