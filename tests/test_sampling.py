"""The sampler: cached decoding against the full forward, rules, stops, seeds."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt2 import model as M
from gpt2 import sampling as S
from gpt2.errors import UserError
from gpt2.tokenizer import EOT, Tokenizer

TEXT = """Some say the world will end in fire, some say in ice.
From what I've tasted of desire I hold with those who favor fire.
But if it had to perish twice, I think I know enough of hate
to say that for destruction ice is also great, and would suffice.
The woods are lovely, dark and deep, but I have promises to keep,
and miles to go before I sleep, and miles to go before I sleep.
"""
N = 24  # new tokens in most tests
CAPTURE = (0, 1, 2)
# One set of arguments shared by several tests, so they share one program.
RULES = S.SamplingParams.bot_defaults()
STOPS = ("e ", "\n\n")


@pytest.fixture(scope="module")
def tok():
  return Tokenizer.train([TEXT * 4], 400)


@pytest.fixture(scope="module")
def model(tok):
  config = M.GPT2Config.preset("tiny", vocab_size=tok.vocab_size)
  params = M.init_params(config, jax.random.PRNGKey(0))
  return config, params


@pytest.fixture(scope="module")
def full_forward(model):
  """forward on a right-padded (1, 128) row: causal, so every position
  sees what it would without the padding; one compile for every length."""
  config, params = model
  fn = jax.jit(lambda ids: M.forward(config, params, ids, capture=CAPTURE))

  def run(ids):
    padded = np.zeros((1, config.n_positions), np.int32)
    padded[0, :len(ids)] = ids
    out = fn(jnp.asarray(padded))
    return (np.asarray(out.logits[0, :len(ids)]),
            {l: np.asarray(h[0, :len(ids)]) for l, h in out.hidden.items()})

  return run


@pytest.fixture(scope="module")
def greedy_run(model, tok):
  """Greedy, two prompts of different lengths in one batch, hidden tapped."""
  config, params = model
  prompts = [tok.encode("the woods"), tok.encode("and miles to go before I")]
  results = S.sample(config, params, tok, prompts, max_new_tokens=N, seed=0,
                     top_k=1, capture=CAPTURE)
  return prompts, results


@pytest.mark.slow
def test_greedy_equals_argmax_of_full_forward(greedy_run, full_forward, tok):
  prompts, results = greedy_run
  assert [r.prompt_index for r in results] == [0, 1]
  for prompt, result in zip(prompts, results):
    ids, expected = list(prompt), []
    for _ in range(N):
      logits, _ = full_forward(ids)
      nxt = int(np.argmax(logits[-1]))
      if nxt == tok.eot_id:
        break
      expected.append(nxt)
      ids.append(nxt)
    assert result.tokens == expected
    assert result.finish_reason == ("length" if len(expected) == N else "eot")
    assert result.text == tok.decode(expected)
    # Log-probs are the model's own, from the same logits.
    logits, _ = full_forward(list(prompt) + expected)
    logp = jax.nn.log_softmax(logits, axis=-1)
    want = [logp[len(prompt) - 1 + i, t] for i, t in enumerate(expected)]
    np.testing.assert_allclose(result.logprobs, want, atol=1e-4)


def test_hidden_states_equal_full_forward(greedy_run, full_forward):
  prompts, results = greedy_run
  for prompt, result in zip(prompts, results):
    _, hidden = full_forward(list(prompt) + result.tokens)
    assert sorted(result.hidden) == list(CAPTURE)
    for layer in CAPTURE:
      got = result.hidden[layer]
      assert got.shape == (len(result.tokens), 64)
      np.testing.assert_allclose(got, hidden[layer][len(prompt):], atol=1e-4)


def test_recompiles_only_when_the_bucket_changes(greedy_run, model, tok):
  config, params = model
  before = S.trace_counts["generate"]
  # Other lengths in the same bucket (16) reuse the program.
  S.sample(config, params, tok, [[5] * 2, [7] * 13], max_new_tokens=N,
           top_k=1, capture=CAPTURE)
  assert S.trace_counts["generate"] == before
  S.sample(config, params, tok, [[5] * 2, [7] * 20], max_new_tokens=N,
           top_k=1, capture=CAPTURE)
  assert S.trace_counts["generate"] == before + 1
  assert S.bucket_length(20, 1000) == 32 and S.bucket_length(3, 1000) == 16
  assert S.bucket_length(700, 1000) == 1000


def _printable_straddle(tok, tokens):
  """A 2-character string across a token boundary (last char + first char)."""
  for a, b in zip(tokens, tokens[1:]):
    left, right = tok.decode_bytes([a]), tok.decode_bytes([b])
    if left and right and 32 <= left[-1] < 127 and 32 <= right[0] < 127:
      return chr(left[-1]) + chr(right[0])
  raise AssertionError("no printable token boundary in the greedy text")


def test_stop_string_across_tokens_stops_per_row(greedy_run, model, tok):
  config, params = model
  prompts, full = greedy_run
  stop = _printable_straddle(tok, full[0].tokens)
  results = S.sample(config, params, tok, prompts, max_new_tokens=N, seed=0,
                     top_k=1, capture=CAPTURE, stop=[stop])
  for before, after in zip(full, results):
    data = tok.decode_bytes(before.tokens)
    cut = data.find(stop.encode())
    if cut < 0:  # this row never wrote the stop: it is untouched
      assert after.tokens == before.tokens and after.text == before.text
      assert after.finish_reason == before.finish_reason
      continue
    assert after.finish_reason == "stop"
    assert after.text == data[:cut].decode("utf-8", errors="replace")
    assert stop not in after.text
    # The kept tokens are those that write the text; nothing after the stop.
    n = len(after.tokens)
    assert after.tokens == before.tokens[:n]
    assert len(tok.decode_bytes(after.tokens[:-1])) < cut <= len(
        tok.decode_bytes(after.tokens))
    assert len(after.logprobs) == n
    for layer in CAPTURE:
      np.testing.assert_allclose(after.hidden[layer],
                                 before.hidden[layer][:n], atol=1e-6)
  assert results[0].finish_reason == "stop"


@pytest.fixture(scope="module")
def batch_run(model, tok):
  config, params = model
  return S.sample(config, params, tok, "I hold with those", num_samples=3,
                  max_new_tokens=N, stop=STOPS, seed=[11, 22, 33],
                  rules=RULES)


@pytest.mark.slow
def test_batch_equals_single_runs_with_the_same_seeds(batch_run, model, tok):
  config, params = model
  for seed, row in zip([11, 22, 33], batch_run):
    single = S.sample(config, params, tok, "I hold with those",
                      num_samples=1, max_new_tokens=N, stop=STOPS, seed=seed,
                      rules=RULES)[0]
    assert single.tokens == row.tokens and single.text == row.text
    np.testing.assert_allclose(single.logprobs, row.logprobs, atol=1e-5)
  # Different seeds write different candidates; the same seed the same one.
  assert len({tuple(r.tokens) for r in batch_run}) == 3
  again = S.sample(config, params, tok, "I hold with those", num_samples=3,
                   max_new_tokens=N, stop=STOPS, seed=[11, 22, 33],
                   rules=RULES)
  assert [r.tokens for r in again] == [r.tokens for r in batch_run]


@pytest.mark.slow
def test_stream_pieces_join_to_the_sampled_text(batch_run, model, tok):
  config, params = model
  pieces = S.stream(config, params, tok, "I hold with those", num_samples=3,
                    max_new_tokens=N, stop=STOPS, seed=[11, 22, 33],
                    rules=RULES)
  joined = ["", "", ""]
  while True:
    try:
      piece = next(pieces)
    except StopIteration as done:
      results = done.value
      break
    assert piece.text
    joined[piece.row] += piece.text
  assert joined == [r.text for r in batch_run]
  assert [r.tokens for r in results] == [r.tokens for r in batch_run]
  assert any(r.finish_reason == "stop" for r in batch_run)


def test_end_of_text_ends_each_row_on_its_own(model, tok):
  config, params = model
  # Make <|endoftext|> likely (logit 4.6 against ~0 for the rest): ln_f's
  # bias points along dimension 0, which ln_f's scale zeroes for the input.
  p = jax.tree.map(np.array, params)
  p["ln_f"]["scale"][0] = 0.0
  p["ln_f"]["bias"][:] = 0.0
  p["ln_f"]["bias"][0] = 1.0
  p["wte"]["embedding"][tok.eot_id] = 0.0
  p["wte"]["embedding"][tok.eot_id, 0] = 4.6
  results = S.sample(config, p, tok, "I hold with those", num_samples=3,
                     max_new_tokens=N, stop=STOPS, seed=[11, 22, 33],
                     rules=RULES)
  assert any(r.finish_reason == "eot" for r in results)
  assert len({len(r.tokens) for r in results}) > 1
  for r in results:
    assert tok.eot_id not in r.tokens and EOT not in r.text
    if r.finish_reason == "eot":
      assert r.text == tok.decode(r.tokens) and r.end_logprob is not None
      assert np.isclose(r.mean_logprob,
                        np.mean(list(r.logprobs) + [r.end_logprob]))


# ---- rules on fixed logits --------------------------------------------------------


def _logits(rows=4, vocab=600, seed=0):
  rng = np.random.RandomState(seed)
  return (rng.randn(rows, vocab) * rng.uniform(0.5, 3, (rows, 1))).astype(
      np.float32)


def _smallest_set(order_keys, probs, mass):
  """Indices of the fewest tokens, by ascending key, whose mass reaches mass."""
  order = np.argsort(order_keys, kind="stable")
  cum = np.cumsum(probs[order].astype(np.float64))
  return set(order[:int(np.searchsorted(cum, mass - 1e-7)) + 1].tolist())


def _softmax64(x):
  x = x.astype(np.float64)
  e = np.exp(x - x.max())
  return e / e.sum()


@pytest.mark.parametrize("top_p", [0.05, 0.5, 0.9, 0.999])
def test_top_p_keeps_the_smallest_set_reaching_p(top_p):
  logits = _logits()
  kept = np.asarray(jax.jit(S.top_p_filter)(logits, top_p)) > -np.inf
  for row in range(len(logits)):
    probs = _softmax64(logits[row])
    want = _smallest_set(-probs, probs, top_p)
    assert set(np.flatnonzero(kept[row]).tolist()) == want
    assert probs[kept[row]].sum() >= top_p - 1e-6


@pytest.mark.parametrize("typical_p", [0.2, 0.9])
def test_typical_p_keeps_the_tokens_nearest_the_entropy(typical_p):
  logits = _logits(seed=1)
  kept = np.asarray(jax.jit(S.typical_filter)(logits, typical_p)) > -np.inf
  for row in range(len(logits)):
    probs = _softmax64(logits[row])
    entropy = -(probs * np.log(probs)).sum()
    shift = np.abs(-np.log(probs) - entropy)
    want = _smallest_set(shift, probs, typical_p)
    assert set(np.flatnonzero(kept[row]).tolist()) == want


def test_top_k_keeps_exactly_k():
  logits = _logits()
  kept = np.asarray(S.top_k_filter(jnp.asarray(logits), 7)) > -np.inf
  for row in range(len(logits)):
    assert set(np.flatnonzero(kept[row])) == set(np.argsort(-logits[row])[:7])


def _zipf_logits(vocab=200, seed=0):
  """Zipf-like logits (p ~ rank^-1.1), the ranks shuffled over the ids."""
  ranks = np.random.RandomState(seed).permutation(vocab) + 1
  return (-1.1 * np.log(ranks)).astype(np.float32)


def _mirostat_reference(probs, tau, eta, us):
  """Mirostat 2.0 as Basu et al. (ICLR 2021) describe it, in float64.

  mu starts at 2 tau. Each step keeps the tokens whose surprise -log2 p is
  at most mu (the most likely one when none is), draws one from them
  renormalised (inverse CDF at the uniform u, tokens in id order), and moves
  mu by -eta * (surprise - tau), the surprise under p, the distribution
  before the cut. Returns mu before each step and the tokens drawn.
  """
  surprise = -np.log2(probs)
  mu, mus, tokens = 2 * tau, [], []
  for u in us:
    mus.append(mu)
    keep = surprise <= mu
    if not keep.any():
      keep = probs == probs.max()
    cum = np.cumsum(np.where(keep, probs, 0.0))
    token = int(np.searchsorted(cum, u * cum[-1], side="right"))
    tokens.append(token)
    mu -= eta * (surprise[token] - tau)
  return np.array(mus), tokens


def _run_mirostat(logits, tau, eta, us):
  """`choose` with Mirostat alone on fixed logits (B, V), one step per row
  of uniforms us (T, B, 2); mu before each step and the tokens, (T, B)."""
  rules = S.SamplingParams(mirostat_tau=tau, mirostat_eta=eta)

  @jax.jit
  def run(us):
    def step(mu, u):
      token, _, new_mu = S.choose(logits, rules.structure(), rules.values(),
                                  None, mu, lambda n: u)
      return new_mu, (mu, token)
    mu0 = jnp.full((logits.shape[0],), rules.initial_mu, jnp.float32)
    return jax.lax.scan(step, mu0, us)[1]

  mus, tokens = run(jnp.asarray(us, jnp.float32))
  return np.asarray(mus), np.asarray(tokens)


def test_mirostat_cuts_at_mu_and_keeps_the_most_likely_token():
  logits = jnp.asarray(np.tile(_zipf_logits(), (2, 1)))
  surprise = -np.log2(_softmax64(np.asarray(logits[0])))
  for mu in (0.5, 3.0, 6.0):  # 0.5 bits is below the top token's surprise
    kept = np.asarray(S.mirostat_filter(logits, jnp.full((2,), mu))) > -np.inf
    want = (surprise <= mu) | (surprise == surprise.min())
    assert (kept == want[None]).all()
  assert S.SamplingParams(mirostat_tau=3.0).initial_mu == 6.0


def test_mirostat_follows_the_paper_step_by_step():
  """mu and the tokens of 50 steps equal the paper's rule written out in
  numpy, fed the same uniforms: the surprise that moves mu is measured under
  the distribution before the cut, and mu starts at 2 tau."""
  tau, eta, steps = 3.0, 0.5, 50
  logits = _zipf_logits()
  us = np.random.RandomState(1).uniform(size=(steps, 1, 2))
  mus, tokens = _run_mirostat(jnp.asarray(logits[None]), tau, eta, us)
  want_mus, want_tokens = _mirostat_reference(_softmax64(logits), tau, eta,
                                              us[:, 0, 1])
  assert tokens[:, 0].tolist() == want_tokens
  np.testing.assert_allclose(mus[:, 0], want_mus, atol=1e-4)
  assert len(set(want_tokens)) > 5  # the cut moved; not one token repeated


def test_mirostat_steers_the_mean_surprise_to_tau():
  """Over a few thousand draws from a fixed Zipf-like distribution, the
  picked tokens' mean surprise (under that distribution) is tau within 10%,
  for targets between the top token's surprise (2.2 bits) and the entropy
  (5.6 bits), the range a cut can reach."""
  logits = _zipf_logits()
  probs = _softmax64(logits)
  rows, steps = 16, 300
  us = np.random.RandomState(2).uniform(size=(steps, rows, 2))
  for tau in (3.0, 5.0):
    _, tokens = _run_mirostat(jnp.asarray(np.tile(logits, (rows, 1))), tau,
                              0.1, us)
    seen = -np.log2(probs[tokens[20:]])
    assert abs(seen.mean() - tau) < 0.1 * tau, (tau, seen.mean())


def test_breakruns_temperature_grows_by_tau_per_argmax_pick_and_resets():
  base, tau = 0.9, 0.3
  structure = S.SamplingParams(temperature=base,
                               breakruns_tau=tau).structure()
  values = S.SamplingParams(temperature=base, breakruns_tau=tau).values()
  logits = jnp.asarray([[1.0, 0.0]])  # token 0 is the argmax

  def p_argmax(temperature):
    return 1 / (1 + np.exp(-1.0 / temperature))

  @jax.jit
  def pick(run, u):
    uniforms = lambda n: jnp.stack([jnp.zeros(1), jnp.full((1,), u)], axis=-1)
    token, new_run, _ = S.choose(logits, structure, values, run, None,
                                 uniforms)
    return token[0], new_run[0]

  run = 0
  for n in range(6):
    # The draw flips from the argmax exactly where the run's temperature
    # (base + tau * n) puts the argmax's probability.
    edge = p_argmax(base + tau * n)
    token, new_run = pick(jnp.asarray([run]), edge - 1e-4)
    assert (int(token), int(new_run)) == (0, run + 1)
    token, reset = pick(jnp.asarray([run]), edge + 1e-4)
    assert (int(token), int(reset)) == (1, 0)
    run += 1
  np.testing.assert_allclose(
      S.breakruns_temperature(base, tau, jnp.arange(4)),
      base + tau * np.arange(4), rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["top_p", "typical_p"])
def test_fast_draw_matches_the_filtered_distribution(rule):
  """The rejection draw keeps the filter's support and its frequencies."""
  vocab, rows = 600, 20000
  logits = _logits(rows=1, vocab=vocab, seed=3)
  params = S.SamplingParams(**{rule: 0.7})
  keys = jax.random.split(jax.random.PRNGKey(1), rows)
  uniforms = lambda n: jax.vmap(lambda k: jax.random.uniform(
      jax.random.fold_in(k, n), (2,)))(keys)
  big = jnp.tile(jnp.asarray(logits), (rows, 1))
  tokens, _, _ = jax.jit(lambda l: S.choose(
      l, params.structure(), params.values(), None, None, uniforms))(big)
  filter_fn = S.top_p_filter if rule == "top_p" else S.typical_filter
  filtered = np.asarray(filter_fn(jnp.asarray(logits), 0.7))[0]
  want = _softmax64(filtered)
  counts = np.bincount(np.asarray(tokens), minlength=vocab) / rows
  assert set(np.flatnonzero(counts)) <= set(np.flatnonzero(want))
  # Each of the likeliest tokens within 4 standard errors of its probability.
  top = np.argsort(-want)[:20]
  err = 4 * np.sqrt(want[top] * (1 - want[top]) / rows) + 1e-3
  assert (np.abs(counts[top] - want[top]) < err).all()


