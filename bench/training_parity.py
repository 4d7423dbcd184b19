r"""Training parity: our training loop against a PyTorch reference, step by step.

  python -m bench.training_parity                 # "small", 200 steps, a table
  python -m bench.training_parity --json          # one JSON object
  python -m bench.training_parity --size tiny --steps 20

Both sides start from the same weights (ours, exported as a Hugging Face
directory that `GPT2LMHeadModel.from_pretrained` reads and `config.init`
reads back) and see the same token windows in the same order, in float32
with dropout off:

- ours: `gpt2.train.train_and_evaluate`, the real loop (its window sampler,
  two accumulated micro-batches a step, Adam, clipping, the original's
  schedule), one loss a step read back from metrics.jsonl;
- PyTorch, written here from the formulas: Hugging Face's `GPT2LMHeadModel`,
  `torch.optim.Adam` with the same betas and eps and no weight decay, the
  schedule as a `LambdaLR`, `clip_grad_norm_(1.0)` over the summed gradient
  of two micro-batches (each loss halved), the windows replayed from a
  `WindowSampler` with the run's seed.

Each run is done twice: training every parameter, and with
`only_train_transformer_layers` (embeddings and final norm frozen: both
sides must leave them bit-identical). The relative difference of a step is
|ours - pytorch| / |pytorch| of the training loss before that step's update.
"""

import json
import math
import os
import tempfile
import time

from absl import app
from absl import flags
from absl import logging

# The runs' settings: the original's optimizer with a short from-scratch
# schedule (warmup, then two cosine periods with m_mul) that fits 200 steps.
SETTINGS = dict(lr=1e-3, warmup=20, period=100, lr_min=1e-5, m_mul=0.5,
                adam_b1=0.9, adam_b2=0.999, adam_eps=1e-8, clip_norm=1.0,
                accumulate=2, seed=5)
VOCAB = 2048  # a BPE trained on the corpus: the softmax stays cheap on a CPU
FIRST = 50  # the stretch where the two must agree to 1e-3


def reference_lr(step: int, lr, warmup, period, lr_min, m_mul, **_) -> float:
  """The original's schedule at update `step` (counted from 1), in float64."""
  if step < warmup:
    value = lr * step / max(warmup, 1)
  else:
    cycles, frac = divmod(step, period)
    value = 0.5 * lr * m_mul**cycles * (1 + math.cos(math.pi * frac / period))
  return max(value, lr_min)


def default_corpus() -> str:
  """The eight comedies: ~1.5 epochs of 200 steps, quick to tokenize."""
  from gpt2 import data  # pylint: disable=import-outside-toplevel
  return os.path.join(data.default_corpus(), "comedies")


def prepare(root: str, size: str, seq_len: int, corpus: str) -> tuple:
  """(token directory, initial model directory) under `root`."""
  import jax  # pylint: disable=import-outside-toplevel
  from gpt2 import data, weights  # pylint: disable=import-outside-toplevel
  from gpt2.model import GPT2Config, init_params  # pylint: disable=import-outside-toplevel
  from gpt2.tokenizer import Tokenizer  # pylint: disable=import-outside-toplevel
  tokens = os.path.join(root, "tokens")
  data.prepare(corpus, tokens, vocab_size=VOCAB, val_fraction=0.05,
               progress=False)
  tokenizer = Tokenizer.from_dir(tokens)
  config = GPT2Config.preset(size, vocab_size=tokenizer.vocab_size,
                             n_positions=max(seq_len, 128))
  params = jax.jit(init_params, static_argnums=0)(
      config, jax.random.PRNGKey(SETTINGS["seed"]))
  init = os.path.join(root, "init")
  weights.export_hf(init, config, jax.device_get(params), tokenizer)
  return tokens, init


