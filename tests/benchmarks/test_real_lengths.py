"""benchmarks/real_lengths.py: the length mix, a user's length file, the padding each side
applies, and a quick run of both our sides end to end."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tests.benchmarks.scripts import REPO, load_script, script_path

SCRIPT = script_path("real_lengths.py")
rl = load_script("real_lengths.py")


def test_the_synthetic_mix_is_seeded_clipped_and_mostly_short():
  lengths = rl.synthetic_lengths(2000, 512, seed=0)
  assert lengths == rl.synthetic_lengths(2000, 512, seed=0)
  assert min(lengths) >= rl.MIN_LENGTH and max(lengths) <= 512
  # SuperGLUE-shaped: the median far below the paper's 512.
  assert 50 < np.median(lengths) < 150


def test_a_length_file_is_read_and_clipped(tmp_path):
  path = tmp_path / "lengths.txt"
  path.write_text("12\n\n700\n30\n")
  assert rl.read_lengths(str(path), 512) == [12, 512, 30]
  path.write_text("12\nlong\n")
  with pytest.raises(ValueError, match="must be an integer"):
    rl.read_lengths(str(path), 512)


def test_each_side_pads_a_batch_as_documented():
  examples = rl.make_examples([20, 70, 33], vocab_size=100, seed=0)
  args = type("Args", (), {"inputs": 512})()
  assert rl.batch_lengths(examples, "fixed", args) == (512, 8)
  assert rl.batch_lengths(examples, "buckets", args) == (128, 8)
  assert rl.batch_lengths(examples, "grouped", args) == (128, 8)
  longest_target = max(len(y) for _, y in examples)
  assert rl.batch_lengths(examples, "peft", args) == (70, longest_target)
  assert all(x[-1] == 1 and y[-1] == 1 for x, y in examples)  # EOS last


def test_grouped_batches_hold_every_example_once_and_similar_lengths_together():
  lengths = [10, 200, 12, 180, 11, 190, 13, 170]
  examples = rl.make_examples(lengths, vocab_size=100, seed=0)
  batches = rl.grouped_batches(examples, batch_size=4, window_batches=2, seed=0)
  assert sorted(i for batch in batches for i in batch) == list(range(8))
  assert sorted(sorted(lengths[i] for i in batch) for batch in batches) == [
    [10, 11, 12, 13],
    [170, 180, 190, 200],
  ]


def test_a_quick_run_of_our_sides_prints_the_ratio_line():
  result = subprocess.run(
    [sys.executable, SCRIPT, "--quick", "--sides", "fixed,buckets,grouped", "--examples", "8"],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert "ours, length buckets" in result.stdout
  assert "ours, buckets + length grouping" in result.stdout
  assert "real-length throughput: bucketed/fixed" in result.stdout
  assert "bucketed/peft n/a" in result.stdout


def test_one_tasks_lengths_stay_near_its_typical_length():
  wic = rl.synthetic_lengths(500, 512, seed=0, task="wic")
  assert 25 < np.median(wic) < 45 and max(wic) < 128
  with pytest.raises(ValueError, match="use 'mix' or one of"):
    rl.synthetic_lengths(10, 512, seed=0, task="squad")
