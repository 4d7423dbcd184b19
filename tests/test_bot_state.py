"""The state store: job life cycle, durability across reopen, WAL, the lock,
the schema's version and its migrations."""

import hashlib
import json
import os
import sqlite3

import pytest

from bot.records import Parent, Plan
from bot.state import SCHEMA_VERSION, Store, Trace
from gpt2.errors import UserError


def plan(text="hello", **kw):
  return Plan(**{"action": "create", "state": "published", "text": text,
                 "tags": [], "content": [{"type": "text", "text": text}],
                 "layout": [], **kw})


def test_job_life_cycle_survives_reopening(tmp_path):
  path = str(tmp_path / "bot.db")
  store = Store(path)
  assert store.record_job("ask:1", "ask", {"question": "hi?"}, user="alice")
  assert not store.record_job("ask:1", "ask", {"question": "again"})
  assert store.record_job("ask:2", "ask", {"question": "yo"}, user="bob")
  store.save_plan("ask:1", plan("hello"))
  store.mark_sending("ask:1")
  store.close()

  # A new process sees exactly where the first one stopped.
  store = Store(path)
  pending = {j.key: j for j in store.jobs()}
  assert pending["ask:1"].status == "sending"
  assert pending["ask:1"].plan == plan("hello")
  assert pending["ask:1"].attempts == 1
  assert pending["ask:2"].status == "seen"
  assert pending["ask:2"].payload == {"question": "yo"}
  store.finish("ask:1", "1", post_state="published")
  store.skip("ask:2", "nothing survived")
  assert store.jobs() == []
  assert store.job("ask:1").status == "done"
  assert store.job("ask:1").post_id == "1"
  assert store.posts_since(0) == 1
  # done is final: it cannot be planned or finished again.
  with pytest.raises(RuntimeError):
    store.save_plan("ask:1", plan("twice"))
  with pytest.raises(RuntimeError):
    store.finish("ask:1", "1")
  # Sending is only ever marked from chosen (or sending, for a retry).
  with pytest.raises(RuntimeError, match="cannot move from done"):
    store.mark_sending("ask:1")
  with pytest.raises(RuntimeError, match="cannot move from nowhere"):
    store.mark_sending("ask:404")


def drafted(store, key="ask:9", text="a"):
  store.record_job(key, "ask", {"question": "q"})
  store.save_plan(key, plan(text))
  store.mark_sending(key)
  store.finish(key, "9", status="drafted", post_state="draft")


def test_drafts_do_not_count_and_review_moves_them_in_one_step(tmp_path):
  store = Store(str(tmp_path / "bot.db"))
  drafted(store)
  assert store.posts_since(0) == 0
  assert store.jobs() == []
  store.retry_review("ask:9", "a")
  job = store.job("ask:9")
  assert job.status == "review" and job.plan is None
  assert job.payload == {"question": "q"}
  assert job.rejected == ("a",) and job.retries == 1
  assert job.post_id == "9"
  assert [j.key for j in store.jobs()] == ["ask:9"]  # work for the next pass
  # An accepted draft leaves `drafted` already planned: nothing in between.
  drafted(store, "ask:10")
  accept = plan("as the operator left it", action="edit", post_id="9")
  store.accept_review("ask:10", accept)
  job = store.job("ask:10")
  assert job.status == "chosen" and job.plan == accept
  with pytest.raises(RuntimeError):
    store.accept_review("ask:10", accept)  # not drafted any more
  # Gone from the drafts: deleted (skipped) or published by the operator.
  drafted(store, "ask:11")
  drafted(store, "ask:12")
  store.draft_deleted("ask:11")
  store.draft_published("ask:12", "12")
  assert store.job("ask:11").status == "skipped"
  assert store.job("ask:12").status == "done"
  assert store.posts_since(0) == 1
  assert store.post_owner("12") == "ask:12"
  assert store.post_owner("13") is None


def test_plans_round_trip_with_their_parent(tmp_path):
  store = Store(str(tmp_path / "bot.db"))
  store.record_job("reblog:5", "reblog", {})
  reblog = plan("ok", action="reblog", slug="ok-1234abcd",
                parent=Parent(id="5", uuid="t:bob", reblog_key="k", blog="bob"))
  store.save_plan("reblog:5", reblog)
  assert store.job("reblog:5").plan == reblog
  with pytest.raises(ValueError, match="needs its parent"):
    plan("no parent", action="reblog")


def test_dry_run_mood_events_are_kept_apart(tmp_path):
  store = Store(str(tmp_path / "bot.db"))
  store.add_mood_event(10.0, 0.5, 1.0, "user", 0.9, "ask:1", dry_run=True)
  store.add_mood_event(10.0, 0.5, 1.0, "user", 0.9, "ask:1", dry_run=True)
  assert len(store.mood_events(0, dry_run=True)) == 1
  assert store.mood_events(0) == []  # a live pass does not see it ...
  store.add_mood_event(20.0, 0.4, 1.0, "user", 0.8, "ask:1")  # ... nor is
  assert [e["t"] for e in store.mood_events(0)] == [20.0]  # blocked by it
  assert len(store.mood_events(0, dry_run=True)) == 2