# ---- bad input --------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, message", [
    (dict(prompts=[""]), "prompt 0 is empty"),
    (dict(prompts=[[]]), "prompt 0 is empty"),
    (dict(max_new_tokens=0), "max_new_tokens must be >= 1"),
    (dict(max_new_tokens=-3), "max_new_tokens must be >= 1"),
    (dict(max_new_tokens=128, max_steps=1),
     "max_new_tokens must be between 1 and 127"),
    (dict(max_new_tokens=320), "needs 10 steps of 32 new tokens"),
    (dict(max_steps=0), "max_steps must be an integer >= 1"),
    (dict(top_p=0.0), "top_p must be in (0, 1]"),
    (dict(top_p=1.5), "top_p must be in (0, 1]"),
    (dict(typical_p=-0.1), "typical_p must be in (0, 1]"),
    (dict(temperature=-1.0), "temperature must be >= 0"),
    (dict(top_k=1000), "top_k=1000 is beyond the vocabulary"),
    (dict(num_samples=0), "num_samples must be >= 1"),
    (dict(stop=[""]), "stop strings must be non-empty"),
    (dict(capture=(5,)), "capture layer 5 is outside 0..2"),
])
def test_bad_input_is_one_clear_line(model, tok, kwargs, message):
  config, params = model
  args = dict(prompts=["hello"], max_new_tokens=4)
  args.update(kwargs)
  with pytest.raises(UserError) as err:
    S.sample(config, params, tok, args.pop("prompts"), **args)
  assert message in str(err.value) and "\n" not in str(err.value)


