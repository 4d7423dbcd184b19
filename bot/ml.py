"""The ML layer: sampling candidates and scoring them, here or over HTTP.

The loop talks to two small interfaces:
  - `Generator.generate(prompts, n, seed)`: n continuations per prompt, in
    one sampler call; `seed` is an int or one per prompt, and a prompt's
    candidate r is sampled with its seed + r, whatever else is in the
    batch;
  - `Scorer.score(samples)`: the calibrated selector probability (None
    without a selector head), the sentiment (as P(positive)) and the
    autoreviewer's P(the operator turns the post down) (None without an
    autoreviewer head) of each sample, all from the one forward the sampler
    made; `Scorer.sentiment(texts)`: the sentiment of what users send;
    `Scorer.autoreview(samples)`: P(reject) of texts the sampler did not
    write (a forward of prompt + text).
`LocalModel` implements both in this process (gpt2.sampling + selector
heads, scoring from the hidden states the sampler already computed).
`RemoteModel` implements both over HTTP against `ModelServer`
(`python -m launch.serve_model`), so the tumblr loop can run on a small
machine and the model on a GPU or TPU host, as the original's separate
processes did. The server scores on its side (hidden states never travel)
and batches requests that arrive together into one sampler call.
"""

import dataclasses
import http.server
import json
import logging
import queue
import threading
import time
from typing import Optional, Protocol, Sequence, Union

import numpy as np
import requests

from gpt2.errors import UserError
from gpt2.sampling_params import BOT_MAX_NEW_TOKENS, MAX_STEPS, SamplingParams

_BOT_RULES = SamplingParams.bot_defaults()

log = logging.getLogger("bot.ml")


@dataclasses.dataclass
class Sample:
  """One generated continuation of a prompt."""
  raw: str  # the continuation, cut at the end-of-text token
  mean_logprob: Optional[float] = None
  finished: bool = True  # ended with end-of-text, not by max_new_tokens
  hidden: Optional[dict] = None  # {layer: (n_generated, C)} for the heads
  prompt: str = ""
  # Set when a server scored the sample already.
  selector: Optional[float] = None
  sentiment: Optional[float] = None
  p_reject: Optional[float] = None


class Generator(Protocol):

  def generate(self, prompts: Sequence[str], n: int, *,
               seed: Union[int, Sequence[int]]) -> list:
    """[[Sample] * n for each prompt]."""


  def logprob(self, prefixes: Sequence[str],
              continuations: Sequence[str]) -> list:
    """log P(continuation | prefix) under the generator, per pair."""


class Scorer(Protocol):

  def score(self, samples: Sequence[Sample]) -> list:
    """[(selector P(liked) or None, sentiment P(positive), autoreviewer
    P(reject) or None)] per sample."""

  def sentiment(self, texts: Sequence[str]) -> list:
    """P(positive) per text."""

  def autoreview(self, samples: Sequence[Sample]) -> list:
    """Calibrated P(reject) per sample, or None each without the head."""


# VADER's compound score, which the sentiment head learns by default.
COMPOUND_SCALE = (-1.0, 1.0)


def sentiment_probability(value, scale: tuple = COMPOUND_SCALE) -> float:
  """A sentiment value on `scale` (lowest, highest) as P(positive) in [0, 1].

  NaN (a head reading an empty candidate) is neutral.
  """
  lo, hi = scale
  p = (float(value) - lo) / (hi - lo)
  return 0.5 if not np.isfinite(p) else float(np.clip(p, 0.0, 1.0))


def vader_probabilities(texts: Sequence[str]) -> list:
  """Sentiment without a head: VADER's compound score, as P(positive)."""
  from selector.labels import vader_sentiment  # pylint: disable=import-outside-toplevel
  return [sentiment_probability(v) for v in vader_sentiment(list(texts))]


