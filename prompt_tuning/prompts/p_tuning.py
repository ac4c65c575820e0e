"""P-Tuning (Liu et al. 2021): the input prompt produced by a small prompt encoder.

P trainable embeddings [P, h] go through a bidirectional LSTM and a 2-layer MLP with
ReLU (or, in the `mlp` variant, the MLP alone), and the result [P, d_model] is prepended
to the embedded input through the backbone's input hook, exactly where prompt tuning's
prompt goes. The encoder couples the positions, which the authors found trains faster
and more stably than independent vectors.

Only the resulting [P, d_model] matters at inference: `folded_params` computes it once as
the parameters of a plain `prompts.Prompt`, so `prompt-tuning export-prompt` writes it
as `encoder.prompt.prompt.npy`, which the `from_file` initialiser (PROMPT_FILE) serves
like any trained prompt.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp

Array = jax.Array
PROMPT_ENCODERS = ("lstm", "mlp")


def _boxed(init: Any, *axes: str | None) -> Any:
  return nn.with_logical_partitioning(init, axes)


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
      raise ValueError(f"unknown P-Tuning prompt encoder {self.prompt_encoder!r}; choose "
                       f"one of {PROMPT_ENCODERS}")
    hidden = self.hidden_dim or width
    x = self.param("embedding", _boxed(nn.initializers.normal(1.0), "prompt", "prompt_embed"),
                   (self.length, hidden), self.param_dtype)
    if self.prompt_encoder == "lstm":
      if hidden < 2 or self.lstm_layers < 1:
        raise ValueError(f"the LSTM prompt encoder needs hidden_dim >= 2 and lstm_layers "
                         f">= 1, got {hidden} and {self.lstm_layers}")
      x = x[None]  # One sequence: the P prompt positions.
      for i in range(self.lstm_layers):
        forward = nn.RNN(nn.OptimizedLSTMCell(hidden // 2, param_dtype=self.param_dtype,
                                              name=f"lstm_{i}_forward"))
        backward = nn.RNN(nn.OptimizedLSTMCell(hidden // 2, param_dtype=self.param_dtype,
                                               name=f"lstm_{i}_backward"),
                          reverse=True, keep_order=True)
        x = jnp.concatenate([forward(x), backward(x)], axis=-1)
      x = x[0]
    x = nn.Dense(hidden, dtype=jnp.float32, param_dtype=self.param_dtype,
                 kernel_init=_boxed(nn.initializers.lecun_normal(), "prompt_embed",
                                    "prompt_mlp"),
                 bias_init=_boxed(nn.initializers.zeros, "prompt_mlp"), name="mlp_hidden")(x)
    x = jax.nn.relu(x)
    return nn.Dense(width, dtype=jnp.float32, param_dtype=self.param_dtype,
                    kernel_init=_boxed(nn.initializers.lecun_normal(), "prompt_mlp", "embed"),
                    bias_init=_boxed(nn.initializers.zeros, "embed"), name="mlp_out")(x)

  def __call__(self, tokens: Array, embedded: Array) -> tuple[Array, Array]:
    """Returns (prompt ++ embedded [batch, P + L, d], mask [batch, P + L])."""
    token_mask = tokens > 0
    if self.length == 0:
      return embedded, token_mask
    batch, _, width = embedded.shape
    prompt = jnp.broadcast_to(self.vectors(width).astype(embedded.dtype)[None],
                              (batch, self.length, width))
    mask = jnp.concatenate([jnp.ones((batch, self.length), bool), token_mask], axis=1)
    return jnp.concatenate([prompt, embedded], axis=1), mask

  def folded_params(self, width: int) -> dict[str, Array]:
    """The parameters of a `prompts.Prompt` of the same length giving the same outputs."""
    return {"prompt": self.vectors(width)}
