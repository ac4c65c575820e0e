"""Multi-task prompts (the upstream's `extended/multitask_prompts.py`): one prompt shared
by every task combined with a small per-task part, the task chosen per example.

Parameters: `shared_prompt` [P_s, H_s] and `task_prompts/embedding` [num_tasks, flat],
each task's part stored flat as the upstream stores it, both initialised U[0, 0.5) (the
upstream's flax `uniform(0.5)`). Each row's task is `prompt_inputs["prompt_ids"]`
[batch]: the batch feature that the tasks of `data.task_mixtures.register_mixture` add, or
what `models.EncoderDecoderModel(task_index_sentinel=...)` reads off the upstream's
task-index format (the first input token `<extra_id_k>` for task k). The ways to combine:

  add              shared [P, H] + task [P, H]
  concat           [shared [P_s, H]; task [P_t, H]] along the length (P_t default P_s)
  concat_features  [shared [P, H_s], task [P, H - H_s]] along the features
  project          each task an affine map of every shared position: kernel [H, H_s]
                   (stored row-major) and bias [H]; the task part is H x H_s + H

`add` is the upstream's setting (P = 100, 8 tasks, learning rate 0.3 constant).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp

from prompt_tuning.prompts import initializers
from prompt_tuning.prompts.multi_prompt import read_prompt_ids
from prompt_tuning.prompts.prefix_tuning import exported_or
from prompt_tuning.t5.layers import boxed

Array = jax.Array
Initializer = Callable[..., Array]
COMBINES = ("add", "concat", "concat_features", "project")


def task_shape(combine: str, length: int, width: int, shared_features: int, task_length: int):
  """(shared prompt shape, flat size of one task's part) of a combination."""
  if combine not in COMBINES:
    raise ValueError(f"unknown multi-task combine {combine!r}; choose one of {', '.join(COMBINES)}")
  if combine == "add":
    return (length, width), length * width
  if combine == "concat":
    return (length, width), task_length * width
  if combine == "concat_features":
    if not 0 < shared_features < width:
      raise ValueError(
        f"concat_features needs 0 < shared_features < d_model ({width}), got {shared_features}; "
        "set MultiTaskPrompt.shared_features"
      )
    return (length, shared_features), length * (width - shared_features)
  return (length, shared_features), width * shared_features + width


def combine_prompts(combine: str, shared: Array, tasks: Array, width: int) -> Array:
  """[batch, P, width] prompts from the shared prompt and each row's flat task part."""
  batch = tasks.shape[0]
  length, features = shared.shape
  rows = jnp.broadcast_to(shared[None], (batch, length, features))
  if combine == "add":
    return rows + tasks.reshape(batch, length, width)
  if combine == "concat":
    return jnp.concatenate([rows, tasks.reshape(batch, -1, width)], axis=1)
  if combine == "concat_features":
    return jnp.concatenate([rows, tasks.reshape(batch, length, width - features)], axis=2)
  kernel = tasks[:, : width * features].reshape(batch, width, features)
  bias = tasks[:, width * features :]
  return jnp.einsum("pi,boi->bpo", shared, kernel) + bias[:, None, :]


@gin.configurable(module="prompts")
class MultiTaskPrompt(nn.Module):
  """A shared prompt combined with each row's task part (module docstring).

  length: P_s, the shared prompt's length. task_length: P_t for `concat` (None: P_s).
  shared_features: H_s for `concat_features` and `project` (None: d_model for
  `project`; d_model / 2 for `concat_features`). init_dir: read both from the `.npy`
  files an export or numpy checkpoint wrote (runs/layer_prompt_eval.gin's
  LAYER_PROMPT_DIR).
  """

  num_tasks: int = gin.REQUIRED
  length: int = 100
  combine: str = "add"
  task_length: int | None = None
  shared_features: int | None = None
  shared_init: Initializer = initializers.uniform_positive()
  task_init: Initializer = initializers.uniform_positive()
  init_dir: str | None = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, embedded: Array, prompt_inputs: Mapping[str, Array] | None = None) -> Array:
    batch, _, width = embedded.shape
    features = self.shared_features
    if features is None:
      features = width // 2 if self.combine == "concat_features" else width
    shared_shape, task_size = task_shape(
      self.combine, self.length, width, features, self.task_length or self.length
    )
    path = self.scope.path
    shared_init = exported_or(self.shared_init, self.init_dir, path, "shared_prompt")
    task_init = exported_or(self.task_init, self.init_dir, (*path, "task_prompts"), "embedding")
    shared = self.param(
      "shared_prompt", boxed(shared_init, "prompt", "embed"), shared_shape, self.param_dtype
    )
    table = nn.Embed(
      self.num_tasks,
      task_size,
      embedding_init=boxed(task_init, "prompts", "prompt_embed"),
      param_dtype=self.param_dtype,
      name="task_prompts",
    ).embedding
    task_ids = read_prompt_ids(
      prompt_inputs,
      batch,
      self.is_initializing(),
      "MultiTaskPrompt",
      "MultiTaskPrompt needs each row's task in the batch feature prompt_ids [batch]; "
      "train on a mixture of data.task_mixtures (MULTI_TASK_MIXTURES), or set "
      "models.EncoderDecoderModel.task_index_sentinel for task_index_ tasks",
    )
    # A task id outside the table gives NaN rows (loud in the loss), not another task's.
    tasks = jnp.take(jnp.asarray(table), task_ids, axis=0, mode="fill", fill_value=jnp.nan)
    return combine_prompts(self.combine, jnp.asarray(shared), tasks, width)
