r"""What int8 weights cost in quality: the demo's generator in float32 and
with every matmul weight int8 (gpt2.int8), on held-out text.

  python -m bench.quantization                     # runs/demo (trained if absent)
  python -m bench.quantization --demo=runs/demo --json

On the documents of the demo's corpus that fall in its validation split
(`gpt2.data.is_validation`, never trained on), both decode every position
as the sampler does (`gpt2.sampling.decoding_for`: on a CPU a GPT-2 through
`gpt2.cpu_decoding` and its int8 kernel, a Llama-family model through the
reference model with its int8 codes widened next to each matmul); printed:
the mean KL divergence per token from the float32 next-token distribution
to the int8 one (nats), the perplexity of each, and, from the first 32
tokens of `--prompts` held-out documents, how much of 256 greedy tokens the
two write alike before their first difference. Without WORKDIR/model the
demo's corpus and generator stages run first (`launch.demo`, a few minutes).
"""

import json
import os

from absl import app
from absl import flags
import numpy as np

_WORKDIR = flags.DEFINE_string("demo", "runs/demo", "A launch.demo "
                               "workdir (its model/ and corpus/).")
_STEPS = flags.DEFINE_integer("demo_steps", 1200, "Generator steps if the "
                              "demo's generator has to be trained.")
_DOCS = flags.DEFINE_integer("docs", 256, "Held-out documents to score.")
_PROMPTS = flags.DEFINE_integer("prompts", 16, "Greedy continuations.")
_NEW = flags.DEFINE_integer("new_tokens", 256, "Greedy tokens per prompt.")
_JSON = flags.DEFINE_boolean("json", False, "Print one JSON object.")

MAX_KL = 0.01  # nats per token: the target


def held_out(workdir: str, steps: int) -> tuple:
  """(the generator, held-out documents), training the demo's if need be."""
  # pylint: disable=import-outside-toplevel
  from configs import demo as demo_config
  from gpt2 import data, weights
  from launch import demo
  model_dir = os.path.join(workdir, "model")
  paths = demo.build_corpus(workdir)
  if not os.path.exists(os.path.join(model_dir, "config.json")):
    demo.train_generator(workdir, paths["documents"], steps)
  fraction = demo_config.get_config().val_fraction
  with open(paths["documents"], encoding="utf-8") as f:
    docs = [json.loads(line)["text"] for line in f]
  return weights.load_model(model_dir), [
      d for d in docs if data.is_validation(d, fraction)]


def compare(model, docs, n_docs: int) -> dict:
  """Mean KL(float32 || int8) per token and both perplexities."""
  # pylint: disable=import-outside-toplevel
  import jax
  import jax.numpy as jnp
  from gpt2 import cpu_decoding as C
  from gpt2 import family, sampling
  cfg, tok = model.config, model.tokenizer
  decoding = sampling.decoding_for("auto", cfg)
  init_cache = (C.init_cache if decoding.name == "cpu" else
                family.of(cfg).init_cache)
  T = min(cfg.n_positions, 1024)  # a long-context model's windows cut here
  windows = []
  for d in docs[:n_docs]:
    ids = tok.encode(d)[:T]
    if len(ids) > 1:
      windows.append(ids)
  prepared = {w: decoding.prepare(cfg, model.params, w)
              for w in ("float32", "int8")}

  @jax.jit
  def logprobs(params, ids):
    B = ids.shape[0]
    out = decoding.forward(cfg, params, ids, positions=jnp.broadcast_to(
        jnp.arange(T), (B, T)), cache=init_cache(cfg, B, T),
                           cache_index=0, kv_mask=jnp.ones((B, T), bool))
    return jax.nn.log_softmax(out.logits, axis=-1)

  kl, nll, count = 0.0, {"float32": 0.0, "int8": 0.0}, 0
  for begin in range(0, len(windows), 8):
    chunk = windows[begin:begin + 8]
    ids = np.zeros((len(chunk), T), np.int32)
    mask = np.zeros((len(chunk), T - 1), bool)
    for i, w in enumerate(chunk):
      ids[i, :len(w)] = w
      mask[i, :len(w) - 1] = True
    lp = {w: np.asarray(logprobs(prepared[w], jnp.asarray(ids)), np.float64)
          for w in prepared}
    p32 = np.exp(lp["float32"][:, :-1])
    kl += float((p32 * (lp["float32"][:, :-1] - lp["int8"][:, :-1])).sum(
        -1)[mask].sum())
    targets = ids[:, 1:]
    for w in prepared:
      picked = np.take_along_axis(lp[w][:, :-1], targets[..., None], -1)[..., 0]
      nll[w] -= float(picked[mask].sum())
    count += int(mask.sum())
  return {"tokens": count, "kl_per_token": kl / count,
          "perplexity_float32": float(np.exp(nll["float32"] / count)),
          "perplexity_int8": float(np.exp(nll["int8"] / count))}


def greedy_agreement(model, docs, prompts: int, new: int) -> dict:
  """How many of `new` greedy tokens int8 writes as float32 does, before the
  first difference, over prompts of 32 held-out tokens."""
  from gpt2 import sampling  # pylint: disable=import-outside-toplevel
  cfg, tok = model.config, model.tokenizer
  starts = [tok.encode(d)[:32] for d in docs if len(tok.encode(d)) >= 32]
  starts = starts[:prompts]
  out = {}
  for w in ("float32", "int8"):
    out[w] = sampling.sample(cfg, model.params, tok, starts, top_k=1,
                             max_new_tokens=new, weights=w, seed=0)
  alike = []
  for a, b in zip(out["float32"], out["int8"]):
    n = 0
    while n < min(len(a.tokens), len(b.tokens)) and a.tokens[n] == b.tokens[n]:
      n += 1
    alike.append(n / new)
  return {"prompts": len(starts), "greedy_alike_share": float(np.mean(alike)),
          "greedy_identical": int(sum(a == 1.0 for a in alike))}


def main(argv):
  del argv
  from gpt2 import int8  # pylint: disable=import-outside-toplevel
  model, docs = held_out(_WORKDIR.value, _STEPS.value)
  summary = {"model": os.path.join(_WORKDIR.value, "model"),
             "kernel": int8.level(), **compare(model, docs, _DOCS.value),
             **greedy_agreement(model, docs, _PROMPTS.value, _NEW.value),
             "new_tokens": _NEW.value, "max_kl": MAX_KL}
  summary["kl_within_target"] = summary["kl_per_token"] <= MAX_KL
  if _JSON.value:
    print(json.dumps(summary))
    return
  print(f"{summary['model']}: {summary['tokens']} held-out tokens, int8 "
        f"kernel {summary['kernel']}")
  print(f"mean KL(float32 || int8) per token  {summary['kl_per_token']:.5f} "
        f"nats (target <= {MAX_KL})")
  print(f"perplexity float32 / int8          "
        f"{summary['perplexity_float32']:.3f} / {summary['perplexity_int8']:.3f}")
  print(f"greedy tokens alike before the first difference: "
        f"{summary['greedy_alike_share']:.1%} of {_NEW.value} "
        f"({summary['greedy_identical']} of {summary['prompts']} prompts "
        f"identical throughout)")


if __name__ == "__main__":
  app.run(main)
