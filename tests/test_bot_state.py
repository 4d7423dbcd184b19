"""The state store: job life cycle, durability across reopen, WAL, the lock."""

import sqlite3

import pytest

from bot.state import Store, Trace
from gpt2.errors import UserError


def test_job_life_cycle_survives_reopening(tmp_path):
  path = str(tmp_path / "bot.db")
  store = Store(path)
  assert store.record_job("ask:1", "ask", {"question": "hi?"}, user="alice")
  assert not store.record_job("ask:1", "ask", {"question": "again"})
  assert store.record_job("ask:2", "ask", {"question": "yo"}, user="bob")
  store.save_plan("ask:1", {"text": "hello"})
  store.mark_sending("ask:1")
  store.close()

  # A new process sees exactly where the first one stopped.
  store = Store(path)
  pending = {j.key: j for j in store.jobs()}
  assert pending["ask:1"].status == "sending"
  assert pending["ask:1"].plan == {"text": "hello"}
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
    store.save_plan("ask:1", {"text": "twice"})
  with pytest.raises(RuntimeError):
    store.finish("ask:1", "1")


def test_drafts_do_not_count_and_review_reopens(tmp_path):
  store = Store(str(tmp_path / "bot.db"))
  store.record_job("ask:9", "ask", {"question": "q"})
  store.save_plan("ask:9", {"text": "a"})
  store.mark_sending("ask:9")
  store.finish("ask:9", "9", status="drafted", post_state="draft")
  assert store.posts_since(0) == 0
  assert store.jobs() == []
  store.reopen_for_review("ask:9", {"review": "retry"})
  job = store.job("ask:9")
  assert job.status == "review" and job.plan is None
  assert job.payload == {"question": "q", "review": "retry"}
  assert job.post_id == "9"


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
