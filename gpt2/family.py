"""What the rest of the package needs from a model, whichever family it is.

Two families of decoder sit side by side: GPT-2 (`gpt2/model.py`,
`GPT2Config`) and the Llama family (`gpt2/llama.py`, `LlamaConfig`: Llama
3.x, Qwen2.5, SmolLM2, Mistral). Their configs share the names the callers
read (`vocab_size`, `n_positions`, `n_embd`, `n_layer`, `compute_dtype`),
their forwards take the same arguments and return the same `GPT2Output`
(logits, the KV cache, the tapped hidden states), and their KV caches are
tuples of per-layer {"k", "v"}. What differs is here, looked up by the
config (`of`): which module runs the model, and what is GPT-2's alone.
A config written out as a dict (run.json, model.json) is read back as its
family's (`config_from_dict`).
"""

import dataclasses
from typing import Callable

from gpt2 import llama
from gpt2 import model as gpt2_model


@dataclasses.dataclass(frozen=True)
class Family:
  """One family's model functions.

  forward(config, params, input_ids, **kw) -> GPT2Output, the keyword
    arguments `gpt2.model.GPT2.__call__`'s.
  init_cache(config, batch, length, dtype=None): an empty KV cache (the
    Llama family's sized for its key/value heads only).
  unstack_layers(params, dtype): the blocks as a tuple of per-layer trees,
    the weights but the norms' in `dtype`, which `forward` runs in turn.
  param_shapes(config), param_logical_axes(config, collection="params"),
    init_params(config, rng): the params' shapes, logical axes (or the LoRA
    adapters', collection="lora") and a random init.
  init_lora(config, rng), lora_shapes(config), merge_lora(config, params,
    lora) -> (config, params): LoRA adapters, as `gpt2.model` describes.
  lora_targets: the names `lora_targets` may hold.
  layers: the params' key of the stacked blocks.
  cpu_decoding: whether `gpt2.cpu_decoding` (the sampler's XLA:CPU layout)
    runs it; otherwise the sampler runs `forward` with its cache everywhere.
  """
  name: str
  forward: Callable
  init_cache: Callable
  unstack_layers: Callable
  param_shapes: Callable
  param_logical_axes: Callable
  init_params: Callable
  init_lora: Callable
  lora_shapes: Callable
  merge_lora: Callable
  lora_targets: tuple
  layers: str
  cpu_decoding: bool


GPT2 = Family(name="gpt2", forward=gpt2_model.forward,
              init_cache=gpt2_model.init_cache,
              unstack_layers=gpt2_model.unstack_layers,
              param_shapes=gpt2_model.param_shapes,
              param_logical_axes=gpt2_model.param_logical_axes,
              init_params=gpt2_model.init_params,
              init_lora=gpt2_model.init_lora,
              lora_shapes=gpt2_model.lora_shapes,
              merge_lora=gpt2_model.merge_lora,
              lora_targets=gpt2_model.LORA_TARGETS, layers="h",
              cpu_decoding=True)
LLAMA = Family(name="llama", forward=llama.forward,
               init_cache=llama.init_cache,
               unstack_layers=llama.unstack_layers,
               param_shapes=llama.param_shapes,
               param_logical_axes=llama.param_logical_axes,
               init_params=llama.init_params, init_lora=llama.init_lora,
               lora_shapes=llama.lora_shapes, merge_lora=llama.merge_lora,
               lora_targets=tuple(llama.LORA_TARGETS), layers="layers",
               cpu_decoding=False)


def of(config) -> Family:
  """The family of a model config."""
  return LLAMA if isinstance(config, llama.LlamaConfig) else GPT2


def config_from_dict(d: dict):
  """A config from its `to_dict()`: a Llama-family one names its
  `model_type`, a GPT-2's has none."""
  if "model_type" in d:
    return llama.LlamaConfig.from_dict(d)
  return gpt2_model.GPT2Config.from_dict(d)
