"""A Llama-family checkpoint as the generator: loaded by name or folder, its
own tokenizer and end-of-text, sampled by gpt2.sampling, written by
`launch.sample`, and the bot's model in a pass against the local Tumblr
server (in this process and through the model server), with a selector
head trained on its hidden states.

The checkpoints are tiny, and the test makes them: transformers writes each
model (random, or random then trained here for a few seconds on the bot's
text format), `tokenizers` trains a byte-level BPE with the family's special
tokens. Nothing is downloaded.
"""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bot import loop, ml, text_format
from bot.tumblr.thread import ASKED, Thread, Turn
from configs import bot as bot_configs
from gpt2 import family, int8, llama, llama_weights, sampling
from gpt2 import weights as W
from gpt2.errors import UserError
from tests import bot_loop_helpers as helpers
from tests import hf_helpers
# pylint: disable-next=unused-import
from tests.bot_loop_helpers import credentials_env, server  # fixtures
from tests.bot_loop_helpers import answered, make_config, seed_asks

BOS, LLAMA_EOS = "<|begin_of_text|>", "<|end_of_text|>"
QWEN_EOS = "<|endoftext|>"
TEXT = ("The woods are lovely, dark and deep, but I have promises to keep, "
        "and miles to go before I sleep. ") * 8
# Past the tokenizer's 300 ids: rows a checkpoint pads its vocabulary with.
VOCAB = 320
SHAPE = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
             num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=256)
STEPS = 8  # greedy tokens compared with transformers


@pytest.fixture(scope="module")
def random_models(tmp_path_factory):
  """name -> (transformers model, its directory): a Llama (GQA, llama3
  rope, untied head; its end-of-text in config.json) and a Qwen2 (q/k/v
  biases, tied head; config.json names no end-of-text, its
  tokenizer_config.json does)."""
  import transformers  # pylint: disable=import-outside-toplevel
  configs = {
      "llama": (transformers.LlamaConfig(
          **SHAPE, rope_theta=500000.0, tie_word_embeddings=False,
          rope_scaling=dict(rope_type="llama3", factor=8.0,
                            low_freq_factor=1.0, high_freq_factor=4.0,
                            original_max_position_embeddings=64),
          bos_token_id=0, eos_token_id=1), [BOS, LLAMA_EOS]),
      "qwen2": (transformers.Qwen2Config(
          **SHAPE, tie_word_embeddings=True, bos_token_id=None,
          eos_token_id=None), [QWEN_EOS, "<|im_start|>"]),
  }
  out = {}
  for name, (config, special) in configs.items():
    directory = str(tmp_path_factory.mktemp(name))
    model = hf_helpers.random_decoder(config, directory, seed=1)
    hf_helpers.write_tokenizer(
        directory, hf_helpers.byte_level_bpe([TEXT], 300, special),
        special[0] if name == "qwen2" else special[1])
    out[name] = (model, directory)
  return out


def test_a_checkpoint_loads_with_its_own_end_of_text(random_models):
  for name, eos in (("llama", LLAMA_EOS), ("qwen2", QWEN_EOS)):
    loaded = W.load_model(random_models[name][1])
    assert family.of(loaded.config) is family.LLAMA
    assert loaded.kind == "hf" and loaded.config.model_type == name
    tok = loaded.tokenizer
    assert tok.eot_token == eos
    # `<|endoftext|>` written in a text is the model's end-of-text.
    ids = tok.encode("miles to go<|endoftext|>and miles")
    assert ids.count(tok.eot_id) == 1
    assert ids == tok.encode_batch(["miles to go<|endoftext|>and miles"])[0]
    assert tok.decode_bytes(ids) == b"miles to go<|endoftext|>and miles"
    # The vocabulary's padding rows (past the tokenizer) decode to nothing.
    assert tok.decode_bytes([VOCAB - 1]) == b""


