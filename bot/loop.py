"""One pass of the bot: find work, write candidates, choose, post, remember.

A pass (`run_pass`, or `Bot.run_pass` to keep the model loaded between
passes):
  1. advances the mood to now and reads the posting budget;
  2. finishes what a crashed pass left: jobs caught between "about to post"
     and "posted" are reconciled with the API (did the post land?) before
     anything is sent again; jobs with a saved plan are sent as planned;
  3. looks at the drafts the operator tagged (retry: write a new answer;
     accept: publish the draft as it is);
  4. records every new job before working on it: asks, notifications
     (replies, reblogs with comments, mentions), dashboard posts, and
     original posts to keep the queue topped up;
  5. for the jobs it takes on this pass (at most one per user): builds each
     prompt with bot.text_format, samples N candidates per prompt in one call
     (more rounds for the prompts whose candidates the mood screen rejects),
     scores them, screens and chooses (bot.choice), runs the word list (hits
     go to drafts), saves the plan, then posts and marks the job done once
     the API confirmed.
With `dry_run` no write request is sent: the plans go to the feed (JSONL,
HTML, mood plot) and the jobs are marked `dry_run`, which a later live pass
redoes. Every decision is traced (JSONL) with all candidates and scores.
"""

import dataclasses
import hashlib
import logging
import os
import random
import re
import signal
import time
import uuid
from typing import Callable, Optional

from bot import choice, mood as mood_lib, text_format
from bot.tumblr import npf
from bot.choice import Candidate
from bot.tumblr.client import (PostBudget, PostCapDeferred, RateLimited, TumblrClient,
                        TumblrError, post_limits)
from bot.feed import Feed
from bot.filters import WordFilter
from bot.state import Store, Trace
from bot.tumblr.thread import ANONYMOUS
from gpt2.errors import UserError

log = logging.getLogger("bot.loop")

# Job kinds, in the order a pass works on them.
KINDS = ("ask", "reply", "reblog", "dashboard", "original")
# Notification types that ask for an answer, and the job kind they make.
NOTIFICATION_KINDS = {"reply": "reply", "mention_in_reply": "reply",
                      "reblog_with_content": "reblog",
                      "mention_in_post": "reblog"}
# Statuses a live pass works on ("dry_run" jobs are redone for real).
LIVE_PENDING = ("seen", "chosen", "sending", "review", "dry_run")
DRY_PENDING = ("seen", "review")
MAX_ATTEMPTS = 5
# A plan's state, and how the API may spell it on the post.
_STATES = {"published": ("published",), "queue": ("queue", "queued"),
           "draft": ("draft",)}


@dataclasses.dataclass
class PassReport:
  """What one pass did (job keys), for the caller, logs and tests."""
  dry_run: bool
  new_jobs: list = dataclasses.field(default_factory=list)
  published: list = dataclasses.field(default_factory=list)
  queued: list = dataclasses.field(default_factory=list)
  drafted: list = dataclasses.field(default_factory=list)
  would_post: list = dataclasses.field(default_factory=list)  # dry run
  skipped: list = dataclasses.field(default_factory=list)
  deferred: list = dataclasses.field(default_factory=list)
  reconciled: list = dataclasses.field(default_factory=list)
  reviewed: list = dataclasses.field(default_factory=list)
  failed: list = dataclasses.field(default_factory=list)
  writes: int = 0
  mood: float = 0.0
  stopped: str = ""  # why the pass ended early, if it did

  def summary(self) -> str:
    parts = [f"{len(self.new_jobs)} new jobs"]
    for name in ("published", "queued", "drafted", "would_post", "skipped",
                 "deferred", "reconciled", "reviewed", "failed"):
      if getattr(self, name):
        parts.append(f"{len(getattr(self, name))} {name.replace('_', ' ')}")
    parts.append(f"{self.writes} write requests")
    parts.append(f"mood {self.mood:.2f}")
    text = ", ".join(parts)
    return text + (f" (stopped: {self.stopped})" if self.stopped else "")


