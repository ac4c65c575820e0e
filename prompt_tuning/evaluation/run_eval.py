"""Evaluation and inference runs: a frozen base, a prompt (from a file or a training
run's checkpoint), and a seqio task's metrics or predictions.

Two modes use a table of saved prompts instead of the model's one prompt, each with a
single decode per batch (prompts.MultiPrompt picks every row's prompt):
- `evaluate(prompt_files=[...])`: prompt ensembling (`ensemble.py`), each example once
  per prompt.
- `infer(task_prompts={task: file})`: multi-task serving, each task's examples with
  their task's prompt, the tasks' rows mixed in one batch.

Metrics come from `evaluator.py` (seqio.Evaluator); inference decodes with the same
batches and jitted model function (`evaluator.model_batch`, `evaluator.on_mesh`).

In a multi-process job every process runs the same sharded computation on the same whole
batches and gets the same results back, but only the leader (process 0,
`logging_utils.is_leader`) prints them and writes files, each written under a temporary
name and renamed when complete.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import IO, Any, Iterable, Iterator, Mapping, Sequence

import gin
import jax
import numpy as np
import seqio
import tensorflow as tf
from absl import logging

from prompt_tuning import models
from prompt_tuning.data import listing
from prompt_tuning.evaluation import ensemble
from prompt_tuning.evaluation import evaluator as evaluator_lib
from prompt_tuning.prompts import multi_prompt
from prompt_tuning.training import buckets as buckets_lib
from prompt_tuning.training import checkpoints as checkpoints_lib
from prompt_tuning.training import data as data_lib
from prompt_tuning.training import fingerprint
from prompt_tuning.training import initialization
from prompt_tuning.training import logging_utils
from prompt_tuning.training import partitioning
from prompt_tuning.training import settings
from prompt_tuning.training import trainable as trainable_lib
from prompt_tuning.training import trainer as trainer_lib


def _params(
  model: models.EncoderDecoderModel, initial_checkpoint_path: str | None, seed: int
) -> Any:
  """Base from the checkpoint; the prompt from its gin-bound initialiser (e.g. a file)."""
  return initialization.initial_params(
    model.module,
    jax.random.PRNGKey(seed),
    initial_checkpoint_path,
    fresh_regex=trainable_lib.with_head(".*prompt.*", model.module),
  )


def _params_without_prompt(
  model: models.EncoderDecoderModel, initial_checkpoint_path: str | None, seed: int
) -> Any:
  """The frozen base alone: the model's own prompt (and its initialiser, e.g. a required
  PROMPT_FILE) is never built, since a prompt table replaces it."""
  backbone = model.module.clone(input_prompt=None)
  return initialization.initial_params(backbone, jax.random.PRNGKey(seed), initial_checkpoint_path)


def _model_prompt_file(model: models.EncoderDecoderModel) -> str | None:
  """The `.npy` the model's input prompt is read from (initializers.from_file), if any."""
  factory = model.module.input_prompt
  if factory is None:
    return None
  try:
    init = getattr(factory(), "init", None)
  except Exception:  # A factory that needs arguments: not a file-backed prompt.
    return None
  return getattr(init, "prompt_file", None)


def check_trained_on(
  params: Any, sources: Sequence[str | None], initial_checkpoint_path: str | None
) -> None:
  """Refuses prompts or a MODEL_DIR trained on another frozen model than `params`' base,
  as resuming a run does: the run's checkpoint metadata records the fingerprint of its
  frozen parameters (`checkpoints.run_metadata` finds the run around a numpy prompt). A
  bare .npy with no run around it carries no fingerprint and is not checked."""
  computed: dict[str, str] = {}
  for source in dict.fromkeys(s for s in sources if s):
    found = checkpoints_lib.run_metadata(str(source))
    if found is None:
      continue
    where, metadata = found
    recorded = metadata.get("base_fingerprint")
    if not recorded:
      continue
    regex = metadata.get("trainable_regex") or trainable_lib.DEFAULT_TRAINABLE
    if regex not in computed:
      _, frozen = trainable_lib.split(params, regex)
      computed[regex] = fingerprint.fingerprint_params(frozen) if frozen else ""
    if computed[regex] != recorded:
      trained_on = metadata.get("base_checkpoint") or "a freshly initialised model"
      raise trainer_lib.BaseCheckpointMismatchError(
        f"{source} was trained on a different frozen model than {initial_checkpoint_path!r} "
        f"(base fingerprint in {where}); evaluate it on the base it was trained on: "
        f"INITIAL_CHECKPOINT_PATH={trained_on!r}"
      )


def _check_vocabularies(model: models.EncoderDecoderModel, mixture_or_task_name: str) -> None:
  initialization.check_task_vocabularies(mixture_or_task_name, model.module.config.vocab_size)
  initialization.check_head_task(mixture_or_task_name, model.module)


