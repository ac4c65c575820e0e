"""Prompt ensembling (Lester et al. 2021, section 7): N prompts on one frozen model,
decoded in one forward pass per batch, every number computed by `seqio.Evaluator`.

Each batch of B examples becomes N·B rows, rows [k·B, (k+1)·B) carrying prompt k through
the `prompt_ids` feature into a `MultiPrompt` table. The evaluator then scores each
prompt's share of those decodes in turn, so a prompt's metrics and postprocessed
predictions are exactly those of the prompt alone. The ensemble is the majority vote
over the postprocessed predictions of each example (ties: lowest prompt index); it is
scored by handing the evaluator, per example, the decode of the prompt that won.

The decode runs on a `partitioning.Partitioner` mesh like the single-prompt evaluation:
the frozen backbone sharded by the logical axis rules, the prompt table replicated, each
N·B batch split over "data". Every process of a multi-host job reads the whole split
and gets the whole batch's tokens back, so all of them compute the same summary.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import seqio

from prompt_tuning import models, tables
from prompt_tuning.data import listing
from prompt_tuning.evaluation import evaluator as evaluator_lib
from prompt_tuning.prompts import multi_prompt
from prompt_tuning.training import partitioning
from prompt_tuning.training import trainer as trainer_lib

Params = Mapping[str, Any]


def vote(predictions: Sequence[Sequence[Any]]) -> list[int]:
  """Per example, the prompt whose prediction wins the majority vote: of the values most
  prompts predicted, the one of the lowest-index prompt. `predictions[k][i]` is prompt
  k on example i. Values are compared with `==`, so unhashable postprocessed outputs
  (dicts) work too."""
  if not predictions:
    raise ValueError("majority_vote needs predictions of at least one prompt")
  lengths = [len(p) for p in predictions]
  if len(set(lengths)) != 1:
    raise ValueError(f"every prompt needs one prediction per example; got lengths {lengths}")
  winners = []
  for column in zip(*predictions):
    votes = [sum(other == value for other in column) for value in column]
    winners.append(votes.index(max(votes)))  # index() finds the lowest prompt.
  return winners


def majority_vote(predictions: Sequence[Sequence[Any]]) -> list[Any]:
  """Per example, the value most prompts predicted; a tie goes to the value of the
  lowest-index prompt among the tied ones. `predictions[k][i]` is prompt k on example i."""
  return [predictions[k][i] for i, k in enumerate(vote(predictions))]


def rows_for_prompts(batch: Mapping[str, np.ndarray], num_prompts: int) -> dict[str, np.ndarray]:
  """[B, ...] features -> [N·B, ...], prompt-major, with prompt_ids [N·B]."""
  rows = len(batch["encoder_input_tokens"])
  tiled = {k: np.concatenate([v] * num_prompts, axis=0) for k, v in batch.items()}
  tiled["prompt_ids"] = np.repeat(np.arange(num_prompts, dtype=np.int32), rows)
  return tiled


def _decode(
  evaluation: evaluator_lib.SeqioEvaluation,
  task: seqio.Task,
  predict: evaluator_lib.ModelFn,
  params: Params,
  num_prompts: int,
  batch_size: int,
) -> list[evaluator_lib.Outputs]:
  """Each prompt's (example index, tokens) for the task: one N·B-row call per batch."""
  decodes: list[evaluator_lib.Outputs] = [[] for _ in range(num_prompts)]
  for indices, batch, rows in evaluator_lib.batches(evaluation.datasets[task.name], batch_size):
    tokens = predict(params, rows_for_prompts(batch, num_prompts))
    for k, outputs in enumerate(decodes):
      outputs.extend(zip(indices, tokens[k * batch_size : k * batch_size + rows].tolist()))
  return decodes