def _plain(text: str) -> str:
  """Text for comparisons: tags stripped, whitespace collapsed, lowercased."""
  return " ".join(re.sub(r"<[^>]*>", " ", text or "").split()).lower()


def _content_text(content, layout=None) -> str:
  return _plain(npf.content_to_text(content or [], layout or []))


# Where a continuation runs on past the bot's own post: a turn line
# (`#3 alice asked:`, the pattern bot.text_format cuts continuations at) or
# a post's tags line (`Written ... | NAME's tags:`).
TURN_DELIMITERS = (text_format.TURN_DELIMITER,
                   re.compile(r"(?m)^(?:Written \d+ [AP]M [^\n|]*\| )?"
                              r"\S+'s tags:"))


def _post_id(post: dict) -> str:
  return str(post.get("id_string") or post.get("id"))


def _blog_name(post: dict) -> str:
  return (npf.blog_name(post.get("blog")) or str(post.get("blog_name") or "")
          ).strip()


def _blog_uuid(post: dict) -> str:
  blog = post.get("blog") if isinstance(post.get("blog"), dict) else {}
  return str(blog.get("uuid") or post.get("tumblelog_uuid") or
             post.get("blog_uuid") or "")


def _is_ask(post: dict) -> bool:
  return any(isinstance(l, dict) and l.get("type") == "ask"
             for l in post.get("layout") or []) or post.get("type") == "answer"


