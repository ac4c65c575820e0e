"""P-Tuning (Liu et al. 2021): the input prompt produced by a small prompt encoder.

P trainable embeddings [P, h] go through a bidirectional LSTM and a 2-layer MLP with
ReLU (or, in the `mlp` variant, the MLP alone), and the result [P, d_model] is what the
module gives the backbone's input hook, which prepends it exactly where prompt tuning's
prompt goes. The encoder couples the positions, which the authors found trains faster
and more stably than independent vectors.

Only the resulting [P, d_model] matters at inference: `folded_params` computes it once as
the parameters of a plain `prompts.Prompt`, so `prompt-tuning export-prompt` writes it
as `encoder.prompt.prompt.npy`, which the `from_file` initialiser (PROMPT_FILE) serves
like any trained prompt.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp

from prompt_tuning.prompts.prompt import no_prompt_inputs
from prompt_tuning.t5.layers import axis_dense, boxed

Array = jax.Array
PROMPT_ENCODERS = ("lstm", "mlp")


@gin.configurable(module="prompts")
class PTuningPrompt(nn.Module):
  """Parameters under `encoder/prompt/`: `embedding` [P, h], for the LSTM encoder
  `lstm_{i}_forward` / `lstm_{i}_backward` (h // 2 units each way, `lstm_layers`
  layers), then `mlp_hidden` (h, ReLU) and `mlp_out` (d_model), both with biases.
  `hidden_dim` (h) defaults to d_model, as in the paper's code.
  """

  length: int = 100
  prompt_encoder: str = "lstm"
  hidden_dim: int | None = None
  lstm_layers: int = 2
  param_dtype: Any = jnp.float32

  @nn.compact
  def vectors(self, width: int) -> Array:
    """The prompt [P, width], float32."""
    if self.prompt_encoder not in PROMPT_ENCODERS:
      raise ValueError(
        f"unknown P-Tuning prompt encoder {self.prompt_encoder!r}; choose one of {PROMPT_ENCODERS}"
      )
    hidden = self.hidden_dim or width
    x = self.param(
      "embedding",
      boxed(nn.initializers.normal(1.0), "prompt", "prompt_embed"),
      (self.length, hidden),
      self.param_dtype,
    )
    if self.prompt_encoder == "lstm":
      if hidden < 2 or self.lstm_layers < 1:
        raise ValueError(
          f"the LSTM prompt encoder needs hidden_dim >= 2 and lstm_layers "
          f">= 1, got {hidden} and {self.lstm_layers}"
        )
      x = x[None]  # One sequence: the P prompt positions.
      for i in range(self.lstm_layers):
        forward = nn.RNN(
          nn.OptimizedLSTMCell(hidden // 2, param_dtype=self.param_dtype, name=f"lstm_{i}_forward")
        )
        backward = nn.RNN(
          nn.OptimizedLSTMCell(
            hidden // 2, param_dtype=self.param_dtype, name=f"lstm_{i}_backward"
          ),
          reverse=True,
          keep_order=True,
        )
        x = jnp.concatenate([forward(x), backward(x)], axis=-1)
      x = x[0]
    x = axis_dense(hidden, "prompt_embed", "prompt_mlp", self.param_dtype, "mlp_hidden")(x)
    x = jax.nn.relu(x)
    return axis_dense(width, "prompt_mlp", "embed", self.param_dtype, "mlp_out")(x)

  def __call__(self, embedded: Array, prompt_inputs: Mapping[str, Array] | None = None) -> Array:
    """The prompt rows [P, d], float32 (none when P is 0)."""
    no_prompt_inputs(prompt_inputs, "PTuningPrompt")
    width = embedded.shape[-1]
    if self.length == 0:
      return jnp.zeros((0, width), embedded.dtype)
    return self.vectors(width)

  def folded_params(self, width: int) -> dict[str, Array]:
    """The parameters of a `prompts.Prompt` of the same length giving the same outputs."""
    return {"prompt": self.vectors(width)}
