"""One pass of the bot: find work, write candidates, choose, post, remember.

A pass (`run_pass`, or `Bot.run_pass` to keep the model loaded between
passes):
  1. advances the mood to now and reads the posting budget;
  2. resumes what a crashed pass left: jobs caught between "about to post"
     and "posted" are reconciled with the API (did the post land?, see
     bot.posting) before anything is sent again; planned jobs are sent;
  3. carries out the operator's tags on drafts (bot.review);
  4. records every new job before working on it (each kind finds its own
     and applies its rules, bot.jobs): asks, replies and reblogs with
     comments, dashboard posts, original posts to keep the queue topped up;
     the optional ones (dashboard, queue) only while the hour's API budget
     allows; jobs the rules rule out are skipped with the reason, spam asks
     deleted;
  5. takes the jobs of this pass (by kind, in each kind's order, at most
     one per user, limited users at most once per `asks.limited_hours`,
     fewer and only answers as the day's posts run low), carries out what
     needs no model (commands), builds each prompt (the job's kind), lets
     the kind veto a job before writing (the dashboard's author gate),
     samples N candidates per prompt in one call for all of them
     (bot.writing), scores, screens and chooses (bot.choice), sends to
     review what must wait for a person (word-list hits, screened users,
     long inputs), lets the autoreviewer, when there is one, publish or
     drop a word-list hit it is sure about and hold a post it doubts
     (selector/autoreview.py), saves the plan, then posts and marks the
     job done once the API confirmed.
With `dry_run` no write request is sent: the plans go to the feed (JSONL,
HTML, mood plot) and the jobs are marked `dry_run`, which a later live pass
redoes. Every decision is traced (JSONL) with all candidates and scores.
An unexpected error in one job's handling is that job's, not the pass's:
it is logged with its traceback, counted on the job and traced, the other
jobs go on, and the job is tried again by the next pass until it has failed
`jobs.max_errors` times; then it is parked (a status no pass takes), with
the error as its note. What is not one job's stops the pass as before
(`_NOT_THE_JOBS`: a user's mistake, Tumblr's errors, the state file, the
machine), and so does anything in the model's sampling of all the jobs.
`run_passes` is the daemon: passes every `interval_s`, and an error in one
pass is logged and the next pass follows.
"""

import contextlib
import hashlib
import logging
import math
import random
import sqlite3
import time
from typing import Callable, Iterator, Optional

from bot import choice, images, mood as mood_lib, review, writing
from bot.feed import Feed
from bot.filters import WordFilter
from bot.jobs import DISCOVERERS, KINDS
from bot.jobs.base import Context, Desk, check_others_hits
from bot.lists import Lists
from bot.mood_log import MoodLog
from bot.posting import Poster, fit_plan
from bot.records import FOLLOW, POSTING, UNFOLLOW, Job, PassReport
from bot.state import Store, Trace
from bot.tumblr.client import (PostBudget, PostCapDeferred, PostLimitReached,
                               RateLimited, TumblrClient, TumblrError,
                               post_limits)
from bot.tumblr.errors import UserError as TumblrUserError
from bot.tumblr.npf_limits import DoesNotFit
from gpt2.errors import UserError
from selector import autoreview

log = logging.getLogger("bot.loop")

# Statuses a pass takes work from ("dry_run" jobs are redone for real).
LIVE_TAKEN = ("seen", "review", "dry_run")
DRY_TAKEN = ("seen", "review")
MAX_ATTEMPTS = 5
# Errors that are not one job's: they stop the pass (and a --once run), as
# they did before a job could fail alone. A user's mistake (the state's lock
# included); Tumblr's answers (refused credentials, the rate limit, an
# outage: not this job's, and a job's own write errors are handled in
# `_send`); the state file; the machine and the network (OSError, which
# requests' errors are: e.g. the model server); memory. KeyboardInterrupt
# and SystemExit are not Exceptions: never caught.
_NOT_THE_JOBS = (UserError, TumblrUserError, TumblrError, sqlite3.Error,
                 OSError, MemoryError)