@dataclasses.dataclass(frozen=True)
class SamplingSettings:
  """How candidates are sampled (config keys `sampling.*`); the defaults are
  gpt2.sampling_params'."""
  # 0: the original's 1,600, or the most the model's context and max_steps
  # allow where that is less (`fitted`).
  max_new_tokens: int = 0
  max_steps: int = MAX_STEPS  # steps beyond the context (gpt2.sampling)
  temperature: float = _BOT_RULES.temperature
  top_p: float = _BOT_RULES.top_p
  top_k: int = _BOT_RULES.top_k
  breakruns_tau: float = _BOT_RULES.breakruns_tau
  # Sampler calls take a power-of-two number of prompts, at least this many
  # (padded with copies), so a bot whose passes have 1, 2, 3... jobs compiles
  # a handful of programs rather than one per count.
  min_prompts: int = 1
  weights: str = "float32"  # or "int8" (gpt2.int8, the CPU path)

  @classmethod
  def from_config(cls, cfg) -> "SamplingSettings":
    return cls(max_new_tokens=int(cfg.max_new_tokens),
               max_steps=int(cfg.max_steps),
               temperature=float(cfg.temperature), top_p=float(cfg.top_p),
               top_k=int(cfg.top_k), breakruns_tau=float(cfg.breakruns_tau),
               min_prompts=int(cfg.min_prompts),
               weights=str(cfg.get("weights", "float32")))

  def rules(self) -> SamplingParams:
    return dataclasses.replace(
        _BOT_RULES, temperature=self.temperature, top_k=self.top_k,
        top_p=self.top_p, breakruns_tau=self.breakruns_tau)

  def fitted(self, model_config) -> "SamplingSettings":
    """These settings for a model: `max_new_tokens` 0 becomes the original's
    1,600 or the most the model allows (said once); a number the user gave
    that the model cannot write is one line naming the keys to change."""
    from gpt2 import sampling  # pylint: disable=import-outside-toplevel
    most = sampling.longest(model_config, self.max_steps)
    context = model_config.n_positions
    if self.max_new_tokens == 0:
      chosen = min(BOT_MAX_NEW_TOKENS, most)
      if chosen < BOT_MAX_NEW_TOKENS:
        log.info("sampling.max_new_tokens: %d, the most a %d-token context "
                 "writes in max_steps=%d steps (the original's %d where the "
                 "context allows)", chosen, context, self.max_steps,
                 BOT_MAX_NEW_TOKENS)
      return dataclasses.replace(self, max_new_tokens=chosen)
    if self.max_new_tokens > most:
      step = sampling.window_step(model_config)
      raise UserError(
          f"--config.sampling.max_new_tokens={self.max_new_tokens} is more "
          f"than this model writes: {self.max_steps} steps "
          f"(--config.sampling.max_steps) of {step} new tokens (a quarter of "
          f"its {context}-token context) make {most}; give "
          f"--config.sampling.max_new_tokens={most}, or leave it out, or "
          f"--config.sampling.max_steps={-(-self.max_new_tokens // step)}")
    return self