OLD_JOBS = """
    CREATE TABLE jobs (key TEXT PRIMARY KEY, kind TEXT NOT NULL,
      status TEXT NOT NULL, user TEXT, payload TEXT NOT NULL, plan TEXT,
      post_id TEXT, attempts INTEGER NOT NULL DEFAULT 0, note TEXT,
      created REAL NOT NULL, updated REAL NOT NULL);"""


def user_version(path):
  db = sqlite3.connect(path)
  try:
    return db.execute("PRAGMA user_version").fetchone()[0]
  finally:
    db.close()


def sha256(path):
  return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_an_older_state_file_is_brought_up_to_date(tmp_path):
  """A state file of the previous version: its columns are added and a
  review decision kept in the payload moves to its place, without losing a
  job (an accepted draft stranded in `review` goes back to `drafted`); the
  file is then stamped with this schema's version."""
  path = str(tmp_path / "old.db")
  db = sqlite3.connect(path)
  db.executescript("""
    CREATE TABLE jobs (key TEXT PRIMARY KEY, kind TEXT NOT NULL,
      status TEXT NOT NULL, user TEXT, payload TEXT NOT NULL, plan TEXT,
      post_id TEXT, attempts INTEGER NOT NULL DEFAULT 0, note TEXT,
      created REAL NOT NULL, updated REAL NOT NULL);
    CREATE TABLE mood_events (id INTEGER PRIMARY KEY AUTOINCREMENT,
      t REAL NOT NULL, u REAL NOT NULL, hours REAL NOT NULL,
      source TEXT NOT NULL, sentiment REAL, job_key TEXT);""")
  rows = [("ask:1", "review", {"post": {}, "review": "accept"}),
          ("ask:2", "review", {"post": {}, "review": "retry",
                               "rejected": "no thanks"}),
          ("ask:3", "seen", {"post": {"id": 3}})]
  for key, status, payload in rows:
    db.execute("INSERT INTO jobs (key, kind, status, payload, post_id, "
               "created, updated) VALUES (?, 'ask', ?, ?, '7', 1, 1)",
               (key, status, json.dumps(payload)))
  db.execute("INSERT INTO mood_events (t, u, hours, source) VALUES "
             "(1, 0.1, 1, 'user')")
  db.commit()
  db.close()
  store = Store(path)
  one, two, three = (store.job(k) for k in ("ask:1", "ask:2", "ask:3"))
  assert (one.status, one.payload) == ("drafted", {"post": {}})
  assert (two.status, two.payload, two.rejected) == (
      "review", {"post": {}}, ("no thanks",))
  assert (three.status, three.payload) == ("seen", {"post": {"id": 3}})
  assert three.errors == 0
  assert len(store.mood_events(0)) == 1
  store.close()
  assert user_version(path) == SCHEMA_VERSION >= 1
  # Stamped, it is not migrated again: a payload that looks like an old
  # review decision now is the job's own.
  db = sqlite3.connect(path)
  db.execute("UPDATE jobs SET payload = ? WHERE key = 'ask:3'",
             (json.dumps({"post": {}, "review": "accept"}),))
  db.commit()
  db.close()
  store = Store(path)
  assert store.job("ask:3").payload == {"post": {}, "review": "accept"}
  store.close()


def test_a_schema_1_file_gains_the_post_id_map_from_its_plans(tmp_path):
  """Schema 2 maps a post's genesis id to its current one (a published ask
  or draft has a new id): a file of schema 1 gets the map, filled from the
  answers whose post came back with another id."""
  path = str(tmp_path / "bot.db")
  store = Store(path)
  for key, genesis, current in (("ask:1", "1", "9"), ("ask:2", "2", "2")):
    store.record_job(key, "ask", {"post": {}})
    store.save_plan(key, Plan(action="answer", state="published", text="hi",
                              tags=[], content=[], layout=[],
                              post_id=genesis))
    store.mark_sending(key)
    store.finish(key, current)
  store.close()
  db = sqlite3.connect(path)
  db.execute("DROP TABLE post_ids")
  db.execute("PRAGMA user_version = 1")
  db.commit()
  db.close()
  store = Store(path)
  assert store.current_post_id("1") == "9"
  assert store.current_post_id("2") is None  # its id did not change
  assert store.job("ask:1").status == "done"
  store.close()
  assert user_version(path) == SCHEMA_VERSION == 2


