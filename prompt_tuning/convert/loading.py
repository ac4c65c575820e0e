"""One entry point for every checkpoint format: `load_params(path, config)`.

This is what `INITIAL_CHECKPOINT_PATH` resolves through: the user points at whatever
they downloaded (a released T5X checkpoint, a newer orbax one, a Hugging Face model
directory, a tree we saved, or a `checkpoint_N` of one of our runs) and the format is
recognised from the files.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from prompt_tuning import tree
from prompt_tuning.convert import hf, orbax_io, placement, runs, storage, t5x_legacy, validation
from prompt_tuning.convert.errors import CheckpointReadError
from prompt_tuning.convert.reader import CheckpointReader
from prompt_tuning.t5.config import T5Config

# "run": a `MODEL_DIR/checkpoint_N` written by our trainer (see `runs`).
FORMATS = ("t5x", "t5x_orbax", "orbax", "hf", "run")


def detect_format(path: str) -> str:
  """ "t5x" (legacy msgpack + tensorstore), "t5x_orbax" (orbax T5X train state),
  "orbax" (orbax parameter tree), "hf" (Hugging Face weights) or "run" (a checkpoint
  of our trainer)."""
  if not storage.is_gcs(path) and hf.is_hf_checkpoint(path):
    return "hf"
  directory = t5x_legacy.checkpoint_dir(path)
  location = storage.Directory(directory)
  if not location.exists():
    raise CheckpointReadError(f"checkpoint path {path} does not exist")
  if runs.is_run_checkpoint(directory):
    return "run"
  if orbax_io.item_directory(directory) is not None:
    return orbax_io.OrbaxReader(directory).format
  if location.read(t5x_legacy.CHECKPOINT_FILE) is not None:
    contents = t5x_legacy.read_msgpack(directory)
    if t5x_legacy.is_t5x_msgpack(contents):
      return "t5x"
    return "t5x_orbax" if "target" in contents else "orbax"
  steps = runs.steps(directory)
  if steps:
    raise CheckpointReadError(
      f"{path} is a model directory holding {len(steps)} checkpoints; pass one of them, "
      f"e.g. {storage.join(directory, runs.step_name(steps[-1]))} (the latest)"
    )
  raise CheckpointReadError(
    f"cannot tell the checkpoint format of {path}: expected a T5X checkpoint directory "
    f"(a '{t5x_legacy.CHECKPOINT_FILE}' msgpack file), an orbax checkpoint "
    f"({orbax_io.METADATA_FILE}), or a Hugging Face directory ({hf.CONFIG_FILE} with "
    f"{hf.SAFETENSORS_FILE} or {hf.TORCH_FILE})"
  )


def open_checkpoint(path: str, format: str | None = None) -> CheckpointReader:
  """A reader for `path`; `format` (one of FORMATS; "t5x" and "orbax" also accept a
  T5X orbax checkpoint, "orbax" a run checkpoint) is checked against what the files say
  rather than trusted."""
  detected = detect_format(path)
  if (
    format not in (None, "auto", detected)
    and not (format in ("t5x", "orbax") and detected == "t5x_orbax")
    and not (format == "orbax" and detected == "run")
  ):
    if format not in FORMATS:
      raise ValueError(f"unknown checkpoint format {format!r}; choose one of {FORMATS}")
    raise ValueError(
      f"{path} is a {detected!r} checkpoint, not {format!r}; name its format as {detected!r} "
      "or leave the format out to have it detected"
    )
  if detected == "hf":
    return hf.HFReader(path)
  if detected == "t5x":
    return t5x_legacy.T5XLegacyReader(path)
  return orbax_io.OrbaxReader(t5x_legacy.checkpoint_dir(path))


def read_variable(path: str, name: str) -> np.ndarray:
  """One parameter (e.g. `token_embedder/embedding`) of a checkpoint of any format, read
  without the others where the format allows it."""
  with open_checkpoint(path) as reader:
    if name not in reader.arrays():
      raise ValueError(
        f"{path} has no parameter {name!r}; list its parameters with "
        f"`prompt-tuning inspect-checkpoint {path}`"
      )
    return np.asarray(reader.read(name))


def checkpoint_config(reader: CheckpointReader) -> T5Config | None:
  """The model a checkpoint holds: HF's config.json if present, else inferred from the
  parameter shapes."""
  config = getattr(reader, "config", None)
  if config is not None:
    return config
  return validation.infer_config({n: i.shape for n, i in reader.arrays().items()})


def load_params(
  path: str,
  config: T5Config | None = None,
  *,
  shardings: Any = None,
  dtype: Any = None,
  allow_missing: str | None = None,
  allow_unexpected: str | None = validation.PROMPT_PARAMS,
  format: str | None = None,
) -> dict[str, Any]:
  """Reads a checkpoint of any supported format into our nested parameter tree.

  config: when given, the checkpoint is checked against it before any array is read
    (CheckpointMismatchError lists every difference and the size it looks like).
  shardings: optional dict (nested like the parameters, or flat "a/b" names) of
    `jax.sharding.Sharding`; each array is read slice by slice straight into its
    shards. Parameters without one land on the default device.
  dtype: optional cast of floating-point parameters (e.g. jnp.bfloat16 for a frozen
    backbone), applied per array while reading.
  allow_missing / allow_unexpected: regexes of tolerated differences (see
    `validation.check`). Every parameter in the checkpoint is returned, tolerated extras
    (a prompt) included; the caller decides what to keep.
  """
  with open_checkpoint(path, format) as reader:
    infos = reader.arrays()
    if config is not None:
      validation.check(
        {n: i.shape for n, i in infos.items()},
        config,
        source=path,
        allow_missing=allow_missing,
        allow_unexpected=allow_unexpected,
      )
    flat = reader.load(sorted(infos), placement.flat_shardings(shardings), dtype)
  return tree.unflatten(flat)