class Bot:
  """The bot's resources (client, model, state) and its passes."""

  def __init__(self, config, *, client: TumblrClient, generator, scorer,
               dry_run: bool = False, clock: Callable[[], float] = time.time):
    if not config.blog:
      raise UserError("config key `blog` is empty: name the bot's blog")
    self.config = config
    self.blog = config.blog
    self.client = client
    self.generator = generator
    self.scorer = scorer
    self.dry_run = dry_run
    self.clock = clock
    self.store = Store(config.state, clock=clock)
    self.trace = Trace(config.trace or config.state + ".trace.jsonl")
    self.words = WordFilter.from_file(config.word_list)
    self.mood_params = mood_lib.MoodParams.from_config(config.mood)
    self.feed = (Feed(config.feed_dir)
                 if (dry_run or config.feed_live) and config.feed_dir else None)
    self.budget = PostBudget(
        used_since=self.store.posts_since, last_post=self.store.last_post_time,
        cap=int(config.client.daily_cap),
        slowdown_below=int(config.client.slowdown_below), clock=clock)
    self.review_tags = {config.review.needs_tag, config.review.retry_tag,
                        config.review.accept_tag}

  def close(self):
    self.store.close()

  # ---- a pass ----------------------------------------------------------------

  def run_pass(self) -> PassReport:
    report = PassReport(dry_run=self.dry_run)
    self.store.lock()
    writes_before = self.client.writes
    try:
      self._pass(report)
    finally:
      self.store.unlock()
      report.writes = self.client.writes - writes_before
    log.info("pass done: %s", report.summary())
    return report

  def _pass(self, report: PassReport) -> None:
    now = self.clock()
    self.rng = random.Random(self._seed(now, "choice"))
    self.users_this_pass = set()
    self.posts_this_pass = 0
    self.now = now
    try:
      if not self.dry_run:
        self.budget.server = post_limits(self.client.user_limits())
    except TumblrError as e:
      _credentials_check(e, self.config)
      raise
    self.mood_state = self._advance_mood(now)
    report.mood = self.mood_value()
    try:
      if not self.dry_run:
        self._resume(report)
        self._review(report)
      self._discover(report)
      self._work(report)
    except RateLimited as e:
      report.stopped = str(e)
      log.warning("stopping the pass: %s", e)
    except TumblrError as e:
      _credentials_check(e, self.config)
      raise
    self._save_mood()
    if self.feed is not None:
      self._write_feed()

  def _seed(self, now: float, what: str) -> int:
    digest = hashlib.sha256(f"{self.config.seed}:{now}:{what}".encode())
    return int.from_bytes(digest.digest()[:4], "big")

  # ---- mood --------------------------------------------------------------------

  def _events(self, since: float) -> list:
    return [mood_lib.ForcingEvent(t=e["t"], u=e["u"], hours=e["hours"])
            for e in self.store.mood_events(since)]

  def _advance_mood(self, now: float) -> mood_lib.MoodState:
    last = self.store.last_mood()
    if last is None:
      state = mood_lib.MoodState(t=now)
    else:
      state = mood_lib.MoodState(t=last["t"], x1=last["x1"], x2=last["x2"])
    return mood_lib.advance(state, now, self._events(state.t),
                            self.mood_params)

  def mood_value(self) -> float:
    return mood_lib.mood_value(self.mood_state, self.mood_params)

  def _save_mood(self) -> None:
    s = self.mood_state
    self.store.save_mood(s.t, s.x1, s.x2, self.mood_value())

  def _mood_event(self, sentiment: float, source: str, job_key: str) -> None:
    e = mood_lib.sentiment_event(self.now, sentiment, source, self.mood_params)
    self.store.add_mood_event(e.t, e.u, e.hours, source, sentiment, job_key)

  # ---- 2. what a crash left ------------------------------------------------------

  def _resume(self, report: PassReport) -> None:
    for job in self.store.jobs(("sending",)):
      post_id = self._landed(job.plan)
      if post_id is not None:
        log.info("%s: the post had landed before the crash (%s)", job.key,
                 post_id)
        self._finish(job, job.plan, post_id, report, reconciled=True)
      else:
        log.info("%s: the post had not landed; sending again", job.key)
        self._send(job, job.plan, report)
    for job in self.store.jobs(("chosen",)):
      self._send(job, job.plan, report)

  # ---- 3. the operator's review tags ---------------------------------------------

  def _review(self, report: PassReport) -> None:
    drafted = {j.post_id: j for j in self.store.jobs(("drafted",))}
    if not drafted:
      return
    retry, accept = self.config.review.retry_tag, self.config.review.accept_tag
    for draft in self.client.drafts(self.blog):
      job = drafted.get(_post_id(draft))
      if job is None:
        continue
      tags = set(draft.get("tags") or [])
      if retry in tags:
        log.info("%s: the operator asked for a new answer", job.key)
        self.store.reopen_for_review(job.key, {
            "review": "retry", "rejected": job.plan.get("text", "")})
        report.reviewed.append(job.key)
      elif accept in tags:
        log.info("%s: the operator accepted the draft", job.key)
        self.store.reopen_for_review(job.key, {"review": "accept"})
        plan = self._accept_plan(draft, job.plan)
        self.store.save_plan(job.key, plan)
        report.reviewed.append(job.key)
        self._send(self.store.job(job.key), plan, report)

  def _accept_plan(self, draft: dict, drafted_plan: dict) -> dict:
    """Publishes a draft as the operator left it, without the review tags."""
    tags = [t for t in draft.get("tags") or [] if t not in self.review_tags]
    plan = {"action": "edit", "post_id": _post_id(draft),
            "content": draft.get("content") or [],
            "layout": draft.get("layout") or [], "tags": tags,
            "state": "published", "text": _content_text(
                draft.get("content"), draft.get("layout"))}
    if drafted_plan.get("parent"):
      plan["parent"] = drafted_plan["parent"]  # a reblog stays one
    return plan

  # ---- 4. new jobs ----------------------------------------------------------------

  def _record(self, report, key, kind, payload, user=None) -> None:
    if self.store.record_job(key, kind, payload, user=user):
      report.new_jobs.append(key)

  def _discover(self, report: PassReport) -> None:
    jobs = self.config.jobs
    if jobs.asks:
      for post in self.client.submissions(self.blog):
        if not _is_ask(post):
          continue
        asker = text_format.post_to_thread(post).turns[0].author
        user = None if asker in (ANONYMOUS, "", "unknown") else asker
        self._record(report, f"ask:{_post_id(post)}", "ask", {"post": post},
                     user)
    if jobs.notifications:
      for note in self.client.notifications(self.blog):
        self._discover_notification(report, note)
    if jobs.dashboard:
      self._discover_dashboard(report)
    if jobs.queue:
      self._discover_queue(report)

  def _discover_notification(self, report, note: dict) -> None:
    kind = NOTIFICATION_KINDS.get(note.get("type"))
    sender = str(note.get("from_tumblelog_name") or "")
    if kind is None or not sender or sender == self.blog:
      return
    if kind == "reply":
      # A reply is answered by reblogging the post it was left on, quoting it.
      blog = str(note.get("target_tumblelog_name") or self.blog)
      post_id = note.get("target_post_id")
      text = str(note.get("reply_text") or "")
      note_id = note.get("id") or f"{sender}:{post_id}:{note.get('timestamp')}"
      key = f"reply:{note_id}"
    else:
      blog, post_id, text = sender, note.get("post_id"), ""
      key = f"reblog:{post_id}"  # one reblog per post, however we heard of it
    if not post_id or self.store.job(key) is not None:
      return
    posts = self.client.posts(blog, id=str(post_id))
    if not posts:
      log.info("%s: post %s/%s is gone", key, blog, post_id)
      return
    self._record(report, key, kind, {"post": posts[0], "replier": sender,
                                     "reply_text": text}, sender)

  def _discover_dashboard(self, report) -> None:
    since = self.store.get_meta("dashboard_since_id")
    posts = self.client.dashboard(since_id=since)
    newest = since
    taken = 0
    for post in posts:
      pid = _post_id(post)
      if newest is None or int(pid) > int(newest):
        newest = pid
      if (_blog_name(post) == self.blog or not post.get("reblog_key")
          or self.store.job(f"reblog:{pid}") is not None):
        continue
      if taken >= int(self.config.jobs.dashboard_per_pass):
        break
      self._record(report, f"dash:{pid}", "dashboard", {"post": post},
                   _blog_name(post))
      taken += 1
    if newest is not None and newest != since:
      self.store.set_meta("dashboard_since_id", newest)

  def _discover_queue(self, report) -> None:
    if self.dry_run:
      # Nothing reaches the queue in a dry run; count today's dry posts.
      day_ago = self.now - 86400
      queued = sum(1 for j in self.store.jobs(("dry_run",), kind="original")
                   if j.updated >= day_ago)
    else:
      queued = len(self.client.queue(self.blog))
    pending = self.store.count_jobs(("seen", "chosen", "sending"),
                                    kind="original")
    missing = int(self.config.queue_target) - queued - pending
    for _ in range(max(0, min(missing, int(self.config.queue_per_pass)))):
      key = f"original:{uuid.uuid4().hex[:16]}"
      self._record(report, key, "original", {})

  # ---- 5. the work ------------------------------------------------------------------

  def _take(self, report) -> list:
    """The pending jobs this pass works on: by kind, one per user."""
    statuses = DRY_PENDING if self.dry_run else ("seen", "review", "dry_run")
    taken = []
    for kind in KINDS:
      for job in self.store.jobs(statuses, kind=kind):
        if len(taken) + self.posts_this_pass >= int(
            self.config.jobs.max_per_pass):
          report.deferred.append(job.key)
          continue
        if job.user and job.user in self.users_this_pass:
          report.deferred.append(job.key)  # one reply per user per pass
          continue
        if job.status == "review" and job.payload.get("review") != "retry":
          continue
        if job.user:
          self.users_this_pass.add(job.user)
        taken.append(job)
    return taken

  def _work(self, report: PassReport) -> None:
    jobs = self._take(report)
    if not jobs:
      return
    if not self.dry_run and self._capped([j.key for j in jobs], report):
      log.info("not posting now: %s", report.stopped)
      return
    contexts = [self._context(job) for job in jobs]
    # What users sent moves the mood before the bot answers.
    said = [(c, c["user_text"]) for c in contexts if c["from_user"]]
    for (c, _), p in zip(said, self.scorer.sentiment([t for _, t in said])):
      c["user_sentiment"] = p
      self._mood_event(p, "user", c["job"].key)
    candidates = self._candidates(contexts)
    for ctx in contexts:
      job = ctx["job"]
      plan = self._decide(ctx, candidates[job.key], report)
      if plan is None:
        continue
      if self.dry_run:
        self.store.save_plan(job.key, plan)
        self.store.mark_dry_run(job.key)
        report.would_post.append(job.key)
        continue
      self.store.save_plan(job.key, plan)
      self._crash_point("after_plan")
      if self._capped([job.key], report):
        continue
      self._send(self.store.job(job.key), plan, report)

  def _context(self, job) -> dict:
    """The prompt and what the user said, for one job."""
    bot, now, p = self.blog, self.now, job.payload
    post = p.get("post") or {}
    thread = text_format.post_to_thread(post) if post else None
    ctx = {"job": job, "kind": job.kind, "thread": thread, "from_user": True,
           "user": job.user}
    if job.kind == "ask":
      ctx["prompt"] = text_format.ask_prompt(thread, bot, now)
      ctx["user_text"] = thread.turns[-1].text
      ctx["asker"] = thread.turns[-1].author
    elif job.kind == "reply":
      ctx["prompt"] = text_format.reply_prompt(
          thread, p["replier"], p["reply_text"], bot, now)
      ctx["user_text"] = p["reply_text"]
      ctx["asker"] = p["replier"]
    elif job.kind in ("reblog", "dashboard"):
      ctx["prompt"] = text_format.reblog_prompt(thread, bot, now)
      ctx["user_text"] = thread.turns[-1].text if thread.turns else ""
      ctx["asker"] = _blog_name(post)
      ctx["from_user"] = job.kind == "reblog"
    else:
      ctx["prompt"] = text_format.text_post_prompt(bot, now)
      ctx["user_text"] = ""
      ctx["asker"] = ""
      ctx["from_user"] = False
    return ctx

  def _screen_args(self, ctx) -> dict:
    return dict(prompt_text=ctx["user_text"],
                allowed_names=[ctx["asker"], self.blog],
                min_chars=int(self.config.choice.min_chars),
                turn_delimiters=TURN_DELIMITERS,
                rejected=[ctx["job"].payload.get("rejected", "")])

  def _candidates(self, contexts) -> dict:
    """Samples and scores candidates; more rounds where the mood rejects."""
    s = self.config.sampling
    n = int(s.n)
    sentiment_range = mood_lib.sentiment_range(self.mood_value(),
                                               self.mood_params)
    found = {c["job"].key: [] for c in contexts}
    todo = list(contexts)
    for round_ in range(1 + int(s.more_rounds)):
      if not todo:
        break
      prompts = [c["prompt"] for c in todo]
      samples = self.generator.generate(
          prompts, n, seed=self._seed(self.now, f"sampling:{round_}"))
      flat = [x for per_prompt in samples for x in per_prompt]
      scores = self.scorer.score(flat)
      i = 0
      for ctx, per_prompt in zip(todo, samples):
        for sample in per_prompt:
          selector, sentiment = scores[i]
          i += 1
          found[ctx["job"].key].append(self._candidate(ctx, sample, selector,
                                                       sentiment))
      still = []
      for ctx in todo:
        cands = found[ctx["job"].key]
        kept = choice.apply_screens(cands, sentiment_range=sentiment_range,
                                    **self._screen_args(ctx))
        if (kept < int(s.min_survivors)
            and choice.mood_rejections(cands) > 0):
          still.append(ctx)
      todo = still
    return found

  def _candidate(self, ctx, sample, selector, sentiment) -> Candidate:
    generated = text_format.split_continuation(sample.raw)
    return Candidate(text=generated.body, selector=float(selector),
                     sentiment=float(sentiment),
                     mean_logprob=sample.mean_logprob,
                     tags=list(generated.tags), raw=sample.raw,
                     finished=bool(sample.finished))

  def _decide(self, ctx, cands, report) -> Optional[dict]:
    """Chooses, filters and plans one job; traces the decision."""
    job, kind = ctx["job"], ctx["kind"]
    epsilon = float(self.config.choice.epsilon.get(kind, 0.1))
    decision = choice.epsilon_greedy(cands, epsilon, self.rng)
    entry = {"t": self.now, "job": job.key, "kind": kind, "user": job.user,
             "prompt": ctx["prompt"], "prompt_shown": self._shown(ctx),
             "mood": self.mood_value(),
             "sentiment_range": mood_lib.sentiment_range(self.mood_value(),
                                                         self.mood_params),
             "user_sentiment": ctx.get("user_sentiment"),
             "candidates": [c.as_dict() for c in cands],
             "winner": decision.index, "reason": decision.reason,
             "dry_run": self.dry_run}
    plan = None
    if decision.index is None:
      entry["state"] = None
      self._trace(entry)
      self.store.skip(job.key, decision.reason)
      report.skipped.append(job.key)
      return None
    winner = cands[decision.index]
    if kind == "dashboard":
      ok, why = choice.reblog_gate(
          winner, min_selector=float(self.config.choice.reblog_min_selector),
          gate_prob=float(self.config.choice.reblog_gate_prob), rng=self.rng)
      entry["reason"] += f"; reblog gate: {why}"
      if not ok:
        entry["state"] = None
        self._trace(entry)
        self.store.skip(job.key, "reblog gate: " + why)
        report.skipped.append(job.key)
        return None
    tags = self._tags(winner.tags)
    hits = self.words.hits(winner.text + "\n" + " ".join(tags))
    state = "queue" if kind == "original" else "published"
    if hits:
      state = "draft"
      tags = tags + [self.config.review.needs_tag]
      entry["reason"] += f"; word list hit ({', '.join(hits)}): drafted"
    plan = self._plan(ctx, winner, tags, state)
    entry.update(state=state, tags=tags, filter_hits=hits)
    self._trace(entry)
    self._mood_event(winner.sentiment, "bot", job.key)
    return plan

  def _shown(self, ctx) -> str:
    """What a reader of the feed sees as the prompt."""
    if ctx["kind"] == "original":
      return "(original post)"
    who = ctx["asker"] or ANONYMOUS
    return f"{who}: {ctx['user_text']}"

  def _trace(self, entry: dict) -> None:
    self.trace.write(entry)
    if self.feed is not None:
      self.feed.append({k: v for k, v in entry.items() if k != "prompt"})

  def _tags(self, generated) -> list:
    tags = []
    for t in list(generated)[:int(self.config.max_generated_tags)] + list(
        self.config.tags):
      if t and t not in tags and t not in self.review_tags:
        tags.append(t)
    return tags

  def _plan(self, ctx, winner: Candidate, tags: list, state: str) -> dict:
    """The write request that posts `winner` for this job."""
    job, kind = ctx["job"], ctx["kind"]
    answer = npf.text_to_content(winner.text)
    post = job.payload.get("post") or {}
    plan = {"tags": tags, "state": state, "text": winner.text}
    if kind == "ask":
      ask_content = [b for i, b in enumerate(post.get("content") or [])
                     if i in self._ask_block_indexes(post)]
      layout = [l for l in post.get("layout") or []
                if isinstance(l, dict) and l.get("type") == "ask"]
      if not layout:
        layout = npf.ask_layout(len(ask_content), ctx["asker"])
      plan.update(action="answer", post_id=_post_id(post),
                  content=ask_content + answer, layout=layout)
      return plan
    if kind == "reply":
      quoted = npf.text_to_content(
          f"@{job.payload['replier']}: {job.payload['reply_text']}")
      for block in quoted:
        block["subtype"] = "indented"
      answer = quoted + answer
    if kind in ("reply", "reblog", "dashboard"):
      parent = {"id": _post_id(post), "uuid": _blog_uuid(post),
                "reblog_key": str(post.get("reblog_key") or ""),
                "blog": _blog_name(post)}
      plan.update(action="reblog", parent=parent, content=answer, layout=[])
    else:
      plan.update(action="create", content=answer, layout=[])
    if job.status == "review" and job.post_id and kind != "ask":
      # A retried draft: edit the draft in place rather than post anew.
      plan.update(action="edit", post_id=job.post_id)
    return plan

  @staticmethod
  def _ask_block_indexes(post: dict) -> set:
    for l in post.get("layout") or []:
      if isinstance(l, dict) and l.get("type") == "ask":
        return {int(i) for i in l.get("blocks") or []}
    return set(range(len(post.get("content") or [])))

  # ---- sending and reconciling -------------------------------------------------------

  def _capped(self, keys: list, report: PassReport) -> bool:
    """Whether the day's post cap stops posting now; if so the jobs `keys`
    are reported deferred, with the reason."""
    try:
      self.budget.check()
    except PostCapDeferred as e:
      report.deferred += keys
      report.stopped = str(e)
      return True
    return False

  def _send(self, job, plan: dict, report: PassReport) -> None:
    if job.attempts >= MAX_ATTEMPTS:
      self.store.skip(job.key, f"gave up after {job.attempts} attempts")
      report.failed.append(job.key)
      return
    if plan["state"] != "draft" and self._capped([job.key], report):
      return
    self.store.mark_sending(job.key)
    try:
      post_id = self._execute(plan)
    except TumblrError as e:
      if e.status == 401 or isinstance(e, RateLimited):
        raise
      if 8023 in e.subcodes:  # the server says the day's cap is reached
        self.budget.server = {"remaining": 0}
        report.deferred.append(job.key)
        report.stopped = str(e)
        return
      log.warning("%s: %s", job.key, e)
      report.failed.append(job.key)
      return
    self._crash_point("after_send")
    self._finish(job, plan, post_id, report)

  def _execute(self, plan: dict) -> str:
    c, blog = self.client, self.blog
    landed = lambda: self._landed(plan)
    args = dict(content=plan["content"], tags=plan["tags"],
                state=plan["state"], landed=_landed_response(landed))
    if plan["action"] in ("answer", "edit"):
      extra = None
      if plan.get("parent"):
        extra = {"parent_tumblelog_uuid": plan["parent"]["uuid"],
                 "parent_post_id": plan["parent"]["id"],
                 "reblog_key": plan["parent"]["reblog_key"]}
      return c.edit_post(blog, plan["post_id"], layout=plan["layout"],
                         extra=extra, **args)
    if plan["action"] == "reblog":
      p = plan["parent"]
      return c.reblog(blog, parent_uuid=p["uuid"], parent_id=p["id"],
                      reblog_key=p["reblog_key"], **args)
    return c.create_post(blog, layout=plan["layout"] or None, **args)

  def _landed(self, plan: dict) -> Optional[str]:
    """The id of the post `plan` made, if the API shows it; else None."""
    want = _content_text(plan["content"], plan["layout"])
    if plan["action"] in ("answer", "edit"):
      post = self.client.get_post(self.blog, plan["post_id"])
      if post is None:
        return None
      if (post.get("state", "published") in _STATES[plan["state"]]
          and _content_text(post.get("content"), post.get("layout")) == want):
        return _post_id(post)
      return None
    if plan["state"] == "queue":
      posts = self.client.queue(self.blog)
    elif plan["state"] == "draft":
      posts = self.client.drafts(self.blog)
    else:
      posts = self.client.posts(self.blog, limit=20)
    parent_id = (plan.get("parent") or {}).get("id")
    for post in posts:
      if _content_text(post.get("content"), post.get("layout")) != want:
        continue
      if parent_id and str(post.get("parent_post_id") or "") not in (
          "", parent_id):
        continue
      return _post_id(post)
    return None

  def _finish(self, job, plan, post_id, report, reconciled=False) -> None:
    state = plan["state"]
    self.store.finish(job.key, post_id,
                      status="drafted" if state == "draft" else "done",
                      counts_as_post=state != "draft", post_state=state)
    if state != "draft":
      self.budget.spent()
      self.posts_this_pass += 1
    {"draft": report.drafted, "queue": report.queued}.get(
        state, report.published).append(job.key)
    if reconciled:
      report.reconciled.append(job.key)

  def _crash_point(self, point: str) -> None:
    if self.config.crash_at == point:
      log.warning("crash point %s: killing the process", point)
      logging.shutdown()
      os.kill(os.getpid(), signal.SIGKILL)

  # ---- the feed ------------------------------------------------------------------

  def _write_feed(self) -> None:
    days = float(self.config.mood.plot_days)
    since = self.now - days * 86400
    history = self.store.mood_history(since - 86400)
    if history:
      start = history[0]
      state = mood_lib.MoodState(t=start["t"], x1=start["x1"], x2=start["x2"])
    else:
      state = self.mood_state
    events = self._events(state.t)
    if state.t > since and state.x1 == 0.0 and state.x2 == 0.0:
      # At rest before its first record: the plot starts `plot_days` back.
      state = mood_lib.MoodState(t=since, x1=0.0, x2=0.0)
    # Past `now` the curve is where the mood goes if nobody writes.
    ahead = float(self.config.mood.tau1_hours) * 3600
    times, moods = mood_lib.trajectory(state, self.now + ahead, events,
                                       self.mood_params)
    ranges = [mood_lib.sentiment_range(m, self.mood_params) for m in moods]
    dots = [(e["t"], e["sentiment"], e["source"])
            for e in self.store.mood_events(since)]
    self.feed.write_mood_plot(times, moods, ranges, dots, now=self.now)
    self.feed.write_html(f"{self.blog}: the bot's feed"
                         + (" (dry run)" if self.dry_run else ""))


