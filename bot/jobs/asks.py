"""Asks: found in the blog's inbox (submissions), answered in place.

An answer edits the ask post into ask + answer (the API's way of answering),
so it keeps the ask's post id: finding it again after a crash is asking for
that post. Payload: {"post": the ask as the API gave it}.
"""

from bot import text_format
from bot.jobs.base import Context, Desk, JobKind
from bot.records import ANSWER, Job, Plan
from bot.tumblr import npf
from bot.tumblr.thread import ANONYMOUS, UNKNOWN_AUTHOR


class Asks(JobKind):
  name = "ask"

  def context(self, job: Job, blog: str, now: float) -> Context:
    thread = text_format.post_to_thread(job.payload["post"])
    asked = thread.turns[-1]
    return Context(job=job, prompt=text_format.ask_prompt(thread, blog, now),
                   user_text=asked.text, author=asked.author,
                   shown=f"{asked.author or ANONYMOUS}: {asked.text}",
                   moves_mood=True)

  def plan(self, ctx: Context, text: str, tags: list, state: str) -> Plan:
    post = ctx.job.payload["post"]
    asked = _ask_block_indexes(post)
    ask_content = [b for i, b in enumerate(post.get("content") or [])
                   if i in asked]
    layout = [l for l in post.get("layout") or []
              if isinstance(l, dict) and l.get("type") == "ask"]
    if not layout:
      layout = npf.ask_layout(len(ask_content), ctx.author)
    return Plan(action=ANSWER, state=state, text=text, tags=tags,
                content=ask_content + npf.text_to_content(text),
                layout=layout, post_id=npf.post_id(post))


def _ask_block_indexes(post: dict) -> set:
  for l in post.get("layout") or []:
    if isinstance(l, dict) and l.get("type") == "ask":
      return {int(i) for i in l.get("blocks") or []}
  return set(range(len(post.get("content") or [])))


ASK = Asks()


def discover(desk: Desk) -> None:
  """Records every ask in the inbox (an answered ask leaves it)."""
  if not desk.config.jobs.asks:
    return
  for post in desk.client.submissions(desk.blog):
    if not npf.is_ask(post):
      continue
    asker = text_format.post_to_thread(post).turns[0].author
    user = None if asker in (ANONYMOUS, "", UNKNOWN_AUTHOR) else asker
    desk.record(f"ask:{npf.post_id(post)}", ASK.name, {"post": post}, user)
