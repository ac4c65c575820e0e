"""The command line: T5X-style gin flags, one-line configuration errors, info."""

from __future__ import annotations

import gin
import pytest

from prompt_tuning import cli


pytestmark = pytest.mark.usefixtures("clean_gin")


def _run(capsys, *argv):
  code = cli.main(list(argv))
  captured = capsys.readouterr()
  return code, captured.out, captured.err


def test_split_gin_args_accepts_t5x_spellings():
  files, bindings, paths, rest = cli.split_gin_args(
    [
      "--gin_file=a.gin",
      "--gin_file",
      "b.gin",
      "--gin.MODEL_DIR='/tmp/x'",
      "--gin_bindings=TRAIN_STEPS=5",
      "--gin_search_paths=/p,/q",
      "--other",
    ]
  )
  assert files == ["a.gin", "b.gin"]
  assert bindings == ["MODEL_DIR='/tmp/x'", "TRAIN_STEPS=5"]
  assert paths == ["/p", "/q"]
  assert rest == ["--other"]


def test_unknown_configurable_is_a_one_line_error(capsys):
  code, _, err = _run(
    capsys,
    "train",
    "--gin_file=prompt_tuning/configs/models/t5_1_1_small_prompt.gin",
    "--gin_file=prompt_tuning/configs/runs/prompt_finetune.gin",
    "--gin.no_such_function.value=1",
  )
  assert code == 2
  assert len(err.strip().splitlines()) == 1
  assert "no_such_function" in err and "Traceback" not in err


def test_bad_binding_syntax_is_a_one_line_error(capsys):
  code, _, err = _run(
    capsys,
    "train",
    "--gin_file=prompt_tuning/configs/runs/prompt_finetune.gin",
    "--gin.TRAIN_STEPS=[unclosed",
  )
  assert code == 2 and len(err.strip().splitlines()) == 1
  assert "bad gin binding --gin.TRAIN_STEPS=[unclosed" in err


def test_missing_required_macros_are_named(capsys):
  code, _, err = _run(
    capsys,
    "train",
    "--gin_file=prompt_tuning/configs/models/t5_1_1_small_prompt.gin",
    "--gin_file=prompt_tuning/configs/runs/prompt_finetune.gin",
    "--gin.MIXTURE_OR_TASK_NAME='demo_sentiment'",
  )
  assert code == 2 and len(err.strip().splitlines()) == 1
  assert "MODEL_DIR" in err and "INITIAL_CHECKPOINT_PATH" in err
  assert "MIXTURE_OR_TASK_NAME" not in err


def test_missing_gin_file_is_a_one_line_error(capsys):
  code, _, err = _run(capsys, "eval", "--gin_file=does/not/exist.gin")
  assert code == 2 and "not found" in err and len(err.strip().splitlines()) == 1


def test_unknown_command_exits_2(capsys):
  code, _, err = _run(capsys, "frobnicate")
  assert code == 2 and "unknown command" in err


def test_gin_job_help_documents_the_flags(capsys):
  code, out, _ = _run(capsys, "train", "--help")
  assert code == 0
  assert "--gin_file" in out and "--gin.NAME=VALUE" in out and "--gin_search_paths" in out
  assert "MODEL_DIR" in out


def test_info_prints_the_published_sizes(capsys):
  code, out, _ = _run(capsys, "info", "--size", "xxl", "--prompt-length", "100")
  assert code == 0
  assert "11.14B" in out
  assert "409,600 trainable parameters" in out


def test_info_small_matches_table_4(capsys):
  code, out, _ = _run(capsys, "info", "--size", "small", "--prompt-length", "100")
  assert code == 0 and "51,200 trainable parameters" in out


# ---------------------------------------------------------------- the paper's recipes
_TINY_DEMO = {
  "network.t5_config.size": "'tiny'",
  "DROPOUT_RATE": "0.0",
  "EVAL_PERIOD": "None",
  "trainer.train.log_period": "1",
}


