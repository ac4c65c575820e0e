"""Prompt tuning, Prefix-Tuning, P-Tuning and P-Tuning v2 on one frozen model, equal budgets.

Offline, on the bundled demo sentiment task: a tiny T5 1.1 (the demo's shapes) is
LM-adapted from scratch once (`--lm-steps`; 0 uses a random frozen model, which only
checks the machinery), then each method trains for the same number of steps, batch size
and prompt length through the gin files a user would pass to `prompt-tuning train`
(configs/prompts/{prefix_tuning,p_tuning,p_tuning_v2}.gin), in this process. Each run is
evaluated `--evals` times on the validation split (the best is the early-stopping score,
as in the paper; the last is reported too) and ends with an export of what serves
(`prompt_tuning.export`). Printed and written to `--out`: a table of accuracy against
trainable parameters (`results.csv`) and its plot (`score_vs_trainable.png`).

  python scripts/compare_methods.py --out /tmp/compare --steps 300 --lm-steps 400

Learning rates differ by method (Adafactor, as the paper's prompt tuning); the defaults
come from a small sweep on this task and can be changed with `--lr METHOD=RATE`.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
from typing import Any, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # Run as a file: make the checkout's package importable.
  sys.path.insert(0, REPO)

# The package imports follow the path set-up.
import gin  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from prompt_tuning import convert, demo, export, launch, tables, tree  # noqa: E402
from prompt_tuning.data import demo as demo_data  # noqa: E402
from prompt_tuning.data import task_mixtures  # noqa: E402
from prompt_tuning.evaluation import evaluator  # noqa: E402
from prompt_tuning.prompts import family  # noqa: E402
from prompt_tuning.t5 import T5Config, init_params, network  # noqa: E402
from prompt_tuning.training import logging_utils, trainer  # noqa: E402

TASK = "demo_sentiment"
METRIC = "accuracy"
# Every method a run can train; each one's gin file and bindings come from the registry
# (`family.gin_config`).
METHODS = family.TRAINING_METHODS
DEFAULT_METHODS = ("prompt", "prefix", "p_tuning", "p_tuning_v2")
# Adafactor rates: the paper's 0.3 for prompt tuning; the others from a sweep on this
# task (200 steps, batch 16, P=20): prefix {3e-4, 1e-3, 3e-3, 1e-2, 3e-2}, P-Tuning
# {0.01, 0.03, 0.1}, P-Tuning v2 {0.03, 0.1, 0.3}; the most stable of the best kept.
DEFAULT_LEARNING_RATES = {
  "prompt": 0.3,
  "prefix": 3e-4,
  "p_tuning": 0.03,
  "p_tuning_mlp": 0.03,
  "p_tuning_v2": 0.03,
  "p_tuning_v2_mlp": 3e-4,
  "prefix_peft": 0.3,  # Plain prefix parameters; the prompt rate, not swept.
  "wayward": 0.3,  # Prompt tuning plus a penalty: the prompt rate, not swept.
  "per_layer": 0.3,  # Plain prompts at every encoder layer: the prompt rate, not swept.
  "per_layer_add": 0.3,
  "ia3": 3e-3,  # IA3's own rate (Liu et al. 2022), not swept.
  # Multi-task prompts: the upstream's 0.3; on the one demo task every row is task 0.
  "multi_task_add": 0.3,
  "multi_task_concat": 0.3,
  "multi_task_concat_features": 0.3,
  "multi_task_project": 0.3,
}
# Wayward prompts stay near a discrete prompt (PROMPT_TEXT); on the demo task, its
# first PROMPT_LENGTH pieces of this description.
WAYWARD_DESCRIPTION = (
  "Decide whether the review of the movie is positive or negative and answer with the "
  "sentiment of the review as one word, positive or negative, nothing else at all."
)
CSV_FIELDS = (
  "method",
  "trainable_params",
  "served_params",
  "percent_of_model",
  "best_accuracy",
  "best_step",
  "final_accuracy",
  "final_loss",
  "learning_rate",
  "steps",
  "seconds",
  "model_dir",
)


def model_bindings() -> dict[str, str]:
  overrides = {**demo.TINY_DEMO_MODEL, "vocab_size": demo_data.demo_vocab_size()}
  bindings = {f"network.t5_config.{k}": repr(v) for k, v in overrides.items()}
  # The demo task's vocabulary also splits what a prompt initialiser embeds.
  bindings["prompt_tuning.data.vocab.get_vocabulary.spm_path"] = repr(demo_data.DEMO_SPM_PATH)
  return bindings


def discrete_prompt(length: int) -> str:
  """The wayward method's PROMPT_TEXT: the demo description cut to `length` pieces of
  the demo vocabulary (the penalty needs exactly PROMPT_LENGTH pieces)."""
  vocabulary = demo_data.get_demo_vocabulary()
  ids = vocabulary.encode(WAYWARD_DESCRIPTION)
  text = vocabulary.decode(ids[:length])
  if length > len(ids) or len(vocabulary.encode(text)) != length:
    raise ValueError(
      f"cannot make a {length}-piece discrete prompt for the wayward method from the "
      f"demo description ({len(ids)} pieces); use a shorter --prompt-length"
    )
  return text


def frozen_base(out_dir: str, lm_steps: int, batch_size: int = 32) -> str:
  """The frozen model every method shares: LM-adapted on the bundled corpus (kept in
  `out/lm_adapt` and reused by later runs), or random with `lm_steps=0`."""
  if lm_steps <= 0:
    path = os.path.join(out_dir, "random_base")
    if not (os.path.isdir(path) and os.listdir(path)):
      overrides = {k: v for k, v in demo.TINY_DEMO_MODEL.items() if k != "size"}
      config = T5Config.from_size("tiny", vocab_size=demo_data.demo_vocab_size(), **overrides)
      convert.save_params_orbax(init_params(config, jax.random.PRNGKey(0)), path)
    return path
  lm_dir = os.path.join(out_dir, "lm_adapt")
  checkpoint = os.path.join(lm_dir, f"checkpoint_{lm_steps}")
  if not os.path.isdir(checkpoint):
    print(f"LM-adapting the frozen model for {lm_steps} steps -> {lm_dir}", flush=True)
    demo.lm_adapt(lm_dir, lm_steps, batch_size)
  return checkpoint


def train_method(
  method: str,
  out_dir: str,
  base: str,
  steps: int,
  batch_size: int,
  prompt_length: int,
  learning_rate: float,
  eval_examples: int | None,
  seed: int,
  evals: int = 4,
) -> dict[str, Any]:
  """One gin-configured training run, as `prompt-tuning train` would do it, evaluated
  `evals` times; the best evaluation is the early-stopping score (as in the paper)."""
  model_dir = os.path.join(out_dir, method)
  method_file, method_bindings = family.gin_config(method)
  files = ["prompt_tuning/configs/models/t5_1_1_small_prompt.gin"]
  if method_file:
    files.append(method_file)
  files.append("prompt_tuning/configs/runs/prompt_finetune.gin")
  bindings = {
    **model_bindings(),
    **method_bindings,
    "MIXTURE_OR_TASK_NAME": repr(TASK),
    "TASK_FEATURE_LENGTHS": "{'inputs': 48, 'targets': 4}",
    "MODEL_DIR": repr(model_dir),
    "INITIAL_CHECKPOINT_PATH": repr(base),
    "PROMPT_LENGTH": str(prompt_length),
    "TRAIN_STEPS": str(steps),
    "BATCH_SIZE": str(batch_size),
    "LEARNING_RATE": repr(learning_rate),
    "EVAL_PERIOD": str(max(1, steps // max(1, evals))),
    "CHECKPOINT_PERIOD": str(steps),
    "DROPOUT_RATE": "0.0",
    "SEED": str(seed),
    "trainer.train.log_period": str(max(1, min(50, steps))),
  }
  if eval_examples:
    bindings["trainer.train.num_eval_examples"] = str(eval_examples)
  if method == "wayward":
    bindings["PROMPT_TEXT"] = repr(discrete_prompt(prompt_length))
  if method.startswith("multi_task_"):  # The demo task as task 0 of a one-task mixture.
    bindings["MULTI_TASK_MIXTURES"] = repr({f"multi_task_{TASK}": [TASK]})
    bindings["MIXTURE_OR_TASK_NAME"] = repr(f"multi_task_{TASK}")
  gin.clear_config()
  started = time.time()
  try:
    launch.parse_gin(files, [f"{k} = {v}" for k, v in bindings.items()], [])
    task_mixtures.register_configured()
    gin.finalize()
    result = trainer.train(evaluation_factory=evaluator.build_evaluation)
    module = network.transformer()
    served = export.export(module, result.trainable, os.path.join(model_dir, "export"))
  finally:
    gin.clear_config()
  seconds = time.time() - started
  trainable = tree.count(result.trainable)
  frozen = tree.count(result.params) - trainable
  losses = [loss for _, loss in result.losses]
  tail = losses[-max(1, len(losses) // 10) :]
  # A multi-task mixture evaluates its tasks under their variants' names.
  task = f"{TASK}_prompt_id_0" if method.startswith("multi_task_") else TASK
  key = f"{task}/{METRIC}"
  scores = [
    (r[key], r["step"])
    for r in logging_utils.read_metrics(model_dir)
    if r.get("kind") == "eval" and key in r
  ]
  best, best_step = max(scores, key=lambda s: (s[0], -s[1])) if scores else (math.nan, 0)
  return {
    "method": method,
    "trainable_params": trainable,
    "served_params": int(sum(np.load(p, mmap_mode="r").size for p in served)),
    "percent_of_model": 100.0 * trainable / frozen,
    "best_accuracy": float(best),
    "best_step": best_step,
    "final_accuracy": float(result.last_eval.get(task, {}).get(METRIC, math.nan)),
    "final_loss": float(np.mean(tail)) if tail else float("nan"),
    "learning_rate": learning_rate,
    "steps": steps,
    "seconds": round(seconds, 1),
    "model_dir": model_dir,
  }


def write_csv(path: str, rows: Sequence[dict[str, Any]]) -> None:
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
    writer.writeheader()
    for row in rows:
      writer.writerow({k: row[k] for k in CSV_FIELDS})


def format_table(rows: Sequence[dict[str, Any]]) -> str:
  header = [
    "method",
    "trainable",
    "% model",
    "served",
    "best acc",
    "@step",
    "final acc",
    "loss",
    "lr",
    "seconds",
  ]
  cells = [
    [
      r["method"],
      f"{r['trainable_params']:,}",
      f"{r['percent_of_model']:.2f}%",
      f"{r['served_params']:,}",
      f"{r['best_accuracy']:.1f}",
      str(r["best_step"]),
      f"{r['final_accuracy']:.1f}",
      f"{r['final_loss']:.2f}",
      f"{r['learning_rate']:g}",
      f"{r['seconds']:.0f}",
    ]
    for r in rows
  ]
  return tables.format_table(header, cells)


def plot(rows: Sequence[dict[str, Any]], path: str, title: str) -> None:
  """Best validation accuracy against trainable parameters (log x), one labelled point
  per method."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axis = plt.subplots(figsize=(6, 4))
  for row in rows:
    if not math.isfinite(row["best_accuracy"]):
      continue
    axis.scatter(row["trainable_params"], row["best_accuracy"])
    axis.annotate(
      row["method"],
      (row["trainable_params"], row["best_accuracy"]),
      textcoords="offset points",
      xytext=(5, 5),
      fontsize=8,
    )
  axis.set_xscale("log")
  axis.set_xlabel("trainable parameters")
  axis.set_ylabel(f"best {TASK} validation {METRIC}")
  axis.set_title(title, fontsize=9)
  axis.grid(alpha=0.3, which="both")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _learning_rates(specs: Sequence[str]) -> dict[str, float]:
  rates = dict(DEFAULT_LEARNING_RATES)
  for spec in specs:
    method, eq, value = spec.partition("=")
    if not eq or method not in METHODS:
      raise ValueError(
        f"bad --lr {spec!r}: write METHOD=RATE with METHOD one of {', '.join(METHODS)}"
      )
    rates[method] = float(value)
  return rates


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="scripts/compare_methods.py", description=__doc__.split("\n\n")[0]
  )
  parser.add_argument("--out", required=True, help="output directory (one run per method)")
  parser.add_argument(
    "--methods",
    default=",".join(DEFAULT_METHODS),
    help=f"comma-separated, from {', '.join(METHODS)}",
  )
  parser.add_argument("--steps", type=int, default=300, help="train steps of every method")
  parser.add_argument(
    "--lm-steps",
    type=int,
    default=400,
    help="LM-adaptation steps of the frozen model (0: random model)",
  )
  parser.add_argument("--batch-size", type=int, default=16, help="batch of every method")
  parser.add_argument("--lm-batch-size", type=int, default=32, help="batch of the LM adaptation")
  parser.add_argument("--prompt-length", type=int, default=20)
  parser.add_argument(
    "--eval-examples", type=int, default=None, help="validation examples (default: all 200)"
  )
  parser.add_argument(
    "--lr",
    action="append",
    default=[],
    metavar="METHOD=RATE",
    help="override a method's learning rate",
  )
  parser.add_argument(
    "--evals",
    type=int,
    default=4,
    help="evaluations per run, evenly spaced (the best one is reported)",
  )
  parser.add_argument("--seed", type=int, default=0)
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  parser = _parser()
  args = parser.parse_args(argv)
  methods = [m.strip() for m in args.methods.split(",") if m.strip()]
  unknown = [m for m in methods if m not in METHODS]
  if unknown or not methods:
    parser.error(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
  try:
    rates = _learning_rates(args.lr)
  except ValueError as error:
    parser.error(str(error))

  os.makedirs(args.out, exist_ok=True)
  base = frozen_base(args.out, args.lm_steps, args.lm_batch_size)
  rows = []
  for index, method in enumerate(methods, 1):
    print(f"[{index}/{len(methods)}] {method}: {args.steps} steps, lr {rates[method]}", flush=True)
    rows.append(
      train_method(
        method,
        args.out,
        base,
        args.steps,
        args.batch_size,
        args.prompt_length,
        rates[method],
        args.eval_examples,
        args.seed,
        args.evals,
      )
    )
    write_csv(os.path.join(args.out, "results.csv"), rows)  # After each method.
  title = (
    f"{TASK}, P={args.prompt_length}, {args.steps} steps x batch {args.batch_size}, "
    f"frozen model LM-adapted {args.lm_steps} steps"
  )
  plot(rows, os.path.join(args.out, "score_vs_trainable.png"), title)
  print(title)
  print(format_table(rows))
  print(
    f"results: {os.path.join(args.out, 'results.csv')}\n"
    f"plot: {os.path.join(args.out, 'score_vs_trainable.png')}"
  )
  return 0


if __name__ == "__main__":
  sys.exit(main())