def test_a_sentencepiece_style_vocabulary_decodes_to_its_bytes():
  """Mistral's tokenizer.json: `▁` for a space, `<0xNN>` byte tokens."""
  # pylint: disable=import-outside-toplevel
  import tokenizers
  from tokenizers import decoders, models
  from gpt2.tokenizer import Tokenizer
  vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<0x0A>": 3, "<0xC3>": 4,
           "<0xA9>": 5, "\u2581caf": 6, "\u2581the": 7}
  tok = tokenizers.Tokenizer(models.BPE(vocab, [], unk_token="<unk>",
                                        byte_fallback=True))
  tok.add_special_tokens(["<unk>", "<s>", "</s>"])
  tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "),
                                   decoders.ByteFallback(), decoders.Fuse()])
  ours = Tokenizer(tok, eot=2)
  assert ours.eot_token == "</s>"
  assert ours.decode_bytes([7, 6, 4, 5, 3, 2]) == (
      " the caf\u00e9\n<|endoftext|>".encode())
  assert ours.decode_bytes([6, 4]) == b" caf\xc3"  # half a character


@pytest.mark.parametrize("name", ["llama", "qwen2"])
def test_greedy_sampling_equals_transformers_generate(random_models, name):
  """Two prompts of different lengths in one sampler call (left-padded to
  one bucket), each against transformers' greedy search on it alone."""
  import torch  # pylint: disable=import-outside-toplevel
  hf, directory = random_models[name]
  loaded = W.load_model(directory)
  tok, config = loaded.tokenizer, loaded.config
  prompts = [tok.encode("miles to go"),
             tok.encode("The woods are lovely, dark and deep")]
  assert len(prompts[0]) != len(prompts[1])
  results = sampling.sample(config, loaded.params, tok, prompts,
                            max_new_tokens=STEPS, top_k=1)
  for ids, result in zip(prompts, results):
    with torch.no_grad():
      out = hf.generate(torch.tensor([ids]), do_sample=False,
                        attention_mask=torch.ones(1, len(ids), dtype=int),
                        max_new_tokens=STEPS, eos_token_id=tok.eot_id,
                        pad_token_id=tok.eot_id)
    want = out[0, len(ids):].tolist()
    if tok.eot_id in want:
      want = want[:want.index(tok.eot_id)]
      assert result.finish_reason == "eot"
    assert result.tokens == want
  # A stop string (the text of a later greedy token) ends it before itself.
  text = tok.decode_bytes(results[0].tokens)
  stop = next(piece for piece in (tok.decode_bytes([t])
                                  for t in results[0].tokens[2:])
              if piece.strip() and piece.isascii()).decode()
  (stopped,) = sampling.sample(config, loaded.params, tok, prompts[:1],
                               max_new_tokens=STEPS, top_k=1, stop=[stop])
  assert stopped.finish_reason == "stop"
  assert stopped.text == text[:text.find(stop.encode())].decode(
      errors="replace")


def test_the_sampler_caches_the_key_value_heads_only(random_models):
  loaded = W.load_model(random_models["llama"][1])
  config = loaded.config
  assert config.n_kv_head < config.n_head
  params = sampling.prepared_params(config, loaded.params, "reference")
  ids = np.ones((2, 16), np.int32)
  cache = jax.eval_shape(
      lambda p: sampling.DECODINGS["reference"].prefill(
          config, p, ids, ids, ids, num_samples=3, own_slots=4, segments=1),
      params)
  assert len(cache) == config.n_layer
  assert cache[0]["k"].shape == (6, 20, config.n_kv_head, config.head_dim)


