"""The one checkpoint registry: every format we read (T5X legacy, T5X orbax, our orbax
trees, Hugging Face, our own run checkpoints) into our tree.

`load_params(path, config)` is the one entry point, `read_variable` reads a single
parameter, `runs` knows where a MODEL_DIR keeps its checkpoints; `commands` holds the
checkpoint tools (inspect, convert, extract, diff) that the CLI exposes.
"""

from prompt_tuning.convert.errors import CheckpointMismatchError, CheckpointReadError
from prompt_tuning.convert.hf import hf_to_params, params_to_hf, write_hf_checkpoint
from prompt_tuning.convert.loading import (
  FORMATS,
  checkpoint_config,
  detect_format,
  load_params,
  open_checkpoint,
  read_variable,
)
from prompt_tuning.convert.orbax_io import save_params_orbax
from prompt_tuning.convert.runs import is_run_checkpoint, newest_run_checkpoint
from prompt_tuning.convert.t5x_legacy import write_t5x_checkpoint
from prompt_tuning.convert.validation import PROMPT_PARAMS, check, infer_config

__all__ = [
  "CheckpointMismatchError",
  "CheckpointReadError",
  "FORMATS",
  "PROMPT_PARAMS",
  "check",
  "checkpoint_config",
  "detect_format",
  "hf_to_params",
  "infer_config",
  "is_run_checkpoint",
  "load_params",
  "newest_run_checkpoint",
  "open_checkpoint",
  "params_to_hf",
  "read_variable",
  "save_params_orbax",
  "write_hf_checkpoint",
  "write_t5x_checkpoint",
]