def clock_of(config) -> Callable[[], float]:
  """The bot's clock: `config.now` where set (a replayed pass), else the
  time."""
  now = float(config.get("now", 0.0) or 0.0)
  return (lambda: now) if now else time.time


class Bot:
  """The bot's resources (client, model, state) and its passes."""

  def __init__(self, config, *, client: TumblrClient, generator, scorer,
               dry_run: bool = False,
               clock: Optional[Callable[[], float]] = None):
    if not config.blog:
      raise UserError("config key `blog` is empty: name the bot's blog")
    self.config = config
    self.blog = config.blog
    self.client = client
    self.generator = generator
    self.scorer = scorer
    self.dry_run = dry_run
    self.clock = clock = clock or clock_of(config)
    self.store = Store(config.state, clock=clock)
    self.trace = Trace(config.trace or config.state + ".trace.jsonl")
    self.words = WordFilter.from_file(config.word_list)
    check_others_hits(config)
    self.lists = Lists.from_config(config.lists)
    self.images = images.reader_from_config(config)
    self.mood = MoodLog(self.store, mood_lib.MoodParams.from_config(
        config.mood), dry_run=dry_run)
    self.poster = Poster(client, self.store, self.blog)
    self.feed = (Feed(config.feed_dir)
                 if (dry_run or config.feed_live) and config.feed_dir else None)
    self.budget = PostBudget(
        used_since=self.store.posts_since, last_post=self.store.last_post_time,
        cap=int(config.client.daily_cap),
        slowdown_below=int(config.client.slowdown_below),
        answers_only_below=int(config.client.answers_only_below),
        clock=clock, tumblr_offset=lambda: client.budget.clock_offset)
    self.review_tags = review.review_tags(config)
    self.cutoffs = autoreview.check_cutoffs(config.autoreview)
    self.max_errors = int(config.jobs.max_errors)
    if self.max_errors < 1:
      raise UserError(f"config key jobs.max_errors is {self.max_errors}: it "
                      f"must be at least 1 (the tries a job gets)")
    # Which generator and heads write and choose this bot's posts: in every
    # traced decision (and so the feed and the console's History).
    provenance = getattr(generator, "provenance", None)
    self.provenance = provenance() if provenance else {}

  def close(self):
    self.store.close()
    if self.images is not None:
      self.images.close()

  # ---- a pass ----------------------------------------------------------------

  def run_pass(self, review_only: bool = False) -> PassReport:
    """One pass. With `review_only` (the console, carrying out an
    operator's decisions at once) it finds no new work: it resumes, carries
    out the decisions and writes new candidates for the retried jobs."""
    report = PassReport(dry_run=self.dry_run)
    self.store.lock()
    writes_before = self.client.writes
    try:
      self._pass(report, review_only)
    finally:
      self.store.unlock()
      report.writes = self.client.writes - writes_before
    log.info("pass done: %s", report.summary())
    return report

  def _pass(self, report: PassReport, review_only: bool = False) -> None:
    now = self.clock()
    self.desk = Desk(blog=self.blog, config=self.config, client=self.client,
                     store=self.store, report=report, now=now,
                     dry_run=self.dry_run,
                     rng=random.Random(self._seed(now, "choice")),
                     lists=self.lists, words=self.words, trace=self._trace,
                     model=self.generator, mood=self.mood)
    self.posts_this_pass = 0
    self.mood.advance(now)
    report.mood = self.mood.value
    try:
      if not self.dry_run:
        self.budget.server = post_limits(self.client.user_limits())
        self._resume(report)
        for job in review.carry_out(self.desk):
          with self._own_errors(job, report):
            self._send(job, report)
      for name, discover, calls in () if review_only else DISCOVERERS:
        short = self._budget_short(calls)
        if short:
          self._trace({"t": now, "stage": name, "skipped": short,
                       "dry_run": self.dry_run})
          log.info("skipping the %s: %s", name, short)
          continue
        discover(self.desk)
      for key in self.desk.planned:  # spam asks to delete
        job = self.store.job(key)
        with self._own_errors(job, report):
          self._carry_out(job, report)
      self._work(report, ("review",) if review_only else None)
    except RateLimited as e:
      report.stopped = str(e)
      log.warning("stopping the pass: %s", e)
    except TumblrError as e:
      _credentials_check(e, self.config)
      raise
    self.mood.save()
    if self.feed is not None:
      self.mood.plot(self.feed.mood_path, float(self.config.mood.plot_days),
                     float(self.config.mood.tau1_hours))
      self.feed.write_html(f"{self.blog}: the bot's feed"
                           + (" (dry run)" if self.dry_run else ""))

  def _budget_short(self, calls_key: Optional[str]) -> str:
    """Why an optional stage is skipped for the API budget ("" if not)."""
    if calls_key is None:
      return ""
    left = self.client.budget.left(self.clock())
    b = self.config.budget
    need = int(b[calls_key]) + int(b.reserve_calls)
    if left is not None and left < need:
      return (f"{left} API calls left this hour (it needs {b[calls_key]}, "
              f"and {b.reserve_calls} stay for answers)")
    return ""

  def _seed(self, now: float, what: str) -> int:
    digest = hashlib.sha256(f"{self.config.seed}:{now}:{what}".encode())
    return int.from_bytes(digest.digest()[:4], "big")

  # ---- what a crash left ----------------------------------------------------------

  def _resume(self, report: PassReport) -> None:
    for job in self.store.jobs(("sending",)):
      with self._own_errors(job, report):
        post_id = self.poster.landed(job.plan, job.key)
        if post_id is not None:
          log.info("%s: the post had landed before the crash (%s)", job.key,
                   post_id)
          self._finish(job, post_id, report, reconciled=True)
        else:
          log.info("%s: the post had not landed; sending again", job.key)
          self._send(job, report)
    for job in self.store.jobs(("chosen",)):
      with self._own_errors(job, report):
        self._send(job, report)

  # ---- a job that fails alone -------------------------------------------------

  @contextlib.contextmanager
  def _own_errors(self, job: Job, report: PassReport) -> Iterator[None]:
    """Runs a step of one job's handling: an unexpected error in it is the
    job's (`_job_failed`) and the pass goes on after the `with`; an error in
    _NOT_THE_JOBS stops the pass."""
    try:
      yield
    except _NOT_THE_JOBS:
      raise
    except Exception as e:  # pylint: disable=broad-except
      self._job_failed(job, e, report)

  def _job_failed(self, job: Job, error: Exception,
                  report: PassReport) -> None:
    """Logs the error with its traceback, counts it on the job (parked at
    `jobs.max_errors`), and traces it (the feed shows it)."""
    summary = _one_line(error)
    log.warning("%s: its handling failed: %s", job.key, summary,
                exc_info=error)
    status, errors = self.store.job_error(job.key, summary, self.max_errors)
    if status is None:  # it had no work left: nothing to try again
      return
    parked = status == "parked"
    (report.parked if parked else report.failed).append(job.key)
    if parked:
      log.warning("%s: parked after %d errors", job.key, errors)
    self._trace({"t": self.desk.now, "job": job.key, "kind": job.kind,
                 "error": summary, "errors": errors,
                 "max_errors": self.max_errors, "parked": parked,
                 "dry_run": self.dry_run})

  # ---- the work -----------------------------------------------------------------

  def _take(self, report: PassReport, statuses=None) -> list:
    """The jobs this pass works on: by kind, in the kind's order, at most one
    per user, within the day's tier; every job left is traced."""
    statuses = statuses or (DRY_TAKEN if self.dry_run else LIVE_TAKEN)
    tier = None if self.dry_run else self.budget.tier()
    limit = int(self.config.jobs.max_per_pass)
    if tier is not None:
      limit = max(1, math.ceil(limit * tier.share)) if tier.share else 0
    taken, users = [], set()
    hours = float(self.config.asks.limited_hours)
    answer_kinds = [k.name for k in KINDS.values() if k.answers]
    for name, kind in KINDS.items():
      for job in sorted(self.store.jobs(statuses, kind=name),
                        key=kind.priority):
        why = ""
        if len(taken) + self.posts_this_pass >= limit:
          why = (f"{limit} jobs a pass"
                 + (f" ({tier.name})" if tier and tier.share < 1 else ""))
        elif tier is not None and tier.answers_only and not kind.answers:
          why = tier.name
        elif job.user and job.user in users:
          why = f"one job per user a pass ({job.user})"
        elif self.lists.limited(job.user):
          last = self.store.last_answered(job.user, answer_kinds)
          if last is not None and self.desk.now - last < hours * 3600:
            why = (f"{job.user} is a limited user, answered "
                   f"{(self.desk.now - last) / 3600:.1f} h ago")
        if why:
          report.deferred.append(job.key)
          self._trace({"t": self.desk.now, "job": job.key, "kind": name,
                       "skipped": f"not this pass: {why}",
                       "dry_run": self.dry_run})
          continue
        if job.user:
          users.add(job.user)
        taken.append(job)
    return taken

  def _work(self, report: PassReport, statuses=None) -> None:
    jobs = self._take(report, statuses)
    if not jobs:
      return
    if not self.dry_run and self._capped([j.key for j in jobs], report):
      log.info("not posting now: %s", report.stopped)
      return
    writing_jobs = []
    for job in jobs:
      with self._own_errors(job, report):
        plan = KINDS[job.kind].immediate(job, self.desk)
        if plan is None:
          writing_jobs.append(job)
          continue
        try:
          plan, cut = fit_plan(plan)
        except DoesNotFit as e:
          self.desk.skip(job.key, job.kind, f"Tumblr would refuse it: {e}")
          continue
        self.store.save_plan(job.key, plan)
        self._trace({"t": self.desk.now, "job": job.key, "kind": job.kind,
                     "command": plan.action, "text": plan.text,
                     "dry_run": self.dry_run, **({"cut": cut} if cut else {})})
        self._carry_out(self.store.job(job.key), report)
    contexts = []
    for job in writing_jobs:
      with self._own_errors(job, report):
        kind = KINDS[job.kind]
        images.annotate(job.payload.get("post") or {}, self.images)
        ctx = kind.context(job, self.blog, self.desk.now)
        veto = (kind.screen_others(ctx, self.desk)
                or kind.prefilter(ctx, self.desk))
        if veto:
          self.desk.skip(job.key, kind.name, veto)
        else:
          contexts.append(ctx)
    if not contexts:
      return
    # One sampler call for every job: its failure is the model's, not a
    # job's, and stops the pass.
    candidates = self._write(contexts)
    for ctx in contexts:
      job = ctx.job
      with self._own_errors(job, report):
        decided = self._decide(ctx, candidates[job.key], report)
        if decided is None:
          continue
        plan, winner = decided
        self.store.save_plan(job.key, plan, kept_id=winner.kept_id)
        self._keep_losers(ctx, candidates[job.key], winner)
        self._carry_out(self.store.job(job.key), report)

  def _write(self, contexts: list) -> dict:
    """{job key: [Candidate]}: written for every context in one sampler
    call (kept candidates join original posts'), scored and screened, each
    in the mood of when it will be read; each input then kicks the mood."""
    said = [c for c in contexts if c.moves_mood]
    for ctx, p in zip(said, self.scorer.sentiment([c.user_text
                                                   for c in said])):
      ctx.user_sentiment = p
    s, min_chars = self.config.sampling, int(self.config.choice.min_chars)
    allowed = lambda c: mood_lib.sentiment_range(self.mood.at(
        KINDS[c.job.kind].mood_time(c.job, self.desk)))
    screens = lambda c: writing.screen_args(c, self.blog, min_chars,
                                            self.lists)
    pools = self._kept_pools(contexts, int(s.n))
    candidates = writing.write_candidates(
        [c for c in contexts if len(pools.get(c.job.key, ())) < int(s.n)],
        self.generator, self.scorer, n=int(s.n),
        more_rounds=int(s.more_rounds), min_survivors=int(s.min_survivors),
        sentiment_range=allowed, screens=screens,
        seed=lambda r: self._seed(self.desk.now, f"sampling:{r}"))
    for ctx in contexts:  # kept candidates join, judged as new ones are
      pool = pools.get(ctx.job.key, [])
      choice.apply_screens(pool, sentiment_range=allowed(ctx), **screens(ctx))
      candidates[ctx.job.key] = candidates.get(ctx.job.key, []) + pool
    for ctx in said:  # what was said, and what it drew
      self.mood.kick(mood_lib.kick_value(
          ctx.user_sentiment,
          [c.sentiment for c in candidates[ctx.job.key]], self.mood.params),
                     ctx.job.key)
    return candidates

  def _kept_pools(self, contexts: list, n: int) -> dict:
    """Kept candidates for this pass's original posts (live passes only),
    split between them so no two jobs offer the same one: {job key:
    [Candidate]}; a job with `n` of them samples no new ones."""
    r = self.config.retention
    originals = [c.job.key for c in contexts if c.job.kind == "original"]
    if self.dry_run or not originals or not r.enabled:
      return {}
    since = self.desk.now - float(r.max_age_days) * 86400
    pools = {key: [] for key in originals}
    for i, (kept_id, c) in enumerate(self.store.kept(since)):
      pools[originals[i % len(originals)]].append(choice.Candidate(
          **{**c, "kept_id": kept_id, "verdict": "kept"}))
    return {k: v[:n] for k, v in pools.items()}

  def _keep_losers(self, ctx: Context, cands: list, winner) -> None:
    """The original's retention: an original post's losing candidates the
    selector likes (over `retention.min_selector`) wait for later ones."""
    r = self.config.retention
    if self.dry_run or ctx.job.kind != "original" or not r.enabled:
      return
    good = [c.as_dict() for c in cands
            if c is not winner and c.kept_id is None
            and c.selector is not None
            and c.selector > float(r.min_selector)
            and (c.verdict == "kept" or c.verdict.startswith("mood:"))]
    if good:
      self.store.keep(ctx.job.key, [dict(c, verdict="kept") for c in good])

  def _carry_out(self, job: Job, report: PassReport) -> None:
    """A planned job: sent (live), or put in the feed (dry run)."""
    if self.dry_run:
      self.store.mark_dry_run(job.key)
      report.would_post.append(job.key)
      return
    self.desk.crash_point("after_plan", job.kind)
    if job.plan.state in POSTING and self._capped([job.key], report):
      return
    self._send(job, report)

  def _decide(self, ctx: Context, cands: list,
              report: PassReport) -> Optional[tuple]:
    """Chooses, filters and plans one job; traces the decision. Returns
    (the plan, the winning candidate), or None."""
    job, kind = ctx.job, KINDS[ctx.job.kind]
    epsilon = float(self.config.choice.epsilon.get(kind.name, 0.1))
    decision = choice.epsilon_greedy(cands, epsilon, self.desk.rng)
    entry = {"t": self.desk.now, "job": job.key, "kind": kind.name,
             "user": job.user, "prompt": ctx.prompt, "prompt_shown": ctx.shown,
             "mood": self.mood.at(kind.mood_time(job, self.desk)),
             "sentiment_range": mood_lib.sentiment_range(
                 self.mood.at(kind.mood_time(job, self.desk))),
             "user_sentiment": ctx.user_sentiment,
             "candidates": [c.as_dict() for c in cands],
             "winner": decision.index, "reason": decision.reason,
             "dry_run": self.dry_run, **self.provenance}
    veto = (decision.reason if decision.index is None
            else kind.gate(cands[decision.index], ctx, self.desk))
    if veto is not None:
      if decision.index is not None:
        entry["reason"] += f"; {veto}"
      self._trace(dict(entry, state=None))
      self.store.skip(job.key, veto)
      report.skipped.append(job.key)
      return None
    winner = cands[decision.index]
    tags = self._tags(winner.tags)
    hits = self.words.hits(winner.text + "\n" + " ".join(tags))
    state = kind.post_state
    held = kind.review_reason(ctx, self.desk)
    if self.config.review.all:
      held = "review.all: every post waits for the operator"
    verdict, why = self._autoreview(ctx, winner, hits, entry)
    if verdict == autoreview.DROP:
      entry["reason"] += f"; {why}: dropped"
      self._trace(dict(entry, state=None, filter_hits=hits))
      self.store.skip(job.key, why)
      report.skipped.append(job.key)
      return None
    if hits and verdict != autoreview.PUBLISH:
      held = f"word list hit ({', '.join(hits)})" + (
          f", {why}" if why else "")
    elif hits:
      entry["reason"] += (f"; word list hit ({', '.join(hits)}) published "
                          f"anyway: {why}")
    elif verdict == autoreview.REVIEW and not held:
      held = why
    if held:
      state = "draft"
      tags = tags + [self.config.review.needs_tag]
      entry["reason"] += f"; {held}: drafted"
    plan = kind.plan(ctx, winner.text, tags, state)
    try:
      # Never sent as Tumblr would refuse it: cut to its limits, and why.
      plan, cut = fit_plan(plan)
    except DoesNotFit as e:
      why = f"Tumblr would refuse it: {e}"
      entry["reason"] += f"; {why}"
      self._trace(dict(entry, state=None, filter_hits=hits))
      self.store.skip(job.key, why)
      report.skipped.append(job.key)
      return None
    if cut:
      entry["cut"] = cut
      entry["reason"] += "; cut to Tumblr's limits: " + "; ".join(cut)
    self._trace(dict(entry, state=state, tags=tags, filter_hits=hits))
    return plan, winner

  def _autoreview(self, ctx: Context, winner, hits: list,
                  entry: dict) -> tuple:
    """(verdict, why) of the autoreviewer on the chosen post, also put in
    the trace `entry`; (None, "") without an autoreviewer head. P(reject)
    came with the candidate's other scores, from the sampler's forward;
    only a candidate kept from an earlier pass (sampled after another
    prompt) is run through the generator again."""
    if not winner.raw:
      return None, ""
    p = winner.p_reject if winner.kept_id is None else None
    if p is None:
      from bot.ml import Sample  # pylint: disable=import-outside-toplevel
      (p,) = self.scorer.autoreview([Sample(raw=winner.raw,
                                            prompt=ctx.prompt)])
    if p is None:
      return None, ""
    c = self.cutoffs
    verdict = autoreview.verdict(p, bool(hits), c)
    why = {
        autoreview.PUBLISH: f"the autoreviewer's P(reject) {p:.2f} is under "
                            f"autoreview.accept_below {c['accept_below']:g}",
        autoreview.DROP: f"the autoreviewer's P(reject) {p:.2f} is over "
                         f"autoreview.reject_above {c['reject_above']:g}",
        autoreview.REVIEW: (
            f"the autoreviewer's P(reject) {p:.2f}" if hits else
            f"the autoreviewer's P(reject) {p:.2f} is over "
            f"autoreview.draft_above {c['draft_above']:g}"),
        autoreview.AS_BEFORE: "",
    }[verdict]
    entry["autoreview"] = {"p_reject": float(p), "verdict": verdict}
    return verdict, why

  def _trace(self, entry: dict) -> None:
    self.trace.write(entry)
    if "candidates" in entry:
      self.store.record_written(entry["job"], entry)
    if self.feed is not None:
      self.feed.append({k: v for k, v in entry.items() if k != "prompt"})

  def _tags(self, generated) -> list:
    """The generated tags (those the lists allow) and the config's own."""
    allowed = [t for t in generated if self.lists.tag_allowed(t)]
    tags = []
    for t in allowed[:int(self.config.max_generated_tags)] + list(
        self.config.tags):
      if t and t not in tags and t not in self.review_tags:
        tags.append(t)
    return tags

  # ---- sending ----------------------------------------------------------------------

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

  def _send(self, job: Job, report: PassReport) -> None:
    """Posts a planned (or reconciled-as-missing) job; done once confirmed."""
    if job.attempts >= MAX_ATTEMPTS:
      self.store.skip(job.key, f"gave up after {job.attempts} attempts")
      report.failed.append(job.key)
      return
    if job.plan.state in POSTING and self._capped([job.key], report):
      return
    self.store.mark_sending(job.key)
    self.desk.crash_point("before_send", job.kind)
    try:
      post_id = self.poster.send(job.plan, job.key)
    except TumblrError as e:
      if e.status == 401 or isinstance(e, RateLimited):
        raise
      if isinstance(e, PostLimitReached):  # the day's cap: 403.8023 or 429
        self.store.refused(job.key)
        self.budget.server = {"remaining": 0}
        report.deferred.append(job.key)
        report.stopped = str(e)
        return
      log.warning("%s: %s", job.key, e)
      report.failed.append(job.key)
      return
    self.desk.crash_point("after_send", job.kind)
    self._finish(job, post_id, report)

  def _finish(self, job: Job, post_id: str, report: PassReport,
              reconciled: bool = False) -> None:
    state = job.plan.state
    note = None
    if job.key in self.poster.not_followed:
      # Tumblr said `followed` false (bot.posting): the ask is done, the
      # follow is not.
      note = f"not followed: {job.plan.blog} blocked the bot"
      self._trace({"t": self.desk.now, "job": job.key, "kind": job.kind,
                   "command": FOLLOW, "text": note, "dry_run": self.dry_run})
    # An answered ask or a published draft has a new id: the map keeps
    # the old one's way to it.
    self.store.finish(job.key, post_id,
                      status="drafted" if state == "draft" else "done",
                      counts_as_post=state in POSTING, post_state=state,
                      genesis=job.plan.post_id, note=note)
    if state in POSTING:
      self.budget.spent()
      self.posts_this_pass += 1
    if job.plan.action in (FOLLOW, UNFOLLOW):
      self.desk.forget_following()
    {"draft": report.drafted, "queue": report.queued,
     "deleted": report.deleted}.get(state, report.published).append(job.key)
    if reconciled:
      report.reconciled.append(job.key)