def validate_settings(
  job: str,
  *,
  task_feature_lengths: Any,
  batch_size: Any,
  num_examples: Any,
  directories: Mapping[str, Any],
  required: Sequence[str] = (),
) -> None:
  """Refuses settings that cannot evaluate or decode before anything is loaded or
  compiled, as `train` does (`settings`, shared with trainer.validate_settings): a
  batch of 0 rows, an input length of 0, a count of 0 examples (which seqio and the
  decode loop would read as "all"), or an output directory ({macro: path}; None skips
  one not in `required`) that is a file or cannot be written. Nothing is created: a job
  that fails later leaves no empty directory."""
  settings.positive("BATCH_SIZE", batch_size)
  settings.feature_lengths(task_feature_lengths)
  settings.positive(f"run_eval.{job}.num_examples", num_examples, optional=True)
  for macro, path in directories.items():
    if path is not None or macro in required:
      settings.writable_directory(macro, path, create=False)


def _file_list(value: Sequence[str] | str, macro: str) -> list[str]:
  if isinstance(value, str):
    raise ValueError(
      f"{macro} must be a list of .npy paths, e.g. "
      f"--gin.{macro}=\"['a.npy', 'b.npy']\"; got the string {value!r}"
    )
  return [str(path) for path in value]


@gin.configurable
def evaluate(
  *,
  model: models.EncoderDecoderModel = gin.REQUIRED,
  mixture_or_task_name: str = gin.REQUIRED,
  task_feature_lengths: Mapping[str, int] = gin.REQUIRED,
  batch_size: int = gin.REQUIRED,
  initial_checkpoint_path: str | None = None,
  model_dir: str | None = None,
  split: str = "validation",
  num_examples: int | None = None,
  seed: int = 0,
  prompt_files: Sequence[str] | None = None,
  output_dir: str | None = None,
) -> dict[str, dict[str, Any]]:
  """Metrics of the configured prompt on a task or mixture; also logged under model_dir.

  With `prompt_files` (runs/prompt_ensemble_eval.gin) the model's prompt is replaced by
  those prompts and the result is `ensemble.evaluate_ensemble`'s per-task summary: each
  prompt's metrics, their mean, the best and the majority vote, printed as a table and
  written to `output_dir/prompt_ensemble-{split}.json`.
  """
  validate_settings(
    "evaluate",
    task_feature_lengths=task_feature_lengths,
    batch_size=batch_size,
    num_examples=num_examples,
    directories={"MODEL_DIR": model_dir, "OUTPUT_DIR": output_dir},
  )
  if prompt_files is not None:
    return _evaluate_prompt_ensemble(
      model,
      _file_list(prompt_files, "PROMPT_FILES"),
      mixture_or_task_name,
      task_feature_lengths,
      batch_size,
      initial_checkpoint_path,
      split,
      num_examples,
      seed,
      output_dir,
    )
  _check_vocabularies(model, mixture_or_task_name)
  host_params = _params(model, initial_checkpoint_path, seed)
  check_trained_on(host_params, [_model_prompt_file(model), model_dir], initial_checkpoint_path)
  partitioner = partitioning.Partitioner()  # gin: partitioning.Partitioner.*
  params = trainer_lib.place_params(partitioner, model.module, host_params)
  evaluation = evaluator_lib.build_evaluation(
    model,
    mixture_or_task_name,
    task_feature_lengths,
    batch_size,
    split=split,
    num_examples=num_examples,
    partitioner=partitioner,
    # Examples as TensorBoard text beside the eval scalars; without a MODEL_DIR only a
    # gin binding of build_evaluation.summary_dir asks for them.
    **({"summary_dir": os.path.join(model_dir, "eval_only")} if model_dir else {}),
  )
  metrics = evaluation.evaluate(params)
  if not logging_utils.is_leader():
    return metrics
  if model_dir:
    log = logging_utils.MetricsLog(model_dir, subdir="eval_only")
    log.write(0, "eval_only", logging_utils.flatten_metrics(metrics))
    log.close()
  for task, values in metrics.items():
    for name, value in values.items():
      print(f"{task}\t{name}\t{value}")
  return metrics


