"""Mixtures whose examples say which task they belong to: what multi-task prompts
(`prompts.MultiTaskPrompt`) read to pick each row's task part.

`register_mixture(name, tasks)` registers, for task k of `tasks`, two variants and a
mixture of each kind (equal rates unless given):

  `{task}_prompt_id_{k}`   adds the feature `prompt_ids` = [k] (an output feature, so
                           mixtures keep it; the trainer's feature converter passes it
                           to the model as one int32 per row); mixture `name`.
  `task_index_{k}_{task}`  the upstream's task-index format: the first input token is
                           the sentinel `<extra_id_k>` (id `sentinel - k`, 32099 - k
                           for T5's vocabulary), which the model removes and reads
                           (`models.EncoderDecoderModel.task_index_sentinel`);
                           mixture `task_index_{name}`.

From the command line: `--gin.MULTI_TASK_MIXTURES="{'NAME': ['TASK', ...]}"` with a
`configs/prompts/multi_task_*.gin` or `configs/heads/*.gin` file registers them
(`register_configured`, called by `data.tasks.register_all`), then
`MIXTURE_OR_TASK_NAME = 'NAME'` (or 'task_index_NAME').

The variants keep their task's source, preprocessing, postprocessor and metrics, so
each task evaluates with its own metrics inside the mixture. A linear-head task's
prompt-id variant marks its label vocabulary as the mixture's
(`labels.LabelVocabulary.in_mixture`): with one head per task the tasks' labels need
not be the same (RTE's beside BoolQ's, CoNLL-2003's tags beside WikiANN's).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Mapping, Sequence

import gin
import seqio
import tensorflow as tf

from prompt_tuning.data import labels as labels_lib

PROMPT_IDS = "prompt_ids"
# `<extra_id_0>` in T5's 32,100-id vocabulary (32,000 pieces + 100 sentinels).
T5_SENTINEL = 32099


def add_prompt_id(dataset: tf.data.Dataset, prompt_id: int) -> tf.data.Dataset:
  """Every example gets `prompt_ids` = [`prompt_id`] (rank 1, as seqio's evaluator
  measures every output feature's length; the feature converter makes it a scalar)."""
  return dataset.map(lambda ex: {**ex, PROMPT_IDS: tf.constant([prompt_id], tf.int32)})


def prepend_task_index(
  dataset: tf.data.Dataset, task_index: int, sentinel: int = T5_SENTINEL
) -> tf.data.Dataset:
  """The tokenized inputs start with the sentinel id `sentinel - task_index`."""
  token = tf.constant([sentinel - task_index], tf.int32)
  return dataset.map(
    lambda ex: {**ex, "inputs": tf.concat([token, tf.cast(ex["inputs"], tf.int32)], 0)}
  )


def prompt_id_of(task_name: str) -> int | None:
  """k for a `{task}_prompt_id_{k}` variant `register_mixture` made, else None."""
  found = re.search(r"_prompt_id_(\d+)$", task_name)
  return int(found.group(1)) if found else None


def _per_task_labels(task: seqio.Task, mixture: str) -> dict[str, seqio.Feature]:
  """A head task's targets as a member of `mixture`: ids are labels of the row's own
  task (one head per task), so tasks with different label names can be mixed."""
  targets = task.output_features.get("targets")
  vocabulary = getattr(targets, "vocabulary", None)
  if not isinstance(vocabulary, labels_lib.LabelVocabulary):
    return {}
  return {"targets": dataclasses.replace(targets, vocabulary=vocabulary.in_mixture(mixture))}


def prompt_id_feature() -> seqio.Feature:
  """The output feature `prompt_ids`: one int32 per example, no vocabulary."""
  return seqio.Feature(seqio.PassThroughVocabulary(1), add_eos=False, required=False)


def _variant(task: seqio.Task, name: str, preprocessor, extra_features=None) -> str:
  if name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  seqio.TaskRegistry.add(
    name,
    source=task.source,
    preprocessors=[*task.preprocessors, preprocessor],
    output_features={**task.output_features, **(extra_features or {})},
    postprocess_fn=task.postprocessor,
    metric_fns=list(task.metric_fns),
    shuffle_buffer_size=task.shuffle_buffer_size,
  )
  return name


def register_mixture(
  name: str,
  tasks: Sequence[str],
  rates: Mapping[str, float] | None = None,
  sentinel: int = T5_SENTINEL,
) -> tuple[str, str]:
  """(the prompt-id mixture's name, the task-index mixture's name); see the module
  docstring. Task k of `tasks` is task k of a MultiTaskPrompt with num_tasks >= len(tasks)."""
  if not tasks:
    raise ValueError(f"the multi-task mixture {name!r} needs at least one task")
  if sentinel - len(tasks) < 0:
    raise ValueError(f"sentinel {sentinel} leaves no id for {len(tasks)} tasks")
  with_ids, with_index = [], []
  for k, task_name in enumerate(tasks):
    task = seqio.get_mixture_or_task(task_name)
    if not isinstance(task, seqio.Task):
      raise ValueError(f"{task_name!r} is a mixture; a multi-task mixture is made of tasks")
    rate = 1.0 if rates is None else float(rates[task_name])
    with_ids.append(
      (
        _variant(
          task,
          f"{task_name}_prompt_id_{k}",
          functools.partial(add_prompt_id, prompt_id=k),
          {PROMPT_IDS: prompt_id_feature(), **_per_task_labels(task, name)},
        ),
        rate,
      )
    )
    with_index.append(
      (
        _variant(
          task,
          f"task_index_{k}_{task_name}",
          functools.partial(prepend_task_index, task_index=k, sentinel=sentinel),
        ),
        rate,
      )
    )
  index_name = f"task_index_{name}"
  for mixture, members in ((name, with_ids), (index_name, with_index)):
    if mixture in seqio.MixtureRegistry.names():
      seqio.MixtureRegistry.remove(mixture)
    seqio.MixtureRegistry.add(mixture, members)
  return name, index_name


@gin.configurable
def register_configured(mixtures: Mapping[str, Sequence[str]] | None = None) -> list[str]:
  """Registers `register_mixture(name, tasks)` for each gin-bound {name: tasks}."""
  names: list[str] = []
  for name, tasks in (mixtures or {}).items():
    names.extend(register_mixture(name, list(tasks)))
  return names
