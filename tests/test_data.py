"""Corpus preparation, token shards and the window sampler (gpt2/data.py)."""

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from gpt2 import data
from gpt2.errors import UserError
from gpt2.tokenizer import EOT, Tokenizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORDS = ("the cat sat on a mat while an old dog slept by the fire and the "
         "rain fell over the town all night long").split()


def _doc(i: int) -> str:
  rng = np.random.default_rng(i)
  return f"Document {i}. " + " ".join(rng.choice(WORDS, 40)) + "\n"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """A folder: a text file of EOT-separated documents, a JSONL file, a file
  with bytes that are not UTF-8, and a hidden file and a .pyc that must be
  skipped."""
  root = tmp_path_factory.mktemp("corpus")
  docs = [_doc(i) for i in range(60)]
  (root / "a.txt").write_text(EOT.join(docs[:20]), encoding="utf-8")
  with open(root / "b.jsonl", "w", encoding="utf-8") as f:
    for d in docs[20:59]:
      f.write(json.dumps({"text": d, "id": 1}) + "\n")
    f.write("\n")
  (root / "c.md").write_bytes(docs[59].encode() + b"caf\xe9 \xff\xfe end\n")
  (root / ".hidden.txt").write_text("never read", encoding="utf-8")
  (root / "__pycache__").mkdir()
  (root / "__pycache__" / "x.pyc").write_bytes(b"\x00\xff not a document")
  expected = docs[:59] + [docs[59] + "caf\ufffd \ufffd\ufffd end\n"]
  return root, expected


def test_decode_counting_replaces_and_counts_invalid_bytes():
  text, bad = data.decode_counting("héllo".encode() + b"\xff\xfe!" + b"\xc3")
  assert text == "héllo\ufffd\ufffd!\ufffd"
  assert bad == 3
  assert data.decode_counting(b"plain") == ("plain", 0)


def test_documents_of_a_folder(corpus):
  root, expected = corpus
  stats = data.ReadStats()
  docs = list(data.iter_documents(str(root), stats))
  assert docs == expected
  assert stats.files == 3
  assert stats.invalid_utf8_bytes == 3
  assert stats.files_with_invalid_utf8 == 1


def test_prepare_splits_by_document(corpus, tmp_path, caplog):
  root, expected = corpus
  tok = Tokenizer.train(expected, 300)
  with caplog.at_level(logging.WARNING):
    meta = data.prepare(str(root), str(tmp_path / "out"), tokenizer=tok,
                        val_fraction=0.3, shard_tokens=97, progress=False)
  assert "replaced 3 bytes that are not UTF-8" in caplog.text
  assert meta["invalid_utf8_bytes"] == 3
  assert meta["dtype"] == "uint16" and meta["eot_id"] == tok.eot_id
  want = {"train": [d for d in expected if not data.is_validation(d, 0.3)],
          "val": [d for d in expected if data.is_validation(d, 0.3)]}
  assert want["train"] and want["val"]
  for split, docs in want.items():
    assert meta[split]["documents"] == len(docs)
    stream = data.TokenStream.open(str(tmp_path / "out"), split)
    assert len(stream) == meta[split]["tokens"]
    # Whole documents, in corpus order, each followed by <|endoftext|>.
    text = tok.decode(stream.read(0, len(stream)))
    assert text == "".join(d + EOT for d in docs)
  assert len(meta["train"]["shards"]) > 3  # 97-token shards
  assert data.is_prepared(str(tmp_path / "out"))
  assert Tokenizer.from_dir(str(tmp_path / "out")).vocab_size == tok.vocab_size

  # Deterministic: the same corpus gives the same bytes.
  data.prepare(str(root), str(tmp_path / "again"), tokenizer=tok,
               val_fraction=0.3, shard_tokens=97, progress=False)
  for name in meta["train"]["shards"] + meta["val"]["shards"]:
    assert (tmp_path / "out" / name).read_bytes() == (
        tmp_path / "again" / name).read_bytes()


def test_token_stream_reads_across_shards():
  arrays = [np.arange(0, 5, dtype=np.uint16), np.arange(5, 7, dtype=np.uint16),
            np.arange(7, 20, dtype=np.uint16)]
  stream = data.TokenStream(arrays, "test")
  assert len(stream) == 20
  for start in range(0, 15):
    np.testing.assert_array_equal(stream.read(start, 6),
                                  np.arange(start, start + 6))
  np.testing.assert_array_equal(
      stream.windows(np.array([[0, 4], [9, 14]]), 3),
      [[[0, 1, 2], [4, 5, 6]], [[9, 10, 11], [14, 15, 16]]])