def test_the_captured_layers_are_transformers_hidden_states(random_models):
  """What the heads read: layer 0 is the embeddings, layer i block i's
  output, and the last block's is taken before the final norm (as a GPT-2's
  is before ln_f; transformers' last hidden state is after it)."""
  import torch  # pylint: disable=import-outside-toplevel
  hf, directory = random_models["llama"]
  loaded = W.load_model(directory)
  config = loaded.config
  ids, mask = hf_helpers.padded_batch(VOCAB)
  layers = tuple(range(config.n_layer + 1))
  out = family.of(config).forward(config, loaded.params, ids,
                                  attention_mask=mask, capture=layers,
                                  return_logits=False)
  with torch.no_grad():
    want = hf(torch.tensor(ids), attention_mask=torch.tensor(mask),
              position_ids=torch.tensor(np.maximum(mask.cumsum(1) - 1, 0)),
              output_hidden_states=True).hidden_states
    last = hf.model.norm(torch.tensor(np.asarray(out.hidden[layers[-1]])))
  assert len(want) == len(layers)
  valid = mask.astype(bool)
  close = lambda a, b: np.testing.assert_allclose(
      np.asarray(a)[valid], np.asarray(b)[valid], rtol=1e-4,
      atol=1e-4 * float(np.abs(np.asarray(b)[valid]).max()))
  for layer in layers[:-1]:
    close(out.hidden[layer], want[layer].numpy())
  close(last.numpy(), want[-1].numpy())


def test_what_the_family_cannot_do_yet_is_one_line(random_models, tmp_path):
  loaded = W.load_model(random_models["llama"][1])
  with pytest.raises(UserError, match="decoding='cpu' runs GPT-2s only"):
    sampling.sample(loaded.config, loaded.params, loaded.tokenizer, "miles",
                    max_new_tokens=2, decoding="cpu")
  # A family this version does not load, by its config.json.
  with open(os.path.join(random_models["llama"][1], "config.json"),
            encoding="utf-8") as f:
    hf = json.load(f)
  (tmp_path / "config.json").write_text(json.dumps({**hf,
                                                    "model_type": "gemma"}))
  with pytest.raises(UserError, match="model_type 'gemma' is not one"):
    W.load_model(str(tmp_path))


def _widened(params):
  """The float32 model int8 decoding runs: every block kernel (..., in,
  out) rounded to 255 levels symmetric about 0 per output column (the
  embedding and the head as they are)."""
  def visit(tree):
    if not isinstance(tree, dict):
      return tree
    tree = {k: visit(v) for k, v in tree.items()}
    if "kernel" in tree:
      k = np.asarray(tree["kernel"], np.float32)
      step = np.abs(k).max(axis=-2, keepdims=True) / 127
      tree["kernel"] = np.round(k / step) * step
    return tree
  return {**params, "layers": visit(params["layers"])}


def test_int8_decoding_of_a_llama_is_float32_decoding_of_its_codes(
    random_models):
  """`weights="int8"` (launch.sample --weights=int8, the bot's
  sampling.weights) on a Llama on a CPU: the reference path keeps each
  block kernel as int8 codes with a scale per output channel, laid out
  (out, in) for the int8 kernel, which multiplies them at every decoding
  step; greedy decoding writes what float32 writes from the widened
  weights, with log-probs to 1e-4."""
  assert int8.available(), int8.why_not()
  loaded = W.load_model(random_models["llama"][1])
  config, params, tok = loaded.config, loaded.params, loaded.tokenizer
  prepared = sampling.DECODINGS["reference"].prepare(config, params, "int8")
  for layer in prepared["layers"]:  # all seven projections
    for dense in (*layer["self_attn"].values(), *layer["mlp"].values()):
      assert dense["kernel_qt"].dtype == jnp.int8 and set(dense) == {
          "kernel_qt", "kernel_scale"}
  assert prepared["layers"][1]["mlp"]["gate_proj"]["kernel_qt"].shape == (
      config.n_inner, config.n_embd)
  assert prepared["lm_head"]["kernel"].dtype == jnp.float32
  greedy = dict(num_samples=2, max_new_tokens=12, top_k=1, seed=0)
  prompts = ["miles to go", "the woods"]
  want = sampling.sample(config, _widened(params), tok, prompts, **greedy)
  # The kernel records the vector width of its latest product: decoding at
  # the widest this CPU has, then at plain C++'s, shows the kernel
  # multiplied in each call (4 rows a step; the prefill's 32 are XLA's).
  try:
    for level in sorted({0, int8.cpu_level()}, reverse=True):
      assert int8.set_level(level) == level
      got = sampling.sample(config, params, tok, prompts, weights="int8",
                            **greedy)
      assert int8.last_level() == level
      assert [r.tokens for r in got] == [r.tokens for r in want]
      assert all(len(r.tokens) == 12 for r in got)
      for a, b in zip(got, want):
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-4)
  finally:
    int8.set_level(-1)


