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
import hmac
import http
import http.server
import io
import json
import logging
import queue
import re
import socket
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
  """Generator and scorer in this process: a loaded generator (a GPT-2 or a
  Llama-family model) and its heads."""

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
    from gpt2 import family  # pylint: disable=import-outside-toplevel
    tok, config = self.model.tokenizer, self.model.config
    forward = family.of(config).forward
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
              forward(config, params, x).logits.astype(np.float32)))
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

# Addresses only this machine reaches: a server bound to any other needs a
# token (the console asks for a password likewise, launch/console.py).
LOOPBACK = ("127.0.0.1", "localhost", "::1")
# The server's default limits on one request; the client cuts its requests
# to them (seeds are per prompt, so the cut changes no candidate).
MAX_PROMPTS = 64  # prompts in a /generate request, and in one sampler call
MAX_TEXTS = 256  # texts (pairs) in a /score, /sentiment, /autoreview, /logprob
MAX_N = 64  # candidates per prompt
MAX_BODY_BYTES = 8 << 20
TOKEN_HOWTO = ("python -c \"import secrets; print(secrets.token_urlsafe(32))\""
               " > {path} && chmod 600 {path}")


def read_token(path: str) -> str:
  """The bearer token in the file `path`: one word of printable ASCII, in a
  file only its owner may read (mode 0600 or 0400). Anything else is one
  UserError line naming the file (never what it holds)."""
  # pylint: disable-next=import-outside-toplevel
  from bot.tumblr.credentials import read_private_file
  token = read_private_file(path, "model token file").strip()
  if not token:
    raise UserError(f"model token file {path} is empty; make one: "
                    + TOKEN_HOWTO.format(path=path))
  if not all(33 <= ord(ch) < 127 for ch in token):
    raise UserError(f"model token file {path} holds spaces or characters a "
                    "header cannot carry; make one: "
                    + TOKEN_HOWTO.format(path=path))
  return token


def check_bind(host: str, token: str) -> None:
  """Refuses (UserError) to serve on an address others reach without a
  token."""
  if not token and host not in LOOPBACK:
    raise UserError(f"--host={host} would let others reach the model server: "
                    "pass --token_file (mode 0600), or keep --host=127.0.0.1")


