"""What the console does, apart from its web page (bot.console.app).

- Write: a prompt from a form (an ask from NAME, a reply to a pasted post,
  an original post with tags) or raw text in the text format; N candidates
  sampled in one streaming sampler call (`write` yields their texts as they
  grow), then scored by the heads and judged as the bot would: the filters'
  verdict, the mood's, the word list, and the one the bot would pick. Each
  candidate gets its job key when it is written (from the prompt and its
  text), and the page keeps the Written per browser session. A candidate
  can be sent to the blog (`send`), as a draft or published, as a job of
  the state store (kind "console") under the state's lock and within the
  bot's daily cap, so it is posted exactly once: a second send of it says
  it was already sent.
- Review: the jobs the bot parked for a person (`parked`), with all their
  candidates; the operator's decision (`decide`) is stored and carried out
  by the next pass of the bot, or at once (`post_now`): a review-only pass
  under the state's lock, retried in the background while a bot pass holds
  it.
- History: what the bot posted and would have (`history`), the mood and
  what moved it (`mood`), and the generator's training curves (`curves`).
Every call opens its own connection to the state (the web server answers
from several threads).
"""

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import random
import tempfile
import threading
import time
from typing import Iterator, List, Optional

from bot import choice, mood as mood_lib, text_format, writing
from bot.choice import Candidate
from bot.filters import WordFilter
from bot.jobs.base import slug_for
from bot.lists import Lists
from bot.mood_log import MoodLog
from bot.posting import Poster
from bot.records import CREATE, POSTING, Plan
from bot.state import Store, Trace
from bot.tumblr import npf
from bot.tumblr.client import PostBudget, TumblrError, post_limits
from bot.tumblr.thread import ASKED, POSTED, Thread, Turn
from gpt2.errors import UserError
from gpt2.sampling_params import BOT_MAX_NEW_TOKENS, SamplingParams

_BOT_RULES = SamplingParams.bot_defaults()

log = logging.getLogger("bot.console")

FORMS = ("ask", "reply", "original", "raw")
MAX_CANDIDATES = 8


@dataclasses.dataclass
class WriteSettings:
  """The Write tab's sampling controls (the bot's rules by default, from
  gpt2.sampling_params)."""
  temperature: float = _BOT_RULES.temperature
  top_p: float = _BOT_RULES.top_p
  top_k: int = _BOT_RULES.top_k
  typical_p: float = _BOT_RULES.typical_p
  breakruns_tau: float = _BOT_RULES.breakruns_tau
  mirostat_tau: float = _BOT_RULES.mirostat_tau
  n: int = 4
  max_new_tokens: int = BOT_MAX_NEW_TOKENS
  seed: int = 0

  def rules(self) -> SamplingParams:
    return dataclasses.replace(
        _BOT_RULES, temperature=float(self.temperature),
        top_p=float(self.top_p), top_k=int(self.top_k),
        typical_p=float(self.typical_p),
        breakruns_tau=float(self.breakruns_tau),
        mirostat_tau=float(self.mirostat_tau))


@dataclasses.dataclass
class Written:
  """What a Write produced: the candidates, judged as the bot would."""
  prompt: str
  user_text: str
  author: str
  candidates: List[Candidate]
  hits: List[list]  # word-list hits per candidate
  pick: Optional[int]
  reason: str
  mood: float
  sentiment_range: tuple
  # The job key of each candidate (`job_key`): what makes a send once only.
  keys: List[str] = dataclasses.field(default_factory=list)


def job_key(prompt: str, user_text: str, author: str, candidate) -> str:
  """The state store's key for posting `candidate` as the answer to a
  prompt: the same text for the same prompt is the same post, however
  often, from however many tabs, it is sent."""
  what = json.dumps([prompt, user_text, author, candidate.raw or
                     candidate.text, candidate.tags])
  return "console:" + hashlib.sha256(what.encode()).hexdigest()[:16]