@pytest.mark.slow
def test_int8_decoding_of_a_llama_stays_within_0_01_nats_of_float32(
    random_models):
  """bench.quantization's measure (as for GPT-2, tests/test_int8.py): the
  mean KL(float32 || int8) per token on the text is under 0.01 nats, and
  not 0 (the codes are what decodes); launch.sample --weights=int8 writes
  the sampler's int8 candidate, whose log-probs are not float32's."""
  from bench import quantization  # pylint: disable=import-outside-toplevel
  directory = random_models["llama"][1]
  loaded = W.load_model(directory)
  got = quantization.compare(loaded, [TEXT[i:] for i in range(0, 48, 6)], 8)
  assert got["tokens"] > 100
  assert 0 < got["kl_per_token"] < 0.01, got
  assert abs(got["perplexity_int8"] / got["perplexity_float32"] - 1) < 0.01

  proc = subprocess.run(
      [sys.executable, "-m", "launch.sample", "--model", directory,
       "--prompt", "miles to go", "--max_new_tokens", "12", "--top_k", "1",
       "--weights=int8", "--json"],
      capture_output=True, text=True, env=dict(os.environ,
                                               JAX_PLATFORMS="cpu"),
      timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr
  written = json.loads(proc.stdout.splitlines()[0])
  want, other = (sampling.sample(
      loaded.config, loaded.params, loaded.tokenizer, ["miles to go"],
      max_new_tokens=12, top_k=1, seed=0, weights=weights)[0]
                 for weights in ("int8", "float32"))
  assert written["tokens"] == want.tokens
  gap = abs(want.mean_logprob - other.mean_logprob)
  assert gap > 1e-5
  assert abs(written["mean_logprob"] - want.mean_logprob) < gap / 10


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
  from huggingface_hub import constants  # pylint: disable=import-outside-toplevel
  cache = tmp_path / "hub-cache"
  cache.mkdir()
  monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
  monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
  monkeypatch.chdir(tmp_path)
  return cache


def test_a_hub_name_loads_from_the_cache(random_models, offline_hub):
  directory = random_models["qwen2"][1]
  hf_helpers.write_hub_cache(offline_hub, "someone/tiny-qwen", directory)
  by_name = W.load_model("someone/tiny-qwen")
  local = W.load_model(directory)
  assert by_name.config == local.config and by_name.source == (
      "someone/tiny-qwen")
  assert by_name.tokenizer.eot_id == local.tokenizer.eot_id
  np.testing.assert_array_equal(by_name.params["embed_tokens"]["embedding"],
                                local.params["embed_tokens"]["embedding"])


# ---- a Llama that has learned the bot's text format -------------------------


def _train(directory: str, steps: int = 300, length: int = 64) -> None:
  """transformers writes a tiny Llama; it learns the bot's format here (our
  model, a few seconds of Adam) and its trained weights replace the file's."""
  import transformers  # pylint: disable=import-outside-toplevel
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  docs = helpers.training_documents(400)
  tok = hf_helpers.byte_level_bpe(docs, 400, [BOS, LLAMA_EOS])
  hf_config = transformers.LlamaConfig(
      vocab_size=400, hidden_size=64, intermediate_size=128,
      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
      max_position_embeddings=256, tie_word_embeddings=False,
      bos_token_id=0, eos_token_id=1)
  transformers.LlamaForCausalLM(hf_config).save_pretrained(directory)
  hf_helpers.write_tokenizer(directory, tok, LLAMA_EOS)
  config, params = llama_weights.load_hf(directory)
  config = config.replace(scan_layers=False)  # faster on a CPU
  stream = []
  for doc in docs:
    stream += tok.encode(doc, add_special_tokens=False).ids + [1]
  stream = np.asarray(stream, np.int32)
  optimizer = optax.adam(3e-3)
  opt_state = optimizer.init(params)

  def loss_fn(p, ids):
    logits = llama.forward(config, p, ids[:, :-1]).logits
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, ids[:, 1:]).mean()

  @jax.jit
  def step(p, state, ids):
    grads = jax.grad(loss_fn)(p, ids)
    updates, state = optimizer.update(grads, state, p)
    return optax.apply_updates(p, updates), state

  rng = np.random.default_rng(0)
  for _ in range(steps):
    starts = rng.integers(0, len(stream) - length - 1, 16)
    ids = jnp.asarray(np.stack([stream[s:s + length + 1] for s in starts]))
    params, opt_state = step(params, opt_state, ids)
  save_file(llama_weights.params_to_hf_tensors(params, config),
            os.path.join(directory, "model.safetensors"),
            metadata={"format": "pt"})


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("trained_llama"))
  _train(directory)
  return directory