def test_a_state_file_of_a_newer_version_is_refused_untouched(tmp_path):
  path = str(tmp_path / "bot.db")
  store = Store(path)
  store.record_job("ask:1", "ask", {"question": "hi?"})
  store.close()
  db = sqlite3.connect(path)
  db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
  db.commit()
  db.close()
  before = sha256(path)
  with pytest.raises(UserError) as e:
    Store(path)
  assert str(e.value) == (
      f"state: {path} was written by a newer version (schema "
      f"{SCHEMA_VERSION + 1}, this code reads up to {SCHEMA_VERSION}): "
      f"update this checkout, or name another file (config key `state`)")
  assert sha256(path) == before
  assert user_version(path) == SCHEMA_VERSION + 1


@pytest.mark.parametrize("journal", ["delete", "wal"])
def test_a_row_a_migration_cannot_read_is_one_line_and_no_change(tmp_path,
                                                                 journal):
  """An unstamped file whose job row has a truncated payload: one line
  naming the table and the row, and the file is left byte for byte as it
  was (no table, column, index or stamp added), in either journal mode."""
  path = str(tmp_path / "old.db")
  db = sqlite3.connect(path)
  db.execute(f"PRAGMA journal_mode={journal}")
  db.executescript(OLD_JOBS)
  for key, payload in (("ask:1", json.dumps({"post": {}, "review": "retry"})),
                       ("ask:2", '{"post": {}, "review": "acc')):
    db.execute("INSERT INTO jobs (key, kind, status, payload, created, "
               "updated) VALUES (?, 'ask', 'review', ?, 1, 1)",
               (key, payload))
  db.commit()
  db.close()
  before = sha256(path)
  with pytest.raises(UserError) as e:
    Store(path)
  message = str(e.value)
  assert "\n" not in message
  assert message.startswith(f"state: {path} cannot be brought up to date: "
                            f"table jobs, row 'ask:2': its payload is not "
                            f"JSON (")
  assert message.endswith("; the file is left as it was")
  assert sha256(path) == before
  assert not os.path.exists(path + "-wal") or not os.path.getsize(
      path + "-wal")
  db = sqlite3.connect(path)
  tables = {r[0] for r in db.execute(
      "SELECT name FROM sqlite_master WHERE type = 'table'")}
  assert tables == {"jobs"}
  assert json.loads(db.execute("SELECT payload FROM jobs WHERE key = "
                               "'ask:1'").fetchone()[0])["review"] == "retry"
  db.close()


def test_wal_mode_and_meta(tmp_path):
  path = str(tmp_path / "bot.db")
  store = Store(path)
  store.set_meta("cursor", {"since": 5})
  assert store.get_meta("cursor") == {"since": 5}
  assert store.get_meta("missing", 3) == 3
  mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
  assert mode == "wal"


def test_one_bot_per_state_file(tmp_path):
  path = str(tmp_path / "bot.db")
  first, second = Store(path), Store(path)
  first.lock()
  with pytest.raises(UserError, match="another bot"):
    second.lock()
  first.unlock()
  second.lock()
  second.unlock()


def test_one_bot_per_state_file_however_it_is_named(tmp_path):
  """A symlink to the file, a symlink to its directory and a hard link
  beside it are the same file: refused with the same line while a bot
  holds it, and free again when it lets go."""
  real = tmp_path / "real"
  real.mkdir()
  path = str(real / "bot.db")
  first = Store(path)
  os.symlink(path, tmp_path / "link.db")
  os.symlink(real, tmp_path / "dir")
  os.link(path, real / "hard.db")
  others = [str(tmp_path / "link.db"), str(tmp_path / "dir" / "bot.db"),
            str(real / "hard.db")]
  first.lock()
  for other in others:
    store = Store(other)
    with pytest.raises(UserError) as e:
      store.lock()
    assert str(e.value).startswith(f"state: another bot is running on "
                                   f"{other} (lock ")
    assert not store.try_lock()
    store.close()
  first.unlock()
  for other in others:
    store = Store(other)
    store.lock()
    with pytest.raises(UserError, match="another bot"):
      first.lock()  # and the other way round
    store.close()  # lets go
  first.lock()
  first.close()


def test_bad_paths_are_user_errors(tmp_path):
  with pytest.raises(UserError, match="does not exist"):
    Store(str(tmp_path / "no" / "bot.db"))
  junk = tmp_path / "junk.db"
  junk.write_bytes(b"this is not sqlite" * 100)
  with pytest.raises(UserError, match="junk.db"):
    Store(str(junk))


def test_trace_appends_lines(tmp_path):
  trace = Trace(str(tmp_path / "trace.jsonl"))
  trace.write({"job": "ask:1", "scores": [0.1, 0.2]})
  trace.write({"job": "ask:2"})
  assert [r["job"] for r in trace.read()] == ["ask:1", "ask:2"]