def _landed_response(landed: Callable[[], Optional[str]]):
  """Adapts `landed()` (a post id) to the client's retry check (a response)."""
  def check():
    post_id = landed()
    return None if post_id is None else {"id": post_id}
  return check


def _credentials_check(e: TumblrError, config) -> None:
  """A 401 is the user's keys: one clear line instead of a traceback."""
  if e.status == 401:
    where = (f"credentials file {config.credentials}" if config.credentials
             else "the TUMBLR_* environment variables")
    raise UserError(f"Tumblr rejected the credentials from {where} (401 "
                    f"Unauthorized): check the consumer key and OAuth token")


# ---- building a bot from a config ------------------------------------------------------


def make_client(config, check: bool = True) -> TumblrClient:
  """The Tumblr client for `config`; with `check`, one authenticated call
  first, so wrong keys fail in one line before a model is loaded."""
  from bot.tumblr.credentials import load_credentials  # pylint: disable=import-outside-toplevel
  if not config.blog:
    raise UserError("config key `blog` is empty: name the bot's blog")
  creds = load_credentials(config.credentials or None)
  c = config.client
  client = TumblrClient(creds, host=config.tumblr_host,
                        timeout_s=float(c.timeout_s),
                        max_retries=int(c.max_retries),
                        backoff_s=float(c.backoff_s),
                        max_wait_s=float(c.max_wait_s),
                        user_agent=config.user_agent)
  if check:
    try:
      client.user_info()
    except TumblrError as e:
      _credentials_check(e, config)
      if e.status == 0:
        raise UserError(f"cannot reach the Tumblr API at {config.tumblr_host}"
                        f" (config key tumblr_host): {e}") from None
      raise
  return client


def make_model(config, model_server: str = ""):
  """The generator and scorer: over HTTP if a server is named, else here."""
  from bot import ml  # pylint: disable=import-outside-toplevel
  url = model_server or config.model_server
  if url:
    remote = ml.RemoteModel(url)
    remote.describe()  # fails now, with one line, if nobody is there
    return remote
  return ml.LocalModel.load(config.model, config.heads,
                            ml.SamplingSettings.from_config(config.sampling),
                            tuple(config.sentiment_scale))


def run_pass(config, *, dry_run: bool = False, model=None, client=None,
             model_server: str = "",
             clock: Callable[[], float] = time.time) -> PassReport:
  """One pass of the bot described by `config` (configs/bot.py).

  `model` (a generator that is also a scorer, e.g. bot.ml.LocalModel) and
  `client` may be given to reuse them across passes; otherwise they are
  built from the config (`model_server` overrides config.model_server).
  """
  client = client or make_client(config)
  model = model or make_model(config, model_server)
  bot = Bot(config, client=client, generator=model, scorer=model,
            dry_run=dry_run, clock=clock)
  try:
    return bot.run_pass()
  finally:
    bot.close()
