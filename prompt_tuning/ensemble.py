"""Prompt ensembling (Lester et al. 2021, section 7): N prompts on one frozen model,
evaluated in one forward pass per batch.

Each batch of B examples becomes N·B rows, rows [k·B, (k+1)·B) carrying prompt k through
the `prompt_ids` feature into a `MultiPrompt` table. Every prompt's predictions go
through the task's own postprocessor and metric functions; the ensemble is the majority
vote over the postprocessed predictions of each example (ties: lowest prompt index).

The decode runs on a `partitioning.Partitioner` mesh like the single-prompt evaluation:
the frozen backbone sharded by the logical axis rules, the prompt table replicated, each
N·B batch split over "data". Every process of a multi-host job reads the whole split
and gets the whole batch's tokens back, so all of them compute the same summary.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
import seqio

from prompt_tuning import models
from prompt_tuning.prompts import multi_prompt
from prompt_tuning.training import data as data_lib
from prompt_tuning.training import evaluation as evaluation_lib
from prompt_tuning.training import partitioning
from prompt_tuning.training import trainer as trainer_lib

Params = Mapping[str, Any]


def majority_vote(predictions: Sequence[Sequence[Any]]) -> list[Any]:
  """Per example, the value most prompts predicted; a tie goes to the value of the
  lowest-index prompt among the tied ones. `predictions[k][i]` is prompt k on example i.

  Values are compared with `==`, so unhashable postprocessed outputs (dicts) work too.
  """
  if not predictions:
    raise ValueError("majority_vote needs predictions of at least one prompt")
  counts = {len(p) for p in predictions}
  if len(counts) != 1:
    raise ValueError(f"every prompt needs one prediction per example; got lengths "
                     f"{[len(p) for p in predictions]}")
  voted = []
  for column in zip(*predictions):
    votes = [sum(other == value for other in column) for value in column]
    voted.append(column[votes.index(max(votes))])  # index() finds the lowest prompt.
  return voted


def predict_on_mesh(model: models.EncoderDecoderModel,
                    partitioner: partitioning.Partitioner) -> Callable[..., Any]:
  """`run(params, batch) -> tokens`: decoding on the partitioner's mesh, for a batch of
  host arrays that every process holds whole (split over "data" when its rows divide,
  else replicated). The tokens come back as host arrays of the whole batch in every
  process (gathered across processes when they span several), so every process must
  make the same calls. Also `run_eval.infer`'s decode."""
  predict = jax.jit(model.predict_batch)

  def run(params: Any, batch: Mapping[str, np.ndarray]) -> np.ndarray:
    with partitioner.activate():  # Tracing must see the mesh and the rules.
      return partitioning.fetch(predict(params, partitioner.shard_replicated_batch(batch)))

  return run


def _rows_for_prompts(batch: Mapping[str, np.ndarray], num_prompts: int
                      ) -> dict[str, np.ndarray]:
  """[B, ...] features -> [N·B, ...], prompt-major, with prompt_ids [N·B]."""
  rows = len(batch["encoder_input_tokens"])
  tiled = {k: np.concatenate([v] * num_prompts, axis=0) for k, v in batch.items()}
  tiled["prompt_ids"] = np.repeat(np.arange(num_prompts, dtype=np.int32), rows)
  return tiled


def _task_metrics(task: seqio.Task, targets: list[Any], predictions: list[Any]
                  ) -> dict[str, Any]:
  results: dict[str, Any] = {}
  for metric_fn in task.predict_metric_fns:
    results.update({name: evaluation_lib._scalar(value)  # pylint: disable=protected-access
                    for name, value in metric_fn(targets, predictions).items()})
  return results


def _postprocess(task: seqio.Task, text: str, example: Mapping[str, Any],
                 is_target: bool) -> Any:
  if task.postprocess_fn is None:
    return text
  return task.postprocess_fn(text, example=example, is_target=is_target)


def _summarise(task: seqio.Task, targets: list[Any], per_prompt: list[list[Any]]
               ) -> dict[str, Any]:
  prompt_metrics = [_task_metrics(task, targets, preds) for preds in per_prompt]
  voted = majority_vote(per_prompt)
  names = [name for name, value in prompt_metrics[0].items()
           if isinstance(value, (int, float))]
  mean = {name: float(np.mean([m[name] for m in prompt_metrics])) for name in names}
  best_prompt = {name: int(np.argmax([m[name] for m in prompt_metrics])) for name in names}
  best = {name: prompt_metrics[index][name] for name, index in best_prompt.items()}
  return {"prompts": prompt_metrics, "mean": mean, "best": best, "best_prompt": best_prompt,
          "majority_vote": _task_metrics(task, targets, voted),
          "predictions": per_prompt, "majority_vote_predictions": voted}


