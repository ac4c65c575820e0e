"""The command line: T5X-style gin flags, one-line configuration errors, info."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import gin
import pytest

from prompt_tuning import cli, quiet
from tests.cli_testing import START_UP_LINES, tiny_job_args


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


def test_info_with_a_method_alone_counts_it_at_the_papers_length(capsys):
  code, out, _ = _run(capsys, "info", "--size", "base", "--method", "ia3")
  # IA3: 12 encoder layers x (2 x 768 + 2048) + 12 decoder layers x (4 x 768 + 2048).
  assert code == 0 and "ia3: 104,448 trainable parameters" in out
  code, out, _ = _run(capsys, "info", "--size", "base", "--method", "per_layer")
  assert code == 0 and "per_layer, P=100: 921,600 trainable parameters" in out


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


# ---------------------------------------------------------------- quiet by default


def _python_m(*args: str) -> subprocess.CompletedProcess:
  """`python -m prompt_tuning ARGS` in a fresh interpreter, from the repository's root."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = {**os.environ, "PYTHONPATH": root}
  return subprocess.run(
    [sys.executable, "-m", "prompt_tuning", *args],
    cwd=root,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )


def _start_up_lines(text: str) -> list[str]:
  return [line for line in text.splitlines() if any(mark in line for mark in START_UP_LINES)]


def test_a_tiny_train_and_eval_print_only_our_lines(tmp_path):
  model_dir = tmp_path / "run"
  train = _python_m(
    *tiny_job_args(
      "train",
      "prompt_finetune.gin",
      MODEL_DIR=repr(str(model_dir)),
      TRAIN_STEPS="2",
      CHECKPOINT_PERIOD="2",
      EVAL_PERIOD="2",
      **{"trainer.train.num_eval_examples": "4"},
    )
  )
  assert train.returncode == 0, train.stderr
  assert _start_up_lines(train.stderr + train.stdout) == []
  assert "step 2/2" in train.stderr and "eval at step 2" in train.stderr
  assert f"trained to step 2; outputs in {model_dir}" in train.stdout

  prompt = model_dir / "numpy_checkpoints" / "checkpoint_2" / "encoder.prompt.prompt.npy"
  evaluate = _python_m(
    *tiny_job_args(
      "eval",
      "prompt_eval.gin",
      PROMPT_FILE=repr(str(prompt)),
      **{"run_eval.evaluate.num_examples": "4"},
    )
  )
  assert evaluate.returncode == 0, evaluate.stderr
  assert _start_up_lines(evaluate.stderr + evaluate.stdout) == []
  assert "accuracy" in evaluate.stdout + evaluate.stderr


def test_verbose_shows_the_start_up_lines_as_before():
  """The filter is what hides them: with --verbose, TensorFlow's import prints its
  pre-initialisation notice again (`info` imports TensorFlow through the package)."""
  result = _python_m("info", "--size", "small", "--verbose")
  assert result.returncode == 0, result.stderr
  assert "absl::InitializeLog" in result.stderr


def test_the_stderr_filter_drops_the_banner_lines_only_and_restores_fd_2(capfd):
  banner = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    "I0000 00:00:1796420108.754328    9630 port.cc:153] oneDNN custom operations are on. "
    "You may see slightly different numerical results.\n"
    "I0000 00:00:1796420108.755303    9630 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.\n"
  )
  real = (
    "E0000 00:00:1796420108.755303    9630 cudart_stub.cc:31] Could not find cuda drivers "
    "on your machine, GPU will not be used.\n"  # An error of the same file: not a banner.
    "Traceback (most recent call last): a real error\n"
  )
  with pytest.raises(RuntimeError, match="raised inside"):
    with quiet.filtered():
      os.write(2, banner.encode())
      os.write(2, real.encode())
      os.write(2, b"no newline at the end")
      raise RuntimeError("raised inside")
  os.write(2, b"\nafter the block\n")
  err = capfd.readouterr().err
  assert err == real + "no newline at the end\nafter the block\n"


def test_a_noisy_package_import_is_filtered_and_keeps_its_own_loader(tmp_path, capfd, monkeypatch):
  package = tmp_path / "noisy_package_for_test"
  package.mkdir()
  (package / "__init__.py").write_text(
    "import os\n"
    "os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called are "
    "written to STDERR\\n')\n"
    "os.write(2, b'a line of the package itself\\n')\n"
  )
  monkeypatch.syspath_prepend(str(tmp_path))
  before = list(sys.meta_path)
  try:
    quiet.quiet_imports(["noisy_package_for_test"])
    import noisy_package_for_test
  finally:
    sys.meta_path[:] = before
    sys.modules.pop("noisy_package_for_test", None)
  assert capfd.readouterr().err == "a line of the package itself\n"
  assert type(noisy_package_for_test.__loader__).__name__ == "SourceFileLoader"
  assert noisy_package_for_test.__spec__.loader is noisy_package_for_test.__loader__


def test_gloo_connection_lines_are_dropped_from_stdout_and_the_rest_kept(capfd):
  with quiet.filtered(1, quiet.GLOO_CONNECTED):
    os.write(1, b"[Gloo] Rank 0 is connected to 1 peer ranks. Expected number of connected ")
    os.write(1, b"peer ranks is : 1\n")
    print("trained to step 2; outputs in /tmp/run", flush=True)
    os.write(1, b"[Gloo] Rank 3 is connected to 7 peer ranks. Expected number of connected peer ")
    os.write(1, b"ranks is : 7\n")
    # Two of Gloo's threads at once, as seen in a two-process job on 2 cores.
    os.write(1, b"[Gloo] Rank [Gloo] Rank 0 is connected to 1 peer ranks. Expected number of ")
    os.write(1, b"connected peer ranks is : 1\n0 is connected to 1 peer ranks. Expected number ")
    os.write(1, b"of connected peer ranks is : 1\n")
    os.write(1, b"12\n[Gloo] Rank 1 failed: Connection reset by peer\n")
  assert capfd.readouterr().out == (
    "trained to step 2; outputs in /tmp/run\n12\n[Gloo] Rank 1 failed: Connection reset by peer\n"
  )


def test_seqio_padding_warning_is_hidden_unless_verbose(caplog):
  from absl import logging as absl_logging

  long_lengths = "Given sequence lengths are longer than necessary for some inputs"
  may_truncate = "Given sequence lengths *may be* insufficient for some inputs"
  try:
    quiet.quiet_logging()
    with caplog.at_level(logging.WARNING):
      absl_logging.warning(long_lengths)
      absl_logging.warning(may_truncate)
    assert may_truncate in caplog.text and long_lengths not in caplog.text
    caplog.clear()
    quiet.quiet_logging(False)
    with caplog.at_level(logging.WARNING):
      absl_logging.warning(long_lengths)
    assert long_lengths in caplog.text
  finally:
    quiet.quiet_logging(False)