class RemoteModel:
  """Generator and scorer served by `launch.serve_model` at `url`.

  `token_file`: a file holding the server's bearer token (the file its
  --token_file names, or a copy; config key `model_token_file`), read once
  here; "" for a server without one.
  """

  def __init__(self, url: str, timeout_s: float = 600.0, token_file: str = ""):
    self.url = url.rstrip("/")
    self.timeout_s = timeout_s
    self._session = requests.Session()
    self._has_token = bool(token_file)
    if token_file:
      self._session.headers["Authorization"] = "Bearer " + read_token(
          token_file)
    self._has_autoreviewer = None

  def _request(self, method: str, path: str,
               body: Optional[dict] = None) -> dict:
    # Sent again once when the connection drops: the server closes idle
    # connections (its --timeout_s) and a request can cross that close; every
    # route answers the same again (seeds fix the candidates).
    for attempt in range(2):
      try:
        resp = self._session.request(method, self.url + path, json=body,
                                     timeout=self.timeout_s)
        break
      except requests.ConnectionError:
        if attempt:
          raise UserError(f"model server {self.url} is not reachable "
                          "(--model_server)") from None
    if resp.status_code == 401:
      raise UserError(
          f"model server {self.url} refused this bot's token (config key "
          "model_token_file): name a copy of the server's --token_file"
          if self._has_token else
          f"model server {self.url} asks for a token: set config key "
          "model_token_file to a copy of the server's --token_file")
    if resp.status_code != 200:
      raise RuntimeError(f"model server {self.url}{path}: "
                         f"{resp.status_code} {resp.text[:200]}")
    return resp.json()

  def _post(self, path: str, body: dict) -> dict:
    return self._request("POST", path, body)

  def _post_texts(self, path: str, **lists) -> list:
    """The answers to `lists` (of one length) sent MAX_TEXTS at a time."""
    size = len(next(iter(lists.values())))
    return [self._post(path, {k: list(v[i:i + MAX_TEXTS])
                              for k, v in lists.items()})
            for i in range(0, size, MAX_TEXTS)]

  def generate(self, prompts: Sequence[str], n: int, *,
               seed: Union[int, Sequence[int]]) -> list:
    if not prompts:
      return []
    prompts = list(prompts)
    seeds = prompt_seeds(seed, len(prompts), n)
    out = []
    for i in range(0, len(prompts), MAX_PROMPTS):
      part = prompts[i:i + MAX_PROMPTS]
      data = self._post("/generate", {"prompts": part, "n": n,
                                      "seeds": seeds[i:i + MAX_PROMPTS]})
      out += [[Sample(prompt=p, **c) for c in per_prompt]
              for p, per_prompt in zip(part, data["candidates"])]
    return out

  def score(self, samples: Sequence[Sample]) -> list:
    samples = list(samples)
    # The server scores what it samples (a sentiment always; a selector
    # probability and P(reject) when it has those heads).
    missing = [s for s in samples if s.sentiment is None]
    if missing:
      answers = self._post_texts("/score", texts=[s.raw for s in missing],
                                 prompts=[s.prompt for s in missing])
      scores = [t for data in answers for t in zip(
          data["selector"], data["sentiment"], data["autoreviewer"])]
      for s, (sel, sen, rej) in zip(missing, scores):
        s.selector, s.sentiment, s.p_reject = sel, sen, rej
    return [(s.selector, s.sentiment, s.p_reject) for s in samples]

  def sentiment(self, texts: Sequence[str]) -> list:
    if not texts:
      return []
    return [p for data in self._post_texts("/sentiment", texts=list(texts))
            for p in data["sentiment"]]

  def autoreview(self, samples: Sequence[Sample]) -> list:
    samples = list(samples)
    if self._has_autoreviewer is None:  # asked once, not for every job
      self._has_autoreviewer = "autoreviewer" in self.describe().get(
          "heads", [])
    if not self._has_autoreviewer:
      return [None] * len(samples)
    if not samples:
      return []
    return [p for data in self._post_texts(
        "/autoreview", texts=[s.raw for s in samples],
        prompts=[s.prompt for s in samples]) for p in data["autoreviewer"]]

  def provenance(self) -> dict:
    """The server's generator and heads (see LocalModel.provenance)."""
    return dict(self.describe().get("provenance") or {},
                model_server=self.url)

  def logprob(self, prefixes: Sequence[str],
              continuations: Sequence[str]) -> list:
    if not prefixes:
      return []
    return [p for data in self._post_texts(
        "/logprob", prefixes=list(prefixes),
        continuations=list(continuations)) for p in data["logprob"]]

  def describe(self) -> dict:
    return self._request("GET", "/health")


@dataclasses.dataclass
class _Request:
  prompts: list
  n: int
  seed: list  # one per prompt
  done: threading.Event = dataclasses.field(default_factory=threading.Event)
  result: Optional[list] = None
  error: Optional[BaseException] = None


class _Refused(Exception):
  """A request answered with `status` and this one-line error, without
  reaching the model."""

  def __init__(self, status: int, message: str, unread: bool = False):
    super().__init__(message)
    self.status = status
    self.unread = unread  # said before the body was read


def _check_fields(body, required: tuple, optional: tuple = ()) -> None:
  if not isinstance(body, dict):
    raise _Refused(400, "the body must be a JSON object")
  missing = [k for k in required if k not in body]
  unknown = sorted(str(k)[:40] for k in body
                   if k not in required and k not in optional)
  if missing or unknown:
    raise _Refused(400, f"{'missing' if missing else 'unknown'} field "
                   f"{(missing or unknown)[0]!r}; this route takes "
                   f"{', '.join(required + optional)}")


