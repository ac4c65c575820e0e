"""Where training numbers go: TensorBoard (clu), `metrics.jsonl`, and the terminal.

Everything TensorBoard shows of a run, training scalars, evaluation scalars and the
evaluation's decoded examples (docs/training.md, "What a run writes"), is written through
`summary_writer`, so it all lands in one directory in one format.

On a terminal a tqdm bar shows steps/s, the ETA and the loss per target token;
otherwise (a pod, a log file) plain lines are printed every `log_period` steps.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Mapping

import jax
import tqdm
from clu import metric_writers


def is_leader() -> bool:
  """Whether this process prints results and writes files: process 0 of a multi-process
  job (every process computes, but N writers of one file would race), or the only one.

  Read at call time, so tests can stand in for another process by patching
  `jax.process_index` or this function."""
  return jax.process_index() == 0


def summary_writer(directory: str) -> metric_writers.MetricWriter:
  """clu's TensorBoard writer for `directory` (with INFO log lines of what it writes,
  shown under --verbose). Synchronous: no writer thread outlives a run that forgets to
  close it; `flush()` puts what was written on disk."""
  return metric_writers.create_default_writer(directory, just_logging=False, asynchronous=False)


class MetricsLog:
  """Writes scalars to TensorBoard and appends one JSON object per event to a file."""

  def __init__(self, model_dir: str, subdir: str = "train", enabled: bool = True):
    self.enabled = enabled
    self.jsonl_path = os.path.join(model_dir, "metrics.jsonl")
    self.writer = None
    if enabled:
      os.makedirs(model_dir, exist_ok=True)
      self.writer = summary_writer(os.path.join(model_dir, subdir))

  def write(self, step: int, kind: str, values: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    scalars = {k: float(v) for k, v in values.items() if _is_number(v)}
    self.writer.write_scalars(step, {f"{kind}/{k}": v for k, v in scalars.items()})
    with open(self.jsonl_path, "a") as f:
      f.write(json.dumps({"step": step, "kind": kind, **scalars}, sort_keys=True) + "\n")

  def close(self) -> None:
    if self.writer is not None:
      self.writer.flush()
      self.writer.close()


def _is_number(value: Any) -> bool:
  try:
    float(value)
    return True
  except (TypeError, ValueError):
    return False


def read_metrics(model_dir: str) -> list[dict[str, Any]]:
  path = os.path.join(model_dir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def flatten_metrics(metrics: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
  """{"task/metric": value} of an evaluation's {task: {metric: value}}, numbers only:
  what metrics.jsonl and TensorBoard take."""
  flat = {}
  for task, values in metrics.items():
    for name, value in values.items():
      if isinstance(value, (int, float)):
        flat[f"{task}/{name}"] = float(value)
  return flat


class Progress:
  """Steps/s, ETA and the last loss per target token, on stderr of the leader only.

  On a terminal tqdm draws a live bar; elsewhere (a pod, a log file, a test capturing
  stderr) a bar would be a stream of carriage returns, so one plain line is written
  every `log_period` steps and at the last step instead.
  """

  def __init__(
    self,
    total_steps: int,
    start_step: int,
    log_period: int = 100,
    *,
    enabled: bool = True,
    stream: Any = None,
  ):
    self.total = total_steps
    self.start = start_step
    self.log_period = max(1, log_period)
    self.enabled = enabled
    self.stream = stream or sys.stderr
    interactive = hasattr(self.stream, "isatty") and self.stream.isatty()
    self.bar = None
    if enabled and interactive:
      self.bar = tqdm.tqdm(
        total=total_steps, initial=start_step, file=self.stream, unit="step", dynamic_ncols=True
      )
    self.t0 = time.time()

  def update(self, step: int, loss_per_token: float) -> None:
    postfix = f"loss/token={loss_per_token:.4g}"
    if self.bar is not None:
      self.bar.set_postfix_str(postfix, refresh=False)
      self.bar.update(step - self.bar.n)
    elif self.enabled and (step % self.log_period == 0 or step == self.total):
      rate = (step - self.start) / max(time.time() - self.t0, 1e-9)
      eta = tqdm.tqdm.format_interval((self.total - step) / rate) if rate > 0 else "?"
      self.stream.write(f"step {step}/{self.total}  {rate:.2f} steps/s  ETA {eta}  {postfix}\n")
      self.stream.flush()

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()