def _ask_prompt() -> str:
  ask = Thread((Turn("alice", ASKED, "do you like frogs?"),), helpers.BOT)
  return text_format.ask_prompt(ask, helpers.BOT, helpers.NOW)


@pytest.mark.slow
def test_launch_sample_streams_candidates_that_end_at_the_eos(
    trained_dir, tmp_path):
  """By its Hub name (a cache folder of the test's own, offline): three
  candidates in one call, typed as they are written, each ended by the
  model's own end-of-text."""
  cache = tmp_path / "hub-cache"
  hf_helpers.write_hub_cache(cache, "someone/tiny-llama", trained_dir)
  env = dict(os.environ, JAX_PLATFORMS="cpu", HF_HUB_CACHE=str(cache),
             HF_HUB_OFFLINE="1")
  proc = subprocess.run(
      [sys.executable, "-m", "launch.sample", "--model",
       "someone/tiny-llama", "--prompt", _ask_prompt(), "--num_samples", "3",
       "--max_new_tokens", "64", "--temperature", "0.5", "--breakruns_tau",
       "0", "--stream", "--json"],
      capture_output=True, text=True, env=env, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr
  lines = [json.loads(line) for line in proc.stdout.splitlines()]
  pieces = [l for l in lines if "row" in l]
  candidates = [l for l in lines if "finish_reason" in l]
  assert len(candidates) == 3
  for i, c in enumerate(candidates):
    assert c["finish_reason"] == "eot", c
    assert "".join(p["text"] for p in pieces if p["row"] == i) == c["text"]
    # The format it learned: tags, a blank line, the answer.
    assert text_format.split_continuation(c["text"]).body.strip(), c
    assert LLAMA_EOS not in c["text"]


@pytest.mark.slow
def test_a_bot_pass_with_the_llama_answers_an_ask(trained_dir, server,
                                                  tmp_path):
  """In this process (launch.run_bot's path), then through the model
  server (launch.serve_model's): each pass answers its ask."""
  cfg = make_config(server, tmp_path, trained_dir)
  model = ml.LocalModel.load(
      trained_dir, "", ml.SamplingSettings.from_config(
          bot_configs.get_config("tiny").sampling))
  assert model.describe()["n_layer"] == 2
  (first,) = seed_asks(server, helpers.ASKS[:1])
  report = loop.run_pass(cfg, model=model)
  assert report.published == [f"ask:{first}"]
  assert answered(server, [first])[first]
  (second,) = seed_asks(server, helpers.ASKS[1:2])
  model_server = ml.ModelServer(model).start()
  try:
    report = loop.run_pass(cfg, model_server=model_server.url)
  finally:
    model_server.stop()
  assert report.published == [f"ask:{second}"]
  assert answered(server, [second])[second]
  assert model_server.batches


@pytest.fixture(scope="module")
def llama_heads(trained_dir, tmp_path_factory):
  """A selector head trained on the trained Llama's activations, as
  `launch.train_selector --config.model=DIR` trains one: from a labelled
  JSONL of two authors' passages (test_selector's)."""
  # pylint: disable=import-outside-toplevel
  from bot.corpus.head_examples import train_from_config
  from configs import selector as selector_configs
  from tests.test_selector import two_authors
  root = tmp_path_factory.mktemp("llama_heads")
  texts, labels = two_authors(40, seed=0, words=12)
  data = root / "labelled.jsonl"
  data.write_text("".join(json.dumps({"text": t, "label": int(l)}) + "\n"
                          for t, l in zip(texts, labels)))
  config = selector_configs.get_config("tiny")
  config.model = trained_dir
  config.data = str(data)
  config.activation_cache = str(root / "activations")
  config.train.epochs = 2
  result = train_from_config(config, str(root / "heads" / "selector"))
  return {"heads": str(root / "heads"), "cache": str(root / "activations"),
          "texts": texts, "metrics": result}


@pytest.mark.slow
def test_a_selector_on_the_llama_scores_its_cache_as_a_fresh_pass(
    llama_heads):
  # pylint: disable=import-outside-toplevel
  import functools
  from selector import data as selector_data
  from selector.score import Heads
  assert np.isfinite(llama_heads["metrics"]["auc"])
  heads = Heads.load(llama_heads["heads"])  # and the Llama the head names
  model = heads.model
  config = model.config
  assert family.of(config) is family.LLAMA
  generator = heads.selector.generator
  assert generator["model_type"] == "llama"
  assert generator["n_kv_head"] == config.n_kv_head < config.n_head
  cache = selector_data.ActivationCache(llama_heads["cache"])
  texts = llama_heads["texts"]
  assert len(cache) == len(texts)
  layers = heads.layers
  assert layers == cache.layers == (1, 2)
  picks = [0, 1, 7, 33]
  picked = [texts[i] for i in picks]
  from_cache = heads.score_candidates(
      [dict(zip(cache.layers, cache.rows(i))) for i in picks],
      picked).selector
  run = jax.jit(functools.partial(family.of(config).forward, config,
                                  capture=layers, return_logits=False))
  fresh = []
  for text in picked:  # one unpadded forward pass per text
    out = run(model.params, np.asarray([model.tokenizer.encode(text)],
                                       np.int32))
    fresh.append({l: np.asarray(out.hidden[l][0]) for l in layers})
  from_forward = heads.score_candidates(fresh, picked).selector
  np.testing.assert_allclose(from_cache, from_forward, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(heads.score_texts(picked).selector,
                             from_forward, rtol=1e-5, atol=1e-6)
  assert len(set(np.round(from_forward, 6))) > 1
  # A head of another family with the same shape is one line.
  other = dataclasses.replace(heads.selector, generator={
      k: v for k, v in generator.items() if k != "model_type"})
  with pytest.raises(UserError, match="trained on a gpt2 generator, but .* "
                     "is a llama") as e:
    Heads(model, selector=other)
  assert "\n" not in str(e.value)


@pytest.mark.slow
def test_a_bot_pass_with_the_llama_and_its_heads_scores_candidates(
    trained_dir, llama_heads, server, tmp_path):
  from bot.state import Trace  # pylint: disable=import-outside-toplevel
  cfg = make_config(server, tmp_path, trained_dir)
  cfg.heads = llama_heads["heads"]
  model = ml.LocalModel.load(trained_dir, cfg.heads,
                             ml.SamplingSettings.from_config(cfg.sampling))
  assert model.capture == (1, 2)
  (ask,) = seed_asks(server, helpers.ASKS[:1])
  report = loop.run_pass(cfg, model=model)
  assert report.published == [f"ask:{ask}"]
  assert answered(server, [ask])[ask]
  (entry,) = Trace(cfg.state + ".trace.jsonl").read()
  selectors = [c["selector"] for c in entry["candidates"]]
  assert len(selectors) > 1 and all(0 <= s <= 1 for s in selectors)
  assert len(set(selectors)) > 1  # the head tells candidates apart
  assert entry["heads"] == cfg.heads
