"""The operator's review of parked posts: in the console, or by tags on
Tumblr's drafts.

A post held for a person (a word-list hit, a screened user, a long input,
the autoreviewer's verdict, or every post with `review.all`) is saved as a
draft tagged `review.needs_tag`, and the job waits in `drafted`. The
operator decides, and each live pass carries the decisions out:
- accept (in the console, optionally edited; or the draft tagged
  `review.accept_tag`, as the operator left it): the draft is published
  without the review tags. The publishing plan is stored in the same
  transaction that takes the job out of `drafted`, so a crash between the
  two cannot strand it;
- retry (the console's button, or `review.retry_tag`): the job goes back to
  work (`review`) and its new answer replaces the draft in place; the
  turned-down text is never chosen again. At most `review.max_retries`
  times;
- reject (the console's button): the draft is deleted and nothing posted;
- a draft gone from Tumblr's drafts was published (the job is done) or
  deleted (skipped) by the operator there.
Every decision is also a labelled example for the autoreviewer head
(state.DECISION_LABELS): the bot's text, and whether it was good enough.
Decisions are carried out under the state's lock, by a bot pass or by the
console with `--post_now`, and only from `drafted`, so a job is never
carried out twice.
"""

import logging
from typing import Optional

from bot.jobs.base import Desk
from bot.posting import Poster, content_text
from bot.records import DELETE, EDIT, Job, Plan
from bot.tumblr import npf

log = logging.getLogger("bot.review")


def review_tags(config) -> set:
  r = config.review
  return {r.needs_tag, r.retry_tag, r.accept_tag}


def carry_out(desk: Desk) -> list:
  """Carries out the console's decisions and the tags on drafts; returns
  the jobs planned and ready to send."""
  planned = _console_decisions(desk)
  drafted = {j.post_id: j for j in desk.store.jobs(("drafted",))}
  if not drafted:
    return planned
  r = desk.config.review
  found = set()
  for draft in desk.client.drafts(desk.blog):
    job = drafted.get(npf.post_id(draft))
    if job is None:
      continue
    found.add(job.key)
    tags = set(draft.get("tags") or [])
    if r.retry_tag in tags:
      _retry(desk, job, "tumblr")
    elif r.accept_tag in tags:
      log.info("%s: the operator accepted the draft", job.key)
      _example(desk, job, "accept", "tumblr")
      desk.store.accept_review(job.key, accept_plan(draft, job.plan,
                                                    review_tags(desk.config)))
      planned.append(_planned(desk, job))
  for job in drafted.values():
    if job.key not in found:
      _draft_gone(desk, job)
  return planned


def _planned(desk: Desk, job: Job) -> Job:
  desk.report.reviewed.append(job.key)
  desk.crash_point("after_accept", job.kind)
  return desk.store.job(job.key)


def _console_decisions(desk: Desk) -> list:
  """The decisions the console stored since the last pass."""
  from bot.jobs import KINDS  # pylint: disable=import-outside-toplevel
  planned = []
  for d in desk.store.pending_decisions():
    job = desk.store.job(d["job_key"])
    if job is None or job.status != "drafted":
      log.info("%s: decision %s already settled (%s)", d["job_key"],
               d["action"], job.status if job else "no such job")
    elif d["action"] == "retry":
      _retry(desk, job, "console")
    elif d["action"] == "reject":
      log.info("%s: the operator rejected the draft", job.key)
      _example(desk, job, "reject", "console")
      desk.store.accept_review(job.key, Plan(
          action=DELETE, state="deleted", text="", tags=[], content=[],
          layout=[], post_id=job.post_id))
      planned.append(_planned(desk, job))
    else:
      text = d["text"] or (job.plan.text if job.plan else "")
      edited = job.plan is None or text.strip() != job.plan.text.strip()
      log.info("%s: the operator accepted %s", job.key,
               "an edited text" if edited else "the draft")
      _example(desk, job, "accept_edited" if edited else "accept", "console")
      kind = KINDS[job.kind]
      tags = [t for t in (job.plan.tags if job.plan else [])
              if t not in review_tags(desk.config)]
      ctx = kind.context(job, desk.blog, desk.now)
      desk.store.accept_review(job.key, kind.plan(ctx, text, tags,
                                                  kind.post_state))
      planned.append(_planned(desk, job))
    desk.store.decision_done(d["id"])
  return planned


def _retry(desk: Desk, job: Job, source: str) -> None:
  limit = int(desk.config.review.max_retries)
  if job.retries >= limit:
    log.warning("%s: no more retries (%d of %d): the draft waits for an "
                "accept or a reject", job.key, job.retries, limit)
    return
  log.info("%s: the operator asked for a new answer", job.key)
  _example(desk, job, "retry", source)
  desk.store.retry_review(job.key, job.plan.text if job.plan else "")
  desk.report.reviewed.append(job.key)


def _example(desk: Desk, job: Job, decision: str, source: str) -> None:
  """The bot's text for a job, labelled by the operator's decision."""
  entry = desk.store.last_written(job.key) or {}
  text = job.plan.text if job.plan else ""
  winner = entry.get("winner")
  if winner is not None and entry.get("candidates"):
    text = entry["candidates"][winner].get("raw") or text
  if entry.get("prompt") and text:
    desk.store.add_review_example(job.key, entry["prompt"], text, decision,
                                  source)


def accept_plan(draft: dict, drafted_plan: Optional[Plan],
                drop_tags: set) -> Plan:
  """Publishes a draft as the operator left it, without the review tags."""
  return Plan(action=EDIT, state="published", post_id=npf.post_id(draft),
              content=draft.get("content") or [],
              layout=draft.get("layout") or [],
              tags=[t for t in draft.get("tags") or [] if t not in drop_tags],
              text=content_text(draft.get("content"), draft.get("layout")),
              # a reblog stays one
              parent=drafted_plan.parent if drafted_plan else None,
              legacy=npf.is_legacy(draft))


def _draft_gone(desk: Desk, job: Job) -> None:
  """A draft missing from the drafts listing: published or deleted?
  Published, it has a new id: found by its genesis id (bot.posting)."""
  poster = Poster(desk.client, desk.store, desk.blog)
  post = poster.current_post(job.post_id)
  if post is None:
    log.info("%s: the operator deleted the draft", job.key)
    _example(desk, job, "deleted", "tumblr")
    desk.store.draft_deleted(job.key)
  # Fetched by id, a post has no `state`: published only if it is shown
  # as published (queued or private, it waits).
  elif poster.in_state(post, "published"):
    log.info("%s: the operator published the draft", job.key)
    _example(desk, job, "published", "tumblr")
    desk.store.draft_published(job.key, npf.post_id(post))