def test_long_prompt_is_left_truncated_with_a_warning(model, tok, caplog):
  """With max_steps 1 (no steps beyond the context; see test_long_posts.py),
  a prompt keeps the tokens that fit before max_new_tokens."""
  config, params = model
  prompt = list(np.random.RandomState(0).randint(0, 300, 200))
  with caplog.at_level(logging.WARNING, logger="gpt2.sampling"):
    result = S.sample(config, params, tok, [prompt], max_new_tokens=112,
                      top_k=1, max_steps=1)[0]
  assert "keeping its last 16" in caplog.text
  assert result.prompt_tokens == 16 and len(result.tokens) <= 112
  # The same as giving only the last 16 tokens.
  short = S.sample(config, params, tok, [prompt[-16:]], max_new_tokens=112,
                   top_k=1, max_steps=1)[0]
  assert short.tokens == result.tokens


@pytest.mark.slow
def test_reference_decoding_samples_like_the_cpu_decoding(greedy_run, model,
                                                        tok):
  """The sampler on the reference model (GPUs' and TPUs' path) writes what
  the CPU's layout writes: greedy tokens, log-probs, hidden states, and
  candidates drawn with the same seeds."""
  config, params = model
  prompts, cpu = greedy_run
  reference = S.sample(config, params, tok, prompts, max_new_tokens=N,
                       seed=0, top_k=1, capture=CAPTURE, decoding="reference")
  for a, b in zip(reference, cpu):
    assert a.tokens == b.tokens
    np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5)
    for layer in CAPTURE:
      np.testing.assert_allclose(a.hidden[layer], b.hidden[layer], atol=1e-4)
  kw = dict(num_samples=3, max_new_tokens=N, seed=[11, 22, 33], rules=RULES)
  drawn = [S.sample(config, params, tok, "I hold with those", decoding=d,
                    **kw) for d in ("reference", "cpu")]
  assert [r.tokens for r in drawn[0]] == [r.tokens for r in drawn[1]]
  with pytest.raises(UserError, match="decoding='gpu' is not one of"):
    S.sample(config, params, tok, "I", max_new_tokens=2, decoding="gpu")


