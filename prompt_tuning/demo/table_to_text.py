"""`prompt-tuning demo --task table_to_text`: Prefix-Tuning on its home ground, offline.

1. LM-adapt the demo's tiny T5 1.1 from scratch on the bundled corpus plus generated
   restaurant descriptions (`data.demo_table`: the model reads the domain's words, never
   a table), as in the sentiment demo.
2. Freeze it and train Prefix-Tuning's prefixes (the paper's table-to-text length 10,
   MLP reparameterisation, keys and values in encoder self-attention, decoder
   self-attention and cross-attention) on `demo_table_to_text`: linearised attribute
   tables -> sentences. Evaluation scores each table once against both of its
   references, E2E-style: BLEU and COCO's ROUGE-L before and after training.
3. Print the before/after table and a sample of generations; write the loss PNG.

Generation here is greedy, to keep the demo within a few minutes on 2 CPU cores; the
paper's beam search is `configs/models/decoding/table_to_text.gin`.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from prompt_tuning.data import demo as demo_data
from prompt_tuning.data import demo_table
from prompt_tuning.demo import sentiment
from prompt_tuning.evaluation import evaluator
from prompt_tuning.training import logging_utils

TASK = demo_table.TABLE_TASK
LENGTHS = {"inputs": 96, "targets": 48}
PREFIX_LENGTH = 10  # The paper's, for table-to-text.
LEARNING_RATE = 1e-3
SAMPLES = 4


class _RecordingFactory:
  """`evaluation_factory` that keeps every evaluation's predictions, to show generations
  from before and after training."""

  def __init__(self) -> None:
    self.predictions: list[list[Any]] = []

  def __call__(self, *args: Any, **kwargs: Any) -> Any:
    evaluation = evaluator.build_evaluation(*args, **kwargs)
    evaluate = evaluation.evaluate

    def recording(*a: Any, **k: Any) -> Any:
      results = evaluate(*a, **k)
      self.predictions.append(list(evaluation.predictions.get(TASK, [])))
      return results

    evaluation.evaluate = recording
    return evaluation


def prefix_tune(
  model_dir: str, lm_checkpoint: str, steps: int, prefix_length: int, batch_size: int
) -> tuple[Any, list[list[Any]]]:
  """Stage 2: the frozen LM-adapted model and Prefix-Tuning's MLP-produced prefixes,
  evaluated before training and at the end."""
  factory = _RecordingFactory()
  result = sentiment._train(
    [
      "prompt_tuning/configs/models/t5_1_1_small_prompt.gin",
      "prompt_tuning/configs/prompts/prefix_tuning.gin",
      "prompt_tuning/configs/runs/prompt_finetune.gin",
    ],
    {
      **sentiment._model_bindings(demo_data.demo_vocab_size()),
      "MIXTURE_OR_TASK_NAME": repr(TASK),
      "TASK_FEATURE_LENGTHS": repr(LENGTHS),
      "MODEL_DIR": repr(model_dir),
      "INITIAL_CHECKPOINT_PATH": repr(lm_checkpoint),
      "PROMPT_LENGTH": prefix_length,
      "PREFIX_CROSS_ATTENTION": True,
      "PREFIX_MLP_DIM": 128,
      "LEARNING_RATE": LEARNING_RATE,
      "TRAIN_STEPS": steps,
      "BATCH_SIZE": batch_size,
      "EVAL_PERIOD": steps,
      "CHECKPOINT_PERIOD": steps,
      "DROPOUT_RATE": 0.0,
      "trainer.train.evaluate_at_start": True,
      "trainer.train.log_period": 10,
    },
    evaluation_factory=factory,
  )
  return result, factory.predictions


def run_demo(
  out_dir: str, lm_steps: int, prompt_steps: int, prefix_length: int, batch_size: int
) -> dict[str, Any]:
  os.makedirs(out_dir, exist_ok=True)
  lm_dir = os.path.join(out_dir, "lm_adapt")
  prefix_dir = os.path.join(out_dir, "prefix_tuning")
  started = time.time()
  print(
    f"[1/3] LM-adapting a tiny T5 1.1 from scratch on the bundled corpus and generated "
    f"restaurant descriptions for {lm_steps} steps -> {lm_dir}",
    flush=True,
  )
  lm = sentiment.lm_adapt(lm_dir, lm_steps, batch_size, demo_table.TABLE_LM_MIXTURE)
  print(
    f"[2/3] Prefix-Tuning (P={prefix_length}, MLP reparameterisation, frozen model) on "
    f"{TASK} for {prompt_steps} steps -> {prefix_dir}",
    flush=True,
  )
  pt, predictions = prefix_tune(
    prefix_dir,
    os.path.join(lm_dir, f"checkpoint_{lm.step}"),
    prompt_steps,
    prefix_length,
    batch_size,
  )
  evals = [r for r in logging_utils.read_metrics(prefix_dir) if r["kind"] == "eval"]
  plot_path = os.path.join(out_dir, "loss_curves.png")
  sentiment._plot(
    out_dir,
    {
      "LM adaptation (all parameters)": lm_dir,
      f"Prefix-Tuning (P={prefix_length}, frozen model)": prefix_dir,
    },
    plot_path,
  )
  losses = [loss for _, loss in pt.losses]
  after = pt.last_eval.get(TASK, {})
  table = {
    "bleu_before": float(evals[0][f"{TASK}/bleu"]),
    "bleu_after": float(after.get("bleu", float("nan"))),
    "rouge_l_before": float(evals[0][f"{TASK}/rouge_l"]),
    "rouge_l_after": float(after.get("rouge_l", float("nan"))),
    "prefix_loss_first": losses[0],
    "prefix_loss_last": losses[-1],
    "trainable_parameters": _trainable_count(pt.trainable),
    "seconds": time.time() - started,
    "samples": _samples(predictions),
  }
  with open(os.path.join(out_dir, "results.json"), "w") as f:
    json.dump(table, f, indent=2)
  _print_table(table, out_dir, prefix_dir, plot_path)
  return table


def _trainable_count(trainable: Any) -> int:
  import jax
  import numpy as np

  return int(sum(np.size(leaf) for leaf in jax.tree.leaves(trainable)))


def _samples(predictions: list[list[Any]]) -> list[dict[str, str]]:
  """The first validation tables with their generations before and after training."""
  rows = demo_table.examples("validation")[::2][:SAMPLES]  # Two references per table.
  before = predictions[0] if predictions else []
  after = predictions[-1] if predictions else []
  samples = []
  for i, row in enumerate(rows):
    samples.append(
      {
        "table": row["inputs"],
        "reference": row["targets"],
        # Each table appears twice (once per reference); its first row's prediction.
        "before": str(before[2 * i]) if 2 * i < len(before) else "",
        "after": str(after[2 * i]) if 2 * i < len(after) else "",
      }
    )
  return samples


def _print_table(table: dict[str, Any], out_dir: str, prefix_dir: str, plot_path: str) -> None:
  count = demo_table.SPLIT_SIZES["validation"]
  print(f"[3/3] Results ({TASK} validation: {count} tables, 2 references each; greedy)")
  print(f"  {'':34}{'before':>10}{'after':>10}")
  print(f"  {'BLEU':34}{table['bleu_before']:>10.1f}{table['bleu_after']:>10.1f}")
  print(f"  {'ROUGE-L':34}{table['rouge_l_before']:>10.1f}{table['rouge_l_after']:>10.1f}")
  print(
    f"  {'Prefix-Tuning train loss':34}{table['prefix_loss_first']:>10.2f}"
    f"{table['prefix_loss_last']:>10.2f}"
  )
  print(
    f"  trainable parameters: {table['trainable_parameters']:,} (the prefix MLP); "
    f"time {table['seconds']:.0f}s"
  )
  print("Sample generations:")
  for sample in table["samples"]:
    print(f"  table      {sample['table']}")
    print(f"  reference  {sample['reference']}")
    print(f"  before     {sample['before']}")
    print(f"  after      {sample['after']}")
  print(f"Outputs under {out_dir}:")
  print(f"  loss curves        {plot_path}")
  print(f"  orbax checkpoints  {prefix_dir}/checkpoint_*")
  print(f"  metrics            {prefix_dir}/metrics.jsonl (TensorBoard: {prefix_dir}/train)")
  print(f"  table              {out_dir}/results.json")