class Console:
  """The console's state: the bot's config, its model and the Tumblr
  client (None: nothing can be sent)."""

  def __init__(self, config, model, client=None, *, dry_run: bool = False,
               post_now: bool = False, workdir: str = "",
               clock=None):
    self.config = config
    self.model = model
    self.client = client
    self.dry_run = dry_run
    self.post_now = post_now
    self.workdir = workdir
    from bot import loop  # pylint: disable=import-outside-toplevel
    self.clock = clock or loop.clock_of(config)
    self.words = WordFilter.from_file(config.word_list)
    self.lists = Lists.from_config(config.lists)
    self.mood_params = mood_lib.MoodParams.from_config(config.mood)
    self._model_lock = threading.Lock()
    self._carrying_out = threading.Lock()
    self.files = tempfile.mkdtemp(prefix="console-")

  def max_new_tokens(self) -> int:
    """The bot's candidate length for this model (the Write tab's start)."""
    return int(self.model.settings.max_new_tokens)

  @contextlib.contextmanager
  def store(self) -> Iterator[Store]:
    store = Store(self.config.state, clock=self.clock)
    try:
      yield store
    finally:
      store.close()

  # ---- Write -----------------------------------------------------------------

  def prompt(self, form: str, name: str = "", text: str = "",
             post: str = "", tags: str = "", raw: str = "") -> tuple:
    """(prompt, what the user said, whom the bot answers) for a form."""
    blog, now = self.config.blog, self.clock()
    name = name.strip() or "anonymous"
    if form == "raw":
      if not raw.strip():
        raise UserError("raw: write a prompt in the text format")
      return raw, "", ""
    if form == "ask":
      thread = Thread((Turn(name, ASKED, _canonical(text)),), blog)
      return text_format.ask_prompt(thread, blog, now), text, name
    if form == "reply":
      thread = Thread((Turn(name, POSTED, _canonical(post)),), name)
      return (text_format.reply_prompt(thread, name, text, blog, now), text,
              name)
    if form == "original":
      listed = [t.strip().lstrip("#") for t in tags.split(",") if t.strip()]
      prompt = text_format.text_post_prompt(blog, now)
      if listed:
        prompt += " " + ", ".join(f"#{t}" for t in listed)
      return prompt, "", ""
    raise UserError(f"unknown form {form!r} (one of {', '.join(FORMS)})")

  def write(self, prompt: str, user_text: str, author: str,
            settings: WriteSettings, every: int = 2
            ) -> Iterator[tuple]:
    """Yields (texts so far, None) every `every` tokens of a row, then
    (final texts, Written) once the candidates are scored and judged. The
    texts are what the generator typed (tags line and post); the posts are
    read from them as the bot reads them (Written.candidates)."""
    n = max(1, min(int(settings.n), MAX_CANDIDATES))
    texts = [""] * n
    grown = [0] * n
    rules = settings.rules().validate(self.model.model.config.vocab_size)
    with self._model_lock:
      stream = self.model.stream(prompt, n, seed=int(settings.seed),
                                 rules=rules,
                                 max_new_tokens=int(settings.max_new_tokens))
      while True:
        try:
          piece = next(stream)
        except StopIteration as done:
          samples = done.value
          break
        texts[piece.row] += piece.text
        grown[piece.row] += 1
        if grown[piece.row] % every == 0:
          yield list(texts), None
      scores = self.model.score(samples)
    written = self._judge(prompt, user_text, author, samples, scores)
    yield [c.raw for c in written.candidates], written

  def _judge(self, prompt, user_text, author, samples, scores) -> Written:
    with self.store() as store:
      mood = MoodLog(store, self.mood_params, dry_run=True)
      mood.advance(self.clock())
      value, allowed = mood.value, mood.sentiment_range
    cands = [writing.candidate(s, *scores_of)
             for s, scores_of in zip(samples, scores)]
    choice.apply_screens(
        cands, sentiment_range=allowed, **writing.screen_kwargs(
            user_text, author, self.config.blog,
            int(self.config.choice.min_chars), self.lists))
    hits = [self.words.hits(c.text + "\n" + " ".join(c.tags)) for c in cands]
    decision = choice.epsilon_greedy(cands, 0.0, random.Random(0))
    return Written(prompt, user_text, author, cands, hits, decision.index,
                   decision.reason, value, allowed,
                   [job_key(prompt, user_text, author, c) for c in cands])

  def send(self, written: Optional[Written], index: int, state: str,
           lock_wait_s: float = 5.0) -> str:
    """Posts candidate `index` of `written` (the Write a browser session
    shows) as `state` ("draft" or "published"), exactly once; returns a line
    saying what happened.

    The candidate's job key was minted with it: a second send of it (a
    double click, another tab showing the same candidate) posts nothing and
    says "already sent". The send runs under the state's lock, so never
    beside a pass of the bot (it waits `lock_wait_s` for one to end, then
    says so), and a published post must fit in the bot's daily cap.
    """
    if self.dry_run:
      return "dry run: nothing is sent"
    if self.client is None:
      return "no Tumblr client: nothing can be sent"
    if written is None or not 0 <= index < len(written.keys):
      return "write candidates first"
    if state not in ("draft", "published"):
      return f"unknown state {state!r}"
    key = written.keys[index]
    already = lambda post_id, posted_as: (
        f"already sent: candidate {index} is post {post_id} ({posted_as}); "
        "nothing sent again")
    with self.store() as store:
      if not _lock(store, lock_wait_s):
        return ("not sent: a pass of the bot holds the state; send again "
                "when it is done")
      job = store.job(key)
      if job is not None and job.status in ("done", "drafted"):
        return already(job.post_id, job.plan.state)
      if job is not None and job.status not in ("seen", "chosen", "sending"):
        return f"not sent: its job {key} is {job.status}"
      # A job left by a send that failed part way keeps the plan it made.
      plan = job.plan if job is not None and job.plan else self._plan(
          written, written.candidates[index], key, state)
      poster = Poster(self.client, store, self.config.blog)
      try:
        if job is not None and job.status == "sending":
          # Its request went out before it failed: it may have landed.
          post_id = poster.landed(plan, key)
          if post_id is not None:
            store.finish(key, post_id, counts_as_post=plan.state in POSTING,
                         post_state=plan.state)
            return already(post_id, plan.state)
        if plan.state in POSTING and self._cap_left(store) <= 0:
          return (f"not sent: the daily cap of {self.config.client.daily_cap}"
                  f" posts is reached (a draft can still be sent)")
        if job is None:
          store.record_job(key, "console", {"prompt": written.prompt})
          store.record_written(key, self._entry(written, index, key,
                                                plan.state))
        if job is None or job.status == "seen":
          store.save_plan(key, plan)
        store.mark_sending(key)
        post_id = poster.send(plan, key)
      except TumblrError as e:
        log.warning("%s: %s", key, e)
        return (f"sending failed: {e}; send again to retry (it first checks "
                "whether the post landed)")
      store.finish(key, post_id, counts_as_post=plan.state in POSTING,
                   post_state=plan.state)
    return f"sent candidate {index} as {plan.state} (post {post_id})"

  def _plan(self, written: Written, cand: Candidate, key: str,
            state: str) -> Plan:
    """The post for `cand`: after the ask or post it answers, quoted."""
    content = npf.text_to_content(cand.text)
    if written.user_text:
      quoted = npf.text_to_content(f"{written.author}: {written.user_text}")
      for block in quoted:
        block["subtype"] = "indented"
      content = quoted + content
    return Plan(action=CREATE, state=state, text=cand.text,
                tags=[t for t in cand.tags if self.lists.tag_allowed(t)],
                content=content, layout=[], slug=slug_for(key, cand.text))

  def _entry(self, written: Written, index: int, key: str,
             state: str) -> dict:
    """The decision as the History shows it (the bot's `written` entry)."""
    return {
        "t": self.clock(), "job": key, "kind": "console",
        "user": written.author, "prompt": written.prompt,
        "prompt_shown": _shown(written),
        "candidates": [c.as_dict() for c in written.candidates],
        "winner": index, "reason": "the operator's choice",
        "state": state, "mood": written.mood, "dry_run": False,
        **(self.model.provenance() if hasattr(self.model, "provenance")
           else {})}

  def _cap_left(self, store: Store) -> int:
    """Posts left today under the bot's daily cap: its own ledger and what
    the server's /user/limits says, on Tumblr's day, as a pass counts."""
    c = self.config.client
    budget = PostBudget(
        used_since=store.posts_since, last_post=store.last_post_time,
        cap=int(c.daily_cap), slowdown_below=int(c.slowdown_below),
        answers_only_below=int(c.answers_only_below), clock=self.clock,
        server=post_limits(self.client.user_limits()),
        tumblr_offset=lambda: self.client.budget.clock_offset)
    return budget.remaining()

  # ---- Review ------------------------------------------------------------------

  def parked(self) -> list:
    """[(job, its last written entry)] the bot parked for a person."""
    with self.store() as store:
      return [(j, store.last_written(j.key))
              for j in store.jobs(("drafted",))]

  def decide(self, key: str, action: str, text: str = "") -> str:
    """Stores the operator's decision on a parked job; carried out by the
    next pass, or at once with `post_now`. Returns a line for the page."""
    with self.store() as store:
      job = store.job(key)
      if job is None or job.status != "drafted":
        return f"{key} is not waiting for review"
      limit = int(self.config.review.max_retries)
      if action == "retry" and job.retries >= limit:
        return (f"{key}: no retries left ({job.retries} of {limit}); "
                f"accept or reject it")
      store.add_decision(key, action, text)
    if self.post_now and not self.dry_run:
      threading.Thread(target=self.carry_out, daemon=True).start()
      return f"{key}: {action} — carrying it out now"
    return f"{key}: {action} — the next pass of the bot carries it out"

  def carry_out(self, wait_s: float = 600.0) -> bool:
    """Runs a review-only pass (decisions, then new candidates for retried
    jobs) as soon as no bot pass holds the state; False if it never got
    the lock within `wait_s`."""
    from bot import loop  # pylint: disable=import-outside-toplevel
    deadline = time.monotonic() + wait_s
    with self._carrying_out:
      while True:
        bot = loop.Bot(self.config, client=self.client, generator=self,
                       scorer=self, clock=self.clock)
        try:
          report = bot.run_pass(review_only=True)
          log.info("decisions carried out: %s", report.summary())
          return True
        except UserError as e:
          if "another bot is running" not in str(e):
            raise
        finally:
          bot.close()
        if time.monotonic() > deadline:
          return False
        time.sleep(1.0)

  def generate(self, prompts, n, *, seed):
    """The generator interface for the bot's pass, sharing the model lock
    with the Write tab."""
    with self._model_lock:
      return self.model.generate(prompts, n, seed=seed)

  def logprob(self, prefixes, continuations):
    with self._model_lock:
      return self.model.logprob(prefixes, continuations)

  def score(self, samples):
    with self._model_lock:
      return self.model.score(samples)

  def sentiment(self, texts):
    with self._model_lock:
      return self.model.sentiment(texts)

  def autoreview(self, samples):
    with self._model_lock:
      return self.model.autoreview(samples)

  # ---- History -----------------------------------------------------------------

  def history(self, search: str = "", limit: int = 50) -> list:
    with self.store() as store:
      return store.history(search.strip(), limit)

  def mood(self) -> tuple:
    """(a PNG of the mood of the last days, the user events that moved it
    most up, and most down)."""
    days = float(self.config.mood.plot_days)
    with self.store() as store:
      mood = MoodLog(store, self.mood_params, dry_run=True)
      mood.advance(self.clock())
      path = mood.plot(os.path.join(self.files, "mood.png"), days,
                       float(self.config.mood.tau1_hours))
      up, down = mood.movers(self.clock() - days * 86400,
                             int(self.config.commands.mood_interactions))
      said = lambda e: (store.last_written(e["job_key"]) or {}).get(
          "prompt_shown") or e["job_key"] or "?"
      return path, [dict(e, said=said(e)) for e in up], [
          dict(e, said=said(e)) for e in down]

  def curves(self) -> Optional[str]:
    """The generator's training curves (a PNG), if a workdir was given."""
    if not self.workdir:
      return None
    from gpt2 import train  # pylint: disable=import-outside-toplevel
    path = os.path.join(self.files, "loss.png")
    train.plot_metrics(self.workdir, path)
    return path

  def trace(self) -> Trace:
    return Trace(self.config.trace or self.config.state + ".trace.jsonl")


def _lock(store: Store, wait_s: float) -> bool:
  """Takes the state's lock (the one a bot pass holds), waiting up to
  `wait_s` seconds for it; False if it stayed taken."""
  deadline = time.monotonic() + wait_s
  while True:
    try:
      store.lock()
      return True
    except UserError:
      if time.monotonic() >= deadline:
        return False
      time.sleep(0.2)


def _canonical(text: str) -> str:
  """Plain text as the thread model keeps it (the HTML subset)."""
  from bot.tumblr import html_subset  # pylint: disable=import-outside-toplevel
  return html_subset.blocks_to_text(html_subset.plain_to_blocks(text))


def _shown(written: Written) -> str:
  if written.user_text:
    return f"{written.author}: {written.user_text}"
  return "(original post)" if written.prompt.rstrip().endswith(
      "tags:") else "(a prompt of the operator's)"