def _train(capsys, files, **bindings):
  from prompt_tuning.data import demo

  values = {**_TINY_DEMO, "network.t5_config.vocab_size": str(demo.demo_vocab_size()), **bindings}
  gin.clear_config()
  code, out, err = _run(
    capsys,
    "train",
    *[f"--gin_file=prompt_tuning/configs/{f}" for f in files],
    *[f"--gin.{name}={value}" for name, value in values.items()],
  )
  assert code == 0, err
  return out


def test_lm_adaptation_then_sentinel_prompt_then_model_tuning_recipes(
  tmp_path, capsys, random_params
):
  """runs/lm_adapt.gin trains every parameter and writes full checkpoints that a prompt
  run (here with the "+ sentinel" task switch) and runs/finetune.gin start from."""
  import numpy as np

  from prompt_tuning import convert, tree
  from prompt_tuning.data import demo
  from prompt_tuning.t5 import T5Config
  from prompt_tuning.training import logging_utils

  base_dir, lm_dir, prompt_dir, tuned_dir = (
    str(tmp_path / d) for d in ("base", "lm", "prompt", "tuned")
  )
  config = T5Config.from_size("tiny", vocab_size=demo.demo_vocab_size())
  base = tree.flatten(random_params(config))
  convert.save_params_orbax(tree.unflatten(base), base_dir)
  _train(
    capsys,
    ["models/t5_1_1_small.gin", "runs/lm_adapt.gin"],
    MIXTURE_OR_TASK_NAME="'demo_lm_adaptation'",
    INITIAL_CHECKPOINT_PATH=repr(base_dir),
    TASK_FEATURE_LENGTHS="{'inputs': 16, 'targets': 8}",
    MODEL_DIR=repr(lm_dir),
    TRAIN_STEPS="1",
    BATCH_SIZE="2",
    CHECKPOINT_PERIOD="1",
    LEARNING_RATE="0.01",
  )
  adapted = tree.flatten(convert.load_params(f"{lm_dir}/checkpoint_1"))
  assert base.keys() == adapted.keys()  # A full checkpoint: it can be the next base.
  unchanged = [n for n in adapted if np.array_equal(base[n], adapted[n])]
  assert not unchanged  # Every parameter trains in LM adaptation.

  _train(
    capsys,
    ["models/t5_1_1_small_prompt.gin", "runs/prompt_finetune.gin"],
    MIXTURE_OR_TASK_NAME="@maybe_add_sentinel()",
    **{"maybe_add_sentinel.name": "'demo_sentiment'", "maybe_add_sentinel.add_sentinel": "True"},
    INITIAL_CHECKPOINT_PATH=repr(f"{lm_dir}/checkpoint_1"),
    PROMPT_LENGTH="2",
    TASK_FEATURE_LENGTHS="{'inputs': 16, 'targets': 4}",
    MODEL_DIR=repr(prompt_dir),
    TRAIN_STEPS="1",
    BATCH_SIZE="2",
    CHECKPOINT_PERIOD="1",
    EVAL_PERIOD="1",
    **{"trainer.train.num_eval_examples": "2"},
  )
  evals = [r for r in logging_utils.read_metrics(prompt_dir) if r["kind"] == "eval"]
  assert evals and "demo_sentiment_sentinel/accuracy" in evals[0]

  _train(
    capsys,
    ["models/t5_1_1_small.gin", "runs/finetune.gin"],
    MIXTURE_OR_TASK_NAME="'demo_sentiment'",
    INITIAL_CHECKPOINT_PATH=repr(f"{lm_dir}/checkpoint_1"),
    TASK_FEATURE_LENGTHS="{'inputs': 16, 'targets': 4}",
    MODEL_DIR=repr(tuned_dir),
    TRAIN_STEPS="1",
    BATCH_SIZE="2",
    CHECKPOINT_PERIOD="1",
  )
  tuned = tree.flatten(convert.load_params(f"{tuned_dir}/checkpoint_1"))
  assert not [n for n in tuned if np.array_equal(tuned[n], adapted[n])]
