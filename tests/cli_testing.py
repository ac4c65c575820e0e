"""Running `prompt-tuning ARGS` inside a test's process."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess

import gin

from prompt_tuning import cli
from prompt_tuning.data import demo as demo_data


def run_cli(args: list[str]) -> subprocess.CompletedProcess:
  """`prompt-tuning ARGS` in this process, as `python -m prompt_tuning` would run it: exit
  code and output. Gin's global configuration is cleared around it. In-process runs save
  a fresh interpreter's imports (about 20 s each on 2 cores)."""
  out, err = io.StringIO(), io.StringIO()
  gin.clear_config()
  try:
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      code = cli.main(args)
  finally:
    gin.clear_config()
  return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


# The tiny base model and 6-step run the previous code wrote (tests/fixtures/legacy_run).
LEGACY_RUN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "legacy_run")
LEGACY_BASE = os.path.join(LEGACY_RUN, "base")


def tiny_job_args(job: str, run_file: str, *gin_files: str, **bindings: str) -> list[str]:
  """`prompt-tuning JOB` arguments for the tiny model of the legacy fixture on the demo
  task (P=3, batch 4), with `gin_files` between the model file and the run file and
  `bindings` overriding the defaults."""
  bindings = {
    "network.t5_config.size": "'tiny'",
    "network.t5_config.vocab_size": str(demo_data.demo_vocab_size()),
    "MIXTURE_OR_TASK_NAME": "'demo_sentiment'",
    "TASK_FEATURE_LENGTHS": "{'inputs': 24, 'targets': 4}",
    "BATCH_SIZE": "4",
    "PROMPT_LENGTH": "3",
    "INITIAL_CHECKPOINT_PATH": repr(LEGACY_BASE),
    **bindings,
  }
  files = ["prompt_tuning/configs/models/t5_1_1_small_prompt.gin", *gin_files]
  files.append(f"prompt_tuning/configs/runs/{run_file}")
  return (
    [job] + [f"--gin_file={f}" for f in files] + [f"--gin.{k}={v}" for k, v in bindings.items()]
  )


# What the libraries print on their own at start-up (TensorFlow's C++ logging before absl
# is initialised; absl-py's notice; seqio's padding warning), spelled out here rather than
# taken from quiet.BANNER, so that a pattern that stopped matching fails these tests.
START_UP_LINES = (
  "absl::InitializeLog",
  "port.cc:",
  "oneDNN custom operations",
  "cudart_stub.cc:",
  "Could not find cuda drivers",
  "cpu_feature_guard.cc:",
  "Logging before flag parsing",
  "Given sequence lengths are longer than necessary",
)
