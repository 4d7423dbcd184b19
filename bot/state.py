"""The bot's memory: an SQLite file (WAL) of jobs, posts made, mood, cursors.

A job is anything the bot might answer: an ask, a reply or reblog on its
posts, a dashboard post, an original post for the queue. Its life:

    seen ──> chosen ──> sending ──> done | drafted
      │        (plan      (about to    (the API confirmed;
      │        stored)    call API)     post_id stored)
      ├──> skipped (nothing worth posting, or it failed too often)
      ├──> dry_run (a dry run planned it; a live pass redoes it)
      └──> parked  (its handling raised `jobs.max_errors` times: the last
                    error is its note; never worked again)

    drafted ──> chosen   the operator accepted the draft (the plan publishes it)
    drafted ──> review   the operator asked for new candidates (review is
                         work like seen; the draft is edited in place)
    drafted ──> done     the operator published the draft on Tumblr
    drafted ──> skipped  the operator deleted the draft

`record_job` writes the job before any work starts; `save_plan` stores what
the bot decided to post before it calls the API; `mark_sending` is committed
right before the write request; `finish` only after the API confirmed it. A
crash leaves a job in `seen`, `review`, `chosen` or `sending`; the loop
redoes the first three and reconciles the last with the API (did the post
land?), so no job is posted twice or lost. Every transition is one
transaction that names the statuses it may start from, and fails loudly if
the job is elsewhere. An unexpected error in a job's handling is counted on
the job (`job_error`): it stays where it was, for the next pass, until it
has failed `jobs.max_errors` times and is parked.

The file's layout is stamped in `PRAGMA user_version` (SCHEMA_VERSION): a
file from a newer version is refused (it may hold statuses this code would
never work), an older one is brought up to date in one transaction, so a
row it cannot read leaves the file as it was. One bot works a file at a
time (`lock`), however the file is named.

Mood events of dry runs are kept apart (`dry_run` = 1): a live pass neither
counts them nor is blocked by them, and only live passes save mood states.
`Trace` appends a JSON line per decision (all candidates, their scores, the
mood and why the winner won).
"""

import contextlib
import fcntl
import json
import os
import sqlite3
import time
from typing import Any, Iterator, Optional, Sequence

from bot.records import Job, Plan
from gpt2.errors import UserError

# Statuses with work left for a pass.
PENDING = ("seen", "chosen", "sending", "review")
# The layout this code writes, stamped in the file's `PRAGMA user_version`.
# 0: a file from before the stamp (migrated as it always was); 1: jobs may
# be `parked`, and count their errors; 2: the `post_ids` map from a post's
# genesis id to its current one (filled from the jobs' plans when a file is
# brought up to it). A newer file is refused: an older version would
# silently never work a status it does not know.
SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
  key TEXT PRIMARY KEY,
  kind TEXT NOT NULL,
  status TEXT NOT NULL,
  user TEXT,
  payload TEXT NOT NULL,
  plan TEXT,
  post_id TEXT,
  attempts INTEGER NOT NULL DEFAULT 0,
  note TEXT,
  created REAL NOT NULL,
  updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status);