def _one_line(error: Exception, limit: int = 300) -> str:
  """"ValueError: what it said", on one line, at most `limit` characters."""
  text = " ".join(f"{type(error).__name__}: {error}".split())
  return text if len(text) <= limit else text[:limit - 1] + "…"


def _credentials_check(e: TumblrError, config) -> None:
  """A 401 is the user's keys: one clear line instead of a traceback."""
  if e.status == 401:
    where = (f"credentials file {config.credentials}" if config.credentials
             else "the TUMBLR_* environment variables")
    raise UserError(f"Tumblr rejected the credentials from {where} (401 "
                    f"Unauthorized): check the consumer key and OAuth token")


# ---- building a bot from a config ------------------------------------------------------


def check_files(config) -> None:
  """Reads the word list and the lists now, so a wrong path is one line
  before anything slow (a model) is loaded."""
  WordFilter.from_file(config.word_list)
  Lists.from_config(config.lists)
  autoreview.check_cutoffs(config.autoreview)


def make_client(config, check: bool = True,
                clock: Optional[Callable[[], float]] = None) -> TumblrClient:
  """The Tumblr client for `config`; with `check`, one authenticated call
  first, so wrong keys fail in one line before a model is loaded. Its clock
  is the bot's (`clock_of(config)` unless given): Tumblr's clock is measured
  against it, so the daily cap's day is the same day for both."""
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
                        calls_per_minute=int(c.get("calls_per_minute", 250)),
                        user_agent=config.user_agent,
                        clock=clock or clock_of(config))
  if check:
    check_client(client, config)
  return client


