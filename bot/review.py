"""The operator's review of drafts, through tags on Tumblr.

A post held for a person (a word-list hit) is saved as a draft tagged
`review.needs_tag`. Each live pass reads the drafts; for each job that made
one:
- tagged `review.retry_tag`: the job goes back to work (`review`) and its
  new answer replaces the draft in place; the turned-down text is never
  chosen again;
- tagged `review.accept_tag`: the draft is published as the operator left
  it, without the review tags. The publishing plan is stored in the same
  transaction that takes the job out of `drafted`, so a crash between the
  two cannot strand it;
- gone from the drafts: the operator published it (the job is done) or
  deleted it (skipped).
"""

import logging

from bot.jobs.base import Desk
from bot.posting import content_text
from bot.records import EDIT, Plan
from bot.tumblr import npf

log = logging.getLogger("bot.review")


def review_tags(config) -> set:
  r = config.review
  return {r.needs_tag, r.retry_tag, r.accept_tag}


def read_operator_tags(desk: Desk) -> list:
  """Carries out the operator's tags; returns the accepted jobs, planned
  and ready to send."""
  drafted = {j.post_id: j for j in desk.store.jobs(("drafted",))}
  if not drafted:
    return []
  r = desk.config.review
  accepted, found = [], set()
  for draft in desk.client.drafts(desk.blog):
    job = drafted.get(npf.post_id(draft))
    if job is None:
      continue
    found.add(job.key)
    tags = set(draft.get("tags") or [])
    if r.retry_tag in tags:
      log.info("%s: the operator asked for a new answer", job.key)
      desk.store.retry_review(job.key, job.plan.text if job.plan else "")
      desk.report.reviewed.append(job.key)
    elif r.accept_tag in tags:
      log.info("%s: the operator accepted the draft", job.key)
      desk.store.accept_review(job.key, accept_plan(draft, job.plan,
                                                    review_tags(desk.config)))
      desk.report.reviewed.append(job.key)
      desk.crash_point("after_accept", job.kind)
      accepted.append(desk.store.job(job.key))
  for job in drafted.values():
    if job.key not in found:
      _draft_gone(desk, job)
  return accepted


def accept_plan(draft: dict, drafted_plan, drop_tags: set) -> Plan:
  """Publishes a draft as the operator left it, without the review tags."""
  return Plan(action=EDIT, state="published", post_id=npf.post_id(draft),
              content=draft.get("content") or [],
              layout=draft.get("layout") or [],
              tags=[t for t in draft.get("tags") or [] if t not in drop_tags],
              text=content_text(draft.get("content"), draft.get("layout")),
              # a reblog stays one
              parent=drafted_plan.parent if drafted_plan else None)


def _draft_gone(desk: Desk, job) -> None:
  """A draft missing from the drafts listing: published or deleted?"""
  post = desk.client.get_post(desk.blog, job.post_id)
  if post is None:
    log.info("%s: the operator deleted the draft", job.key)
    desk.store.draft_deleted(job.key)
  elif post.get("state", "published") != "draft":
    log.info("%s: the operator published the draft", job.key)
    desk.store.draft_published(job.key, npf.post_id(post))