class LocalModel:
  """Generator and scorer in this process: a loaded GPT-2 and its heads."""

  def __init__(self, model, heads=None,
               settings: SamplingSettings = SamplingSettings(),
               sentiment_scale: tuple = COMPOUND_SCALE, heads_dir: str = ""):
    """`model`: gpt2.weights.LoadedModel; `heads`: selector.score.Heads;
    `sentiment_scale`: the (lowest, highest) values the sentiment head was
    trained on (VADER's compound by default); `heads_dir`: where the heads
    came from (for `provenance`)."""
    self.model = model
    self.heads = heads
    self.heads_dir = heads_dir
    self.settings = settings.fitted(model.config)
    self.sentiment_scale = tuple(sentiment_scale)
    self.batches = []  # prompts per sampler call, for tests and logs
    self._forward = None  # jitted log-probabilities, for `logprob`

  @classmethod
  def load(cls, model_dir: str, heads_dir: str = "",
           settings: SamplingSettings = SamplingSettings(),
           sentiment_scale: tuple = COMPOUND_SCALE) -> "LocalModel":
    from gpt2 import weights  # pylint: disable=import-outside-toplevel
    if not model_dir:
      raise UserError("config key `model` is empty: name the generator "
                      "directory (or pass --model_server)")
    model = weights.load_model(model_dir)
    heads = None
    if heads_dir:
      from selector.score import Heads  # pylint: disable=import-outside-toplevel
      heads = Heads.load(heads_dir, model=model)
    return cls(model, heads, settings, sentiment_scale, heads_dir)

  def provenance(self) -> dict:
    """Which generator (its directory or Hub name, and a training run's
    checkpoint step) and heads this is: recorded with every post."""
    return {"model": getattr(self.model, "source", "") or None,
            "model_step": getattr(self.model, "step", None),
            "heads": self.heads_dir or None}

  @property
  def capture(self) -> tuple:
    return tuple(self.heads.layers) if self.heads is not None else ()

  def generate(self, prompts: Sequence[str], n: int, *,
               seed: Union[int, Sequence[int]]) -> list:
    from gpt2 import sampling  # pylint: disable=import-outside-toplevel
    if not prompts:
      return []
    s = self.settings
    seeds = prompt_seeds(seed, len(prompts), n)
    self.batches.append(len(prompts))
    padded = list(prompts)
    size = max(1, s.min_prompts)
    while size < len(padded):
      size *= 2
    padded += [padded[-1]] * (size - len(padded))
    seeds += [seeds[-1]] * (size - len(seeds))
    results = sampling.sample(
        self.model.config, self.model.params, self.model.tokenizer,
        padded, num_samples=n, max_new_tokens=s.max_new_tokens,
        max_steps=s.max_steps, seed=[p + r for p in seeds for r in range(n)],
        rules=s.rules(), capture=self.capture, weights=s.weights)
    out = []
    for i, prompt in enumerate(prompts):
      out.append([Sample(raw=r.text, mean_logprob=_finite(r.mean_logprob),
                         finished=r.finished, hidden=r.hidden or None,
                         prompt=prompt)
                  for r in results[i * n:(i + 1) * n]])
    return out

  def stream(self, prompt: str, n: int, *, seed: int, rules=None,
             max_new_tokens: Optional[int] = None):
    """`n` continuations of one prompt in one sampler call, as they are
    written: yields gpt2.sampling.TextPiece(row, text); returns [Sample]
    (with hidden states for the heads) when done."""
    from gpt2 import sampling  # pylint: disable=import-outside-toplevel
    s = self.settings
    results = yield from sampling.stream(
        self.model.config, self.model.params, self.model.tokenizer, [prompt],
        num_samples=n, max_new_tokens=max_new_tokens or s.max_new_tokens,
        max_steps=s.max_steps, seed=seed, rules=rules or s.rules(),
        capture=self.capture, weights=s.weights)
    return [Sample(raw=r.text, mean_logprob=_finite(r.mean_logprob),
                   finished=r.finished, hidden=r.hidden or None,
                   prompt=prompt) for r in results]

  def logprob(self, prefixes: Sequence[str],
              continuations: Sequence[str]) -> list:
    import jax  # pylint: disable=import-outside-toplevel
    from gpt2 import model as model_lib  # pylint: disable=import-outside-toplevel
    tok, config = self.model.tokenizer, self.model.config
    pairs = [(tok.encode(p), tok.encode(c))
             for p, c in zip(prefixes, continuations)]
    if not pairs:
      return []
    longest = max(len(p) + len(c) for p, c in pairs)
    if longest > config.n_positions:
      raise ValueError(f"{longest} tokens do not fit the context of "
                       f"{config.n_positions}")
    size = 16
    while size < longest:
      size *= 2
    size = min(size, config.n_positions)
    ids = np.zeros((len(pairs), size), np.int32)  # right-padded: causal
    for i, (p, c) in enumerate(pairs):
      ids[i, :len(p) + len(c)] = p + c
    if self._forward is None:
      self._forward = jax.jit(
          lambda params, x: jax.nn.log_softmax(
              model_lib.forward(config, params, x).logits.astype(np.float32)))
    logp = np.asarray(self._forward(self.model.params, ids))
    out = []
    for i, (p, c) in enumerate(pairs):
      positions = np.arange(len(p) - 1, len(p) + len(c) - 1)
      out.append(float(logp[i, positions, c].sum()))
    return out

  def score(self, samples: Sequence[Sample]) -> list:
    samples = list(samples)
    if not samples:
      return []
    selector = [None] * len(samples)
    p_reject = [None] * len(samples)
    sentiment = None
    if self.heads is not None:
      if all(s.hidden for s in samples):
        scores = self.heads.score_candidates([s.hidden for s in samples],
                                             [s.raw for s in samples])
      else:
        scores = self.heads.score_texts([s.raw for s in samples],
                                        [s.prompt for s in samples])
      if scores.selector is not None:
        # NaN only for an empty candidate, which the screens drop anyway.
        selector = [float(np.nan_to_num(p, nan=0.0)) for p in scores.selector]
      if scores.sentiment is not None:
        sentiment = [sentiment_probability(v, self.sentiment_scale)
                     for v in scores.sentiment]
      if scores.autoreviewer is not None:
        p_reject = _p_reject(scores.autoreviewer)
    if sentiment is None:
      sentiment = vader_probabilities([s.raw for s in samples])
    return list(zip(selector, sentiment, p_reject))

  def sentiment(self, texts: Sequence[str]) -> list:
    texts = list(texts)
    if not texts:
      return []
    if self.heads is not None and self.heads.sentiment is not None:
      values = self.heads.score_texts(texts).sentiment
      return [sentiment_probability(v, self.sentiment_scale) for v in values]
    return vader_probabilities(texts)

  def autoreview(self, samples: Sequence[Sample]) -> list:
    samples = list(samples)
    if self.heads is None or self.heads.autoreviewer is None:
      return [None] * len(samples)
    if not samples:
      return []
    # The prompt and the candidate through the generator, as the head was
    # trained on them (the review examples keep no hidden states).
    return _p_reject(self.heads.score_texts(
        [s.raw for s in samples], [s.prompt for s in samples]).autoreviewer)

  def describe(self) -> dict:
    c = self.model.config
    return {"n_layer": c.n_layer, "n_embd": c.n_embd,
            "vocab_size": c.vocab_size, "kind": self.model.kind,
            "heads": [h.kind for h in self.heads.heads] if self.heads else [],
            "provenance": self.provenance()}


