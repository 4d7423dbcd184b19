"""Candidates longer than the context: written in steps, each on a window
of the context (the prompt's start and the latest tokens), with the stop
rules, seeds and rules' state going on across the steps.

A tiny model with a context of 64 tokens: each step writes 16 new tokens
after a window of at most 48 (the prompt's first 16 tokens, or all of it
when shorter, then the latest ones).
"""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bot import ml
from bot.console.core import WriteSettings
from configs import bot as bot_configs
from gpt2 import model as M
from gpt2 import sampling as S
from gpt2 import sampling_params
from gpt2 import weights
from gpt2.errors import UserError
from gpt2.tokenizer import Tokenizer

from tests.test_sampling import TEXT

CONTEXT, STEP, HEADER, WIDTH = 64, 16, 16, 48
RULES = S.SamplingParams.bot_defaults()
PROMPTS = ["the woods are lovely", "and miles to go before I sleep"]


@pytest.fixture(scope="module")
def tok():
  return Tokenizer.train([TEXT * 4], 400)


@pytest.fixture(scope="module")
def model(tok):
  config = M.GPT2Config.preset("tiny", vocab_size=tok.vocab_size,
                               n_positions=CONTEXT)
  return config, M.init_params(config, jax.random.PRNGKey(0))


@pytest.fixture(scope="module")
def long_run(model, tok):
  """200 new tokens (13 steps) of the bot's rules, two prompts, two
  candidates each, no stop rule but <|endoftext|>."""
  config, params = model
  return S.sample(config, params, tok, PROMPTS, num_samples=2,
                  max_new_tokens=200, max_steps=13, seed=5, rules=RULES,
                  capture=(2,))


def window(prompt: list, written: list) -> list:
  """What a step after `written` reads, from the rule: the prompt's first
  16 tokens (all when shorter), then the latest, 48 in all."""
  tokens = prompt + written
  if len(tokens) <= WIDTH:
    return tokens
  header = prompt[:HEADER]
  return header + tokens[len(tokens) - (WIDTH - len(header)):]


@pytest.mark.slow
def test_a_long_request_writes_all_its_tokens_in_steps(long_run, model):
  config, _ = model
  assert config.n_positions == CONTEXT
  for result in long_run:
    if result.finish_reason == "length":
      assert len(result.tokens) == 200 and result.steps == 13
    else:  # ended on its own, in the step that wrote its last token
      assert result.finish_reason == "eot"
      assert result.steps == len(result.tokens) // STEP + 1
    assert len(result.logprobs) == len(result.tokens)
    assert result.hidden[2].shape == (len(result.tokens), config.n_embd)
  assert sum(r.finish_reason == "length" for r in long_run) >= 2


def test_each_step_reads_the_prompts_start_and_the_latest_tokens(
    long_run, model, tok):
  """Every token's log-prob is the model's on the step's window followed by
  the step's tokens (a full forward here, no cache), and the hidden states
  are the forward's there: the window is the prompt's start and the latest
  tokens, filled afresh at each step."""
  config, params = model
  forward = jax.jit(lambda ids: M.forward(config, params, ids, capture=(2,)))
  for result in long_run:
    prompt = tok.encode(PROMPTS[result.prompt_index])
    tokens = list(result.tokens)
    for start in range(0, len(tokens), STEP):
      context = window(prompt, tokens[:start])
      if start:
        assert context[:len(prompt[:HEADER])] == prompt[:HEADER]
      written = tokens[start:start + STEP]
      ids = np.zeros((1, CONTEXT), np.int32)
      ids[0, :len(context) + len(written)] = context + written
      out = forward(jnp.asarray(ids))
      logp = np.asarray(jax.nn.log_softmax(out.logits[0]))
      at = np.arange(len(context) - 1, len(context) - 1 + len(written))
      np.testing.assert_allclose(result.logprobs[start:start + STEP],
                                 logp[at, written], atol=2e-4)
      np.testing.assert_allclose(result.hidden[2][start:start + STEP],
                                 np.asarray(out.hidden[2][0, at + 1]),
                                 atol=2e-4)


