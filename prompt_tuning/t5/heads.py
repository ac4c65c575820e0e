"""Linear heads on the encoder's output: P-Tuning v2's heads without a verbalizer.

Each head is a randomly initialised linear layer, called by `Transformer.classify` on
the encoder states of the input tokens only (the input prompt's positions are cut off
first) with the mask of the real ones:

  SequenceHead  one label per example, from a pooled state ([batch, labels]);
  TokenHead     one label per position ([batch, length, labels]);
  SpanHead      start and end logits per position ([batch, length, 2]).

With `num_tasks > 1` a head holds one kernel and bias per task (P-Tuning v2's
multi-task setting: one shared prompt, one head per dataset) and each row uses its
task's (`task_ids`, [batch]). Tasks with fewer labels than `num_labels` (CoNLL-2003's
nine tags beside WikiANN's seven) name their counts in `labels_per_task`: a row's
classes past its task's count get a very negative logit, so they are never predicted,
take no probability in the loss and get no gradient. Parameters live under `head/`
(`kernel`, `bias`); their logical axes are `embed` and `classes` (and `head_tasks`),
all replicated by the standard rules: a head is tiny next to the frozen backbone.

The kernel starts as a normal with standard deviation 0.02 and the bias at zero, the
initialisation of the BERT-style heads P-Tuning v2 trains, so the first logits are
near zero and the first loss near log(labels).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from prompt_tuning.t5.layers import boxed

Array = jax.Array

POOLINGS = ("first", "mean", "eos")
HEAD_INIT_STDDEV = 0.02


def pool(hidden: Array, mask: Array, pooling: str) -> Array:
  """One vector per row of `hidden` [batch, length, d] over its real positions `mask`.

  first: the first input token's state (BERT's [CLS] position; T5 has no [CLS] token,
    so this is the first word piece); mean: the mean over real tokens; eos: the last
    real token's state (T5 ends every input with EOS).
  """
  if pooling == "first":
    return hidden[:, 0]
  weights = mask.astype(hidden.dtype)
  if pooling == "mean":
    total = jnp.einsum("bld,bl->bd", hidden, weights)
    return total / jnp.maximum(jnp.sum(weights, axis=1, keepdims=True), 1.0)
  if pooling == "eos":
    last = jnp.maximum(jnp.sum(mask.astype(jnp.int32), axis=1) - 1, 0)
    return jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]
  raise ValueError(f"unknown pooling {pooling!r}; use one of {', '.join(POOLINGS)}")


NEGATIVE_LOGIT = float(np.finfo(np.float32).min) / 2


def from_file(
  path: str, fallback_name: str, init_task: Optional[int] = None
) -> Callable[..., Array]:
  """An initialiser returning the array saved at `path` (a trained head's `.npy`, as the
  numpy checkpoints write it), refusing one of another shape.

  `init_task = k` reads task k's kernel or bias of a multi-task head (first axis: tasks)
  and its first `classes` columns: a single-task run starts from that task's head."""

  def init(rng: Array, shape: Sequence[int], dtype: Any = jnp.float32) -> Array:
    del rng
    if not os.path.exists(path):
      raise FileNotFoundError(
        f"no {fallback_name} at {path}; HEAD_DIR must be a numpy checkpoint directory of a "
        "run with this head (MODEL_DIR/numpy_checkpoints/checkpoint_N)"
      )
    value = np.load(path)
    if init_task is not None:
      value = _task_slice(value, init_task, shape, path)
    if tuple(value.shape) != tuple(shape):
      raise ValueError(
        f"{path} has shape {tuple(value.shape)} but this head's {fallback_name} is "
        f"{tuple(shape)}; use a head trained with the same labels, tasks and model size"
      )
    return jnp.asarray(value, dtype)

  return init


def _task_slice(value: np.ndarray, task: int, shape: Sequence[int], path: str) -> np.ndarray:
  if value.ndim != len(shape) + 1 or not 0 <= task < value.shape[0]:
    raise ValueError(
      f"HEAD_INIT_TASK is {task} but {path} (shape {tuple(value.shape)}) is not a multi-task "
      f"head with a task {task}; HEAD_INIT_TASK reads one task of a HEAD_TASKS > 1 run"
    )
  value = value[task]
  if value.shape[-1] < shape[-1]:
    raise ValueError(
      f"task {task} of {path} has {value.shape[-1]} classes but this head has {shape[-1]}; "
      "set NUM_LABELS to the task's number of labels"
    )
  return value[..., : shape[-1]]


