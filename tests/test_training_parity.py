"""Our training loop against PyTorch step for step (bench.training_parity,
shortened): the tiny preset, 20 steps, from the same weights on the same
windows; every parameter trained, and the embeddings frozen."""

import glob
import os
import shutil

import pytest

from bench import training_parity
from gpt2 import data


@pytest.fixture(scope="module")
def report(tmp_path_factory):
  corpus = tmp_path_factory.mktemp("corpus")
  play = sorted(glob.glob(os.path.join(data.default_corpus(), "comedies",
                                       "*.md")))[0]
  shutil.copy(play, corpus)  # one play: quick to tokenize, 9 epochs' worth
  return training_parity.compare(size="tiny", steps=20, batch=4, seq_len=64,
                                 corpus=str(corpus))


@pytest.mark.slow
def test_losses_match_pytorch_at_every_step(report):
  for run in report["runs"]:
    ours, ref = run["loss_ours"], run["loss_pytorch"]
    assert len(ours) == len(ref) == 20
    print(f"frozen={run['only_train_transformer_layers']}: max rel diff "
          f"{run['max_rel_diff']:.2e}, loss {ours[0]:.3f} -> {ours[-1]:.3f}")
    assert run["max_rel_diff"] < 1e-4
    assert ours[-1] < ours[0] - 0.1  # it trains: the comparison is not moot
  assert report["max_rel_diff_first_50"] == max(
      r["max_rel_diff_first_50"] for r in report["runs"])


@pytest.mark.slow
def test_frozen_embeddings_stay_bit_identical_on_both_sides(report):
  frozen = [r for r in report["runs"] if r["only_train_transformer_layers"]]
  assert len(frozen) == 1
  assert frozen[0]["frozen_identical_ours"]
  assert frozen[0]["frozen_identical_pytorch"]
  # Frozen embeddings train more slowly than all of them: the two runs
  # differ, so each side really did freeze them.
  every = [r for r in report["runs"] if not r["only_train_transformer_layers"]]
  assert frozen[0]["loss_ours"][-1] != every[0]["loss_ours"][-1]