def test_the_first_step_is_the_one_call_sampler(long_run, model, tok):
  config, params = model
  short = S.sample(config, params, tok, PROMPTS, num_samples=2,
                   max_new_tokens=STEP, seed=5, rules=RULES)
  for a, b in zip(long_run, short):
    assert a.tokens[:STEP] == b.tokens[:STEP]


@pytest.mark.slow
def test_same_seed_same_text_and_a_candidate_ignores_its_batch(
    long_run, model, tok):
  config, params = model
  again = S.sample(config, params, tok, PROMPTS, num_samples=2,
                   max_new_tokens=200, max_steps=13, seed=5, rules=RULES)
  assert [r.tokens for r in again] == [r.tokens for r in long_run]
  # The second prompt's candidates alone, with their seeds (5 + 2, 5 + 3).
  alone = S.sample(config, params, tok, PROMPTS[1:], num_samples=2,
                   max_new_tokens=200, max_steps=13, seed=7, rules=RULES)
  assert [r.tokens for r in alone] == [r.tokens for r in long_run[2:]]
  assert len({tuple(r.tokens) for r in long_run}) == 4


def _boundary_stop(tok, tokens: list, boundary: int) -> str:
  """The shortest text around the byte boundary between tokens[boundary - 1]
  and tokens[boundary] that first occurs there."""
  data = tok.decode_bytes(tokens)
  at = len(tok.decode_bytes(tokens[:boundary]))
  for k in range(1, 12):
    for left, right in ((k, k), (k, k + 1), (k + 1, k)):
      piece = data[at - left:at + right]
      if (at - left >= 0 and data.find(piece) == at - left and
          all(32 <= b < 127 for b in piece)):
        return piece.decode()
  raise AssertionError(f"no stop string first seen at token {boundary}")


@pytest.mark.slow
def test_a_stop_string_across_two_steps_stops_the_row(long_run, model, tok):
  """A stop string that begins in one step's last token and ends in the
  next step's first one stops the row in that step: the byte automaton's
  state goes on across steps."""
  config, params = model
  row = next(i for i, r in enumerate(long_run) if r.finish_reason == "length")
  before = long_run[row]
  boundary = 3 * STEP  # between steps 3 and 4
  stop = _boundary_stop(tok, before.tokens, boundary)
  after = S.sample(config, params, tok, PROMPTS, num_samples=2,
                   max_new_tokens=200, max_steps=13, seed=5, rules=RULES,
                   stop=[stop])[row]
  data = tok.decode_bytes(before.tokens)
  assert after.finish_reason == "stop"
  assert after.text == data[:data.find(stop.encode())].decode(
      "utf-8", errors="replace")
  assert after.steps == 4  # it wrote nothing after step 4
  assert after.tokens == before.tokens[:len(after.tokens)]
  assert boundary - 1 <= len(after.tokens) <= boundary + 1


@pytest.mark.slow
def test_stream_joins_to_the_long_text(long_run, model, tok):
  config, params = model
  pieces = S.stream(config, params, tok, PROMPTS, num_samples=2,
                    max_new_tokens=200, max_steps=13, seed=5, rules=RULES,
                    capture=(2,))
  joined = [""] * len(long_run)
  while True:
    try:
      piece = next(pieces)
    except StopIteration as done:
      results = done.value
      break
    joined[piece.row] += piece.text
  assert joined == [r.text for r in long_run]
  assert [r.tokens for r in results] == [r.tokens for r in long_run]
  assert [r.steps for r in results] == [r.steps for r in long_run]


def test_more_steps_than_max_steps_is_refused(model, tok):
  config, params = model
  with pytest.raises(UserError) as err:
    S.sample(config, params, tok, PROMPTS, max_new_tokens=200, max_steps=8)
  assert str(err.value) == (
      "max_new_tokens=200 needs 13 steps of 16 new tokens (a quarter of the "
      "64-token context); max_steps=8 allows at most 128")
  with pytest.raises(UserError, match="max_steps must be an integer >= 1"):
    S.sample(config, params, tok, PROMPTS, max_new_tokens=20, max_steps=0)
  # With max_steps 1, the one-call sampler's limit and its left cut.
  with pytest.raises(UserError, match="between 1 and 63"):
    S.sample(config, params, tok, PROMPTS, max_new_tokens=64, max_steps=1)