def test_window_sampler_epochs_and_resume():
  n_tokens, window = 1000, 64
  sampler = data.WindowSampler(n_tokens, window, seed=5)
  offsets = []
  for epoch in range(3):
    offset, order = sampler._plan(epoch)  # pylint: disable=protected-access
    offsets.append(offset)
    count = (n_tokens - offset) // window
    starts = sampler.next_starts(count)
    # One epoch: every window once, none overlapping, inside the stream.
    assert sorted(starts) == [offset + window * i for i in range(count)]
    assert starts.max() + window <= n_tokens
    assert sampler.epoch == epoch + 1 and sampler.index == 0
    assert not np.array_equal(order, np.arange(count))
  assert len(set(offsets)) > 1  # a fresh offset each epoch

  # The state is small and restores the exact stream of windows.
  a = data.WindowSampler(n_tokens, window, seed=7)
  a.next_starts(37)
  state = json.loads(json.dumps(a.state()))
  b = data.WindowSampler(n_tokens, window, seed=7)
  b.restore(state)
  np.testing.assert_array_equal(a.next_starts(50), b.next_starts(50))

  with pytest.raises(UserError, match="n_tokens"):
    data.WindowSampler(n_tokens + 1, window, seed=7).restore(state)
  with pytest.raises(UserError, match="fewer than one window"):
    data.WindowSampler(63, window, seed=7)


def test_corpus_errors(tmp_path):
  (tmp_path / "empty").mkdir()
  with pytest.raises(UserError, match="holds no .txt, .text, .md"):
    data.prepare(str(tmp_path / "empty"), str(tmp_path / "o1"), vocab_size=300)
  (tmp_path / "blank").mkdir()
  (tmp_path / "blank" / "x.txt").write_text("  \n" + EOT + "\n")
  with pytest.raises(UserError, match="holds no text"):
    data.prepare(str(tmp_path / "blank"), str(tmp_path / "o2"), vocab_size=300)
  with pytest.raises(UserError, match="does not exist"):
    data.prepare(str(tmp_path / "nope"), str(tmp_path / "o3"), vocab_size=300)
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"text": "fine"}\n{"body": "no text field"}\n')
  with pytest.raises(UserError, match=r"bad.jsonl:2 has no string field"):
    list(data.iter_documents(str(bad)))
  bad.write_text('{"text": "fine"}\n{not json\n')
  with pytest.raises(UserError, match=r"bad.jsonl:2 is not valid JSON"):
    list(data.iter_documents(str(bad)))


def test_corpus_smaller_than_a_window(tmp_path):
  from gpt2 import train  # pylint: disable=import-outside-toplevel
  from configs import gpt2_tiny  # pylint: disable=import-outside-toplevel
  corpus = tmp_path / "small.txt"
  corpus.write_text(EOT.join(["a few words", "and a few more", "the end"]))
  config = gpt2_tiny.get_config()
  config.data = str(corpus)
  config.tokenizer_vocab_size = 300
  config.progress = False
  with pytest.raises(UserError, match=r"the train split of .* fewer than one "
                     r"window of 128"):
    train.train_and_evaluate(config, str(tmp_path / "work"))