def linear(
  module: nn.Module,
  x: Array,
  features: int,
  num_tasks: int,
  task_ids: Optional[Array],
  init_dir: Optional[str] = None,
  init_task: Optional[int] = None,
  labels_per_task: Optional[Sequence[int]] = None,
) -> Array:
  """`x @ kernel + bias` in float32 with `module`'s parameters `kernel` and `bias`, one
  of each per task when `num_tasks > 1` (each row uses its task's, its classes past
  `labels_per_task[task]` masked). With `init_dir` they start from that directory's
  `head.kernel.npy` and `head.bias.npy` (task `init_task`'s of a multi-task head)."""
  width = x.shape[-1]
  init = nn.initializers.normal(stddev=HEAD_INIT_STDDEV)
  bias_init = nn.initializers.zeros
  if init_dir:
    init = from_file(os.path.join(init_dir, "head.kernel.npy"), "kernel", init_task)
    bias_init = from_file(os.path.join(init_dir, "head.bias.npy"), "bias", init_task)
  x = jnp.asarray(x, jnp.float32)
  if num_tasks == 1:
    kernel = module.param("kernel", boxed(init, "embed", "classes"), (width, features))
    bias = module.param("bias", boxed(bias_init, "classes"), (features,))
    return x @ kernel + bias
  if task_ids is None:
    raise ValueError(
      f"a head with {num_tasks} tasks needs each row's task: train on a mixture whose "
      "examples carry prompt_ids (data/task_mixtures.py, register_mixture)"
    )
  kernel = module.param(
    "kernel", boxed(init, "head_tasks", "embed", "classes"), (num_tasks, width, features)
  )
  bias = module.param("bias", boxed(bias_init, "head_tasks", "classes"), (num_tasks, features))
  task_ids = jnp.asarray(task_ids, jnp.int32)
  row_kernel, row_bias = kernel[task_ids], bias[task_ids]  # [batch, d, C], [batch, C]
  if x.ndim == 2:
    logits = jnp.einsum("bd,bdc->bc", x, row_kernel) + row_bias
  else:
    logits = jnp.einsum("bld,bdc->blc", x, row_kernel) + row_bias[:, None, :]
  if labels_per_task is None:
    return logits
  counts = jnp.asarray(check_labels_per_task(labels_per_task, num_tasks, features), jnp.int32)
  valid = jnp.arange(features)[None, :] < counts[task_ids][:, None]  # [batch, C]
  if logits.ndim == 3:
    valid = valid[:, None, :]
  return jnp.where(valid, logits, NEGATIVE_LOGIT)


def check_labels_per_task(
  labels_per_task: Sequence[int], num_tasks: int, num_labels: int
) -> tuple[int, ...]:
  """`labels_per_task` as a tuple, refused unless it has one count per task, each
  between 1 and `num_labels` (the width every task's kernel shares)."""
  if isinstance(labels_per_task, str):
    raise ValueError(
      f"HEAD_LABELS_PER_TASK is the string {labels_per_task!r}; give a tuple of counts, "
      "e.g. --gin.HEAD_LABELS_PER_TASK='(9, 7)'"
    )
  counts = tuple(int(c) for c in labels_per_task)
  if len(counts) != num_tasks or not all(1 <= c <= num_labels for c in counts):
    raise ValueError(
      f"HEAD_LABELS_PER_TASK is {counts}: it needs one count per task (HEAD_TASKS = "
      f"{num_tasks}), each from 1 to NUM_LABELS = {num_labels} (the largest task's count)"
    )
  return counts


def _label_logits(head: Any, x: Array, task_ids: Optional[Array]) -> Array:
  """`linear` with a label head's settings (SequenceHead, TokenHead)."""
  return linear(
    head,
    x,
    head.num_labels,
    head.num_tasks,
    task_ids,
    head.init_dir,
    head.init_task,
    head.labels_per_task,
  )


class SequenceHead(nn.Module):
  """Sequence classification: a linear layer on the pooled encoder state.

  The default pooling is `mean`, where P-Tuning v2 reads BERT's [CLS] state: T5 has no
  [CLS] token, and `first` (its closest counterpart, the first word piece) is one
  binding away (HEAD_POOLING)."""

  num_labels: int
  pooling: str = "mean"
  num_tasks: int = 1
  init_dir: Optional[str] = None
  init_task: Optional[int] = None
  labels_per_task: Optional[Sequence[int]] = None

  @nn.compact
  def __call__(self, hidden: Array, mask: Array, task_ids: Optional[Array] = None) -> Array:
    pooled = pool(hidden, mask, self.pooling)
    return _label_logits(self, pooled, task_ids)


class TokenHead(nn.Module):
  """Token classification: a linear layer on every encoder position."""

  num_labels: int
  num_tasks: int = 1
  init_dir: Optional[str] = None
  init_task: Optional[int] = None
  labels_per_task: Optional[Sequence[int]] = None

  @nn.compact
  def __call__(self, hidden: Array, mask: Array, task_ids: Optional[Array] = None) -> Array:
    del mask  # Every position gets logits; the labels say which ones count.
    return _label_logits(self, hidden, task_ids)


class SpanHead(nn.Module):
  """Span extraction: start and end logits for every encoder position ([..., 0] start,
  [..., 1] end); padding positions get a very negative logit so no span lands there."""

  num_tasks: int = 1
  init_dir: Optional[str] = None
  init_task: Optional[int] = None

  @nn.compact
  def __call__(self, hidden: Array, mask: Array, task_ids: Optional[Array] = None) -> Array:
    logits = linear(self, hidden, 2, self.num_tasks, task_ids, self.init_dir, self.init_task)
    return jnp.where(mask[..., None], logits, NEGATIVE_LOGIT)
