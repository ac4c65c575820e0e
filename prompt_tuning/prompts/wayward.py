"""Wayward prompts (Khashabi et al. 2021, "Prompt Waywardness"): a penalty that keeps a
soft prompt near the embedding of a discrete prompt, so that the learned prompt stays
readable as that text.

The training loss becomes `task loss + gamma * sum_i ||p_i - e_i||^2 / P`, with p the
prompt [P, d] and e the frozen model's embedding of the text's P SentencePiece pieces
(no EOS), as the upstream's `WaywardPromptEncoderDecoderModel`; gamma defaults to its
0.01. The prompt is initialised from the same text (`configs/prompts/wayward.gin`
includes `from_string.gin`), so the penalty starts at zero and PROMPT_LENGTH must equal
the text's piece count.

One difference from the upstream, on purpose: the trainer adds the penalty once per
step (`training/train_step.py`), also when the batch is split into microbatches. The
upstream adds it inside `loss_fn`, which T5X calls once per microbatch, so there the
penalty's weight grows with the number of microbatches.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import gin
import jax
import jax.numpy as jnp
import numpy as np

from prompt_tuning import tree
from prompt_tuning.data import vocab

Array = jax.Array
PROMPT_PATH = "encoder/prompt/prompt"
EMBEDDING_PATH = "token_embedder/embedding"


def squared_l2_distance(prompt: Array, target: Array) -> Array:
  """sum_i ||prompt_i - target_i||^2 / P: squared distances of the rows, averaged."""
  return jnp.sum(jnp.square(prompt - target)) / prompt.shape[0]


@gin.configurable(module="prompts")
@dataclasses.dataclass(frozen=True)
class WaywardPenalty:
  """`gamma * squared_l2_distance(prompt, embedded text)`, logged as `wayward_loss`
  (the weighted term that is added to the loss).

  text: the discrete prompt (upstream's SST-2 setting: a 90-piece task description).
  vocabulary: the vocabulary that splits it; default the gin-configured task vocabulary.
  """

  text: str = gin.REQUIRED
  gamma: float = 0.01
  vocabulary: Any = None
  name: str = "wayward_loss"

  @functools.cached_property
  def piece_ids(self) -> np.ndarray:
    pieces = self.vocabulary if self.vocabulary is not None else vocab.get_vocabulary()
    ids = np.asarray(pieces.encode(self.text), np.int32)
    if ids.size == 0:
      raise ValueError("the wayward prompt's text is empty; set PROMPT_TEXT to a discrete prompt")
    return ids

  def __call__(self, params: Mapping[str, Any]) -> Array:
    flat = tree.flatten(params)
    if PROMPT_PATH not in flat:
      raise ValueError(
        f"wayward prompts need a plain input prompt ({PROMPT_PATH}); this model has none. "
        "Use a *_prompt.gin model with prompts/wayward.gin"
      )
    prompt, embedding = flat[PROMPT_PATH], flat[EMBEDDING_PATH]
    ids = self.piece_ids
    if prompt.shape[0] != ids.size:
      raise ValueError(
        f"the wayward prompt's text has {ids.size} pieces but PROMPT_LENGTH is "
        f"{prompt.shape[0]}; set --gin.PROMPT_LENGTH={ids.size}"
      )
    if int(ids.max()) >= embedding.shape[0]:
      raise ValueError(
        f"the wayward prompt's text uses piece id {int(ids.max())} but the model embeds "
        f"only {embedding.shape[0]}; use the vocabulary the model was trained with"
      )
    target = jax.lax.stop_gradient(jnp.asarray(embedding)[ids]).astype(jnp.float32)
    return self.gamma * squared_l2_distance(jnp.asarray(prompt, jnp.float32), target)
