"""The typed records that flow between the bot's rooms.

A `Job` is a row of the state store: something the bot may answer, with the
raw API objects it came from (`payload`) and, once decided, its `Plan`: the
write request that posts the chosen candidate. A `PassReport` says what one
pass did. The job kinds (`bot.jobs`) make contexts and plans; the store
(`bot.state`) keeps jobs and plans; the poster (`bot.posting`) carries plans
out and finds them again after a crash.
"""

import dataclasses
from typing import Optional

# What a plan does with the API.
ANSWER = "answer"  # edit an ask in the inbox into its answer (same post id)
REBLOG = "reblog"  # a new post reblogging `parent`, adding `content`
CREATE = "create"  # a new original post
EDIT = "edit"  # change a post the bot made before (a draft) in place
DELETE = "delete"  # delete an ask (spam, or a command carried out)
FOLLOW = "follow"  # follow `blog`, then delete the ask that asked for it
UNFOLLOW = "unfollow"  # unfollow `blog`, then delete the ask
ACTIONS = (ANSWER, REBLOG, CREATE, EDIT, DELETE, FOLLOW, UNFOLLOW)
# Where a plan puts the post ("deleted": the ask is gone, nothing posted).
STATES = ("published", "queue", "draft", "deleted")
POSTING = ("published", "queue")  # states that count against the daily cap


@dataclasses.dataclass(frozen=True)
class Parent:
  """The post a reblog is made from, as the API needs to name it."""
  id: str
  uuid: str
  reblog_key: str
  blog: str


@dataclasses.dataclass
class Plan:
  """What the bot will send for a job, stored before it is sent.

  `slug` is the permalink slug the bot gives a new post (reblogs and
  original posts): it is recorded with the plan before the write request,
  so after a crash the post can be found by it.
  """
  action: str
  state: str
  text: str  # the chosen candidate's text, as written
  tags: list
  content: list  # NPF blocks sent
  layout: list
  post_id: Optional[str] = None  # answer, edit, delete: the post changed
  parent: Optional[Parent] = None  # reblogs (also an edited reblog draft)
  slug: str = ""
  blog: str = ""  # follow, unfollow: whom
  media: dict = dataclasses.field(default_factory=dict)  # identifier: file
  # answer, edit: the ask is not stored in NPF, so it is answered through
  # the legacy /post/edit (an NPF edit of it is refused)
  legacy: bool = False

  def __post_init__(self):
    if self.action not in ACTIONS:
      raise ValueError(f"plan action {self.action!r} is not one of {ACTIONS}")
    if self.state not in STATES:
      raise ValueError(f"plan state {self.state!r} is not one of {STATES}")
    if self.action not in (REBLOG, CREATE) and not self.post_id:
      raise ValueError(f"a plan to {self.action} needs the post id")
    if self.action in (FOLLOW, UNFOLLOW) and not self.blog:
      raise ValueError(f"a plan to {self.action} needs the blog")
    if (self.action in (DELETE, FOLLOW, UNFOLLOW)) != (
        self.state == "deleted"):
      raise ValueError(f"a plan to {self.action} cannot end {self.state}")
    if self.action == REBLOG and self.parent is None:
      raise ValueError("a reblog plan needs its parent post")

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict) -> "Plan":
    d = dict(d)
    if d.get("parent"):
      d["parent"] = Parent(**d["parent"])
    return cls(**d)


@dataclasses.dataclass
class Job:
  """A row of the state store's `jobs` table (see bot.state for its life).

  `payload` holds the API objects the job came from, as its kind recorded
  them (bot.jobs); `rejected` are texts the operator turned down and
  `retries` how many times they asked for new candidates; `errors` how many
  times its handling raised (bot.state.Store.job_error).
  """
  key: str
  kind: str
  status: str
  user: Optional[str]
  payload: dict
  plan: Optional[Plan]
  post_id: Optional[str]
  attempts: int
  note: Optional[str]
  created: float
  updated: float
  rejected: tuple = ()
  retries: int = 0
  errors: int = 0


@dataclasses.dataclass
class PassReport:
  """What one pass did (job keys), for the caller, logs and tests."""
  dry_run: bool
  new_jobs: list = dataclasses.field(default_factory=list)
  published: list = dataclasses.field(default_factory=list)
  queued: list = dataclasses.field(default_factory=list)
  drafted: list = dataclasses.field(default_factory=list)
  would_post: list = dataclasses.field(default_factory=list)  # dry run
  deleted: list = dataclasses.field(default_factory=list)  # asks deleted
  skipped: list = dataclasses.field(default_factory=list)
  deferred: list = dataclasses.field(default_factory=list)
  reconciled: list = dataclasses.field(default_factory=list)
  reviewed: list = dataclasses.field(default_factory=list)
  failed: list = dataclasses.field(default_factory=list)
  parked: list = dataclasses.field(default_factory=list)  # failed too often
  writes: int = 0
  mood: float = 0.0
  stopped: str = ""  # why the pass ended early, if it did

  def summary(self) -> str:
    parts = [f"{len(self.new_jobs)} new jobs"]
    for name in ("published", "queued", "drafted", "would_post", "deleted",
                 "skipped", "deferred", "reconciled", "reviewed", "failed",
                 "parked"):
      if getattr(self, name):
        parts.append(f"{len(getattr(self, name))} {name.replace('_', ' ')}")
    parts.append(f"{self.writes} write requests")
    parts.append(f"mood {self.mood:.2f}")
    text = ", ".join(parts)
    return text + (f" (stopped: {self.stopped})" if self.stopped else "")


def written_by(entry: dict) -> str:
  """"model DIR at step N, heads DIR": which generator and heads wrote and
  chose a traced post ("" for entries from before they were recorded)."""
  if not entry.get("model"):
    return ""
  text = f"model {entry['model']}"
  if entry.get("model_step") is not None:
    text += f" at step {entry['model_step']}"
  if entry.get("heads"):
    text += f", heads {entry['heads']}"
  return text