def _evaluate_prompt_ensemble(
  model: models.EncoderDecoderModel,
  prompt_files: list[str],
  mixture_or_task_name: str,
  task_feature_lengths: Mapping[str, int],
  batch_size: int,
  initial_checkpoint_path: str | None,
  split: str,
  num_examples: int | None,
  seed: int,
  output_dir: str | None,
) -> dict[str, dict[str, Any]]:
  # Read the prompts first: a bad file should not wait for the base checkpoint.
  multi_prompt.load_prompt_files(prompt_files)
  _check_vocabularies(model, mixture_or_task_name)
  params = _params_without_prompt(model, initial_checkpoint_path, seed)
  check_trained_on(params, prompt_files, initial_checkpoint_path)
  partitioner = partitioning.Partitioner()  # gin: partitioning.Partitioner.*
  results = ensemble.evaluate_ensemble(
    model,
    params,
    prompt_files,
    mixture_or_task_name,
    task_feature_lengths,
    batch_size,
    split,
    num_examples,
    partitioner=partitioner,
  )
  if not logging_utils.is_leader():
    return results
  print(ensemble.format_table(results, prompt_files))
  if output_dir:
    path = os.path.join(output_dir, f"prompt_ensemble-{split}.json")
    report = {
      "mixture_or_task_name": mixture_or_task_name,
      "split": split,
      "prompt_files": prompt_files,
      "tasks": results,
    }
    with replaced_when_done({"report": path}) as files:
      json.dump(report, files["report"], indent=1, default=json_value)
    print(f"wrote {path}")
  return results


@contextlib.contextmanager
def replaced_when_done(paths: Mapping[str, str]) -> Iterator[dict[str, IO[str]]]:
  """{name: file} open on `path.tmp` for each {name: path}; each path is replaced by its
  temporary file only when the block completes, so a reader (or a rerun after a crash)
  never finds a half-written file. On an error the temporary files are removed."""
  for path in paths.values():
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  files = {name: open(path + ".tmp", "w") for name, path in paths.items()}
  try:
    yield files
  except BaseException:
    for f in files.values():
      f.close()
      os.remove(f.name)
    raise
  for f in files.values():
    f.close()
  for name, path in paths.items():
    os.replace(files[name].name, path)


def json_value(value: Any) -> Any:
  """JSON for what the standard encoder refuses: postprocessed predictions may be numpy
  scalars or arrays, or bytes."""
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  if isinstance(value, bytes):
    return value.decode("utf-8", errors="replace")
  return str(value)


@gin.configurable
def infer(
  *,
  model: models.EncoderDecoderModel = gin.REQUIRED,
  mixture_or_task_name: str = gin.REQUIRED,
  task_feature_lengths: Mapping[str, int] = gin.REQUIRED,
  batch_size: int = gin.REQUIRED,
  output_dir: str = gin.REQUIRED,
  initial_checkpoint_path: str | None = None,
  split: str = "validation",
  num_examples: int | None = None,
  seed: int = 0,
  task_prompts: Mapping[str, str] | None = None,
  length_buckets: str | Sequence[int] | None = buckets_lib.AUTO,
) -> list[str]:
  """Decodes every example of each task and writes `{task}-{split}.jsonl` files.

  Each batch's inputs are cut to the smallest length bucket that holds its longest row
  (`length_buckets`, as `evaluator.build_evaluation`'s; None: the full input length). The
  rows keep their order, so the files are the same either way.

  The tasks of a mixture are interleaved row by row into the batches. With
  `task_prompts` ({task name: prompt .npy}, runs/prompt_serve.gin) the named tasks of the
  mixture are served together, each row with its task's prompt from one prompt table;
  tasks without a prompt are skipped with a warning. Without it, every row uses the
  model's configured prompt.
  """
  validate_settings(
    "infer",
    task_feature_lengths=task_feature_lengths,
    batch_size=batch_size,
    num_examples=num_examples,
    directories={"OUTPUT_DIR": output_dir},
    required=("OUTPUT_DIR",),
  )
  tasks = tasks_with_split(mixture_or_task_name, split)
  _check_vocabularies(model, mixture_or_task_name)
  serving = task_prompts is not None
  if serving:
    tasks, files = serving_table(mixture_or_task_name, tasks, task_prompts)
    table = multi_prompt.load_prompt_files(files)
    base = _params_without_prompt(model, initial_checkpoint_path, seed)
    check_trained_on(base, files, initial_checkpoint_path)
    model, params = models.with_prompt_table(model, base, table)
  else:
    params = _params(model, initial_checkpoint_path, seed)
    check_trained_on(params, [_model_prompt_file(model)], initial_checkpoint_path)
  partitioner = partitioning.Partitioner()  # gin: partitioning.Partitioner.*
  params = trainer_lib.place_params(partitioner, model.module, params)
  predict = evaluator_lib.on_mesh(model.predict_batch, partitioner)
  encoder_buckets = buckets_lib.resolve(length_buckets, task_feature_lengths["inputs"])
  # Every process reads every task's whole split and decodes the same batches; the
  # leader writes all the rows, the others only take part in the decode.
  streams = [_examples(task, task_feature_lengths, split, num_examples) for task in tasks]
  paths = {task.name: os.path.join(output_dir, f"{task.name}-{split}.jsonl") for task in tasks}
  leader = logging_utils.is_leader()
  with replaced_when_done(paths) if leader else contextlib.nullcontext() as outputs:
    for chunk in _chunks(_round_robin(streams), batch_size):
      features = {key: np.stack([f[key] for _, _, f in chunk]) for key in chunk[0][2]}
      if serving:  # Task i's rows use row i of the prompt table.
        features["prompt_ids"] = np.array([index for index, _, _ in chunk], np.int32)
      batch, rows = evaluator_lib.model_batch(features, batch_size)
      tokens = predict(params, buckets_lib.trim(batch, encoder_buckets))[:rows]
      if outputs is not None:
        _write_predictions(outputs, tasks, chunk, tokens)
  if leader:
    for path in paths.values():
      print(f"wrote {path}")
  return list(paths.values())