def _evaluate_task(
  task: seqio.Task,
  predict: evaluator_lib.ModelFn,
  params: Params,
  num_prompts: int,
  task_feature_lengths: Mapping[str, int],
  batch_size: int,
  split: str,
  num_examples: int | None,
) -> dict[str, Any]:
  # Not a per-process seqio shard: every process feeds the same whole batches, so the
  # decoded tokens cover the whole split in each of them.
  evaluation = evaluator_lib.SeqioEvaluation(task.name, task_feature_lengths, split, num_examples)
  decodes = _decode(evaluation, task, predict, params, num_prompts, batch_size)
  prompt_metrics, per_prompt = [], []
  for outputs in decodes:
    prompt_metrics.append(
      evaluation.run(predict_fn=evaluator_lib.cached_outputs(outputs))[task.name]
    )
    per_prompt.append(evaluation.predictions[task.name])
  winners = vote(per_prompt)
  # The winner's decode postprocesses to the voted value, so seqio scores the vote.
  voted_outputs = [decodes[k][i] for i, k in enumerate(winners)]
  voted_metrics = evaluation.run(predict_fn=evaluator_lib.cached_outputs(voted_outputs))[task.name]
  names = [name for name, value in prompt_metrics[0].items() if isinstance(value, (int, float))]
  mean = {name: float(np.mean([m[name] for m in prompt_metrics])) for name in names}
  best_prompt = {name: int(np.argmax([m[name] for m in prompt_metrics])) for name in names}
  best = {name: prompt_metrics[index][name] for name, index in best_prompt.items()}
  return {
    "prompts": prompt_metrics,
    "mean": mean,
    "best": best,
    "best_prompt": best_prompt,
    "majority_vote": voted_metrics,
    "predictions": per_prompt,
    "majority_vote_predictions": [per_prompt[k][i] for i, k in enumerate(winners)],
  }


def _ensemble_tasks(mixture_or_task_name: str, split: str) -> list[seqio.Task]:
  """The tasks with predict metrics and the split; score metrics are refused, since the
  vote is over decoded predictions."""
  evaluated = []
  for task in listing.member_tasks(mixture_or_task_name):
    if task.score_metric_fns:
      raise ValueError(
        f"task {task.name} has score (rank classification) metrics; "
        "ensembling votes over decoded predictions, so use a task with "
        "predict metrics"
      )
    if split in task.splits and task.predict_metric_fns:
      evaluated.append(task)
  if not evaluated:
    raise ValueError(
      f"{mixture_or_task_name} has no task with predict metrics and a {split!r} split"
    )
  return evaluated


def evaluate_ensemble(
  model: models.EncoderDecoderModel,
  params_without_prompt: Params,
  prompt_files: Sequence[str],
  mixture_or_task_name: str,
  task_feature_lengths: Mapping[str, int],
  batch_size: int,
  split: str = "validation",
  num_examples: int | None = None,
  partitioner: partitioning.Partitioner | None = None,
) -> dict[str, dict[str, Any]]:
  """{task: {"prompts": [metrics per prompt], "mean", "best", "best_prompt",
  "majority_vote", "predictions", "majority_vote_predictions"}}.

  `model` is the frozen model with any (or no) input prompt; its prompt is replaced by a
  table of the files' prompts. Each model call decodes len(prompt_files)·batch_size rows,
  split over the "data" axis of `partitioner` (default: `partitioning.Partitioner()`,
  as gin binds it) when it divides them.
  """
  table = multi_prompt.load_prompt_files(list(prompt_files))
  ensemble_model, params = models.with_prompt_table(model, params_without_prompt, table)
  tasks = _ensemble_tasks(mixture_or_task_name, split)
  partitioner = partitioner or partitioning.Partitioner()
  params = trainer_lib.place_params(partitioner, ensemble_model.module, params)
  predict = evaluator_lib.on_mesh(ensemble_model.predict_batch, partitioner)
  return {
    task.name: _evaluate_task(
      task, predict, params, table.shape[0], task_feature_lengths, batch_size, split, num_examples
    )
    for task in tasks
  }


def format_table(
  results: Mapping[str, Mapping[str, Any]], prompt_files: Sequence[str] | None = None
) -> str:
  """Per task, one row per prompt, then mean, best (with its prompt's index) and majority
  vote; one column per numeric metric. Prompt files are listed by index first, since
  exported prompts all share one base name."""
  lines = [f"prompt {k}: {path}" for k, path in enumerate(prompt_files or ())]
  for task, summary in results.items():
    names = list(summary["mean"])
    rows = [
      (f"prompt {k}", [_number(m.get(name)) for name in names])
      for k, m in enumerate(summary["prompts"])
    ]
    rows.append(("mean", [_number(summary["mean"][name]) for name in names]))
    rows.append(
      (
        "best",
        [f"{_number(summary['best'][name])} (#{summary['best_prompt'][name]})" for name in names],
      )
    )
    rows.append(("majority vote", [_number(summary["majority_vote"].get(name)) for name in names]))
    # Labels indented under the task name; two more spaces before the first number.
    lines.append("")
    lines.append(
      tables.format_table(
        [f"{task}  ", *names], [[f"  {label}  ", *cells] for label, cells in rows]
      )
    )
  return "\n".join(lines).strip("\n")


def _number(value: Any) -> str:
  return "-" if value is None else f"{float(value):.2f}"