def run_ours(tokens: str, init: str, workdir: str, steps: int, batch: int,
             seq_len: int, frozen: bool) -> tuple:
  """(loss per step, final params) of our loop."""
  from gpt2 import train, weights  # pylint: disable=import-outside-toplevel
  c = train.default_config()
  c.data, c.init = tokens, init
  c.model.scan_layers = False
  c.seq_len, c.batch_size, c.total_steps = seq_len, batch, steps
  for key, value in SETTINGS.items():
    c[key] = value
  c.only_train_transformer_layers = frozen
  c.val_every, c.eval_at_start, c.save_every = 0, False, 0
  c.log_every, c.progress, c.noise_scale = 1, False, False
  train.train_and_evaluate(c, workdir)
  losses = [r["loss"] for r in train.read_metrics(workdir)]
  return losses, weights.load_model(workdir, with_tokenizer=False).params


def run_pytorch(tokens: str, init: str, steps: int, batch: int, seq_len: int,
                frozen: bool) -> tuple:
  """(loss per step, final HF state dict as numpy) of the reference."""
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  from gpt2 import data  # pylint: disable=import-outside-toplevel
  transformers.logging.set_verbosity_error()
  transformers.logging.disable_progress_bar()
  model = transformers.GPT2LMHeadModel.from_pretrained(init)
  model.train()  # dropout rates are 0 in the exported config
  if frozen:  # the embeddings (and so the tied head) and the final norm
    for module in (model.transformer.wte, model.transformer.wpe,
                   model.transformer.ln_f):
      module.requires_grad_(False)
  trained = [p for p in model.parameters() if p.requires_grad]
  s = SETTINGS
  opt = torch.optim.Adam(trained, lr=s["lr"], betas=(s["adam_b1"],
                                                     s["adam_b2"]),
                         eps=s["adam_eps"], weight_decay=0.0)
  # LambdaLR's epoch e is the (e+1)-th update.
  sched = torch.optim.lr_scheduler.LambdaLR(
      opt, lambda e: reference_lr(e + 1, **s) / s["lr"])
  stream = data.TokenStream.open(tokens, "train")
  sampler = data.WindowSampler(len(stream), seq_len, s["seed"])
  k = s["accumulate"]
  losses = []
  for _ in range(steps):
    windows = stream.windows(sampler.next_starts(k * batch).reshape(k, batch),
                             seq_len)
    opt.zero_grad(set_to_none=True)
    total = 0.0
    for micro in windows:
      ids = torch.as_tensor(micro, dtype=torch.long)
      loss = model(input_ids=ids, labels=ids).loss
      (loss / k).backward()
      total += loss.item() / k
    torch.nn.utils.clip_grad_norm_(trained, s["clip_norm"])
    opt.step()
    sched.step()
    losses.append(total)
  state = {n: t.detach().numpy().copy() for n, t in model.state_dict().items()}
  return losses, state


