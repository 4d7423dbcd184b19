"""Asks: found in the blog's inbox (submissions), answered in place.

An answer edits the ask post into ask + answer (the API's way of answering),
so it keeps the ask's post id: finding it again after a crash is asking for
that post. Payload: {"post": the ask as the API gave it}.

The original's rules (config keys `asks.*`, `commands.*`):
- at most `max_read` asks are read a pass, and taken oldest first, one per
  user a pass;
- skipped, and recorded with the reason: asks from avoided users, with no
  text, with more than `max_images` images, or under `min_words` words
  (counted width-aware: a CJK character or an emoji counts 2, a zero-width
  joiner 0; an ask starting with `!` is never too short);
- spam: a user with more than `max_pending_per_user` waiting asks has the
  newest extras deleted (recorded, never answered);
- commands: `!follow` / `!unfollow` follow or unfollow the asker (who so opts
  in or out of dashboard reblogs) and delete the ask; `!mood` answers with
  the mood plot of the last days and the interactions that moved the mood
  most up and down. Other `!words` are ordinary asks.
"""

import html
import os
import re
from typing import Optional

from bot import text_format
from bot.jobs.base import Context, Desk, JobKind, others_veto, word_count
from bot.records import ANSWER, DELETE, FOLLOW, UNFOLLOW, Job, Plan
from bot.tumblr import fields, html_subset, npf
from bot.tumblr.thread import ANONYMOUS, UNKNOWN_AUTHOR

def _asker(post: dict) -> Optional[str]:
  asker = text_format.post_to_thread(post).turns[0].author
  return None if asker in (ANONYMOUS, "", UNKNOWN_AUTHOR) else asker


def _ask_block_indexes(post: dict) -> set:
  for l in post.get("layout") or []:
    if isinstance(l, dict) and l.get("type") == "ask":
      return {int(i) for i in l.get("blocks") or []}
  return set(range(len(post.get("content") or [])))


def _ask_blocks(post: dict) -> list:
  asked = _ask_block_indexes(post)
  return [b for i, b in enumerate(fields.dicts(post.get("content")))
          if i in asked]


def _ask_text(post: dict) -> str:
  return text_format.post_to_thread(post).turns[-1].text


def skip_reason(post: dict, desk: Desk) -> Optional[str]:
  """Why an ask is not answered at all, or None."""
  a = desk.config.asks
  who = desk.lists.avoided(_asker(post) or "")
  if who:
    return f"{who} is on the avoid list"
  text = _ask_text(post)
  images = sum(b.get("type") == "image" for b in _ask_blocks(post))
  if images > int(a.max_images):
    return f"{images} images (more than {int(a.max_images)})"
  words = word_count(text)
  if not words:
    return "no text"
  # The answer carries the ask (a command's too): screened before anything.
  veto = others_veto(text, _asker(post) or "", desk)
  if veto:
    return veto
  if not text.lstrip().startswith("!") and words < int(a.min_words):
    return f"too short ({words} words, fewer than {int(a.min_words)})"
  return None


