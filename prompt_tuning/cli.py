"""`prompt-tuning` (also `python -m prompt_tuning`): one entry point for every job.

Gin-configured jobs (`train`, `eval`, `infer`) take T5X's flags: `--gin_file` (repeatable,
resolved against `--gin_search_paths`, the current directory and the installed package,
so `prompt_tuning/configs/...` works anywhere), `--gin.NAME=VALUE` overrides and
`--gin_search_paths`. Configuration mistakes are one-line errors with exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Callable, Sequence

# TensorFlow's C++ logging once it is set up (its start-up lines come earlier: quiet.py).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# The gin half of the command line lives in launch.py (shared with the demo and the
# scripts); its names are re-exported here, where scripts have always found them.
from prompt_tuning import quiet, supervise
from prompt_tuning.errors import (
  EXIT_INTERRUPTED,
  EXIT_PEER_LOST,
  describe,
  in_multi_process_job,
  one_line,
)
from prompt_tuning.launch import (
  DISTRIBUTED_HELP,
  GIN_HELP,
  PACKAGE_DIR,  # noqa: F401
  REQUIRED_MACROS,
  UsageError,
  call_configured,
  finalize_gin,
  initialize_distributed,
  parse_gin,
  require_macros,
  split_distributed_args,
  split_gin_args,
)


def run_gin_job(command: str, argv: Sequence[str]) -> int:
  files, bindings, paths, rest = split_gin_args(argv)
  distributed, rest = split_distributed_args(rest)
  if "-h" in rest or "--help" in rest:
    print(f"usage: prompt-tuning {command} --gin_file=FILE ... [--gin.NAME=VALUE ...]\n")
    print(GIN_HELP)
    print(DISTRIBUTED_HELP)
    print(f"required macros for {command}: {', '.join(REQUIRED_MACROS[command])}")
    return 0
  if rest:
    raise UsageError(
      f"unknown argument(s) for {command}: {' '.join(rest)}; see `prompt-tuning {command} "
      "--help` for the flags it takes"
    )
  if not files:
    raise UsageError(f"{command} needs at least one --gin_file (see --help)")
  initialize_distributed(distributed)
  parse_gin(files, bindings, paths)
  require_macros(command)
  import gin

  from prompt_tuning.data import tasks

  tasks.register_all()  # Tasks follow the gin-bound vocabulary.
  finalize_gin()
  from prompt_tuning.evaluation import evaluator, run_eval
  from prompt_tuning.training import logging_utils, trainer

  if command == "train":
    result = call_configured(trainer.train, evaluation_factory=evaluator.build_evaluation)
    if logging_utils.is_leader():  # Every process of a multi-host job gets here.
      print(
        f"trained to step {result.step}; outputs in {gin.query_parameter('MODEL_DIR/macro.value')}"
      )
  elif command == "eval":
    call_configured(run_eval.evaluate)
  else:
    call_configured(run_eval.infer)
  return 0


def _tasks(argv: Sequence[str]) -> int:
  parser = argparse.ArgumentParser(
    prog="prompt-tuning tasks", description="List registered seqio tasks and mixtures."
  )
  parser.add_argument("pattern", nargs="?", default=None, help="glob or regex filter")
  args = parser.parse_args(argv)
  from prompt_tuning.data import listing, tasks  # noqa: F401

  for name in listing.list_tasks(args.pattern):
    print(name)
  return 0


def _show_task(argv: Sequence[str]) -> int:
  parser = argparse.ArgumentParser(
    prog="prompt-tuning show-task", description="Print preprocessed examples of a task."
  )
  parser.add_argument("name")
  parser.add_argument("--split", default="train")
  parser.add_argument("-n", type=int, default=3, help="number of examples")
  args = parser.parse_args(argv)
  from prompt_tuning.data import listing, tasks  # noqa: F401

  print(listing.show_task(args.name, split=args.split, num_examples=args.n))
  return 0


def _inspect_checkpoint(argv: Sequence[str]) -> int:
  parser = argparse.ArgumentParser(
    prog="prompt-tuning inspect-checkpoint",
    description="Format, every parameter's shape and dtype, the total count and the "
    "model size a checkpoint matches.",
  )
  parser.add_argument("path")
  args = parser.parse_args(argv)
  from prompt_tuning.convert import commands

  return commands.inspect_checkpoint(args.path)


def _extract_variable(argv: Sequence[str]) -> int:
  parser = argparse.ArgumentParser(
    prog="prompt-tuning extract-variable",
    description="Save the one checkpoint variable matching REGEX as a .npy file, e.g. "
    "'token_embedder/embedding' for sampled-vocabulary prompt init.",
  )
  parser.add_argument("checkpoint")
  parser.add_argument("regex")
  parser.add_argument("out_npy")
  args = parser.parse_args(argv)
  from prompt_tuning.convert import commands

  return commands.extract_variable(args.checkpoint, args.regex, args.out_npy)


def _diff_checkpoints(argv: Sequence[str]) -> int:
  parser = argparse.ArgumentParser(
    prog="prompt-tuning diff-checkpoints",
    description="Which parameters differ between two checkpoints and by how much.",
    epilog="exit status: 0 if the checkpoints hold the same names, shapes and values; 1 if "
    "they differ; 2 if either path is not a readable checkpoint.",
  )
  parser.add_argument("a")
  parser.add_argument("b")
  args = parser.parse_args(argv)
  from prompt_tuning.convert import commands

  return commands.diff_checkpoints(args.a, args.b)


def _export_prompt(argv: Sequence[str]) -> int:
  files, bindings, paths, rest = split_gin_args(argv)
  parser = argparse.ArgumentParser(
    prog="prompt-tuning export-prompt",
    description="Write what serves from a training run as .npy files: a reparameterised "
    "prompt (Prefix-Tuning's MLP, P-Tuning's prompt encoder, P-Tuning v2 "
    "with MLP) is computed once and saved as its plain parameters "
    "(encoder.prompt.prompt.npy for PROMPT_FILE, or "
    "{encoder,decoder}.layer_prompt.*.npy for LAYER_PROMPT_DIR).",
    epilog="Also takes the training run's gin flags (--gin_file=..., --gin.NAME=VALUE): "
    "the model and prompt files describe the module that is folded.",
  )
  parser.add_argument(
    "checkpoint", help="MODEL_DIR (its newest checkpoint) or MODEL_DIR/checkpoint_N"
  )
  parser.add_argument("out_dir", help="directory for the .npy files (replaced if present)")
  args = parser.parse_args(rest)
  if not files:
    raise UsageError(
      "export-prompt needs the run's model and prompt --gin_file(s), e.g. "
      "--gin_file=prompt_tuning/configs/models/t5_1_1_base_prompt.gin "
      "--gin_file=prompt_tuning/configs/prompts/prefix_tuning.gin"
    )
  parse_gin(files, bindings, paths)
  from prompt_tuning import export
  from prompt_tuning.t5 import network

  module = call_configured(network.transformer)
  for path in export.export_checkpoint(module, args.checkpoint, args.out_dir):
    print(path)
  return 0


def _lazy(module: str, function: str = "main") -> Callable[[Sequence[str]], int]:
  def run(argv: Sequence[str]) -> int:
    import importlib

    return getattr(importlib.import_module(module), function)(list(argv))

  return run


COMMANDS: dict[str, tuple[Callable[[Sequence[str]], int], str]] = {
  "train": (
    lambda argv: run_gin_job("train", argv),
    "train (prompt tuning, model tuning, LM adaptation) from gin files",
  ),
  "eval": (lambda argv: run_gin_job("eval", argv), "evaluate a prompt on a task's metrics"),
  "infer": (lambda argv: run_gin_job("infer", argv), "decode a task split to JSON lines"),
  "demo": (_lazy("prompt_tuning.demo"), "offline end-to-end demo on bundled data"),
  "info": (_lazy("prompt_tuning.info"), "parameter counts of a model size"),
  "tasks": (_tasks, "list registered tasks and mixtures"),
  "neighbors": (
    _lazy("prompt_tuning.neighbors"),
    "nearest vocabulary tokens of each prompt position",
  ),
  "similarity": (
    _lazy("prompt_tuning.similarity"),
    "rank source prompts by similarity to a target prompt (SPoT)",
  ),
  "recycle": (
    _lazy("prompt_tuning.recycle"),
    "move a prompt to another frozen model through their word embeddings",
  ),
  "show-task": (_show_task, "print preprocessed examples of a task"),
  "plan": (_lazy("prompt_tuning.plan"), "memory plan of a sharded train step"),
  "inspect-checkpoint": (
    _inspect_checkpoint,
    "list a checkpoint's parameters and the size it matches",
  ),
  "convert": (
    _lazy("prompt_tuning.convert.commands", "convert_main"),
    "convert checkpoints between T5X, orbax and Hugging Face",
  ),
  "extract-variable": (_extract_variable, "save one checkpoint variable as .npy"),
  "diff-checkpoints": (_diff_checkpoints, "which parameters differ between two checkpoints"),
  "export-prompt": (
    _export_prompt,
    "fold a reparameterised prompt (prefix, P-Tuning) and save it as .npy",
  ),
  "export-peft": (
    _lazy("prompt_tuning.peft_interop", "export_main"),
    "write a prompt as a Hugging Face PEFT adapter",
  ),
  "import-peft": (
    _lazy("prompt_tuning.peft_interop", "import_main"),
    "a PEFT adapter to a PROMPT_FILE .npy or a LAYER_PROMPT_DIR",
  ),
}


def _usage() -> str:
  lines = ["usage: prompt-tuning COMMAND [ARGS]", "", "commands:"]
  lines += [f"  {name:<20}{help_text}" for name, (_, help_text) in COMMANDS.items()]
  lines += [
    "",
    GIN_HELP,
    "Every command also takes --verbose (INFO logs) and --debug (tracebacks).",
    "Run `prompt-tuning COMMAND --help` for a command's options.",
  ]
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0] in ("-h", "--help", "help"):
    print(_usage())
    return 0
  command, rest = argv[0], argv[1:]
  if command not in COMMANDS:
    print(
      f"prompt-tuning: error: unknown command {command!r}; run `prompt-tuning --help` for "
      f"the list\n\n{_usage()}",
      file=sys.stderr,
    )
    return 2
  if supervise.wanted(command, rest):
    return supervise.run(command, rest)
  debug = "--debug" in rest
  verbose = "--verbose" in rest
  rest = [a for a in rest if a not in ("--debug", "--verbose")]
  _configure_logging(verbose)
  # The worker of a multi-process job (supervise.py): Gloo's connection lines on stdout.
  gloo_quiet = not verbose and bool(os.environ.get(supervise.WORKER_ENV))
  with quiet.filtered(1, quiet.GLOO_CONNECTED) if gloo_quiet else contextlib.nullcontext():
    code, leave_now = _run(command, rest, debug)
  if leave_now:
    # Leave now: jax's shutdown barrier at exit would wait for the processes that are
    # gone (or failing too) until the heartbeat timeout, then abort with a C++ trace.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
  return code


def _run(command: str, rest: Sequence[str], debug: bool) -> tuple[int, bool]:
  """Runs one command: (exit code, whether to leave at once, skipping jax's shutdown)."""
  try:
    return COMMANDS[command][0](rest) or 0, False
  except UsageError as error:
    print(f"prompt-tuning {command}: error: {one_line(error)}", file=sys.stderr)
    return 2, False
  except (Exception, KeyboardInterrupt) as error:
    # Every other failure, a library's included, is one line naming the problem and the
    # fix (errors.describe); Ctrl-C says where training stopped and exits 130.
    if debug:
      raise
    message, code = describe(error)
    if code == EXIT_INTERRUPTED:
      print(f"prompt-tuning {command}: {message}", file=sys.stderr)
    elif code == EXIT_PEER_LOST:  # Nothing went wrong here: no traceback to offer.
      print(f"prompt-tuning {command}: error: {message}", file=sys.stderr)
    else:
      print(
        f"prompt-tuning {command}: error: {message} (rerun with --debug for the traceback)",
        file=sys.stderr,
      )
    return code, in_multi_process_job()


def _configure_logging(verbose: bool) -> None:
  """Warnings only by default (orbax and seqio are chatty), without the libraries'
  start-up lines (quiet.py); `--verbose` shows INFO and everything else as it comes."""
  from absl import logging

  if verbose:
    quiet.quiet_logging(False)
  else:
    quiet.enable()
  logging.set_verbosity(logging.INFO if verbose else logging.WARNING)
  logging.use_absl_handler()


if __name__ == "__main__":
  sys.exit(main())