def check_client(client: TumblrClient, config) -> None:
  """One authenticated call: wrong keys or host are one line."""
  try:
    client.user_info()
  except TumblrError as e:
    _credentials_check(e, config)
    if e.status == 0:
      raise UserError(f"cannot reach the Tumblr API at {config.tumblr_host}"
                      f" (config key tumblr_host): {e}") from None
    raise


def make_model(config, model_server: str = ""):
  """The generator and scorer: over HTTP if a server is named, else here.

  Says once (a warning) when there is no selector head: candidates are then
  chosen by the generator's mean log-probability.
  """
  from bot import ml  # pylint: disable=import-outside-toplevel
  url = model_server or config.model_server
  if url:
    model = ml.RemoteModel(url, token_file=config.model_token_file)
    heads = model.describe().get("heads", [])  # fails now, in one line
  else:
    model = ml.LocalModel.load(config.model, config.heads,
                               ml.SamplingSettings.from_config(config.sampling),
                               tuple(config.sentiment_scale))
    heads = model.describe()["heads"]
  if "selector" not in heads:
    log.warning("no selector head (config key `heads`): candidates are chosen"
                " by the generator's mean log-probability per token")
  return model


def run_pass(config, *, dry_run: bool = False, model=None, client=None,
             model_server: str = "",
             clock: Optional[Callable[[], float]] = None) -> PassReport:
  """One pass of the bot described by `config` (configs/bot.py).

  `model` (a generator that is also a scorer, e.g. bot.ml.LocalModel) and
  `client` may be given to reuse them across passes; otherwise they are
  built from the config (`model_server` overrides config.model_server).
  """
  clock = clock or clock_of(config)
  client = client or make_client(config, clock=clock)
  model = model or make_model(config, model_server)
  bot = Bot(config, client=client, generator=model, scorer=model,
            dry_run=dry_run, clock=clock)
  try:
    return bot.run_pass()
  finally:
    bot.close()


def run_passes(config, *, model, client, dry_run: bool = False,
               interval_s: float = 600.0, passes: Optional[int] = None,
               sleep: Callable[[float], None] = time.sleep,
               clock: Optional[Callable[[], float]] = None) -> list:
  """The daemon: a pass every `interval_s` seconds, `passes` times (None:
  for ever). A pass that fails is logged (a user's mistake in one line,
  anything else with its traceback) and the next pass follows; the bot
  stops only when killed. Returns the reports (None for a failed pass)."""
  reports, done = [], 0
  while passes is None or done < passes:
    if done:
      sleep(interval_s)
    done += 1
    try:
      report = run_pass(config, dry_run=dry_run, model=model, client=client,
                        clock=clock)
      print(report.summary(), flush=True)
    except (UserError, TumblrUserError, TumblrError) as e:
      log.error("pass failed: %s; next pass in %.0fs", e, interval_s)
      report = None
    except Exception:  # pylint: disable=broad-except
      log.exception("pass failed with an unexpected error; next pass in "
                    "%.0fs", interval_s)
      report = None
    reports.append(report)
  return reports