CREATE TABLE IF NOT EXISTS posts_made (
  t REAL NOT NULL,
  job_key TEXT NOT NULL,
  state TEXT NOT NULL,
  post_id TEXT
);
CREATE INDEX IF NOT EXISTS posts_made_t ON posts_made (t);
CREATE TABLE IF NOT EXISTS mood_states (
  t REAL PRIMARY KEY,
  x1 REAL NOT NULL,
  x2 REAL NOT NULL,
  mood REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS mood_events (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  t REAL NOT NULL,
  u REAL NOT NULL,
  hours REAL NOT NULL,
  source TEXT NOT NULL,
  sentiment REAL,
  job_key TEXT
);
CREATE TABLE IF NOT EXISTS meta (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS blocked_by (
  blog TEXT PRIMARY KEY,
  t REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS written (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  job_key TEXT NOT NULL,
  t REAL NOT NULL,
  entry TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS written_job ON written (job_key);
CREATE TABLE IF NOT EXISTS post_ids (
  genesis TEXT PRIMARY KEY,
  current TEXT NOT NULL,
  t REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS decisions (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  job_key TEXT NOT NULL,
  action TEXT NOT NULL,
  text TEXT,
  t REAL NOT NULL,
  source TEXT NOT NULL,
  done INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS kept (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  t REAL NOT NULL,
  job_key TEXT NOT NULL,
  candidate TEXT NOT NULL,
  selector REAL NOT NULL,
  used_by TEXT
);
CREATE TABLE IF NOT EXISTS review_examples (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  job_key TEXT NOT NULL,
  prompt TEXT NOT NULL,
  text TEXT NOT NULL,
  label INTEGER NOT NULL,
  decision TEXT NOT NULL,
  source TEXT NOT NULL,
  t REAL NOT NULL
);
"""
# What an operator's decision teaches the autoreviewer: 1 = the bot's text
# was not good enough to post (retried, rejected, deleted), 0 = it was
# (accepted, edited or not).
DECISION_LABELS = {"accept": 0, "accept_edited": 0, "published": 0,
                   "retry": 1, "reject": 1, "deleted": 1}
# Columns added since the first schema: (table, column, declaration). A
# state file written by an older version gains them when it is opened.
_ADDED_COLUMNS = (
    ("jobs", "rejected", "TEXT"),
    ("jobs", "retries", "INTEGER NOT NULL DEFAULT 0"),
    ("mood_events", "dry_run", "INTEGER NOT NULL DEFAULT 0"),
    ("jobs", "errors", "INTEGER NOT NULL DEFAULT 0"),
)
_INDEXES = """
CREATE INDEX IF NOT EXISTS jobs_post_id ON jobs (post_id);
"""


class Store:
  """The state database. One per process; not shared between threads."""

  def __init__(self, path: str, clock=time.time):
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
      raise UserError(f"state: directory {directory} does not exist "
                      f"(config key `state` = {path!r})")
    self.path = path
    self._clock = clock
    self._lock_files = []
    self._db = None
    try:
      self._db = sqlite3.connect(path, isolation_level=None, timeout=30)
      # Migrated before the journal mode is set: a file that is refused is
      # left exactly as it was, header included.
      self._migrate()
      self._db.execute("PRAGMA journal_mode=WAL")
      self._db.execute("PRAGMA synchronous=FULL")
    except sqlite3.DatabaseError as e:
      self._close_db()
      raise UserError(f"state: {path} is not a usable SQLite file ({e})"
                      ) from None
    except BaseException:
      self._close_db()
      raise
    self._db.row_factory = sqlite3.Row

  def _close_db(self) -> None:
    if self._db is not None:
      self._db.close()

  def _migrate(self) -> None:
    """Brings a state file of an older version up to this schema and stamps
    it, in one transaction: a file written by a newer version, or a row
    that cannot be migrated, is one UserError and the file is unchanged."""
    with self._tx() as db:
      version = db.execute("PRAGMA user_version").fetchone()[0]
      if version > SCHEMA_VERSION:
        raise UserError(
            f"state: {self.path} was written by a newer version (schema "
            f"{version}, this code reads up to {SCHEMA_VERSION}): update "
            f"this checkout, or name another file (config key `state`)")
      # executescript would commit the transaction first: one at a time.
      for statement in _statements(_SCHEMA):
        db.execute(statement)
      for table, column, declaration in _ADDED_COLUMNS:
        have = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
        if column not in have:
          db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
      if version < 1:
        self._review_out_of_payloads(db)
      if version < 2:
        self._post_ids_from_plans(db)
      for statement in _statements(_INDEXES):
        db.execute(statement)
      if version != SCHEMA_VERSION:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

  def _review_out_of_payloads(self, db: sqlite3.Connection) -> None:
    """Unstamped files: older versions kept review decisions in the
    payload, and left an accepted draft in `review` if they crashed before
    planning it: back to `drafted`, where the next pass reads the
    operator's tag again."""
    rows = db.execute("SELECT key, status, payload FROM jobs WHERE "
                      "payload LIKE '%\"review\"%'").fetchall()
    for key, status, payload in rows:
      try:
        payload = json.loads(payload)
      except ValueError as e:
        raise self._bad_row("jobs", key,
                            f"its payload is not JSON ({e})") from None
      if not isinstance(payload, dict):
        raise self._bad_row("jobs", key, "its payload is not a JSON object")
      review = payload.pop("review", None)
      rejected = [payload.pop("rejected")] if payload.get("rejected") else []
      if status == "review" and review == "accept":
        status = "drafted"
      db.execute("UPDATE jobs SET status = ?, payload = ?, rejected = ? "
                 "WHERE key = ?", (status, json.dumps(payload),
                                   json.dumps(rejected), key))

  def _post_ids_from_plans(self, db: sqlite3.Connection) -> None:
    """Files before the id map: an answer or edit whose post came back
    with another id than the one it changed (a published draft or ask on
    real Tumblr) gives the map its first entries."""
    rows = db.execute("SELECT key, plan, post_id, updated FROM jobs WHERE "
                      "plan IS NOT NULL AND post_id IS NOT NULL").fetchall()
    for key, plan, post_id, updated in rows:
      try:
        plan = json.loads(plan)
      except ValueError as e:
        raise self._bad_row("jobs", key,
                            f"its plan is not JSON ({e})") from None
      if not isinstance(plan, dict):
        raise self._bad_row("jobs", key, "its plan is not a JSON object")
      genesis = plan.get("post_id")
      if (plan.get("action") in ("answer", "edit") and genesis
          and str(genesis) != str(post_id)):
        db.execute("INSERT OR IGNORE INTO post_ids (genesis, current, t) "
                   "VALUES (?, ?, ?)", (str(genesis), str(post_id), updated))

  def _bad_row(self, table: str, row_id: str, what: str) -> UserError:
    return UserError(f"state: {self.path} cannot be brought up to date: "
                     f"table {table}, row {row_id!r}: {what}; the file is "
                     f"left as it was")

  def close(self):
    self.unlock()
    self._close_db()

  @contextlib.contextmanager
  def _tx(self) -> Iterator[sqlite3.Connection]:
    self._db.execute("BEGIN IMMEDIATE")
    try:
      yield self._db
    except BaseException:
      self._db.execute("ROLLBACK")
      raise
    self._db.execute("COMMIT")

  # -- one bot per state file ------------------------------------------------

  def lock(self) -> None:
    """Takes an exclusive lock so two bots never work the same state."""
    held = self._take_locks()
    if held:
      raise UserError(f"state: another bot is running on {self.path} "
                      f"(lock {held} is held)")

  def try_lock(self) -> bool:
    """The lock if it is free now (True), else False."""
    return not self._take_locks()

  def _lock_paths(self) -> list:
    """The lock files of this state file, keyed by what the file is, not
    by how it was named: `REAL.lock` beside its real path (a symlink, a
    relative path or another mount of its directory lead to the same one),
    and one beside it named by its inode (a hard link in the directory)."""
    real = os.path.realpath(self.path)
    inode = os.stat(real).st_ino
    return [real + ".lock",
            os.path.join(os.path.dirname(real), f".state-inode-{inode}.lock")]

  def _take_locks(self) -> str:
    """Takes every lock of the file ("") or none (the one that is held)."""
    taken = []
    for path in self._lock_paths():
      f = open(path, "w")
      try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        f.close()
        _release(taken)
        return path
      taken.append(f)
    self._lock_files += taken
    return ""

  def unlock(self) -> None:
    _release(self._lock_files)
    self._lock_files = []

  # -- jobs ------------------------------------------------------------------

  def record_job(self, key: str, kind: str, payload: dict,
                 user: Optional[str] = None) -> bool:
    """Records a job before any work on it; False if it was already known."""
    now = self._clock()
    with self._tx() as db:
      cur = db.execute(
          "INSERT OR IGNORE INTO jobs (key, kind, status, user, payload, "
          "created, updated) VALUES (?, ?, 'seen', ?, ?, ?, ?)",
          (key, kind, user, json.dumps(payload), now, now))
      return cur.rowcount == 1

  def job(self, key: str) -> Optional[Job]:
    row = self._db.execute("SELECT * FROM jobs WHERE key = ?",
                           (key,)).fetchone()
    return _job(row) if row else None

  def jobs(self, statuses: Sequence[str] = PENDING,
           kind: Optional[str] = None) -> list:
    """Jobs in the given statuses, oldest first."""
    marks = ",".join("?" * len(statuses))
    sql = f"SELECT * FROM jobs WHERE status IN ({marks})"
    args = list(statuses)
    if kind is not None:
      sql += " AND kind = ?"
      args.append(kind)
    rows = self._db.execute(sql + " ORDER BY created, key", args).fetchall()
    return [_job(r) for r in rows]

  def count_jobs(self, statuses=None, kind: Optional[str] = None) -> int:
    sql, args = "SELECT COUNT(*) FROM jobs WHERE 1", []
    if statuses is not None:
      sql += f" AND status IN ({','.join('?' * len(statuses))})"
      args += list(statuses)
    if kind is not None:
      sql += " AND kind = ?"
      args.append(kind)
    return self._db.execute(sql, args).fetchone()[0]

  def post_owner(self, post_id: str) -> Optional[str]:
    """The job whose post `post_id` is, if the bot recorded it as its own."""
    row = self._db.execute("SELECT key FROM jobs WHERE post_id = ?",
                           (str(post_id),)).fetchone()
    return row[0] if row else None

  def _set(self, key: str, expect: tuple, sets: str = "", args=(),
           _kept=(None, None), **fields) -> None:
    """Moves one job from one of the `expect` statuses, setting `fields`
    (and the SQL assignments `sets` with their `args`); raises if the job is
    not in one of them, so a transition never silently does nothing.
    `_kept` = (kept candidate id, job key) marks that candidate used by the
    job in the same transaction."""
    fields["updated"] = self._clock()
    assignments = [f"{k} = ?" for k in fields] + ([sets] if sets else [])
    marks = ",".join("?" * len(expect))
    with self._tx() as db:
      cur = db.execute(
          f"UPDATE jobs SET {', '.join(assignments)} WHERE key = ? AND "
          f"status IN ({marks})",
          [*fields.values(), *args, key, *expect])
      if cur.rowcount != 1:
        row = db.execute("SELECT status FROM jobs WHERE key = ?",
                         (key,)).fetchone()
        raise RuntimeError(f"job {key}: cannot move from "
                           f"{row[0] if row else 'nowhere'} (wanted one of "
                           f"{expect})")
      kept_id, user = _kept
      if kept_id is not None and db.execute(
          "UPDATE kept SET used_by = ? WHERE id = ? AND used_by IS NULL",
          (user, kept_id)).rowcount != 1:
        raise RuntimeError(f"job {key}: kept candidate {kept_id} is used")

  def save_plan(self, key: str, plan: Plan,
                kept_id: Optional[int] = None) -> None:
    """Stores what the bot will post; from here a restart reuses the plan.
    With `kept_id`, the plan posts that kept candidate, which is marked
    used in the same transaction (a kept candidate is posted once)."""
    self._set(key, ("seen", "chosen", "review", "dry_run"), status="chosen",
              plan=json.dumps(plan.to_dict()), _kept=(kept_id, key))

  def mark_dry_run(self, key: str) -> None:
    """A dry run planned this job; a live pass will do it for real."""
    self._set(key, ("chosen",), status="dry_run")

  def mark_sending(self, key: str) -> None:
    """Committed right before the write request: a crash now means 'reconcile'."""
    self._set(key, ("chosen", "sending"), "attempts = attempts + 1",
              status="sending")

  def refused(self, key: str) -> None:
    """The API refused the write for a reason that is not the job's (the
    day's post cap): nothing was posted, so the job goes back to its plan
    and the attempt is not counted (days of refusals never give it up)."""
    self._set(key, ("sending",), "attempts = attempts - 1", status="chosen")

  def finish(self, key: str, post_id: Optional[str], status: str = "done",
             counts_as_post: bool = True, post_state: str = "published",
             note: Optional[str] = None, expect: tuple = ("sending",),
             genesis: Optional[str] = None) -> None:
    """After the API confirmed: done (or drafted), and counted for the cap.
    `genesis`: the id the post had before (an ask or draft the job
    published), mapped to `post_id` in the same transaction."""
    if status not in ("done", "drafted"):
      raise ValueError(status)
    now = self._clock()
    with self._tx() as db:
      marks = ",".join("?" * len(expect))
      cur = db.execute(
          "UPDATE jobs SET status = ?, post_id = ?, note = ?, updated = ? "
          f"WHERE key = ? AND status IN ({marks})",
          (status, post_id, note, now, key, *expect))
      if cur.rowcount != 1:
        raise RuntimeError(f"job {key}: finish without sending")
      if genesis and post_id and str(genesis) != str(post_id):
        _map_post_id(db, genesis, post_id, now)
      if counts_as_post:
        db.execute("INSERT INTO posts_made (t, job_key, state, post_id) "
                   "VALUES (?, ?, ?, ?)", (now, key, post_state, post_id))

  def skip(self, key: str, note: str) -> None:
    """Nothing will be posted for this job (and it is not retried).

    A `sending` job is skipped only after reconciliation found that its post
    did not land (it failed too often).
    """
    self._set(key, ("seen", "chosen", "sending", "review", "dry_run"),
              status="skipped", note=note)

  def job_error(self, key: str, error: str, max_errors: int) -> tuple:
    """Counts an unexpected error in the handling of a job with work left:
    `error` (one line) becomes its note and it stays where it was, for the
    next pass, until it has failed `max_errors` times: then it is parked
    and never worked again. Returns (its status now, its errors), or
    (None, 0) if it had no work left (the error came after it was done)."""
    with self._tx() as db:
      row = db.execute("SELECT status, errors FROM jobs WHERE key = ?",
                       (key,)).fetchone()
      if row is None or row[0] not in PENDING + ("dry_run",):
        return None, 0
      status, errors = row[0], row[1] + 1
      if errors >= max_errors:
        # Parked is never sent again, so never posted twice; but a post
        # being sent may have landed before the error: the operator looks.
        if status == "sending":
          error += " (parked while sending: the post may have landed)"
        status = "parked"
      db.execute("UPDATE jobs SET status = ?, errors = ?, note = ?, "
                 "updated = ? WHERE key = ?",
                 (status, errors, error, self._clock(), key))
      return status, errors

  # -- the operator's review of drafts ---------------------------------------

  def accept_review(self, key: str, plan: Plan) -> None:
    """The operator accepted a draft: planned in the same transaction, so a
    crash leaves the job either drafted (the tag is read again) or chosen."""
    self._set(key, ("drafted",), status="chosen",
              plan=json.dumps(plan.to_dict()))

  def retry_review(self, key: str, rejected_text: str) -> None:
    """The operator asked for new candidates: back to work (`review`),
    keeping the draft's id so the new answer replaces it in place."""
    job = self.job(key)
    rejected = list(job.rejected) + ([rejected_text] if rejected_text else [])
    self._set(key, ("drafted",), "retries = retries + 1", status="review",
              plan=None, rejected=json.dumps(rejected))

  def draft_deleted(self, key: str) -> None:
    """The operator deleted the draft: nothing will be posted."""
    self._set(key, ("drafted",), status="skipped",
              note="the operator deleted the draft")

  def draft_published(self, key: str, post_id: str) -> None:
    """The operator published the draft on Tumblr themselves (`post_id`:
    its id now, which publishing may have changed)."""
    self.finish(key, post_id, note="published by the operator",
                expect=("drafted",), genesis=self.job(key).post_id)

  # -- post ids that publishing changed --------------------------------------

  def map_post_id(self, genesis: str, current: str) -> None:
    """The post whose id was `genesis` (an ask, a draft, a queued post) is
    `current` now: Tumblr gives a post a new id when it is published."""
    with self._tx() as db:
      _map_post_id(db, genesis, current, self._clock())

  def current_post_id(self, genesis: str) -> Optional[str]:
    """The id the post first known as `genesis` has now, if it changed."""
    row = self._db.execute("SELECT current FROM post_ids WHERE genesis = ?",
                           (str(genesis),)).fetchone()
    return row[0] if row else None

  def last_answered(self, user: str, kinds: Sequence[str]) -> Optional[float]:
    """When the bot last finished a job of `kinds` for `user`."""
    marks = ",".join("?" * len(kinds))
    return self._db.execute(
        f"SELECT MAX(updated) FROM jobs WHERE user = ? AND status = 'done' "
        f"AND kind IN ({marks})", (user, *kinds)).fetchone()[0]

  # -- blogs that blocked the bot ------------------------------------------------

  def mark_blocked(self, blog: str) -> None:
    with self._tx() as db:
      db.execute("INSERT OR IGNORE INTO blocked_by (blog, t) VALUES (?, ?)",
                 (blog, self._clock()))

  def is_blocked(self, blog: str) -> bool:
    return self._db.execute("SELECT 1 FROM blocked_by WHERE blog = ?",
                            (blog,)).fetchone() is not None

  # -- what the bot wrote, and the operator's decisions ------------------------------

  def record_written(self, job_key: str, entry: dict) -> None:
    """A decision of the bot's (its trace entry: every candidate, the
    scores, the pick and why), for the console's review and history."""
    with self._tx() as db:
      db.execute("INSERT INTO written (job_key, t, entry) VALUES (?, ?, ?)",
                 (job_key, float(entry.get("t", self._clock())),
                  json.dumps(entry, default=_plain)))

  def last_written(self, job_key: str) -> Optional[dict]:
    row = self._db.execute("SELECT entry FROM written WHERE job_key = ? "
                           "ORDER BY id DESC LIMIT 1", (job_key,)).fetchone()
    return json.loads(row[0]) if row else None

  def history(self, search: str = "", limit: int = 50,
              statuses=("done", "dry_run", "drafted")) -> list:
    """Jobs the bot posted (or would have, or drafted), newest first, with
    their last written entry; `search` matches user, input or text."""
    marks = ",".join("?" * len(statuses))
    sql = (f"SELECT j.key FROM jobs j JOIN written w ON w.job_key = j.key "
           f"WHERE j.status IN ({marks})")
    args = list(statuses)
    if search:
      sql += (" AND (j.user LIKE ? OR w.entry LIKE ? OR j.plan LIKE ?)")
      args += [f"%{search}%"] * 3
    sql += " GROUP BY j.key ORDER BY MAX(w.t) DESC, MAX(w.id) DESC LIMIT ?"
    keys = [r[0] for r in self._db.execute(sql, args + [limit]).fetchall()]
    return [(self.job(k), self.last_written(k)) for k in keys]

  def add_decision(self, job_key: str, action: str, text: str = "",
                   source: str = "console") -> int:
    """An operator's decision on a parked job, to be carried out by the
    next pass (or the console at once); returns its id."""
    if action not in ("accept", "retry", "reject"):
      raise ValueError(action)
    with self._tx() as db:
      cur = db.execute("INSERT INTO decisions (job_key, action, text, t, "
                       "source) VALUES (?, ?, ?, ?, ?)",
                       (job_key, action, text, self._clock(), source))
      return cur.lastrowid

  def pending_decisions(self) -> list:
    return [dict(r) for r in self._db.execute(
        "SELECT * FROM decisions WHERE done = 0 ORDER BY id").fetchall()]

  def decision_done(self, decision_id: int) -> None:
    with self._tx() as db:
      db.execute("UPDATE decisions SET done = 1 WHERE id = ?", (decision_id,))

  def add_review_example(self, job_key: str, prompt: str, text: str,
                         decision: str, source: str) -> None:
    """A labelled example for the autoreviewer (DECISION_LABELS)."""
    with self._tx() as db:
      db.execute("INSERT INTO review_examples (job_key, prompt, text, label, "
                 "decision, source, t) VALUES (?, ?, ?, ?, ?, ?, ?)",
                 (job_key, prompt, text, DECISION_LABELS[decision], decision,
                  source, self._clock()))

  def review_examples(self) -> list:
    return [dict(r) for r in self._db.execute(
        "SELECT * FROM review_examples ORDER BY id").fetchall()]

  # -- kept candidates (retention) ----------------------------------------------

  def keep(self, job_key: str, candidates: Sequence[dict]) -> None:
    """Keeps losing candidates (as dicts, with their `selector`) for later
    original posts."""
    with self._tx() as db:
      for c in candidates:
        db.execute("INSERT INTO kept (t, job_key, candidate, selector) "
                   "VALUES (?, ?, ?, ?)",
                   (self._clock(), job_key, json.dumps(c, default=_plain),
                    float(c["selector"])))

  def kept(self, since: float) -> list:
    """[(id, candidate dict)] unused and kept since `since`, best first."""
    rows = self._db.execute(
        "SELECT id, candidate FROM kept WHERE used_by IS NULL AND t >= ? "
        "ORDER BY selector DESC, id", (since,)).fetchall()
    return [(r[0], json.loads(r[1])) for r in rows]

  # -- posts made (the daily cap) ----------------------------------------------

  def posts_since(self, t: float) -> int:
    return self._db.execute(
        "SELECT COUNT(*) FROM posts_made WHERE t >= ? AND state != 'draft'",
        (t,)).fetchone()[0]

  def last_post_time(self) -> Optional[float]:
    return self._db.execute(
        "SELECT MAX(t) FROM posts_made WHERE state != 'draft'").fetchone()[0]

  # -- mood --------------------------------------------------------------------

  def save_mood(self, t: float, x1: float, x2: float, mood: float) -> None:
    """Saves a live pass's mood state (dry runs save none)."""
    with self._tx() as db:
      db.execute("INSERT OR REPLACE INTO mood_states (t, x1, x2, mood) "
                 "VALUES (?, ?, ?, ?)", (t, x1, x2, mood))

  def last_mood(self) -> Optional[sqlite3.Row]:
    return self._db.execute(
        "SELECT * FROM mood_states ORDER BY t DESC LIMIT 1").fetchone()

  def mood_history(self, since: float) -> list:
    return self._db.execute(
        "SELECT * FROM mood_states WHERE t >= ? ORDER BY t",
        (since,)).fetchall()

  def add_mood_event(self, t: float, u: float, hours: float, source: str,
                     sentiment: Optional[float], job_key: Optional[str],
                     dry_run: bool = False) -> bool:
    """Records a mood event (False if it was known); a job moves the mood
    once per source and mode (a job redone after a crash does not count
    twice, and a dry run's event does not stand in for the live pass's)."""
    with self._tx() as db:
      if job_key is not None and db.execute(
          "SELECT 1 FROM mood_events WHERE job_key = ? AND source = ? AND "
          "dry_run = ?", (job_key, source, int(dry_run))).fetchone():
        return False
      db.execute("INSERT INTO mood_events (t, u, hours, source, sentiment, "
                 "job_key, dry_run) VALUES (?, ?, ?, ?, ?, ?, ?)",
                 (t, u, hours, source, sentiment, job_key, int(dry_run)))
      return True

  def mood_events(self, since: float, dry_run: bool = False) -> list:
    """Kicks at or after `since` (and held forcings still on): the live
    ones, and with `dry_run` also those of dry runs."""
    sql = "SELECT * FROM mood_events WHERE t + hours * 3600 >= ?"
    if not dry_run:
      sql += " AND dry_run = 0"
    return self._db.execute(sql + " ORDER BY t, id", (since,)).fetchall()

  # -- cursors and small values --------------------------------------------------

  def get_meta(self, key: str, default: Any = None) -> Any:
    row = self._db.execute("SELECT value FROM meta WHERE key = ?",
                           (key,)).fetchone()
    return json.loads(row[0]) if row else default

  def set_meta(self, key: str, value: Any) -> None:
    with self._tx() as db:
      db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                 (key, json.dumps(value)))


SQLITE_HEADER = b"SQLite format 3\x00"


def is_sqlite(path: str) -> bool:
  """Whether `path` is a local SQLite file (by its first 16 bytes)."""
  try:
    with open(path, "rb") as f:
      return f.read(len(SQLITE_HEADER)) == SQLITE_HEADER
  except OSError:
    return False


def read_review_examples(path: str) -> list:
  """The operator's decisions in a state file, oldest first, read without
  writing to it (a bot may be running on it): dicts with prompt, text,
  label, decision, source."""
  return read_only_rows(path, "SELECT * FROM review_examples ORDER BY id",
                        "review decisions")


def read_only_rows(path: str, query: str, what: str) -> list:
  """The rows of `query` on a state file opened read-only (a bot may be
  running on it), as dicts; a missing file, or one that is not the bot's
  state, is a UserError naming `what` was looked for."""
  if not os.path.isfile(path):
    raise UserError(f"state file {path} does not exist")
  try:
    db = sqlite3.connect(f"file:{os.path.abspath(path)}?mode=ro", uri=True,
                         timeout=30)
  except sqlite3.Error as e:
    raise UserError(f"state: cannot open {path} ({e})") from None
  db.row_factory = sqlite3.Row
  try:
    return [dict(r) for r in db.execute(query).fetchall()]
  except sqlite3.OperationalError as e:
    raise UserError(f"{path} is not the bot's state: it has no {what} "
                    f"table ({e})") from None
  except sqlite3.DatabaseError as e:
    raise UserError(f"state: {path} is not a usable SQLite file ({e})"
                    ) from None
  finally:
    db.close()


def _map_post_id(db: sqlite3.Connection, genesis: str, current: str,
                 t: float) -> None:
  db.execute("INSERT OR REPLACE INTO post_ids (genesis, current, t) VALUES "
             "(?, ?, ?)", (str(genesis), str(current), t))


def _release(lock_files: list) -> None:
  for f in reversed(lock_files):
    fcntl.flock(f, fcntl.LOCK_UN)
    f.close()


def _statements(script: str) -> list:
  """The statements of an SQL script (none of ours has a `;` in a string)."""
  return [s.strip() for s in script.split(";") if s.strip()]


def _job(row: sqlite3.Row) -> Job:
  d = dict(row)
  return Job(key=d["key"], kind=d["kind"], status=d["status"],
             user=d["user"], payload=json.loads(d["payload"]),
             plan=Plan.from_dict(json.loads(d["plan"])) if d["plan"] else None,
             post_id=d["post_id"], attempts=d["attempts"], note=d["note"],
             created=d["created"], updated=d["updated"],
             rejected=tuple(json.loads(d["rejected"] or "[]")),
             retries=d["retries"], errors=d["errors"])


class Trace:
  """Appends one JSON object per line; each line is flushed to disk."""

  def __init__(self, path: str):
    self.path = path

  def write(self, record: dict) -> None:
    line = json.dumps(record, ensure_ascii=False, default=_plain)
    with open(self.path, "a", encoding="utf-8") as f:
      f.write(line + "\n")
      f.flush()
      os.fsync(f.fileno())

  def read(self) -> list:
    if not os.path.exists(self.path):
      return []
    with open(self.path, encoding="utf-8") as f:
      return [json.loads(line) for line in f if line.strip()]


def _plain(x):
  """JSON for numpy scalars and arrays that reach the trace."""
  if hasattr(x, "tolist"):
    return x.tolist()
  raise TypeError(f"not JSON serializable: {type(x).__name__}")
