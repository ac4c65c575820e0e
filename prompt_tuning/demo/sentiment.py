"""`prompt-tuning demo` (the default `--task sentiment`): the paper's pipeline in
miniature, offline, on 2 CPU cores.

1. Build a tiny T5 1.1 from scratch and LM-adapt it (prefix-LM, every parameter trains)
   on the bundled corpus: this stands in for the released "lm100k" checkpoint.
2. Freeze it and prompt-tune a class-label-initialised soft prompt on the bundled
   sentiment task (a seqio Task), evaluating before and after.
3. Print a before/after table and write a loss-curve PNG.

Both stages run through the same gin-configured `trainer.train` as `prompt-tuning train`,
with the bindings printed so a user can rerun any stage from the command line.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Sequence

import gin

from prompt_tuning import launch
from prompt_tuning.data import demo as demo_data
from prompt_tuning.evaluation import evaluator
from prompt_tuning.training import logging_utils, trainer

TINY_DEMO_MODEL = dict(
  size="tiny",
  emb_dim=128,
  num_heads=4,
  head_dim=32,
  num_encoder_layers=2,
  num_decoder_layers=2,
  mlp_dim=256,
  dropout_rate=0.0,
)


def _bindings(values: dict[str, Any]) -> list[str]:
  return [f"{name} = {value}" for name, value in values.items()]


def _model_bindings(vocab_size: int) -> dict[str, Any]:
  overrides = {**TINY_DEMO_MODEL, "vocab_size": vocab_size}
  return {f"network.t5_config.{k}": repr(v) for k, v in overrides.items()}


def _train(
  gin_files: Sequence[str],
  bindings: dict[str, Any],
  evaluation_factory: Callable[..., Any] = evaluator.build_evaluation,
) -> Any:
  """One gin-configured training run, exactly as the CLI would do it."""
  gin.clear_config()
  launch.parse_gin(gin_files, _bindings(bindings), [])
  gin.finalize()
  try:
    return trainer.train(evaluation_factory=evaluation_factory)
  finally:
    gin.clear_config()


def _accuracy(metrics: dict[str, dict[str, Any]], task: str) -> float:
  return float(metrics.get(task, {}).get("accuracy", float("nan")))


def _plot(out_dir: str, runs: dict[str, str], path: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 3.5))
  for axis, (title, model_dir) in zip(axes, runs.items()):
    rows = [r for r in logging_utils.read_metrics(model_dir) if r["kind"] == "train"]
    # Per target token: the LM batches mix long continuations with one-word verdicts, so
    # the summed loss mostly tracks how many tokens a batch happened to have.
    axis.plot(
      [r["step"] for r in rows], [r["loss"] / max(r.get("num_tokens", 1.0), 1.0) for r in rows]
    )
    axis.set_title(title)
    axis.set_xlabel("step")
    axis.set_ylabel("loss per target token")
    axis.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def lm_adapt(
  model_dir: str, steps: int, batch_size: int, mixture: str = demo_data.LM_ADAPTATION_MIXTURE
) -> Any:
  """Stage 1: a tiny T5 1.1 from scratch, every parameter trained on the prefix-LM task
  (the bundled corpus's reviews end in a verdict such as "Sentiment: positive.", which is
  where the frozen model's knowledge of the task comes from)."""
  return _train(
    ["prompt_tuning/configs/models/t5_1_1_small.gin", "prompt_tuning/configs/runs/lm_adapt.gin"],
    {
      **_model_bindings(demo_data.demo_vocab_size()),
      "MIXTURE_OR_TASK_NAME": repr(mixture),
      "TASK_FEATURE_LENGTHS": "{'inputs': 48, 'targets': 24}",
      "MODEL_DIR": repr(model_dir),
      "INITIAL_CHECKPOINT_PATH": "None",
      "TRAIN_STEPS": steps,
      "BATCH_SIZE": batch_size,
      # From scratch, AdamW learns the corpus in a few hundred steps;
      # Adafactor at T5's rates needed thousands (and stalled at 70%
      # sentiment rank accuracy). Real LM adaptation starts from
      # pre-trained T5 and keeps lm_adapt.gin's Adafactor.
      "trainer.train.optimizer_factory": "@optimizers.adamw",
      "LEARNING_RATE": "@optimizers.warmup_constant_schedule()",
      "optimizers.warmup_constant_schedule.value": 0.001,
      "optimizers.warmup_constant_schedule.warmup_steps": max(1, min(100, steps // 4)),
      "CHECKPOINT_PERIOD": steps,
      "EVAL_PERIOD": "None",
      "trainer.train.log_period": 10,
    },
  )


def prompt_tune(
  model_dir: str, lm_checkpoint: str, steps: int, prompt_length: int, batch_size: int
) -> Any:
  """Stage 2: the frozen LM-adapted model, a class-label-initialised prompt, evaluated
  before training and at the end."""
  return _train(
    [
      "prompt_tuning/configs/models/t5_1_1_small_prompt.gin",
      "prompt_tuning/configs/prompts/from_class_labels.gin",
      "prompt_tuning/configs/runs/prompt_finetune.gin",
    ],
    {
      **_model_bindings(demo_data.demo_vocab_size()),
      "MIXTURE_OR_TASK_NAME": "'demo_sentiment'",
      "TASK_FEATURE_LENGTHS": "{'inputs': 48, 'targets': 4}",
      "MODEL_DIR": repr(model_dir),
      "INITIAL_CHECKPOINT_PATH": repr(lm_checkpoint),
      "CLASS_LABELS": repr(list(demo_data.DEMO_LABELS)),
      "PROMPT_LENGTH": prompt_length,
      # Class labels are tokenised with the demo's own vocabulary.
      "prompt_tuning.data.vocab.get_vocabulary.spm_path": repr(demo_data.DEMO_SPM_PATH),
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
  out_dir: str, lm_steps: int, prompt_steps: int, prompt_length: int, batch_size: int
) -> dict[str, Any]:
  os.makedirs(out_dir, exist_ok=True)
  lm_dir = os.path.join(out_dir, "lm_adapt")
  prompt_dir = os.path.join(out_dir, "prompt_tuning")
  started = time.time()
  print(
    f"[1/3] LM-adapting a tiny T5 1.1 ({TINY_DEMO_MODEL['num_encoder_layers']}+"
    f"{TINY_DEMO_MODEL['num_decoder_layers']} layers, d_model "
    f"{TINY_DEMO_MODEL['emb_dim']}) from scratch on the bundled corpus for {lm_steps} "
    f"steps -> {lm_dir}",
    flush=True,
  )
  lm = lm_adapt(lm_dir, lm_steps, batch_size)
  print(
    f"[2/3] Prompt tuning (P={prompt_length}, class-label init, frozen model) on "
    f"demo_sentiment for {prompt_steps} steps -> {prompt_dir}",
    flush=True,
  )
  pt = prompt_tune(
    prompt_dir,
    os.path.join(lm_dir, f"checkpoint_{lm.step}"),
    prompt_steps,
    prompt_length,
    batch_size,
  )
  table = _summarise(out_dir, lm_dir, prompt_dir, lm, pt, prompt_length, started)
  _print_table(table, out_dir, prompt_dir, os.path.join(out_dir, "loss_curves.png"), prompt_steps)
  return table


def _summarise(
  out_dir: str, lm_dir: str, prompt_dir: str, lm: Any, pt: Any, prompt_length: int, started: float
) -> dict[str, Any]:
  evals = [r for r in logging_utils.read_metrics(prompt_dir) if r["kind"] == "eval"]
  _plot(
    out_dir,
    {
      "LM adaptation (all parameters)": lm_dir,
      f"prompt tuning (P={prompt_length}, frozen model)": prompt_dir,
    },
    os.path.join(out_dir, "loss_curves.png"),
  )
  lm_losses = [loss for _, loss in lm.losses]
  pt_losses = [loss for _, loss in pt.losses]
  table = {
    "lm_adapt_loss_first": lm_losses[0],
    "lm_adapt_loss_last": lm_losses[-1],
    "prompt_loss_first": pt_losses[0],
    "prompt_loss_last": pt_losses[-1],
    "accuracy_before": evals[0]["demo_sentiment/accuracy"],
    "accuracy_after": _accuracy(pt.last_eval, "demo_sentiment"),
    "trainable_parameters": prompt_length * TINY_DEMO_MODEL["emb_dim"],
    "seconds": time.time() - started,
  }
  with open(os.path.join(out_dir, "results.json"), "w") as f:
    json.dump(table, f, indent=2)
  return table


def _print_table(
  table: dict[str, Any], out_dir: str, prompt_dir: str, plot_path: str, prompt_steps: int
) -> None:
  print("[3/3] Results (demo_sentiment validation, 200 examples, chance = 50%)")
  print(f"  {'':34}{'before':>10}{'after':>10}")
  print(f"  {'accuracy (%)':34}{table['accuracy_before']:>10.1f}{table['accuracy_after']:>10.1f}")
  print(
    f"  {'prompt-tuning train loss':34}{table['prompt_loss_first']:>10.2f}"
    f"{table['prompt_loss_last']:>10.2f}"
  )
  print(
    f"  {'LM-adaptation train loss':34}{table['lm_adapt_loss_first']:>10.2f}"
    f"{table['lm_adapt_loss_last']:>10.2f}"
  )
  print(
    f"  trainable parameters: {table['trainable_parameters']:,} (the prompt); "
    f"time {table['seconds']:.0f}s"
  )
  print(f"Outputs under {out_dir}:")
  print(f"  loss curves        {plot_path}")
  print(
    f"  prompt (numpy)     {prompt_dir}/numpy_checkpoints/checkpoint_{prompt_steps}/"
    "encoder.prompt.prompt.npy"
  )
  print(f"  orbax checkpoints  {prompt_dir}/checkpoint_*")
  print(f"  metrics            {prompt_dir}/metrics.jsonl (TensorBoard: {prompt_dir}/train)")
  print(f"  table              {out_dir}/results.json")