def prompt_seeds(seed: Union[int, Sequence[int]], prompts: int,
                 n: int) -> list:
  """One seed per prompt: a list as given, or from an int, prompt i's is
  seed + i n (so its candidates' seeds follow on from the last prompt's)."""
  if isinstance(seed, (int, np.integer)):
    return [int(seed) + i * n for i in range(prompts)]
  seeds = [int(s) for s in seed]
  if len(seeds) != prompts:
    raise ValueError(f"{len(seeds)} seeds for {prompts} prompts")
  return seeds


def _p_reject(values) -> list:
  """The autoreviewer's values as floats (an empty candidate: unsure)."""
  return [float(np.nan_to_num(p, nan=0.5)) for p in values]


def _finite(x) -> Optional[float]:
  """A float for JSON: None for NaN (an empty candidate has no log-prob)."""
  x = float(x)
  return x if np.isfinite(x) else None


# ---- over HTTP -------------------------------------------------------------------


class RemoteModel:
  """Generator and scorer served by `launch.serve_model` at `url`."""

  def __init__(self, url: str, timeout_s: float = 600.0):
    self.url = url.rstrip("/")
    self.timeout_s = timeout_s
    self._session = requests.Session()
    self._has_autoreviewer = None

  def _post(self, path: str, body: dict) -> dict:
    try:
      resp = self._session.post(self.url + path, json=body,
                                timeout=self.timeout_s)
    except requests.ConnectionError:
      raise UserError(f"model server {self.url} is not reachable "
                      "(--model_server)") from None
    if resp.status_code != 200:
      raise RuntimeError(f"model server {self.url}{path}: "
                         f"{resp.status_code} {resp.text[:200]}")
    return resp.json()

  def generate(self, prompts: Sequence[str], n: int, *,
               seed: Union[int, Sequence[int]]) -> list:
    if not prompts:
      return []
    seeds = prompt_seeds(seed, len(prompts), n)
    data = self._post("/generate", {"prompts": list(prompts), "n": n,
                                    "seeds": seeds})
    return [[Sample(prompt=p, **c) for c in per_prompt]
            for p, per_prompt in zip(prompts, data["candidates"])]

  def score(self, samples: Sequence[Sample]) -> list:
    samples = list(samples)
    # The server scores what it samples (a sentiment always; a selector
    # probability and P(reject) when it has those heads).
    missing = [s for s in samples if s.sentiment is None]
    if missing:
      data = self._post("/score", {"texts": [s.raw for s in missing],
                                   "prompts": [s.prompt for s in missing]})
      for s, sel, sen, rej in zip(missing, data["selector"],
                                  data["sentiment"], data["autoreviewer"]):
        s.selector, s.sentiment, s.p_reject = sel, sen, rej
    return [(s.selector, s.sentiment, s.p_reject) for s in samples]

  def sentiment(self, texts: Sequence[str]) -> list:
    if not texts:
      return []
    return self._post("/sentiment", {"texts": list(texts)})["sentiment"]

  def autoreview(self, samples: Sequence[Sample]) -> list:
    samples = list(samples)
    if self._has_autoreviewer is None:  # asked once, not for every job
      self._has_autoreviewer = "autoreviewer" in self.describe().get(
          "heads", [])
    if not self._has_autoreviewer:
      return [None] * len(samples)
    if not samples:
      return []
    return self._post("/autoreview", {
        "texts": [s.raw for s in samples],
        "prompts": [s.prompt for s in samples]})["autoreviewer"]

  def provenance(self) -> dict:
    """The server's generator and heads (see LocalModel.provenance)."""
    return dict(self.describe().get("provenance") or {},
                model_server=self.url)

  def logprob(self, prefixes: Sequence[str],
              continuations: Sequence[str]) -> list:
    if not prefixes:
      return []
    return self._post("/logprob", {"prefixes": list(prefixes),
                                   "continuations": list(continuations)}
                      )["logprob"]

  def describe(self) -> dict:
    try:
      return self._session.get(self.url + "/health",
                               timeout=self.timeout_s).json()
    except requests.ConnectionError:
      raise UserError(f"model server {self.url} is not reachable "
                      "(--model_server)") from None