def _evaluate_task(task: seqio.Task, predict: Callable[..., Any], params: Params,
                   num_prompts: int, task_feature_lengths: Mapping[str, int],
                   batch_size: int, split: str, num_examples: int | None) -> dict[str, Any]:
  # Not a per-process seqio shard: every process feeds the same whole batches, so the
  # decoded tokens cover the whole split in each of them.
  dataset = task.get_dataset(dict(task_feature_lengths), split=split, shuffle=False)
  if num_examples:
    dataset = dataset.take(num_examples)
  vocabulary = task.output_features["targets"].vocabulary
  examples = list(dataset.as_numpy_iterator())
  features = data_lib.feature_converter()(dataset, dict(task_feature_lengths))
  tokens: list[list[list[int]]] = [[] for _ in range(num_prompts)]
  for raw in features.batch(batch_size).as_numpy_iterator():
    batch = {k: np.asarray(raw[k]) for k in evaluation_lib.MODEL_FEATURES if k in raw}
    padded, rows = data_lib.pad_batch(batch, batch_size)
    out = np.asarray(predict(params, _rows_for_prompts(padded, num_prompts)))
    for k in range(num_prompts):
      tokens[k].extend(out[k * batch_size:k * batch_size + rows].tolist())

  def target_text(example: Mapping[str, Any]) -> str:
    if "targets_pretokenized" in example:
      value = example["targets_pretokenized"]
      return value.decode("utf-8") if isinstance(value, bytes) else str(value)
    return vocabulary.decode([int(t) for t in example["targets"]])

  targets = [_postprocess(task, target_text(ex), ex, True) for ex in examples]
  per_prompt = [[_postprocess(task, vocabulary.decode(row), ex, False)
                 for row, ex in zip(tokens[k], examples)] for k in range(num_prompts)]
  return _summarise(task, targets, per_prompt)


def evaluate_ensemble(model: models.EncoderDecoderModel, params_without_prompt: Params,
                      prompt_files: Sequence[str], mixture_or_task_name: str,
                      task_feature_lengths: Mapping[str, int], batch_size: int,
                      split: str = "validation", num_examples: int | None = None,
                      partitioner: partitioning.Partitioner | None = None
                      ) -> dict[str, dict[str, Any]]:
  """{task: {"prompts": [metrics per prompt], "mean", "best", "best_prompt",
  "majority_vote", "predictions", "majority_vote_predictions"}}.

  `model` is the frozen model with any (or no) input prompt; its prompt is replaced by a
  table of the files' prompts. Each model call decodes len(prompt_files)·batch_size rows,
  split over the "data" axis of `partitioner` (default: `partitioning.Partitioner()`,
  as gin binds it) when it divides them.
  """
  table = multi_prompt.load_prompt_files(list(prompt_files))
  ensemble_model, params = multi_prompt.with_prompt_table(model, params_without_prompt,
                                                          table)
  num_prompts = table.shape[0]
  provider = seqio.get_mixture_or_task(mixture_or_task_name)
  evaluated = []
  for task in provider.tasks if isinstance(provider, seqio.Mixture) else [provider]:
    if task.score_metric_fns:
      raise ValueError(f"task {task.name} has score (rank classification) metrics; "
                       "ensembling votes over decoded predictions, so use a task with "
                       "predict metrics")
    if split in task.splits and task.predict_metric_fns:
      evaluated.append(task)
  if not evaluated:
    raise ValueError(f"{mixture_or_task_name} has no task with predict metrics and a "
                     f"{split!r} split")
  partitioner = partitioner or partitioning.Partitioner()
  params = trainer_lib.place_params(partitioner, ensemble_model.module, params)
  predict = predict_on_mesh(ensemble_model, partitioner)
  return {task.name: _evaluate_task(task, predict, params, num_prompts,
                                    task_feature_lengths, batch_size, split, num_examples)
          for task in evaluated}


def format_table(results: Mapping[str, Mapping[str, Any]],
                 prompt_files: Sequence[str] | None = None) -> str:
  """Per task, one row per prompt, then mean, best (with its prompt's index) and majority
  vote; one column per numeric metric. Prompt files are listed by index first, since
  exported prompts all share one base name."""
  lines = [f"prompt {k}: {path}" for k, path in enumerate(prompt_files or ())]
  for task, summary in results.items():
    names = list(summary["mean"])
    rows = [(f"prompt {k}", [_number(m.get(name)) for name in names])
            for k, m in enumerate(summary["prompts"])]
    rows.append(("mean", [_number(summary["mean"][name]) for name in names]))
    rows.append(("best", [f"{_number(summary['best'][name])} "
                          f"(#{summary['best_prompt'][name]})" for name in names]))
    rows.append(("majority vote", [_number(summary["majority_vote"].get(name))
                                   for name in names]))
    first = max(len(task), *(len(label) + 2 for label, _ in rows)) + 2
    widths = [max(len(name), *(len(cells[i]) for _, cells in rows)) + 2
              for i, name in enumerate(names)]
    lines.append("")
    lines.append(f"{task:<{first}}" + "".join(f"{n:>{w}}" for n, w in zip(names, widths)))
    for label, cells in rows:
      lines.append(f"  {label:<{first - 2}}"
                   + "".join(f"{c:>{w}}" for c, w in zip(cells, widths)))
  return "\n".join(lines).strip("\n")


def _number(value: Any) -> str:
  return "-" if value is None else f"{float(value):.2f}"