class Asks(JobKind):
  name = "ask"

  def priority(self, job: Job):
    return (fields.integer(job.payload["post"].get("timestamp")) or 0,
            job.created)

  def immediate(self, job: Job, desk: Desk) -> Optional[Plan]:
    if not desk.config.commands.enabled:
      return None
    post = job.payload["post"]
    words = html.unescape(re.sub(r"<[^>]*>", " ", _ask_text(post))).split()
    command = words[0].lower() if words else ""
    asker = _asker(post)
    pid = npf.post_id(post)
    if command in ("!follow", "!unfollow") and asker:
      return Plan(action=FOLLOW if command == "!follow" else UNFOLLOW,
                  state="deleted", text=command, tags=[], content=[],
                  layout=[], post_id=pid, blog=asker)
    if command == "!mood":
      return self._mood_answer(job, desk)
    return None

  def _mood_answer(self, job: Job, desk: Desk) -> Plan:
    """The mood plot of the last days, and who moved it most either way."""
    days = float(desk.config.mood.plot_days)
    folder = desk.config.state + ".media"
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, re.sub(r"\W", "-", job.key) + "-mood.png")
    desk.mood.plot(path, days, float(desk.config.mood.tau1_hours))
    n = int(desk.config.commands.mood_interactions)
    up, down = desk.mood.movers(desk.now - days * 86400, n)
    paragraphs = [f"my mood over the last {days:g} days, and what moved it."]
    for title, events in (("what lifted it most:", up),
                          ("what brought it down most:", down)):
      if events:
        paragraphs.append(f"<b>{title}</b>")
        paragraphs += [html.escape(_describe(e, desk)) for e in events]
    text = "\n\n".join(paragraphs)
    image = {"type": "image", "alt_text": "the bot's mood over the last "
                                          f"{days:g} days",
             "media": [{"type": "image/png", "identifier": "mood",
                        "width": 900, "height": 320}]}
    post = job.payload["post"]
    return Plan(action=ANSWER, state="published", text=text, tags=["mood"],
                content=_ask_blocks(post) + [image] + npf.text_to_content(
                    text), layout=_layout(post, _asker(post)),
                post_id=npf.post_id(post), media={"mood": path},
                legacy=npf.is_legacy(post))

  def context(self, job: Job, blog: str, now: float) -> Context:
    thread = text_format.post_to_thread(job.payload["post"])
    asked = thread.turns[-1]
    return Context(job=job, prompt=text_format.ask_prompt(thread, blog, now),
                   user_text=asked.text, author=asked.author,
                   shown=f"{asked.author or ANONYMOUS}: "
                   f"{html_subset.to_plain(asked.text)}",
                   moves_mood=True)

  def plan(self, ctx: Context, text: str, tags: list, state: str) -> Plan:
    post = ctx.job.payload["post"]
    return Plan(action=ANSWER, state=state, text=text, tags=tags,
                content=_ask_blocks(post) + npf.text_to_content(text),
                layout=_layout(post, ctx.author), post_id=npf.post_id(post),
                legacy=npf.is_legacy(post))


def _layout(post: dict, asker: Optional[str]) -> list:
  layout = [l for l in fields.dicts(post.get("layout")) if l.get("type") ==
            "ask"]
  return layout or npf.ask_layout(len(_ask_blocks(post)), asker)


def _describe(event, desk: Desk) -> str:
  """One mood event as a line: who said what, and how much it moved."""
  from bot.jobs import KINDS  # pylint: disable=import-outside-toplevel
  job = desk.store.job(event["job_key"]) if event["job_key"] else None
  said = "(gone)"
  if job is not None and job.kind in KINDS and job.payload.get("post"):
    said = KINDS[job.kind].context(job, desk.blog, desk.now).shown
  said = html.unescape(re.sub(r"<[^>]*>", "", said))
  if len(said) > 80:
    said = said[:79] + "…"
  return f"{said} ({event['u']:+.2f})"


ASK = Asks()


def record(desk: Desk, post: dict) -> bool:
  """Records an ask (once, by its post id, however it was found) and skips
  it if the rules rule it out; True if it was new."""
  key = f"ask:{npf.post_id(post)}"
  if not desk.record(key, ASK.name, {"post": post}, _asker(post)):
    return False
  reason = skip_reason(post, desk)
  if reason:
    desk.skip(key, ASK.name, reason)
  return True


def discover(desk: Desk) -> None:
  """Records the asks in the inbox; skips those the rules rule out and
  deletes a user's extra waiting asks."""
  if not desk.config.jobs.asks:
    return
  a = desk.config.asks
  pages = -(-int(a.max_read) // 20)
  posts = [p for p in desk.client.submissions(desk.blog, max_pages=pages)
           if npf.is_ask(p)][:int(a.max_read)]
  posts.sort(key=lambda p: fields.integer(p.get("timestamp")) or 0)
  waiting = {}
  for post in posts:
    key = f"ask:{npf.post_id(post)}"
    user = _asker(post)
    record(desk, post)
    job = desk.store.job(key)  # a skipped one is not waiting
    if user and job.status in ("seen", "review", "dry_run"):
      waiting.setdefault(user, []).append(job)
  limit = int(a.max_pending_per_user)
  for user, jobs in waiting.items():
    for job in jobs[limit:]:  # the newest beyond the limit
      desk.plan(job.key, Plan(
          action=DELETE, state="deleted", text="", tags=[], content=[],
          layout=[], post_id=npf.post_id(job.payload["post"])))
      desk.trace({"t": desk.now, "job": job.key, "kind": ASK.name,
                  "skipped": f"spam: {user} has {len(jobs)} waiting asks "
                             f"(more than {limit}); deleted",
                  "dry_run": desk.dry_run})