def _strings(body: dict, key: str, most: int, nonempty: bool = False) -> list:
  value = body[key]
  if not isinstance(value, list) or not all(isinstance(v, str)
                                            for v in value):
    raise _Refused(400, f"{key} must be a list of strings")
  if len(value) > most:
    raise _Refused(400, f"{len(value)} {key} in one request; at most {most}")
  if nonempty and not all(value):
    raise _Refused(400, f"{key} must not be empty strings")
  return value


def _integer(value, name: str, lo: int, hi: int) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or not (
      lo <= value <= hi):
    raise _Refused(400, f"{name} must be a whole number in [{lo}, {hi}]")
  return value


def _paired(body: dict, first: str, second: str, most: int,
            optional: bool = False) -> tuple:
  """Two lists of strings of one length (the second may be left out, or
  null, where `optional`: empty strings then)."""
  a = _strings(body, first, most)
  if optional and body.get(second) is None:
    return a, [""] * len(a)
  b = _strings(body, second, most)
  if len(a) != len(b):
    raise _Refused(400, f"{len(a)} {first} but {len(b)} {second}")
  return a, b


class _DeadlineReader(io.RawIOBase):
  """A socket's bytes, each read within what is left of a deadline (`start`
  sets it): a client that stalls, or trickles a byte at a time, holds a
  worker `timeout_s` at most, whatever it declared it would send."""

  def __init__(self, sock, timeout_s: float):
    super().__init__()
    self._sock = sock
    self._timeout_s = timeout_s
    self._deadline = 0.0

  def start(self) -> None:
    self._deadline = time.monotonic() + self._timeout_s

  def readable(self) -> bool:
    return True

  def readinto(self, b) -> int:
    left = self._deadline - time.monotonic()
    if left <= 0:
      raise TimeoutError(f"nothing complete within {self._timeout_s:g} s")
    self._sock.settimeout(left)
    return self._sock.recv_into(b)


class _BoundedHTTPServer(http.server.ThreadingHTTPServer):
  """A threading HTTP server with `max_connections` handler threads at most.

  A connection beyond them waits in the accept loop (no thread of its own)
  for one to end, for two read timeouts at most (by then an idle or stalled
  one has been dropped), and is answered 503 if none has.
  """
  request_queue_size = 128  # connections the kernel holds while all are busy

  def __init__(self, address, handler, max_connections: int, wait_s: float):
    self._slots = threading.BoundedSemaphore(max_connections)
    self._wait_s = wait_s
    self._count_lock = threading.Lock()
    self.connections = 0  # handled now, for tests and logs
    self.closing = threading.Event()
    super().__init__(address, handler)

  def process_request(self, request, client_address):
    deadline = time.monotonic() + self._wait_s
    while not self._slots.acquire(timeout=0.1):
      if self.closing.is_set() or time.monotonic() > deadline:
        log.warning("model server: %d connections busy; answered %s 503",
                    self.connections, client_address[0])
        _send_raw(request, 503, {"error": "the model server is busy; try "
                                 "again shortly"})
        self.shutdown_request(request)
        return
    with self._count_lock:
      self.connections += 1
    try:
      super().process_request(request, client_address)
    except BaseException:
      self._release()
      raise

  def process_request_thread(self, request, client_address):
    try:
      super().process_request_thread(request, client_address)
    finally:
      self._release()

  def _release(self) -> None:
    with self._count_lock:
      self.connections -= 1
    self._slots.release()


