"""The demo end to end with a token budget, run as a new user runs it (`make demo` runs
the `prompt-tuning demo` entry point): every stage runs, every promised file exists, and
what it prints is ours, without the libraries' start-up lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from prompt_tuning import demo
from tests.cli_testing import START_UP_LINES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _entry_point() -> list[str]:
  """The installed `prompt-tuning` script beside this interpreter (what `make demo` runs),
  or `python -m prompt_tuning` where the package is not installed as a script."""
  script = os.path.join(os.path.dirname(sys.executable), "prompt-tuning")
  return [script] if os.path.isfile(script) else [sys.executable, "-m", "prompt_tuning"]


def _run_demo(out, *args: str, lm_steps: int = 4) -> subprocess.CompletedProcess:
  """`prompt-tuning demo ARGS --out OUT` on a tiny budget (3 prompt steps, P=2, batch
  4), from a new user's directory beside `out`: nothing of the checkout on hand."""
  budget = ["--lm-steps", str(lm_steps), "--prompt-steps", "3", "--prompt-length", "2"]
  result = subprocess.run(
    [*_entry_point(), "demo", *args, "--out", str(out), *budget, "--batch-size", "4"],
    cwd=out.parent,
    env={**os.environ, "PYTHONPATH": REPO},
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert result.returncode == 0, result.stderr
  return result


def test_demo_writes_everything_under_out_and_prints_only_its_own_lines(tmp_path):
  out = tmp_path / "demo"
  result = _run_demo(out)
  printed = result.stdout
  assert "[3/3] Results" in printed and "accuracy (%)" in printed
  assert str(out) in printed
  noise = [
    line
    for line in (result.stdout + result.stderr).splitlines()
    if any(mark in line for mark in START_UP_LINES)
  ]
  assert noise == []

  with open(out / "results.json") as f:
    table = json.load(f)
  assert 0.0 <= table["accuracy_before"] <= 100.0
  assert 0.0 <= table["accuracy_after"] <= 100.0
  assert table["trainable_parameters"] == 2 * demo.TINY_DEMO_MODEL["emb_dim"]
  assert os.path.getsize(out / "loss_curves.png") > 1000
  assert (out / "lm_adapt" / "checkpoint_4").is_dir()
  assert (out / "prompt_tuning" / "checkpoint_3").is_dir()
  prompt_file = (
    out / "prompt_tuning" / "numpy_checkpoints" / "checkpoint_3" / "encoder.prompt.prompt.npy"
  )
  assert prompt_file.is_file()
  assert (out / "prompt_tuning" / "metrics.jsonl").is_file()


def test_table_to_text_demo_reports_bleu_and_rouge_before_and_after_with_samples(tmp_path):
  out = tmp_path / "table_demo"
  result = _run_demo(out, "--task", "table_to_text")
  assert "[3/3] Results" in result.stdout and "BLEU" in result.stdout
  assert "Sample generations:" in result.stdout and "name : " in result.stdout
  with open(out / "results.json") as f:
    table = json.load(f)
  for key in ("bleu_before", "bleu_after", "rouge_l_before", "rouge_l_after"):
    assert 0.0 <= table[key] <= 100.0, key
  assert len(table["samples"]) == 4 and all(s["table"] for s in table["samples"])
  assert table["trainable_parameters"] > 0
  assert os.path.getsize(out / "loss_curves.png") > 1000
  assert (out / "prefix_tuning" / "checkpoint_3").is_dir()


def test_head_demo_reports_its_metric_before_and_after_and_counts_head_and_prompts(tmp_path):
  out = tmp_path / "span_demo"
  result = _run_demo(out, "--head", "span", lm_steps=3)
  assert "[3/3] Results (demo_qa_span validation" in result.stdout
  with open(out / "results.json") as f:
    table = json.load(f)
  for key in ("em_before", "em_after", "f1_before", "f1_after"):
    assert 0.0 <= table[key] <= 100.0, key
  # Two encoder layers of P=2 deep prompts of width 128; the span head is 128 x 2 + 2.
  assert table["trainable_parameters"] == {"prompt": 2 * 2 * 128, "head": 258}
  assert (out / "span_head" / "numpy_checkpoints" / "checkpoint_3" / "head.kernel.npy").is_file()


def test_head_demo_refuses_a_task_beside_the_head():
  result = subprocess.run(
    [*_entry_point(), "demo", "--head", "token", "--task", "table_to_text"],
    env={**os.environ, "PYTHONPATH": REPO},
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 2 and "leave out --task" in result.stderr
