"""The demo end to end with a token budget: every stage runs and every promised file exists."""

from __future__ import annotations

import json
import os

from prompt_tuning import demo


def test_demo_writes_everything_under_out(tmp_path, capsys):
  out = tmp_path / "demo"
  assert (
    demo.main(
      [
        "--out",
        str(out),
        "--lm-steps",
        "4",
        "--prompt-steps",
        "3",
        "--prompt-length",
        "2",
        "--batch-size",
        "4",
      ]
    )
    == 0
  )
  printed = capsys.readouterr().out
  assert "[3/3] Results" in printed and "accuracy (%)" in printed
  assert str(out) in printed

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