def _write_predictions(
  outputs: Mapping[str, IO[str]],
  tasks: Sequence[seqio.Task],
  chunk: Sequence[tuple[int, Any, Any]],
  tokens: np.ndarray,
) -> None:
  """One JSON line per row, into its task's file."""
  for (index, raw, _), row in zip(chunk, tokens):
    vocabulary = tasks[index].output_features["targets"].vocabulary
    record = {
      "inputs": _text(raw, "inputs", vocabulary),
      "target": _text(raw, "targets", vocabulary),
      "prediction": vocabulary.decode(row.tolist()),
    }
    outputs[tasks[index].name].write(json.dumps(record) + "\n")


def tasks_with_split(mixture_or_task_name: str, split: str) -> list[seqio.Task]:
  """The task, or the mixture's tasks, that have `split`; an error when none has."""
  tasks = []
  for task in listing.member_tasks(mixture_or_task_name):
    if split in task.splits:
      tasks.append(task)
    else:
      logging.info("skipping %s: no %s split", task.name, split)
  if not tasks:
    raise ValueError(f"{mixture_or_task_name} has no task with a {split!r} split")
  return tasks


def serving_table(
  mixture_or_task_name: str, tasks: Sequence[seqio.Task], task_prompts: Mapping[str, str]
) -> tuple[list[seqio.Task], list[str]]:
  """The served tasks (those of `tasks` with a prompt) and their prompt files, in table
  order: task i's rows use prompt i."""
  if not isinstance(task_prompts, Mapping) or not task_prompts:
    raise ValueError(
      "TASK_PROMPTS must map task names to prompt .npy files, e.g. "
      "--gin.TASK_PROMPTS=\"{'task_a': 'a.npy', 'task_b': 'b.npy'}\""
    )
  members = {task.name for task in listing.member_tasks(mixture_or_task_name)}
  unknown = sorted(set(task_prompts) - members)
  if unknown:
    raise ValueError(
      f"TASK_PROMPTS names {', '.join(unknown)}, not a task of "
      f"{mixture_or_task_name} ({', '.join(sorted(members))})"
    )
  served = [task for task in tasks if task.name in task_prompts]
  if not served:
    raise ValueError("none of the tasks in TASK_PROMPTS has the split being decoded")
  skipped = [task.name for task in tasks if task.name not in task_prompts]
  if skipped:
    logging.warning("not served (no prompt in TASK_PROMPTS): %s", ", ".join(skipped))
  return served, [str(task_prompts[task.name]) for task in served]


def _examples(
  task: seqio.Task, task_feature_lengths: Mapping[str, int], split: str, num_examples: int | None
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
  """(raw example, model features) pairs of one task, in the dataset's order."""
  dataset = task.get_dataset(dict(task_feature_lengths), split=split, shuffle=False)
  if num_examples:
    dataset = dataset.take(num_examples)
  features = data_lib.feature_converter(task.name)(dataset, dict(task_feature_lengths))
  return tf.data.Dataset.zip((dataset, features)).as_numpy_iterator()


def _round_robin(streams: Sequence[Iterator[Any]]) -> Iterator[tuple[int, Any, Any]]:
  """(stream index, *item), one item of each unfinished stream in turn: a request mix
  in which consecutive rows belong to different tasks."""
  active = list(enumerate(streams))
  while active:
    still_active = []
    for index, stream in active:
      item = next(stream, None)
      if item is not None:
        yield (index, *item)
        still_active.append((index, stream))
    active = still_active


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
  chunk: list[Any] = []
  for item in items:
    chunk.append(item)
    if len(chunk) == size:
      yield chunk
      chunk = []
  if chunk:
    yield chunk


def _text(raw: Mapping[str, Any], feature: str, vocabulary: Any) -> str:
  """The example's original text when the task keeps it, else the decoded tokens."""
  pretokenized = raw.get(f"{feature}_pretokenized")
  if pretokenized is not None:
    return pretokenized.decode("utf-8") if isinstance(pretokenized, bytes) else str(pretokenized)
  return vocabulary.decode([int(t) for t in raw[feature] if t > 0])