@pytest.mark.slow
def test_decoding_parameters_are_kept_per_model_and_renewed(model, tok):
  """The transposed decoding copy is made once per model: the same params
  reuse it, other params (or the same values as numpy) get their own."""
  config, params = model
  first = S.prepared_params(config, params)
  assert S.prepared_params(config, params) is first
  kernel = params["h"]["mlp"]["c_fc"]["kernel"]  # (L, in, out)
  np.testing.assert_array_equal(first["h"][1]["mlp"]["c_fc"]["kernel_t"],
                                np.asarray(kernel[1]).T)
  assert "kernel" not in first["h"][1]["mlp"]["c_fc"]
  other = jax.tree.map(lambda p: p * 1.5, params)
  assert S.prepared_params(config, other) is not first
  prompt = [tok.encode("the woods")]
  run = lambda p: S.sample(config, p, tok, prompt, max_new_tokens=8, seed=0,
                           top_k=1)[0].tokens
  a_then_b = (run(params), run(other))
  assert a_then_b[0] != a_then_b[1]
  for p, tokens in zip((params, other), a_then_b):
    logits = M.forward(config, p, jnp.asarray(prompt)).logits[0, -1]
    assert tokens[0] == int(jnp.argmax(logits))
  assert run(other) == a_then_b[1] and run(params) == a_then_b[0]
  as_numpy = jax.tree.map(np.asarray, params)
  assert S.prepared_params(config, as_numpy) is not S.prepared_params(
      config, as_numpy)
