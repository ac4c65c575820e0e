"""Where training numbers go: TensorBoard (clu), `metrics.jsonl`, and the terminal.

On a terminal a one-line progress bar shows steps/s and the ETA; otherwise (a pod, a
log file) plain lines are printed every `log_period` steps.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Mapping

import jax
from clu import metric_writers


def is_leader() -> bool:
  """Whether this process prints results and writes files: process 0 of a multi-process
  job (every process computes, but N writers of one file would race), or the only one.

  Read at call time, so tests can stand in for another process by patching
  `jax.process_index` or this function."""
  return jax.process_index() == 0


class MetricsLog:
  """Writes scalars to TensorBoard and appends one JSON object per event to a file."""

  def __init__(self, model_dir: str, subdir: str = "train", enabled: bool = True):
    self.enabled = enabled
    self.jsonl_path = os.path.join(model_dir, "metrics.jsonl")
    self.writer = None
    if enabled:
      os.makedirs(model_dir, exist_ok=True)
      self.writer = metric_writers.create_default_writer(
          os.path.join(model_dir, subdir), just_logging=False, asynchronous=False)

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


class Progress:
  """Steps/s and ETA, as a live bar on a terminal or periodic log lines elsewhere."""

  def __init__(self, total_steps: int, start_step: int, log_period: int = 100,
               stream: Any = None):
    self.total = total_steps
    self.start = start_step
    self.log_period = max(1, log_period)
    self.stream = stream or sys.stderr
    self.interactive = hasattr(self.stream, "isatty") and self.stream.isatty()
    self.t0 = time.time()

  def update(self, step: int, values: Mapping[str, float]) -> None:
    done = step - self.start
    elapsed = max(time.time() - self.t0, 1e-9)
    rate = done / elapsed
    eta = (self.total - step) / rate if rate > 0 else float("inf")
    shown = " ".join(f"{k}={v:.4g}" for k, v in values.items())
    if self.interactive:
      width = 30
      filled = int(width * step / max(self.total, 1))
      bar = "#" * filled + "-" * (width - filled)
      self.stream.write(f"\r[{bar}] {step}/{self.total} {rate:.2f} steps/s "
                        f"ETA {_duration(eta)} {shown}   ")
      self.stream.flush()
    elif step % self.log_period == 0 or step == self.total:
      self.stream.write(f"step {step}/{self.total}  {rate:.2f} steps/s  ETA "
                        f"{_duration(eta)}  {shown}\n")
      self.stream.flush()

  def close(self) -> None:
    if self.interactive:
      self.stream.write("\n")
      self.stream.flush()


def _duration(seconds: float) -> str:
  if seconds == float("inf"):
    return "?"
  seconds = int(seconds)
  return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