def compare(size: str = "small", steps: int = 200, batch: int = 8,
            seq_len: int = 128, corpus: str = "") -> dict:
  """Both variants, both sides; the report `main` prints."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  from gpt2.model import GPT2Config  # pylint: disable=import-outside-toplevel
  from gpt2.weights import load_model, params_to_hf_tensors  # pylint: disable=import-outside-toplevel
  torch.manual_seed(0)
  with tempfile.TemporaryDirectory() as root:
    tokens, init = prepare(root, size, seq_len, corpus or default_corpus())
    start = load_model(init, with_tokenizer=False)
    start_tensors = params_to_hf_tensors(start.params, start.config)
    runs = []
    for frozen in (False, True):
      began = time.perf_counter()
      ours, ours_params = run_ours(
          tokens, init, os.path.join(root, f"ours-frozen{int(frozen)}"),
          steps, batch, seq_len, frozen)
      ours_seconds = time.perf_counter() - began
      began = time.perf_counter()
      ref, ref_state = run_pytorch(tokens, init, steps, batch, seq_len,
                                   frozen)
      ref_seconds = time.perf_counter() - began
      ours_tensors = params_to_hf_tensors(ours_params, start.config)
      rel = np.abs(np.asarray(ours) - np.asarray(ref)) / np.abs(ref)
      # How far apart the final weights are, tensor by tensor. (An entry
      # whose gradient is 0 up to rounding, such as a key bias, moves by
      # about lr a step on each side's rounding noise: Adam divides the
      # noise by its own size. The losses are the comparison.)
      weight_diff = max(
          float(np.abs(ours_tensors[n] - ref_state[n]).max() /
                max(np.abs(ref_state[n]).max(), 1e-12))
          for n in ours_tensors)
      run = {"only_train_transformer_layers": frozen,
             "loss_ours": ours, "loss_pytorch": ref,
             "rel_diff": rel.tolist(),
             "max_rel_diff_first_50": float(rel[:FIRST].max()),
             "max_rel_diff": float(rel.max()),
             "max_weight_rel_diff": weight_diff,
             "seconds_ours": ours_seconds, "seconds_pytorch": ref_seconds}
      if frozen:
        names = [f"transformer.{n}" for n in ("wte.weight", "wpe.weight",
                                               "ln_f.weight", "ln_f.bias")]
        run["frozen_identical_ours"] = all(
            np.array_equal(ours_tensors[n], start_tensors[n]) for n in names)
        run["frozen_identical_pytorch"] = all(
            np.array_equal(ref_state[n], start_tensors[n]) for n in names)
      runs.append(run)
  config = GPT2Config.preset(size)
  return {"size": size, "n_layer": config.n_layer, "n_embd": config.n_embd,
          "vocab_size": VOCAB, "steps": steps, "batch": batch,
          "seq_len": seq_len, "settings": SETTINGS, "dtype": "float32",
          "torch": torch.__version__,
          "max_rel_diff_first_50": max(r["max_rel_diff_first_50"]
                                       for r in runs),
          "max_rel_diff": max(r["max_rel_diff"] for r in runs),
          "runs": runs}


def print_table(report: dict) -> None:
  runs = report["runs"]
  print(f"{report['size']} ({report['n_layer']} layers x {report['n_embd']}, "
        f"vocab {report['vocab_size']}), {report['steps']} steps of 2 x "
        f"{report['batch']} x {report['seq_len']} tokens, float32; "
        f"ours vs PyTorch {report['torch']}")
  print("      " + "".join(
      f"| {'embeddings frozen' if r['only_train_transformer_layers'] else 'every parameter trained':<34}"
      for r in runs))
  print(" step " + "| loss ours   loss torch   rel diff  " * len(runs))
  for i in range(report["steps"]):
    print(f"{i + 1:5d} " + "".join(
        f"| {r['loss_ours'][i]:9.6f}   {r['loss_pytorch'][i]:9.6f}   "
        f"{r['rel_diff'][i]:8.2e}  " for r in runs))
  for r in runs:
    what = ("only_train_transformer_layers" if
            r["only_train_transformer_layers"] else "every parameter trained")
    print(f"{what}: max rel diff {r['max_rel_diff_first_50']:.2e} over the "
          f"first {FIRST} steps, {r['max_rel_diff']:.2e} over all; final "
          f"weights within {r['max_weight_rel_diff']:.2e} (relative to each "
          f"tensor's largest entry); {r['seconds_ours']:.0f} s ours, "
          f"{r['seconds_pytorch']:.0f} s PyTorch")
    if r["only_train_transformer_layers"]:
      print(f"  embeddings and ln_f bit-identical after training: ours "
            f"{r['frozen_identical_ours']}, PyTorch "
            f"{r['frozen_identical_pytorch']}")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  report = compare(f.size, f.steps, f.batch, f.seq_len)
  if f.json:
    print(json.dumps(report))
  else:
    print_table(report)


if __name__ == "__main__":
  # Defined here, not on import: the tests import `compare`, and absl's
  # flags are global (launch.demo has a --steps too).
  flags.DEFINE_string("size", "small", "Model shape (a GPT2Config preset).")
  flags.DEFINE_integer("steps", 200, "Training steps of each run.")
  flags.DEFINE_integer("batch", 8, "Windows per micro-batch (two "
                       "micro-batches a step).")
  flags.DEFINE_integer("seq_len", 128, "Tokens per window.")
  flags.DEFINE_boolean("json", False, "Print one JSON object.")
  app.run(main)