def _send_raw(sock, status: int, obj: dict) -> None:
  """A whole JSON reply written to a socket no handler holds."""
  data = json.dumps(obj).encode()
  head = (f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
          "Content-Type: application/json\r\n"
          f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n")
  try:
    sock.settimeout(1.0)
    sock.sendall(head.encode() + data)
  except OSError:
    pass


class ModelServer:
  """Serves a LocalModel over HTTP; generation requests are batched.

  Requests that arrive while the sampler is busy (or within `window_s` of
  each other) and ask for the same n are merged into one sampler call of
  `max_prompts` prompts at most; each request keeps its own seeds, so it
  gets the candidates it gets alone (where the merged call has the same
  shapes; a different batch or prompt bucket can change the float rounding,
  and so, rarely, a token). Every request is checked before it is merged (a
  bad one is answered 4xx alone), and a merged call that fails is tried
  again one request at a time, so only the request at fault fails.

  With a `token` every route but GET /healthz wants `Authorization: Bearer
  TOKEN` (401 otherwise); without one the server listens on a loopback
  address only. Limits, each answered with a 4xx and a one-line JSON
  error: `max_body_bytes` a body (413), `max_prompts` prompts and
  `max_texts` texts a request, n in [1, `max_n`]. A connection has
  `timeout_s` to send each request (and to wait idle between them): a
  stalled or slow sender is answered 408 or dropped. At most
  `max_connections` connections are handled at once (a thread each); more
  wait, then get 503.
  """

  def __init__(self, model: LocalModel, host: str = "127.0.0.1",
               port: int = 0, window_s: float = 0.02,
               max_prompts: int = MAX_PROMPTS, *, token: str = "",
               max_texts: int = MAX_TEXTS, max_n: int = MAX_N,
               max_body_bytes: int = MAX_BODY_BYTES, timeout_s: float = 10.0,
               max_connections: int = 32):
    check_bind(host, token)
    self.model = model
    self.window_s = window_s
    self.max_prompts = max_prompts
    self.max_texts = max_texts
    self.max_n = max_n
    self.max_body_bytes = max_body_bytes
    self.timeout_s = timeout_s
    self._bearer = f"Bearer {token}".encode() if token else None
    self.batches = []  # prompts per sampler call, for tests and logs
    self._queue = queue.Queue()
    self._stop = threading.Event()
    self._model_lock = threading.Lock()
    self._httpd = _BoundedHTTPServer((host, port), self._handler(),
                                     max_connections, 2 * timeout_s)
    self._threads = []

  @property
  def url(self) -> str:
    host, port = self._httpd.server_address[:2]
    return f"http://{host}:{port}"

  @property
  def connections(self) -> int:
    """Connections being handled now (a thread each)."""
    return self._httpd.connections

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
    self._httpd.closing.set()
    self._httpd.shutdown()
    self._httpd.server_close()

  def limits(self) -> dict:
    return {"max_prompts": self.max_prompts, "max_texts": self.max_texts,
            "max_n": self.max_n, "max_body_bytes": self.max_body_bytes,
            "timeout_s": self.timeout_s}

  def _batch_loop(self) -> None:
    while not self._stop.is_set():
      try:
        first = self._queue.get(timeout=0.1)
      except queue.Empty:
        continue
      batch = [first]
      size = len(first.prompts)
      deadline = time.monotonic() + self.window_s
      held = []
      while size < self.max_prompts:
        try:
          r = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
          break
        if r.n == first.n and size + len(r.prompts) <= self.max_prompts:
          batch.append(r)
          size += len(r.prompts)
        else:
          held.append(r)
      for r in held:
        self._queue.put(r)
      try:
        self._sample_merged(batch)
      finally:
        for r in batch:
          if r.result is None and r.error is None:
            r.error = RuntimeError("the sampler stopped")
          r.done.set()

  def _sample_merged(self, batch: list) -> None:
    """Samples `batch` in one call; if that fails, each request alone, so
    that only the one at fault gets the error."""
    try:
      self._sample(batch)
      return
    except Exception as e:  # pylint: disable=broad-except
      if len(batch) == 1:
        log.exception("generation failed")
        batch[0].error = e
        return
      log.warning("a merged sampler call of %d requests failed (%s: %s); "
                  "trying each alone", len(batch), type(e).__name__, e)
    for r in batch:
      try:
        self._sample([r])
      except Exception as e:  # pylint: disable=broad-except
        log.exception("generation failed")
        r.error = e

  def _sample(self, batch: list) -> None:
    prompts = [p for r in batch for p in r.prompts]
    seeds = [s for r in batch for s in r.seed]
    with self._model_lock:
      samples = self.model.generate(prompts, batch[0].n, seed=seeds)
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

  def _generate(self, body) -> dict:
    _check_fields(body, ("prompts", "n"), ("seeds", "seed"))
    prompts = _strings(body, "prompts", self.max_prompts, nonempty=True)
    n = _integer(body["n"], "n", 1, self.max_n)
    # Candidate r of a prompt with seed s is sampled with s + r, in [0, 2**63).
    if "seeds" in body:
      seeds = body["seeds"]
      if not isinstance(seeds, list) or len(seeds) != len(prompts):
        raise _Refused(400, f"seeds must be a list of {len(prompts)} whole "
                       "numbers, one per prompt")
      seeds = [_integer(s, "a seed", 0, 2**63 - n) for s in seeds]
    else:
      seeds = prompt_seeds(_integer(body.get("seed", 0), "seed", 0,
                                    2**63 - max(1, len(prompts)) * n),
                           len(prompts), n)
    if not prompts:
      return {"candidates": []}
    req = _Request(prompts=prompts, n=n, seed=seeds)
    self._queue.put(req)
    req.done.wait()
    if req.error is not None:
      raise req.error
    return {"candidates": [[{"raw": s.raw, "mean_logprob": s.mean_logprob,
                             "finished": s.finished, "selector": s.selector,
                             "sentiment": s.sentiment,
                             "p_reject": s.p_reject} for s in per_prompt]
                           for per_prompt in req.result]}

  def _score(self, body) -> dict:
    _check_fields(body, ("texts",), ("prompts",))
    texts, prompts = _paired(body, "texts", "prompts", self.max_texts,
                             optional=True)
    samples = [Sample(raw=t, prompt=p) for t, p in zip(texts, prompts)]
    with self._model_lock:
      scores = self.model.score(samples)
    return {"selector": [s[0] for s in scores],
            "sentiment": [s[1] for s in scores],
            "autoreviewer": [s[2] for s in scores]}

  def _sentiment(self, body) -> dict:
    _check_fields(body, ("texts",))
    texts = _strings(body, "texts", self.max_texts)
    with self._model_lock:
      return {"sentiment": self.model.sentiment(texts)}

  def _autoreview(self, body) -> dict:
    _check_fields(body, ("texts",), ("prompts",))
    texts, prompts = _paired(body, "texts", "prompts", self.max_texts,
                             optional=True)
    samples = [Sample(raw=t, prompt=p) for t, p in zip(texts, prompts)]
    with self._model_lock:
      return {"autoreviewer": self.model.autoreview(samples)}

  def _logprob(self, body) -> dict:
    _check_fields(body, ("prefixes", "continuations"))
    prefixes, continuations = _paired(body, "prefixes", "continuations",
                                      self.max_texts)
    with self._model_lock:
      return {"logprob": self.model.logprob(prefixes, continuations)}

  def _handler(self):
    server = self
    bearer = self._bearer
    routes = {"/generate": self._generate, "/score": self._score,
              "/sentiment": self._sentiment, "/logprob": self._logprob,
              "/autoreview": self._autoreview}

    class Handler(http.server.BaseHTTPRequestHandler):
      protocol_version = "HTTP/1.1"
      timeout = server.timeout_s  # the socket's, for writing replies

      def setup(self):
        super().setup()
        self.rfile.close()  # reads go through the deadline instead
        self._reader = _DeadlineReader(self.connection, server.timeout_s)
        self.rfile = io.BufferedReader(self._reader)

      def handle_one_request(self):
        try:
          self._reader.start()  # the wait for the next request
          if not self.rfile.peek(1):
            self.close_connection = True
            return
          self._reader.start()  # the request, from its first byte
          super().handle_one_request()
        except (TimeoutError, ConnectionError) as e:
          log.debug("model server: dropped %s: %s", self.client_address[0],
                    e)
          self.close_connection = True

      def log_message(self, fmt, *args):  # pylint: disable=arguments-differ
        # The request line and status only (never a header: the token).
        log.debug("model server: " + fmt, *args)

      def _reply(self, status: int, obj: dict, headers: dict = None) -> None:
        data = json.dumps(obj).encode()
        self.connection.settimeout(server.timeout_s)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
          self.send_header(k, v)
        if self.close_connection:
          self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

      def _refuse_unread(self, status: int, message: str,
                         headers: dict = None) -> None:
        """Answers before reading the body, then closes, first reading
        what the client still sends for a moment: closing on unread bytes
        resets the connection, which can lose the answer on its way."""
        self.close_connection = True
        self._reply(status, {"error": message}, headers)
        try:
          self.wfile.flush()
          self.connection.shutdown(socket.SHUT_WR)
          end, got = time.monotonic() + 1.0, 0
          while got < 1 << 16 and time.monotonic() < end:
            self.connection.settimeout(max(0.01, end - time.monotonic()))
            chunk = self.connection.recv(1 << 14)
            if not chunk:
              break
            got += len(chunk)
        except OSError:
          pass

      def _authorized(self) -> bool:
        if bearer is None:
          return True
        given = self.headers.get("Authorization", "").encode(
            "latin-1", "replace")
        return hmac.compare_digest(given, bearer)  # in constant time

      def _refuse_token(self) -> None:
        self._refuse_unread(
            401, "this model server wants its bearer token (Authorization: "
            "Bearer ...; the bot's config key model_token_file)",
            {"WWW-Authenticate": "Bearer"})

      def _body(self):
        """The JSON body; a _Refused (before reading it) for a missing,
        malformed or too large Content-Length."""
        if self.headers.get("Transfer-Encoding"):
          raise _Refused(400, "send the body with a Content-Length, not "
                         "Transfer-Encoding", unread=True)
        lengths = set(self.headers.get_all("Content-Length") or [])
        match = (re.fullmatch(r"\s*([0-9]+)\s*", lengths.pop())
                 if len(lengths) == 1 else None)
        if match is None:
          raise _Refused(400, "Content-Length must be given once, a whole "
                         "number of bytes", unread=True)
        digits = match.group(1).lstrip("0") or "0"
        if len(digits) > 18 or int(digits) > server.max_body_bytes:
          raise _Refused(413, f"a body of {digits[:20]} bytes; this server "
                         f"takes {server.max_body_bytes} at most",
                         unread=True)
        length = int(digits)
        data = self.rfile.read(length)  # TimeoutError: the deadline passed
        if len(data) < length:
          self.close_connection = True
          raise _Refused(400, f"the body ended after {len(data)} of "
                         f"{length} bytes")
        try:
          return json.loads(data or b"{}")
        except (ValueError, RecursionError):
          raise _Refused(400, "the body is not JSON") from None

      def do_GET(self):  # pylint: disable=invalid-name
        if self.headers.get("Content-Length", "0").strip() != "0" or (
            self.headers.get("Transfer-Encoding")):
          self.close_connection = True  # a body we do not read
        if self.path == "/healthz":  # no token: nothing here is secret
          self._reply(200, {"ok": True})
        elif not self._authorized():
          self._refuse_token()
        elif self.path == "/health":
          self._reply(200, {"ok": True, **server.model.describe(),
                            "limits": server.limits()})
        else:
          self._reply(404, {"error": f"no route {self.path[:100]}"})

      def do_POST(self):  # pylint: disable=invalid-name
        route = routes.get(self.path)
        if route is None:
          self._refuse_unread(404, f"no route {self.path[:100]}")
          return
        if not self._authorized():
          self._refuse_token()
          return
        try:
          body = self._body()
        except _Refused as e:
          if e.unread:
            self._refuse_unread(e.status, str(e))
          else:
            self._reply(e.status, {"error": str(e)})
          return
        except TimeoutError:
          self.close_connection = True
          self._reply(408, {"error": "the body did not arrive within "
                                     f"{server.timeout_s:g} s"})
          return
        try:
          status, obj = 200, route(body)
        except _Refused as e:
          status, obj = e.status, {"error": str(e)}
        except ValueError as e:  # e.g. a pair too long for the context
          status, obj = 400, {"error": f"bad request: {e}"}
        except Exception as e:  # pylint: disable=broad-except
          log.exception("model server: %s failed", self.path)
          status, obj = 500, {"error": f"{type(e).__name__}: {e}"}
        self._reply(status, obj)

    return Handler
