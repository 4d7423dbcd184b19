"""Shared by the parity tests: a random HF GPT-2 and a padded batch."""

import numpy as np


def random_hf_model(directory, seed=0, **shape):
  """Saves a randomly initialised GPT2LMHeadModel to `directory`; returns it."""
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  eot = shape["vocab_size"] - 1
  config = transformers.GPT2Config(bos_token_id=eot, eos_token_id=eot, **shape)
  torch.manual_seed(seed)
  model = transformers.GPT2LMHeadModel(config).eval()
  model.save_pretrained(directory)
  return model


def random_decoder(config, directory, seed=0, dtype=None, **save):
  """A transformers model of `config` (a Llama, Qwen2, Mistral...) whose
  every parameter (biases and norms too, which transformers initialises to
  0 and 1) is random enough that a wrong one shows in the logits; saved to
  `directory`, and returned."""
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  torch.manual_seed(seed)
  model = transformers.AutoModelForCausalLM.from_config(
      config, attn_implementation="eager").eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      p.normal_(0.0, 0.3)
      if name.endswith("norm.weight"):
        p.add_(1.0)
  if dtype is not None:
    model = model.to(dtype)
  model.save_pretrained(directory, **save)
  return model


def byte_level_bpe(texts, vocab_size: int, special: list):
  """A byte-level BPE (as Llama 3's, Qwen2.5's and SmolLM2's are) with the
  `special` tokens first."""
  # pylint: disable=import-outside-toplevel
  import tokenizers
  from tokenizers import decoders, models, pre_tokenizers, trainers
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.train_from_iterator(texts, trainers.BpeTrainer(
      vocab_size=vocab_size, special_tokens=special, show_progress=False,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  return tok


def write_tokenizer(directory, tok, eos: str) -> None:
  """`tok` as a checkpoint's tokenizer.json, its end-of-text named in
  tokenizer_config.json."""
  import json  # pylint: disable=import-outside-toplevel
  import os  # pylint: disable=import-outside-toplevel
  tok.save(os.path.join(directory, "tokenizer.json"))
  with open(os.path.join(directory, "tokenizer_config.json"), "w",
            encoding="utf-8") as f:
    json.dump({"eos_token": eos, "tokenizer_class": "PreTrainedTokenizerFast"},
              f)


def padded_batch(vocab_size, batch=3, length=12, seed=0):
  """Token ids and a left-padding mask with rows of different lengths."""
  rng = np.random.RandomState(seed)
  ids = rng.randint(0, vocab_size, (batch, length))
  mask = np.ones((batch, length), np.int64)
  for row in range(1, batch):
    mask[row, : rng.randint(1, length // 2 + 1)] = 0
  return ids, mask


def hf_logits(model, ids, mask):
  """HF logits with the same left-padding position ids our model derives."""
  import torch  # pylint: disable=import-outside-toplevel
  positions = np.maximum(mask.cumsum(1) - 1, 0)
  with torch.no_grad():
    out = model(torch.tensor(ids), attention_mask=torch.tensor(mask),
                position_ids=torch.tensor(positions))
  return out.logits.numpy()


def write_hub_cache(cache_dir, repo_id, model_dir,
                    commit="0123456789abcdef0123456789abcdef01234567"):
  """Lays `model_dir`'s files out as the Hugging Face Hub cache holds a
  downloaded model (`models--OWNER--NAME/refs/main` naming a snapshot
  folder), so `HF_HUB_CACHE=cache_dir HF_HUB_OFFLINE=1` finds `repo_id`
  there without the network."""
  import os  # pylint: disable=import-outside-toplevel
  import shutil  # pylint: disable=import-outside-toplevel
  repo = os.path.join(str(cache_dir), "models--" + repo_id.replace("/", "--"))
  snapshot = os.path.join(repo, "snapshots", commit)
  shutil.copytree(str(model_dir), snapshot)
  os.makedirs(os.path.join(repo, "refs"), exist_ok=True)
  with open(os.path.join(repo, "refs", "main"), "w", encoding="utf-8") as f:
    f.write(commit)
  return snapshot
