"""Parameters at the start of a run: the frozen base from a checkpoint, fresh trainables.

`INITIAL_CHECKPOINT_PATH` may be any format `prompt_tuning.convert` reads (T5X legacy,
T5X orbax, our orbax, Hugging Face, a `checkpoint_N` of one of our runs). Parameters
whose name matches the assignment-map regex (default `.*prompt.*`) are initialised
fresh; any other parameter missing from the checkpoint is an error that lists them.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import flax
import jax
import numpy as np

from prompt_tuning import convert, tree
from prompt_tuning.data import labels as labels_lib
from prompt_tuning.data import listing
from prompt_tuning.data import task_mixtures
from prompt_tuning.prompts import initializers
from prompt_tuning.t5 import heads as heads_lib
from prompt_tuning.t5 import network

Params = dict[str, Any]


def fresh_init(
  module: network.Transformer, rng: jax.Array, names: set[str] | None = None
) -> Params:
  """Random initial values of `names` (all parameters when None).

  Only the requested leaves leave the jitted init, so XLA drops the work and memory of
  everything else: initialising a prompt does not materialise an XXL model.
  """
  tokens = np.ones((1, 1), np.int32)

  def init(r: jax.Array) -> Params:
    params = flax.linen.unbox(module.init(r, tokens, tokens, tokens)["params"])
    if names is None:
      return params
    return {name: value for name, value in tree.flatten(params).items() if name in names}

  values = jax.jit(init)(rng)
  return values if names is None else tree.unflatten(values)


def _misfits(abstract: dict[str, Any], shapes: dict[str, tuple[int, ...]], fresh: Any) -> list[str]:
  """Clauses naming the parameters of `abstract` (flat) that the checkpoint's `shapes`
  lack or hold in another shape, leaving out those initialised fresh."""
  needed = [name for name in abstract if not fresh.fullmatch(name)]
  missing = sorted(name for name in needed if name not in shapes)
  wrong_shape = sorted(
    f"{name}: checkpoint {shapes[name]} vs model {tuple(abstract[name].shape)}"
    for name in needed
    if name in shapes and shapes[name] != tuple(abstract[name].shape)
  )
  return ([f"missing from the checkpoint: {_first(missing, ', ')}"] if missing else []) + (
    [f"wrong shapes: {_first(wrong_shape, '; ')}"] if wrong_shape else []
  )


def _first(items: list[str], sep: str, count: int = 3) -> str:
  """The first few items and how many more: the one-line error stays readable."""
  more = f" (+{len(items) - count} more)" if len(items) > count else ""
  return sep.join(items[:count]) + more


def _refuse_misfit(path: str, lines: list[str], fresh_regex: str) -> None:
  if lines:
    raise ValueError(
      f"checkpoint {path} does not fit the model ("
      + " | ".join(lines)
      + f"); parameters matching {fresh_regex!r} are "
      "initialised fresh, every other one must be in the checkpoint"
    )


def initial_params(
  module: network.Transformer,
  rng: jax.Array,
  initial_checkpoint_path: str | None,
  fresh_regex: str = ".*prompt.*",
  loader: Callable[[str], Params] | None = None,
) -> Params:
  """The full parameter tree for the start of training (before any resume).

  The backbone's shapes are checked against the checkpoint before anything else: a
  base of another size must read as "does not fit the model", not as the complaint of a
  prompt initialiser that reads the same checkpoint's embedding (the width of a class-
  label prompt), and with the default loader no array is read from a misfit."""
  if not initial_checkpoint_path:
    return fresh_init(module, rng)
  pattern = re.compile(fresh_regex)
  backbone = tree.flatten(network.abstract_params(module.config, None, None))
  if loader is None:
    with convert.open_checkpoint(initial_checkpoint_path) as reader:
      shapes = {name: tuple(info.shape) for name, info in reader.arrays().items()}
    _refuse_misfit(initial_checkpoint_path, _misfits(backbone, shapes, pattern), fresh_regex)
    loader = convert.load_params
  loaded = tree.flatten(loader(initial_checkpoint_path))
  shapes = {name: tuple(value.shape) for name, value in loaded.items()}
  _refuse_misfit(initial_checkpoint_path, _misfits(backbone, shapes, pattern), fresh_regex)
  # Only now the prompt's own initialiser runs (abstractly, for the shapes).
  abstract = tree.flatten(
    network.abstract_params(
      module.config, module.input_prompt, module.layer_prefix, module.head_factory
    )
  )
  _refuse_misfit(initial_checkpoint_path, _misfits(abstract, shapes, pattern), fresh_regex)
  fresh = {name for name in abstract if pattern.fullmatch(name)}
  params = {name: loaded[name] for name in abstract if name not in fresh}
  if fresh:
    params.update(tree.flatten(fresh_init(module, rng, fresh)))
  return tree.unflatten(params)


def check_task_vocabularies(mixture_or_task_name: str, vocab_size: int) -> None:
  """Every vocabulary of the task (or the mixture's tasks) is a readable SentencePiece
  model with no more ids than the model's `vocab_size` embedding rows. Checked before
  any checkpoint is read or step compiled: a vocabulary that does not fit the embedding
  would otherwise train on clamped ids without a word."""
  for task in listing.member_tasks(mixture_or_task_name):
    for name, feature in task.output_features.items():
      if isinstance(feature.vocabulary, labels_lib.HEAD_VOCABULARIES):
        continue  # Head labels and positions never index the embedding.
      initializers.check_vocabulary_fits(
        feature.vocabulary, vocab_size, f"the {name!r} vocabulary of task {task.name}"
      )


def check_head_task(mixture_or_task_name: str, module: network.Transformer) -> None:
  """A model with a linear head runs on head tasks of its kind only, with as many labels
  as the head has outputs (for its task, with one head per task); a text model runs on
  text tasks. Checked before anything is loaded, so that a wrong NUM_LABELS reads as
  itself, not as a shape error in a step."""
  factory = getattr(module, "head_factory", None)
  head = factory() if factory is not None else None
  labelled: list[tuple[int, str, Any]] = []
  for task in listing.member_tasks(mixture_or_task_name):
    targets = task.output_features.get("targets")
    vocabulary = targets.vocabulary if targets is not None else None
    if head is None:
      if labels_lib.is_head_task(task):
        raise ValueError(
          f"task {task.name} has integer labels for a linear head, but the model has no "
          "head; add configs/heads/sequence.gin, token.gin or span.gin after the model file"
        )
      continue
    kind = type(head).__name__
    if not labels_lib.is_head_task(task):
      raise ValueError(
        f"the model has a {kind} but task {task.name} has text targets; use the task's "
        "head variant (e.g. super_glue_rte_v102_cls, conll2003_ner, squad_v110_span)"
      )
    wants_positions = not hasattr(head, "num_labels")
    if wants_positions != isinstance(vocabulary, labels_lib.PositionVocabulary):
      raise ValueError(
        f"task {task.name} does not fit a {kind}: span tasks (`_span`) need "
        "configs/heads/span.gin, label tasks sequence.gin (`_cls`) or token.gin (`_ner`)"
      )
    task_id = _head_task_id(head, task.name)
    if wants_positions:
      continue
    per_token = isinstance(head, heads_lib.TokenHead)
    if per_token != vocabulary.per_token:
      raise ValueError(
        f"task {task.name} has one label per {'word' if vocabulary.per_token else 'example'}, "
        f"which a {kind} does not predict; use configs/heads/"
        f"{'token' if vocabulary.per_token else 'sequence'}.gin"
      )
    labelled.append((task_id, task.name, vocabulary))
  if head is not None and labelled:
    _check_label_counts(head, labelled)


def _head_task_id(head: Any, task_name: str) -> int:
  """The head (0 for a single-task head) that rows of `task_name` use."""
  num_tasks = int(getattr(head, "num_tasks", 1))
  if num_tasks == 1:
    return 0
  task_id = task_mixtures.prompt_id_of(task_name)
  if task_id is None:
    raise ValueError(
      f"the head has HEAD_TASKS = {num_tasks} heads but the rows of {task_name} do not say "
      "their task; train on a mixture of --gin.MULTI_TASK_MIXTURES=\"{'NAME': [...]}\""
    )
  if task_id >= num_tasks:
    raise ValueError(
      f"{task_name} is task {task_id} of its mixture but HEAD_TASKS is {num_tasks}; set "
      f"--gin.HEAD_TASKS to the mixture's number of tasks"
    )
  return task_id


def _check_label_counts(head: Any, labelled: list[tuple[int, str, Any]]) -> None:
  """Every task's label count equals its head's: NUM_LABELS, or with one head per task
  HEAD_LABELS_PER_TASK's entry (tasks with fewer labels than the largest)."""
  num_tasks = int(getattr(head, "num_tasks", 1))
  per_task = getattr(head, "labels_per_task", None)
  if per_task is not None and num_tasks == 1:
    raise ValueError(
      "HEAD_LABELS_PER_TASK is for multi-task heads (HEAD_TASKS > 1); drop it and set NUM_LABELS"
    )
  if num_tasks > 1:
    counts = (
      heads_lib.check_labels_per_task(per_task, num_tasks, head.num_labels)
      if per_task is not None
      else (head.num_labels,) * num_tasks
    )
    wanted = list(counts)
    for task_id, _, vocabulary in labelled:
      wanted[task_id] = vocabulary.num_labels
    # Without per-task counts, one count shared by all tasks is checked below.
    if per_task is not None or len({v.num_labels for _, _, v in labelled}) > 1:
      if tuple(wanted) != counts or max(wanted) != head.num_labels:
        raise ValueError(
          f"HEAD_LABELS_PER_TASK is {per_task} and NUM_LABELS {head.num_labels}, but the "
          f"tasks have {tuple(wanted)} labels; set --gin.NUM_LABELS={max(wanted)} and "
          f"--gin.HEAD_LABELS_PER_TASK=\"{tuple(wanted)}\""
        )
      return
  for _, task_name, vocabulary in labelled:
    if head.num_labels != vocabulary.num_labels:
      raise ValueError(
        f"NUM_LABELS is {head.num_labels} but task {task_name} has {vocabulary.num_labels} "
        f"labels ({', '.join(vocabulary.labels)}); set --gin.NUM_LABELS={vocabulary.num_labels}"
      )