@dataclasses.dataclass
class _Request:
  prompts: list
  n: int
  seed: list  # one per prompt
  done: threading.Event = dataclasses.field(default_factory=threading.Event)
  result: Optional[list] = None
  error: Optional[BaseException] = None


class ModelServer:
  """Serves a LocalModel over HTTP; generation requests are batched.

  Requests that arrive while the sampler is busy (or within `window_s` of
  each other) and ask for the same n are merged into one sampler call; each
  request keeps its own seeds, so it gets the candidates it gets alone
  (where the merged call has the same shapes; a different batch or prompt
  bucket can change the float rounding, and so, rarely, a token).
  """

  def __init__(self, model: LocalModel, host: str = "127.0.0.1",
               port: int = 0, window_s: float = 0.02, max_prompts: int = 64):
    self.model = model
    self.window_s = window_s
    self.max_prompts = max_prompts
    self.batches = []  # prompts per sampler call, for tests and logs
    self._queue = queue.Queue()
    self._stop = threading.Event()
    self._model_lock = threading.Lock()
    self._httpd = http.server.ThreadingHTTPServer((host, port),
                                                  self._handler())
    self._threads = []

  @property
  def url(self) -> str:
    host, port = self._httpd.server_address[:2]
    return f"http://{host}:{port}"

  def start(self) -> "ModelServer":
    for target in (self._httpd.serve_forever, self._batch_loop):
      t = threading.Thread(target=target, daemon=True)
      t.start()
      self._threads.append(t)
    return self

  def serve_forever(self) -> None:
    threading.Thread(target=self._batch_loop, daemon=True).start()
    self._httpd.serve_forever()

  def stop(self) -> None:
    self._stop.set()
    self._httpd.shutdown()
    self._httpd.server_close()

  def _batch_loop(self) -> None:
    while not self._stop.is_set():
      try:
        first = self._queue.get(timeout=0.1)
      except queue.Empty:
        continue
      batch = [first]
      deadline = time.monotonic() + self.window_s
      held = []
      while sum(len(r.prompts) for r in batch) < self.max_prompts:
        try:
          r = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
          break
        (batch if r.n == first.n else held).append(r)
      for r in held:
        self._queue.put(r)
      prompts = [p for r in batch for p in r.prompts]
      seeds = [s for r in batch
               for s in prompt_seeds(r.seed, len(r.prompts), r.n)]
      try:
        with self._model_lock:
          samples = self.model.generate(prompts, first.n, seed=seeds)
          flat = [s for per_prompt in samples for s in per_prompt]
          scores = self.model.score(flat)
        for s, (sel, sen, rej) in zip(flat, scores):
          s.selector, s.sentiment, s.p_reject = sel, sen, rej
          s.hidden = None
        self.batches.append(len(prompts))
        start = 0
        for r in batch:
          r.result = samples[start:start + len(r.prompts)]
          start += len(r.prompts)
      except BaseException as e:  # pylint: disable=broad-except
        log.exception("generation failed")
        for r in batch:
          r.error = e
      for r in batch:
        r.done.set()

  def _generate(self, body: dict) -> dict:
    prompts = [str(p) for p in body["prompts"]]
    n = int(body["n"])
    req = _Request(prompts=prompts, n=n, seed=prompt_seeds(
        body.get("seeds", body.get("seed", 0)), len(prompts), n))
    self._queue.put(req)
    req.done.wait()
    if req.error is not None:
      raise req.error
    return {"candidates": [[{"raw": s.raw, "mean_logprob": s.mean_logprob,
                             "finished": s.finished, "selector": s.selector,
                             "sentiment": s.sentiment,
                             "p_reject": s.p_reject} for s in per_prompt]
                           for per_prompt in req.result]}

  def _score(self, body: dict) -> dict:
    samples = [Sample(raw=t, prompt=p) for t, p in
               zip(body["texts"], body.get("prompts") or [""] * len(
                   body["texts"]))]
    with self._model_lock:
      scores = self.model.score(samples)
    return {"selector": [s[0] for s in scores],
            "sentiment": [s[1] for s in scores],
            "autoreviewer": [s[2] for s in scores]}

  def _sentiment(self, body: dict) -> dict:
    with self._model_lock:
      return {"sentiment": self.model.sentiment(body["texts"])}

  def _autoreview(self, body: dict) -> dict:
    samples = [Sample(raw=t, prompt=p) for t, p in
               zip(body["texts"], body.get("prompts") or [""] * len(
                   body["texts"]))]
    with self._model_lock:
      return {"autoreviewer": self.model.autoreview(samples)}

  def _logprob(self, body: dict) -> dict:
    with self._model_lock:
      return {"logprob": self.model.logprob(body["prefixes"],
                                            body["continuations"])}

  def _handler(self):
    server = self
    routes = {"/generate": self._generate, "/score": self._score,
              "/sentiment": self._sentiment, "/logprob": self._logprob,
              "/autoreview": self._autoreview}

    class Handler(http.server.BaseHTTPRequestHandler):
      protocol_version = "HTTP/1.1"

      def log_message(self, fmt, *args):  # pylint: disable=arguments-differ
        log.debug("model server: " + fmt, *args)

      def _reply(self, status: int, obj: dict) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

      def do_GET(self):  # pylint: disable=invalid-name
        if self.path == "/health":
          self._reply(200, {"ok": True, **server.model.describe()})
        else:
          self._reply(404, {"error": f"no route {self.path}"})

      def do_POST(self):  # pylint: disable=invalid-name
        route = routes.get(self.path)
        if route is None:
          self._reply(404, {"error": f"no route {self.path}"})
          return
        try:
          length = int(self.headers.get("Content-Length", 0))
          body = json.loads(self.rfile.read(length) or b"{}")
          self._reply(200, route(body))
        except (KeyError, TypeError, ValueError) as e:
          self._reply(400, {"error": f"bad request: {e}"})
        except Exception as e:  # pylint: disable=broad-except
          self._reply(500, {"error": f"{type(e).__name__}: {e}"})

    return Handler
