"""The command line's gin half: T5X-style flags through argparse, in the user's order."""

from __future__ import annotations

import pytest

from prompt_tuning import launch


def test_gin_bindings_keep_their_order_across_both_spellings():
  _, bindings, _, _ = launch.split_gin_args(
    ["--gin.TRAIN_STEPS=1", "--gin_bindings", "TRAIN_STEPS=2", "--gin.TRAIN_STEPS=3"]
  )
  assert bindings == ["TRAIN_STEPS=1", "TRAIN_STEPS=2", "TRAIN_STEPS=3"]


def test_other_arguments_pass_through_in_order():
  files, _, paths, rest = launch.split_gin_args(
    [
      "ckpt",
      "--gin_file=a.gin",
      "out",
      "--step",
      "3",
      "--gin_search_paths=/p",
      "--gin_search_paths",
      "/q,/r",
    ]
  )
  assert files == ["a.gin"] and paths == ["/p", "/q", "/r"]
  assert rest == ["ckpt", "out", "--step", "3"]


def test_a_gin_flag_without_its_value_is_a_usage_error():
  with pytest.raises(launch.UsageError, match="--gin.MODEL_DIR needs a value"):
    launch.split_gin_args(["--gin.MODEL_DIR"])
  with pytest.raises(launch.UsageError, match="expected one argument"):
    launch.split_gin_args(["--gin_file"])


def test_gin_flags_are_not_abbreviated():
  _, _, _, rest = launch.split_gin_args(["--gin_fi=a.gin"])
  assert rest == ["--gin_fi=a.gin"]


def test_multi_process_flags_become_initialize_distributed_arguments():
  kwargs, rest = launch.split_distributed_args(
    [
      "--coordinator_address=localhost:1234",
      "--num_processes",
      "2",
      "--process_id=1",
      "--gin_file=a.gin",
    ]
  )
  assert kwargs == {"coordinator_address": "localhost:1234", "num_processes": 2, "process_id": 1}
  assert rest == ["--gin_file=a.gin"]
  assert launch.split_distributed_args(["--distributed"])[0] == {"auto_detect": True}
  with pytest.raises(launch.UsageError, match="--process_id must be an integer"):
    launch.split_distributed_args(["--process_id=one"])
