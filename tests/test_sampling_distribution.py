"""The sampling rules as distributions: many draws from one logit vector
against the distribution written out in numpy here (a chi-square test at a
fixed seed).

Each setting runs `gpt2.sampling.choose`, the step the sampler takes, on
20000 rows of the same logits with independent uniforms. The exact
distribution is computed from the rules' definitions in float64: softmax at
the temperature, then top-k (the k largest logits), then top-p (the fewest
most likely tokens whose mass reaches p) or typical-p (the tokens whose
surprise is closest to the entropy, fewest first, until their mass reaches
p), each on the distribution the previous rule left, renormalised.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from gpt2 import sampling as S

VOCAB, ROWS = 400, 20000


def _logits():
  # Spread like a language model's: a few likely tokens, a long tail.
  rng = np.random.default_rng(4)  # no cut within rounding of p (checked)
  return (rng.standard_normal(VOCAB) * 2.0).astype(np.float32)


def _softmax(x):
  x = np.asarray(x, np.float64)
  e = np.exp(x - x.max())
  return e / e.sum()


def _smallest_set(order, probs, mass):
  """Mask of the first tokens in `order` whose mass reaches `mass`.

  Asserts the cut is not within float32 rounding of `mass`, so the exact
  set is the one the float32 sampler must find.
  """
  cum = np.cumsum(probs[order])
  n = int(np.searchsorted(cum, mass)) + 1
  assert abs(cum[n - 1] - mass) > 1e-5 and (n < 2 or
                                            abs(cum[n - 2] - mass) > 1e-5)
  keep = np.zeros(len(probs), bool)
  keep[order[:n]] = True
  return keep


def exact(logits, temperature, top_k=0, top_p=1.0, typical_p=1.0):
  """P(token) under the rules, in float64."""
  p = _softmax(np.asarray(logits, np.float64) / temperature)
  if top_k:
    keep = np.zeros(len(p), bool)
    keep[np.argsort(-p, kind="stable")[:top_k]] = True
    p = np.where(keep, p, 0.0) / p[keep].sum()
  if top_p < 1:
    keep = _smallest_set(np.argsort(-p, kind="stable"), p, top_p)
    p = np.where(keep, p, 0.0) / p[keep].sum()
  if typical_p < 1:
    support = p > 0
    logp = np.log(p, where=support, out=np.full(len(p), -np.inf))
    entropy = -np.sum(p[support] * logp[support])
    shift = np.where(support, np.abs(-logp - entropy), np.inf)
    keep = _smallest_set(np.argsort(shift, kind="stable"), p, typical_p)
    p = np.where(keep, p, 0.0) / p[keep].sum()
  return p


@functools.partial(jax.jit, static_argnums=1)
def _choose(logits, structure, values, run, keys):
  uniforms = lambda n: jax.vmap(lambda k: jax.random.uniform(
      jax.random.fold_in(k, n), (2,)))(keys)
  rows = jnp.tile(logits[None], (len(keys), 1))
  return S.choose(rows, structure, values, run, None, uniforms)[0]


def draws(logits, params: S.SamplingParams, run: int = 0, seed: int = 0):
  """ROWS tokens drawn by `choose` from `logits`, breakruns' run at `run`."""
  keys = jax.random.split(jax.random.PRNGKey(seed), ROWS)
  token = _choose(jnp.asarray(logits), params.structure(), params.values(),
                  jnp.full((ROWS,), run, jnp.int32), keys)
  return np.bincount(np.asarray(token), minlength=len(logits))


def chi_square_p(counts, probs):
  """The p-value of the counts under `probs`; tokens expected fewer than 5
  times are pooled into one category (and outside the support: none)."""
  expected = probs * counts.sum()
  big = expected >= 5
  obs = np.append(counts[big], counts[~big].sum())
  exp = np.append(expected[big], expected[~big].sum())
  if exp[-1] < 5:  # too small to stand alone: pool it with the smallest
    smallest = int(np.argmin(exp[:-1]))
    obs[smallest] += obs[-1]
    exp[smallest] += exp[-1]
    obs, exp = obs[:-1], exp[:-1]
  return stats.chisquare(obs, exp).pvalue


CASES = {
    # The bot's rules at the start of a run (T 0.9) and after ten argmax
    # picks in a row (breakruns: T 0.9 + 10 x 0.02).
    "bot": (S.SamplingParams.bot_defaults(), 0,
            dict(temperature=0.9, top_p=0.95)),
    "bot_after_a_run_of_10": (S.SamplingParams.bot_defaults(), 10,
                              dict(temperature=1.1, top_p=0.95)),
    "top_k_then_top_p": (S.SamplingParams(temperature=0.9, top_k=40,
                                          top_p=0.8), 0,
                         dict(temperature=0.9, top_k=40, top_p=0.8)),
    "top_k_then_typical_p": (S.SamplingParams(temperature=0.9, top_k=40,
                                              typical_p=0.8), 0,
                             dict(temperature=0.9, top_k=40, typical_p=0.8)),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_draws_follow_the_exact_distribution(case):
  params, run, rules = CASES[case]
  logits = _logits()
  want = exact(logits, **rules)
  counts = draws(logits, params, run=run)
  support = want > 0
  kept = int(support.sum())
  assert 10 < kept < VOCAB  # the rules cut, and leave a real choice
  # Never a token the rules exclude, and each kept token's frequency fits.
  assert counts[~support].sum() == 0, np.flatnonzero(counts * ~support)
  p = chi_square_p(counts, want)
  print(f"{case}: {kept} tokens kept, chi-square p = {p:.3f}")
  assert p > 1e-3


@pytest.mark.slow
def test_the_chi_square_test_rejects_a_nearby_distribution():
  """The test above has the power to see a small change of the rules: the
  bot's draws against the exact distribution at T 1.0 instead of 0.9, or
  with top-p 0.9 instead of 0.95, both fail."""
  logits = _logits()
  counts = draws(logits, S.SamplingParams.bot_defaults())
  assert chi_square_p(counts, exact(logits, 0.9, top_p=0.95)) > 1e-3
  wrong_t = exact(logits, 1.0, top_p=0.95)
  assert chi_square_p(counts, wrong_t) < 1e-6
  wrong_p = exact(logits, 0.9, top_p=0.9)
  assert counts[wrong_p == 0].sum() > 0  # draws outside top-0.9's set
