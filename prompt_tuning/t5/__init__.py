"""The frozen backbone: T5 1.1 / mT5 in flax.linen with T5X's parameter names."""

from prompt_tuning.t5.config import SIZES, T5Config
from prompt_tuning.t5.network import (
  Decoder,
  Encoded,
  Encoder,
  Transformer,
  abstract_params,
  abstract_variables,
  init_params,
  logical_axes,
  prepend_prompt,
)

__all__ = [
  "SIZES",
  "T5Config",
  "Transformer",
  "Encoded",
  "Encoder",
  "Decoder",
  "abstract_params",
  "abstract_variables",
  "init_params",
  "logical_axes",
  "prepend_prompt",
]
