"""`prompt-tuning demo --head sequence|token|span`: P-Tuning v2 with a linear head,
offline (docs/heads.md).

1. LM-adapt the demo's tiny T5 1.1 from scratch on the bundled corpus, as the sentiment
   demo does; for the token and span demos also on generated stories and sentences with
   neither tags nor questions (`demo_story_lm`): the frozen model has read the domain.
2. Freeze it and train P-Tuning v2's deep prompts (every encoder layer) plus a randomly
   initialised linear head on the encoder, no verbalizer and no decoder:
     sequence  demo_sentiment_cls, the bundled reviews as two classes (accuracy);
     token     demo_ner, generated BIO-tagged sentences (entity F1, seqeval's);
     span      demo_qa_span, generated stories and questions (SQuAD EM / F1).
   Each is evaluated before training (the random head) and at the end.
3. Print the before/after table; write the loss PNG and results.json.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import numpy as np

from prompt_tuning import tree
from prompt_tuning.data import demo as demo_data
from prompt_tuning.data import demo_heads
from prompt_tuning.demo import sentiment
from prompt_tuning.training import logging_utils

# head -> (task, feature lengths, gin file, extra bindings, metrics shown, chance note)
HEADS: dict[str, dict[str, Any]] = {
  "sequence": dict(
    task=demo_heads.SENTIMENT_CLS_TASK,
    lengths={"inputs": 48, "targets": 1},
    bindings={"NUM_LABELS": len(demo_data.DEMO_LABELS), "HEAD_POOLING": "'mean'"},
    metrics=("accuracy",),
    chance="chance = 50% accuracy",
    lm_mixture=demo_data.LM_ADAPTATION_MIXTURE,
  ),
  "token": dict(
    task=demo_heads.NER_TASK,
    lengths={"inputs": 48, "targets": 48},
    bindings={"NUM_LABELS": len(demo_heads.NER_TAGS)},
    metrics=("f1", "precision", "recall"),
    chance="entity F1 of a random head ~ 0",
    lm_mixture=demo_heads.STORY_LM_MIXTURE,
  ),
  "span": dict(
    task=demo_heads.QA_SPAN_TASK,
    lengths={"inputs": 64, "targets": 2},
    bindings={"MAX_ANSWER_LENGTH": 8},
    metrics=("em", "f1"),
    chance="a random span ~ 0 EM",
    lm_mixture=demo_heads.STORY_LM_MIXTURE,
  ),
}
LEARNING_RATE = 3e-2
PROMPT_STEPS = 300
PROMPT_LENGTH = 10


def head_tune(
  head: str, model_dir: str, lm_checkpoint: str, steps: int, prompt_length: int, batch_size: int
) -> Any:
  """Stage 2: deep prompts in the frozen encoder and the head, AdamW, evaluated before
  training and at the end."""
  spec = HEADS[head]
  return sentiment._train(
    [
      "prompt_tuning/configs/models/t5_1_1_small_prompt.gin",
      "prompt_tuning/configs/prompts/p_tuning_v2.gin",
      f"prompt_tuning/configs/heads/{head}.gin",
      "prompt_tuning/configs/runs/prompt_finetune.gin",
    ],
    {
      **sentiment._model_bindings(demo_data.demo_vocab_size()),
      **spec["bindings"],
      "MIXTURE_OR_TASK_NAME": repr(spec["task"]),
      "TASK_FEATURE_LENGTHS": repr(spec["lengths"]),
      "MODEL_DIR": repr(model_dir),
      "INITIAL_CHECKPOINT_PATH": repr(lm_checkpoint),
      "PROMPT_LENGTH": prompt_length,
      # The decoder never runs with a head: its prompts would have no gradient.
      "DEEP_PROMPT_STACKS": "('encoder',)",
      "trainer.train.optimizer_factory": "@optimizers.adamw",
      "LEARNING_RATE": LEARNING_RATE,
      "TRAIN_STEPS": steps,
      "BATCH_SIZE": batch_size,
      "EVAL_PERIOD": steps,
      "CHECKPOINT_PERIOD": steps,
      "DROPOUT_RATE": 0.0,
      "trainer.train.evaluate_at_start": True,
      "trainer.train.log_period": 10,
    },
  )


def run_demo(
  out_dir: str,
  lm_steps: int,
  prompt_steps: int,
  prompt_length: int,
  batch_size: int,
  head: str = "sequence",
) -> dict[str, Any]:
  spec = HEADS[head]
  task = spec["task"]
  os.makedirs(out_dir, exist_ok=True)
  lm_dir = os.path.join(out_dir, "lm_adapt")
  head_dir = os.path.join(out_dir, f"{head}_head")
  started = time.time()
  print(
    f"[1/3] LM-adapting a tiny T5 1.1 from scratch on {spec['lm_mixture']} for {lm_steps} "
    f"steps -> {lm_dir}",
    flush=True,
  )
  lm = sentiment.lm_adapt(lm_dir, lm_steps, batch_size, spec["lm_mixture"])
  print(
    f"[2/3] P-Tuning v2 (deep prompts P={prompt_length} in every encoder layer, frozen "
    f"model) with a {head} head on {task} for {prompt_steps} steps -> {head_dir}",
    flush=True,
  )
  result = head_tune(
    head,
    head_dir,
    os.path.join(lm_dir, f"checkpoint_{lm.step}"),
    prompt_steps,
    prompt_length,
    batch_size,
  )
  evals = [r for r in logging_utils.read_metrics(head_dir) if r["kind"] == "eval"]
  plot_path = os.path.join(out_dir, "loss_curves.png")
  sentiment._plot(
    out_dir,
    {
      "LM adaptation (all parameters)": lm_dir,
      f"P-Tuning v2 + {head} head (frozen model)": head_dir,
    },
    plot_path,
  )
  losses = [loss for _, loss in result.losses]
  after = result.last_eval.get(task, {})
  table: dict[str, Any] = {"head": head, "task": task}
  for name in spec["metrics"]:
    table[f"{name}_before"] = float(evals[0][f"{task}/{name}"])
    table[f"{name}_after"] = float(after.get(name, float("nan")))
  table.update(
    loss_first=losses[0],
    loss_last=losses[-1],
    trainable_parameters=_counts(result.trainable),
    seconds=time.time() - started,
  )
  with open(os.path.join(out_dir, "results.json"), "w") as f:
    json.dump(table, f, indent=2)
  _print_table(table, spec, out_dir, head_dir, plot_path)
  return table


def _counts(trainable: Any) -> dict[str, int]:
  """Trainable values by part: the head and the prompts."""
  counts = {"head": 0, "prompt": 0}
  for name, leaf in tree.flatten(jax.device_get(trainable)).items():
    counts["head" if name.startswith("head/") else "prompt"] += int(np.size(leaf))
  return counts


def _print_table(
  table: dict[str, Any], spec: dict[str, Any], out_dir: str, head_dir: str, plot_path: str
) -> None:
  count = demo_heads.SPLIT_SIZES["validation"]
  print(f"[3/3] Results ({table['task']} validation, {count} examples; {spec['chance']})")
  print(f"  {'':34}{'before':>10}{'after':>10}")
  for name in spec["metrics"]:
    before, after = table[f"{name}_before"], table[f"{name}_after"]
    print(f"  {name:34}{before:>10.1f}{after:>10.1f}")
  print(f"  {'train loss (summed)':34}{table['loss_first']:>10.2f}{table['loss_last']:>10.2f}")
  counts = table["trainable_parameters"]
  print(
    f"  trainable parameters: {counts['prompt']:,} (deep prompts) + {counts['head']:,} "
    f"(head); time {table['seconds']:.0f}s"
  )
  print(f"Outputs under {out_dir}:")
  print(f"  loss curves        {plot_path}")
  print(f"  head and prompts   {head_dir}/numpy_checkpoints/checkpoint_*/")
  print(f"  metrics            {head_dir}/metrics.jsonl (TensorBoard: {head_dir}/train)")
  print(f"  table              {out_dir}/results.json")