def test_a_long_prompt_keeps_its_start_and_its_end(model, tok, caplog):
  config, params = model
  prompt = list(np.random.RandomState(0).randint(0, 300, 100))
  with caplog.at_level(logging.WARNING, logger="gpt2.sampling"):
    result = S.sample(config, params, tok, [prompt], max_new_tokens=40,
                      top_k=1)[0]
  assert "keeping its first 16 and last 32" in caplog.text
  assert result.prompt_tokens == WIDTH and len(result.tokens) == 40
  cut = prompt[:HEADER] + prompt[-(WIDTH - HEADER):]
  same = S.sample(config, params, tok, [cut], max_new_tokens=40, top_k=1)[0]
  assert same.tokens == result.tokens


def test_the_default_length_fits_the_model_and_a_given_one_is_checked(
    caplog):
  """max_new_tokens left at 0 is the original's 1,600 where the context
  allows, else the most it allows (said once); a number the model cannot
  write is one line naming the config keys to change."""
  small = M.GPT2Config.preset("tiny", vocab_size=300, n_positions=256)
  with caplog.at_level(logging.INFO, logger="bot.ml"):
    fitted = ml.SamplingSettings().fitted(small)
  assert fitted.max_new_tokens == 8 * 64 == 512
  assert "sampling.max_new_tokens: 512, the most a 256-token context writes " \
      "in max_steps=8 steps" in caplog.text
  assert ml.SamplingSettings(max_new_tokens=300).fitted(small) == \
      ml.SamplingSettings(max_new_tokens=300)
  with pytest.raises(UserError) as e:
    ml.SamplingSettings(max_new_tokens=1600).fitted(small)
  assert str(e.value) == (
      "--config.sampling.max_new_tokens=1600 is more than this model writes: "
      "8 steps (--config.sampling.max_steps) of 64 new tokens (a quarter of "
      "its 256-token context) make 512; give "
      "--config.sampling.max_new_tokens=512, or leave it out, or "
      "--config.sampling.max_steps=25")


def test_the_bot_writes_long_posts_with_its_settings(model, tok):
  """The bot's settings pass max_new_tokens and max_steps to the sampler,
  and take their defaults from gpt2.sampling_params (the one place)."""
  cfg = bot_configs.get_config()
  settings = ml.SamplingSettings.from_config(cfg.sampling)
  assert settings == ml.SamplingSettings()
  assert settings.rules() == S.SamplingParams.bot_defaults()
  assert WriteSettings().rules() == S.SamplingParams.bot_defaults()
  # The original's 1,600 tokens in 8 steps where the context allows it.
  gpt2_124m = M.GPT2Config.preset("124M")
  assert (settings.fitted(gpt2_124m).max_new_tokens, settings.max_steps) == (
      sampling_params.BOT_MAX_NEW_TOKENS, sampling_params.MAX_STEPS) == (
          1600, 8)
  config, params = model
  loaded = weights.LoadedModel(config, params, tok, "ours")
  wide = ml.LocalModel(loaded, settings=ml.SamplingSettings(
      max_new_tokens=100, max_steps=7))
  samples = wide.generate(PROMPTS[:1], 2, seed=5)[0]
  texts = [r.text for r in S.sample(config, params, tok, PROMPTS[:1],
                                    num_samples=2, max_new_tokens=100,
                                    seed=5, rules=settings.rules())]
  assert [s.raw for s in samples] == texts
  # Refused when the model is loaded, before any pass.
  with pytest.raises(UserError, match="--config.sampling.max_steps=7"):
    ml.LocalModel(loaded, settings=ml.SamplingSettings(max_new_tokens=100,
                                                       max_steps=6))
