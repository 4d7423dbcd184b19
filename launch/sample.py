r"""Writes continuations of a prompt with a GPT-2 or a Llama-family model.

  python -m launch.sample --model DIR --prompt "Once upon a time" \
      --max_new_tokens 100 --num_samples 4 --seed 0
  python -m launch.sample --model DIR --prompt TEXT --top_k 1 --json
  python -m launch.sample --model DIR --prompt TEXT --stream

`--model` is any directory `gpt2.weights.load_model` reads (Hugging Face,
OpenAI's release, ours, or a training workdir; a Llama, Qwen2 or Mistral
Hugging Face directory too), or a Hugging Face Hub name (`--model gpt2`,
`--model gpt2-xl`, `--model HuggingFaceTB/SmolLM2-135M`: fetched once into
the Hub's cache). The rules default to the
bot's (breakruns from temperature 0.9 by 0.02 per argmax pick, top-p 0.95);
`--top_k 1` (or `--temperature 0`) is greedy. `--json` prints one JSON object
per candidate: text, tokens (the generated ids), mean_logprob, finish_reason.
`--stream` types the first candidate as it is written (with `--json`, one
{"row", "text"} object per piece, then the candidates). `--stop` (repeatable)
ends a candidate at a string; the model's end-of-text token (GPT-2's
`<|endoftext|>`) always ends it.
"""

import json
import sys

from absl import flags
from absl import logging as absl_logging

from gpt2.errors import UserError
from gpt2.sampling_params import MAX_STEPS, SamplingParams
from launch import common

_DEFAULTS = SamplingParams.bot_defaults()

_MODEL = flags.DEFINE_string(
    "model", None, "Model directory, or a Hugging Face Hub name (gpt2, "
    "HuggingFaceTB/SmolLM2-135M).")
_PROMPT = flags.DEFINE_string("prompt", None, "The prompt text.")
_MAX_NEW = flags.DEFINE_integer(
    "max_new_tokens", None, "Tokens to write at most per candidate (default "
    "200, or half the model's context when that is less).")
_NUM = flags.DEFINE_integer("num_samples", 1, "Candidates to write.")
_SEED = flags.DEFINE_integer("seed", 0, "Candidate i uses seed + i.")
_MAX_STEPS = flags.DEFINE_integer(
    "max_steps", MAX_STEPS, "Beyond the context, a candidate is written in "
    "steps of a quarter of it (the prompt's start and the latest tokens "
    "read again each step); at most this many.")
_TEMPERATURE = flags.DEFINE_float("temperature", _DEFAULTS.temperature,
                                  "Sampling temperature (0: greedy).")
_TOP_K = flags.DEFINE_integer("top_k", _DEFAULTS.top_k,
                              "Keep the k likeliest tokens (0: off, 1: "
                              "greedy).")
_TOP_P = flags.DEFINE_float("top_p", _DEFAULTS.top_p,
                            "Nucleus mass in (0, 1] (1: off).")
_TYPICAL_P = flags.DEFINE_float("typical_p", _DEFAULTS.typical_p,
                                "Locally typical mass in (0, 1] (1: off).")
_MIROSTAT_TAU = flags.DEFINE_float("mirostat_tau", _DEFAULTS.mirostat_tau,
                                   "Mirostat 2.0 target surprise in bits "
                                   "(0: off).")
_MIROSTAT_ETA = flags.DEFINE_float("mirostat_eta", _DEFAULTS.mirostat_eta,
                                   "Mirostat learning rate.")
_BREAKRUNS_TAU = flags.DEFINE_float(
    "breakruns_tau", _DEFAULTS.breakruns_tau,
    "Temperature added per consecutive argmax pick (0: off).")
_STOP = flags.DEFINE_multi_string("stop", [], "A string that ends a "
                                  "candidate (repeatable).")
_STREAM = flags.DEFINE_boolean("stream", False, "Type the text as it is "
                               "written.")
_JSON = flags.DEFINE_boolean("json", False, "One JSON object per candidate.")
_WEIGHTS = flags.DEFINE_enum(
    "weights", "float32", ["float32", "int8"], "Decode from the weights as "
    "loaded, or quantized to int8 per output channel (CPU; gpt2.int8).")


def _rules():
  from gpt2 import sampling  # pylint: disable=import-outside-toplevel
  return sampling.SamplingParams(
      temperature=_TEMPERATURE.value, top_k=_TOP_K.value, top_p=_TOP_P.value,
      typical_p=_TYPICAL_P.value, mirostat_tau=_MIROSTAT_TAU.value,
      mirostat_eta=_MIROSTAT_ETA.value, breakruns_tau=_BREAKRUNS_TAU.value)


def _print_results(results, as_json: bool, first: int = 0) -> None:
  for i, result in enumerate(results, first):
    if as_json:
      print(json.dumps(result.to_json(), ensure_ascii=False))
    else:
      print(f"==== candidate {i}: {len(result.tokens)} tokens, "
            f"{result.finish_reason}, mean log-prob "
            f"{result.mean_logprob:.3f} ====")
      print(result.text)


def _stream(model, rules, kwargs, as_json: bool) -> list:
  """Types candidate 0 live (or every piece as JSON); returns the results."""
  from gpt2 import sampling  # pylint: disable=import-outside-toplevel
  pieces = sampling.stream(model.config, model.params, model.tokenizer,
                           [_PROMPT.value], rules=rules, **kwargs)
  while True:
    try:
      piece = next(pieces)
    except StopIteration as done:
      results = done.value
      break
    if as_json:
      print(json.dumps({"row": piece.row, "text": piece.text},
                       ensure_ascii=False), flush=True)
    elif piece.row == 0:
      sys.stdout.write(piece.text)
      sys.stdout.flush()
  if not as_json:
    print()
  return results


def main(argv):
  absl_logging.set_verbosity(absl_logging.WARNING)  # no library chatter
  if len(argv) > 1:
    raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not _MODEL.value:
    raise UserError("--model is required: a model directory or a Hugging "
                    "Face Hub name such as gpt2")
  if _PROMPT.value is None:
    raise UserError("--prompt is required")
  rules = _rules().validate()
  if _MAX_NEW.value is not None and _MAX_NEW.value < 1:
    raise UserError(f"--max_new_tokens must be >= 1, got {_MAX_NEW.value}")
  if _NUM.value < 1:
    raise UserError(f"--num_samples must be >= 1, got {_NUM.value}")
  from gpt2 import sampling  # pylint: disable=import-outside-toplevel
  from gpt2 import weights  # pylint: disable=import-outside-toplevel
  model = weights.load_model(_MODEL.value)
  max_new = _MAX_NEW.value
  if max_new is None:
    max_new = min(200, model.config.n_positions // 2)
  kwargs = dict(num_samples=_NUM.value, max_new_tokens=max_new,
                stop=_STOP.value, seed=_SEED.value,
                max_steps=_MAX_STEPS.value, weights=_WEIGHTS.value)
  if _STREAM.value:
    results = _stream(model, rules, kwargs, _JSON.value)
    if _JSON.value:
      _print_results(results, True)
    elif len(results) > 1:
      _print_results(results[1:], False, first=1)
    return
  results = sampling.sample(model.config, model.params, model.tokenizer,
                            [_PROMPT.value], rules=rules, **kwargs)
  _print_results(results, _JSON.value)


if __name__ == "__main__":
  common.run(main)
