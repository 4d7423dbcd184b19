"""What the rest of the package needs from a model, whichever family it is.

Two families of decoder sit side by side: GPT-2 (`gpt2/model.py`,
`GPT2Config`) and the Llama family (`gpt2/llama.py`, `LlamaConfig`: Llama
3.x, Qwen2.5, SmolLM2, Mistral). Their configs share the names the callers
read (`vocab_size`, `n_positions`, `n_embd`, `n_layer`, `compute_dtype`),
their forwards take the same arguments and return the same `GPT2Output`
(logits, the KV cache, the tapped hidden states), and their KV caches are
tuples of per-layer {"k", "v"}. What differs is here, looked up by the
config (`of`): which module runs the model, and what is GPT-2's alone.
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
  layers: the params' key of the stacked blocks.
  cpu_decoding: whether `gpt2.cpu_decoding` (the sampler's XLA:CPU layout)
    runs it; otherwise the sampler runs `forward` with its cache everywhere.
  """
  name: str
  forward: Callable
  init_cache: Callable
  unstack_layers: Callable
  param_shapes: Callable
  layers: str
  cpu_decoding: bool


GPT2 = Family(name="gpt2", forward=gpt2_model.forward,
              init_cache=gpt2_model.init_cache,
              unstack_layers=gpt2_model.unstack_layers,
              param_shapes=gpt2_model.param_shapes, layers="h",
              cpu_decoding=True)
LLAMA = Family(name="llama", forward=llama.forward,
               init_cache=llama.init_cache,
               unstack_layers=llama.unstack_layers,
               param_shapes=llama.param_shapes, layers="layers",
               cpu_decoding=False)


def of(config) -> Family:
  """The family of a model config."""
  return LLAMA if isinstance(config, llama.LlamaConfig) else GPT2