def test_prepare_data_cli(corpus, tmp_path):
  root, expected = corpus
  out = tmp_path / "cli"
  proc = subprocess.run(
      [sys.executable, "-m", "launch.prepare_data", f"--input={root}",
       f"--output={out}", "--vocab_size=300", "--val_fraction=0.3"],
      cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr
  summary = json.loads(proc.stdout.strip().splitlines()[-1])
  assert summary["train_documents"] + summary["val_documents"] == len(expected)
  assert summary["invalid_utf8_bytes"] == 3
  assert data.read_meta(str(out))["vocab_size"] == summary["vocab_size"]

  proc = subprocess.run(
      [sys.executable, "-m", "launch.prepare_data", f"--input={tmp_path}/nope",
       f"--output={out}"],
      cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1] == (
      f"error: corpus {tmp_path}/nope does not exist")


# ---- loss weights ------------------------------------------------------------

OWN = "sure, see you there"
ASKED = ("did you finish the kettle poem? I have been waiting all week and the "
         "steam is rising")
SPANNED = f"#1 bob posted:\n\n{ASKED}\n\n#2 me commented:\n\n{OWN}"
OTHERS_LAST = f"#1 me posted:\n\n{OWN}\n\n#2 bob commented:\n\n{ASKED}"


def _prepare_jsonl(tmp_path, name, records, out, **kwargs):
  path = tmp_path / f"{name}.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in records))
  return data.prepare(str(path), out, tokenizer=Tokenizer.gpt2(),
                      val_fraction=0.0, progress=False, **kwargs)


def test_weight_shards_mark_the_owners_tokens_and_keep_the_tokens(tmp_path):
  tok = Tokenizer.gpt2()
  plain = {"text": "a post that is all mine, no spans at all"}
  records = [plain,  # before any span: its shards get weights afterwards
             {"text": SPANNED, "own_spans": [[len(SPANNED) - len(OWN),
                                              len(SPANNED)]]},
             {"text": OTHERS_LAST, "own_spans": [[len("#1 me posted:\n\n"),
                                                  len("#1 me posted:\n\n")
                                                  + len(OWN)]]}]
  # 7-token shards: the weight shards are cut where the token shards are.
  meta = _prepare_jsonl(tmp_path, "spans", records, str(tmp_path / "w"),
                        shard_tokens=7)
  bare = _prepare_jsonl(tmp_path, "bare", [{"text": r["text"]}
                                           for r in records],
                        str(tmp_path / "b"), shard_tokens=7)
  assert meta["weights"] is True and "weights" not in bare
  assert meta["train"]["weight_shards"][0] == "train-00000.weights.bin"
  for shard in bare["train"]["shards"]:  # spans never change the tokens
    assert (tmp_path / "w" / shard).read_bytes() == (
        tmp_path / "b" / shard).read_bytes()
  assert not list((tmp_path / "b").glob("*.weights.bin"))

  stream = data.TokenStream.open(str(tmp_path / "w"), "train")
  assert stream.weighted and not data.TokenStream.open(
      str(tmp_path / "b"), "train").weighted
  tokens = stream.read(0, len(stream))
  weights = stream.weight_windows(np.array([0]), len(stream))[0]
  docs = np.split(np.arange(len(tokens)),
                  np.flatnonzero(tokens == tok.eot_id)[:-1] + 1)
  token_docs = [tokens[d] for d in docs]
  weight_docs = [weights[d] for d in docs]
  # No spans: every token, and its end-of-text, counts.
  assert weight_docs[0].tolist() == [1] * len(token_docs[0])
  # The owner's last turn: its words and the end-of-text, nothing else.
  assert tok.decode(token_docs[1][weight_docs[1] == 1]) == OWN + EOT
  assert tok.decode(token_docs[1][weight_docs[1] == 0]) == SPANNED[
      :-len(OWN)]
  # Someone else's turn last: the owner's words count, the end does not.
  assert tok.decode(token_docs[2][weight_docs[2] == 1]) == OWN
  assert weight_docs[2][-1] == 0 and token_docs[2][-1] == tok.eot_id
  assert meta["train"]["own_tokens"] == int(weights.sum())


def test_weight_shards_on_a_remote_filesystem(tmp_path):
  # memory:// is read the way gs:// is (not memory-mapped).
  records = [{"text": SPANNED, "own_spans": [[len(SPANNED) - len(OWN),
                                              len(SPANNED)]]}]
  _prepare_jsonl(tmp_path, "one", records, str(tmp_path / "local"))
  _prepare_jsonl(tmp_path, "one", records, "memory://weights/remote")
  local = data.TokenStream.open(str(tmp_path / "local"), "train")
  remote = data.TokenStream.open("memory://weights/remote", "train")
  end = len(local) - 6  # the owner's words are the document's last
  starts = np.array([[0, 3], [end - 4, end]])
  np.testing.assert_array_equal(remote.windows(starts, 6),
                                local.windows(starts, 6))
  np.testing.assert_array_equal(remote.weight_windows(starts, 6),
                                local.weight_windows(starts, 6))
  assert remote.weight_windows(starts, 6).sum() > 0


@pytest.mark.parametrize("spans", [[[0, 999]], [[5, 2]], [[0]], "0-5",
                                   [[0.5, 2]]])
def test_bad_own_spans_are_one_line(tmp_path, spans):
  with pytest.raises(UserError, match=r"bad.jsonl:1 has own_spans that are "
                     r"not \[start, end\] pairs"):
    _prepare_jsonl(tmp_path, "bad", [{"text": "short", "own_spans": spans}],
                   str(tmp_path / "o"))
