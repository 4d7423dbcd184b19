"""Writing candidates for a pass's jobs: N samples per prompt in one sampler
call, scored by the heads and screened (bot.choice); the prompts whose
candidates the mood screen rejects get more rounds."""

from typing import Callable, Sequence

from bot import choice, text_format
from bot.choice import Candidate
from bot.jobs.base import Context
from bot.lists import Lists


def candidate(sample, selector, sentiment, p_reject=None) -> Candidate:
  """A sampled continuation read back into a post's text and tags, with
  its scores (`Scorer.score`'s)."""
  generated = text_format.split_continuation(sample.raw)
  return Candidate(text=generated.body,
                   selector=None if selector is None else float(selector),
                   sentiment=float(sentiment),
                   mean_logprob=sample.mean_logprob,
                   tags=list(generated.tags), raw=sample.raw,
                   finished=bool(sample.finished),
                   p_reject=None if p_reject is None else float(p_reject))


def screen_args(ctx: Context, blog: str, min_chars: int,
                lists: Lists = Lists()) -> dict:
  """`choice.screen`'s arguments for one job's candidates."""
  return screen_kwargs(ctx.user_text, ctx.author, blog, min_chars, lists,
                       ctx.job.rejected)


def screen_kwargs(user_text: str, author: str, blog: str, min_chars: int,
                  lists: Lists = Lists(), rejected=()) -> dict:
  """`choice.screen`'s arguments for candidates answering `author`."""
  return dict(prompt_text=user_text, allowed_names=[author, blog],
              min_chars=min_chars,
              turn_delimiters=text_format.TURN_DELIMITERS,
              rejected=list(rejected),
              names_avoided=lists.names_avoided_user)


def write_candidates(contexts: Sequence[Context], generator, scorer, *,
                     n: int, more_rounds: int, min_survivors: int,
                     sentiment_range: Callable[[Context], tuple],
                     screens: Callable[[Context], dict],
                     seed: Callable[[int], int]) -> dict:
  """{job key: [Candidate]}: `n` per job a round, every job's prompt in one
  sampler call; a job gets another round (up to `more_rounds`) while fewer
  than `min_survivors` candidates pass and the mood screen rejected some.
  `sentiment_range(ctx)` is what the mood allows a job's candidates;
  `seed(round)` is the sampler's seed for a round."""
  found = {c.job.key: [] for c in contexts}
  todo = list(contexts)
  for round_ in range(1 + more_rounds):
    if not todo:
      break
    samples = generator.generate([c.prompt for c in todo], n,
                                 seed=seed(round_))
    flat = [s for per_prompt in samples for s in per_prompt]
    scores = iter(scorer.score(flat))
    for ctx, per_prompt in zip(todo, samples):
      found[ctx.job.key] += [candidate(s, *next(scores)) for s in per_prompt]
    still = []
    for ctx in todo:
      cands = found[ctx.job.key]
      kept = choice.apply_screens(cands,
                                  sentiment_range=sentiment_range(ctx),
                                  **screens(ctx))
      if kept < min_survivors and choice.mood_rejections(cands) > 0:
        still.append(ctx)
    todo = still
  return found
