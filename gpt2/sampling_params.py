"""The sampler's rules and their defaults, with no JAX: the bot's settings
(configs/bot.py, bot.ml, bot.console) read their numbers from here.

`gpt2.sampling` applies the rules; it re-exports SamplingParams.
"""

import dataclasses
from typing import Optional

import numpy as np

from gpt2.errors import UserError

# Sampling beyond the context (`gpt2.sampling.sample`): a call writes in at
# most this many windows of the context (the original bot's limit).
MAX_STEPS = 8
# The bot's longest candidate, in tokens (the original bot's: 1,600, which
# 124M's context of 1,024 writes in 7 steps of 256).
BOT_MAX_NEW_TOKENS = 1600


@dataclasses.dataclass(frozen=True)
class SamplingParams:
  """Sampling rules. A value that switches a rule off: top_k 0, top_p 1,
  typical_p 1, mirostat_tau 0, breakruns_tau 0. `top_k` 1 or `temperature` 0
  is greedy decoding."""
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  typical_p: float = 1.0
  # Mirostat 2.0 (Basu et al., ICLR 2021): the target surprise in bits, and
  # the learning rate of mu, the cut (`gpt2.sampling.mirostat_filter`).
  mirostat_tau: float = 0.0
  mirostat_eta: float = 0.1
  # Breakruns: the temperature is `temperature + breakruns_tau * n`, n the
  # count of consecutive sampled tokens that were their step's argmax.
  breakruns_tau: float = 0.0

  @classmethod
  def bot_defaults(cls) -> "SamplingParams":
    """The bot's rules: breakruns from T 0.9 by 0.02 a run step, top-p 0.95."""
    return cls(temperature=0.9, top_p=0.95, breakruns_tau=0.02)

  def validate(self, vocab_size: Optional[int] = None) -> "SamplingParams":
    """Raises a one-line UserError naming the bad value; returns self."""
    if not self.temperature >= 0:
      raise UserError(f"temperature must be >= 0, got {self.temperature}")
    if not (isinstance(self.top_k, (int, np.integer)) and self.top_k >= 0):
      raise UserError(f"top_k must be an integer >= 0, got {self.top_k!r}")
    if vocab_size is not None and self.top_k > vocab_size:
      raise UserError(f"top_k={self.top_k} is beyond the vocabulary of "
                      f"{vocab_size} tokens")
    for name in ("top_p", "typical_p"):
      value = getattr(self, name)
      if not 0 < value <= 1:
        raise UserError(f"{name} must be in (0, 1], got {value}")
    if not self.mirostat_tau >= 0:
      raise UserError(f"mirostat_tau must be >= 0, got {self.mirostat_tau}")
    if not self.mirostat_eta > 0:
      raise UserError(f"mirostat_eta must be > 0, got {self.mirostat_eta}")
    if not self.breakruns_tau >= 0:
      raise UserError(f"breakruns_tau must be >= 0, got {self.breakruns_tau}")
    return self

  @property
  def initial_mu(self) -> float:
    """Mirostat's mu at a candidate's first token: 2 tau, as in the paper's
    algorithm and its authors' code."""
    return 2.0 * self.mirostat_tau

  @property
  def greedy(self) -> bool:
    return self.top_k == 1 or self.temperature == 0

  def structure(self) -> tuple:
    """Which rules run (static: one compiled program per structure)."""
    if self.greedy:
      return (True, 0, False, False, False, False)
    return (False, int(self.top_k), self.top_p < 1, self.typical_p < 1,
            self.mirostat_tau > 0, self.breakruns_tau > 0)

  def values(self) -> dict:
    """The numbers the compiled program takes as arguments."""
    names = ("temperature", "top_p", "typical_p", "mirostat_tau",
             "mirostat_eta", "breakruns_tau")
    return {n: np.float32(getattr(self, n)) for n in names}
