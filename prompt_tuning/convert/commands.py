"""Checkpoint tools behind `prompt-tuning inspect|convert|extract|diff`.

Each takes plain arguments, prints to stdout (errors to stderr) and returns an exit
code, so the CLI only parses flags. Arrays are read one at a time (or in bounded
batches), so the tools work on checkpoints larger than host memory allows twice.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from typing import Callable, Iterator

import numpy as np

from prompt_tuning import tree
from prompt_tuning.convert import hf, loading, orbax_io, validation
from prompt_tuning.convert.errors import CheckpointMismatchError
from prompt_tuning.convert.reader import CheckpointReader
from prompt_tuning.t5.config import T5Config

SOURCE_FORMATS = ("auto", "t5x", "t5x_orbax", "orbax", "hf", "run")
TARGET_FORMATS = ("orbax", "hf")
# Upper bound on host memory a command holds for arrays read in one batch.
_BATCH_BYTES = 1 << 30


# diff-checkpoints' exit codes, as diff(1) has them: 0 same, 1 different, 2 trouble.
DIFF_IDENTICAL, DIFF_DIFFERENT, DIFF_UNREADABLE = 0, 1, 2


def _fail(message: str, code: int = 1) -> int:
  print(f"error: {message}", file=sys.stderr)
  return code


def _guard(command: Callable[..., int], code: int = 1) -> Callable[..., int]:
  """Bad input (a ValueError of ours, a path that does not exist) becomes a one-line
  message and exit code `code`."""

  def run(*args, **kwargs) -> int:
    try:
      return command(*args, **kwargs)
    except (ValueError, FileNotFoundError) as e:
      return _fail(str(e), code)

  run.__name__ = command.__name__
  run.__doc__ = command.__doc__
  return run


def _name_batches(nbytes: Callable[[str], int], names: list[str]) -> Iterator[list[str]]:
  batch: list[str] = []
  size = 0
  for name in names:
    if batch and size + nbytes(name) > _BATCH_BYTES:
      yield batch
      batch, size = [], 0
    batch.append(name)
    size += nbytes(name)
  if batch:
    yield batch


def _batches(reader: CheckpointReader, names: list[str]) -> Iterator[dict[str, np.ndarray]]:
  infos = reader.arrays()
  for batch in _name_batches(lambda n: infos[n].nbytes, names):
    yield reader.read_many(batch)


def _human(nbytes: int) -> str:
  for unit in ("B", "KiB", "MiB", "GiB"):
    if nbytes < 1024 or unit == "GiB":
      return f"{nbytes:.1f} {unit}" if unit != "B" else f"{nbytes} B"
    nbytes /= 1024
  return f"{nbytes:.1f} GiB"


@_guard
def inspect_checkpoint(path: str) -> int:
  """Prints the format, every parameter with shape and dtype, the totals and the model
  size the checkpoint matches."""
  with loading.open_checkpoint(path) as reader:
    infos = reader.arrays()
    print(f"checkpoint: {path}")
    print(f"format: {reader.format}")
    width = max((len(n) for n in infos), default=0)
    for name in sorted(infos):
      info = infos[name]
      print(f"  {name:<{width}}  {str(list(info.shape)):<16} {np.dtype(info.dtype).name}")
    total = sum(i.size for i in infos.values())
    nbytes = sum(i.nbytes for i in infos.values())
    print(f"parameters: {len(infos)} arrays, {total:,} values, {_human(nbytes)}")
    config = loading.checkpoint_config(reader)
    if config is None:
      print("model: not a T5 encoder-decoder parameter tree")
      return 0
    print(f"model: {validation.describe_config(config)}")
    try:
      validation.check(
        {n: i.shape for n, i in infos.items()}, config, source=path, allow_unexpected=None
      )
    except CheckpointMismatchError as e:
      if e.missing or e.wrong_shape:
        print(f"note: {e}")
      else:
        print(f"note: parameters beyond that model: {', '.join(e.unexpected)}")
  return 0


def _resolve_config(reader: CheckpointReader, size: str | None) -> T5Config:
  if size is not None:
    return T5Config.from_size(size)
  config = loading.checkpoint_config(reader)
  if config is None:
    raise ValueError(f"cannot infer the model size of {reader.path}; pass --size")
  return config


@_guard
def convert(
  src: str, src_format: str | None, dst: str, dst_format: str, size: str | None = None
) -> int:
  """Converts a checkpoint (t5x, t5x_orbax, orbax, hf) to orbax or Hugging Face.

  size: the named model size to check against; inferred from the checkpoint if None.
  """
  if dst_format not in TARGET_FORMATS:
    raise ValueError(f"cannot write {dst_format!r}; choose one of {TARGET_FORMATS}")
  if src_format not in (None,) + SOURCE_FORMATS:
    raise ValueError(f"unknown source format {src_format!r}; choose one of {SOURCE_FORMATS}")
  if os.path.isdir(dst) and os.listdir(dst):
    raise ValueError(f"{dst} exists and is not empty; choose a new directory")
  with loading.open_checkpoint(src, src_format) as reader:
    config = _resolve_config(reader, size)
    infos = reader.arrays()
    validation.check({n: i.shape for n, i in infos.items()}, config, source=src)
    flat: dict[str, np.ndarray] = {}
    for batch in _batches(reader, sorted(infos)):
      flat.update(batch)
    source_format = reader.format
  params = tree.unflatten(flat)
  if dst_format == "orbax":
    orbax_io.save_params_orbax(params, dst)
    written = flat
  else:
    dropped = [n for n in flat if re.search(validation.PROMPT_PARAMS, n)]
    if dropped:
      print(f"note: Hugging Face T5 has no place for {dropped}; left out")
    hf.write_hf_checkpoint(params, config, dst)
    written = {n: a for n, a in flat.items() if n not in dropped}
  nbytes = sum(a.nbytes for a in written.values())
  print(
    f"converted {len(written)} arrays ({_human(nbytes)}) of a "
    f"{validation.describe_config(config)} model from {source_format} {src} "
    f"to {dst_format} {dst}"
  )
  return 0


@_guard
def extract_variable(ckpt: str, regex: str, out_npy: str) -> int:
  """Saves the one parameter whose name matches `regex` (re.search) as a .npy file,
  e.g. `token_embedder/embedding` to initialise prompts from sampled vocabulary."""
  with loading.open_checkpoint(ckpt) as reader:
    # A full name wins over names that merely contain it (`token_embedder/embedding`
    # vs nothing; `embedding` alone is ambiguous with the relative position tables).
    names = sorted(n for n in reader.arrays() if re.fullmatch(regex, n)) or sorted(
      n for n in reader.arrays() if re.search(regex, n)
    )
    if len(names) != 1:
      listed = names[:10] if names else sorted(reader.arrays())[:10]
      what = "matches" if names else "no match; some names"
      raise ValueError(
        f"{regex!r} must match exactly one parameter of {ckpt}, found "
        f"{len(names)} ({what}: {listed})"
      )
    array = reader.read(names[0])
  directory = os.path.dirname(os.path.abspath(out_npy))
  os.makedirs(directory, exist_ok=True)
  np.save(out_npy, np.asarray(array))
  print(f"{names[0]} {list(array.shape)} {np.asarray(array).dtype.name} -> {out_npy}")
  return 0


@functools.partial(_guard, code=DIFF_UNREADABLE)
def diff_checkpoints(a: str, b: str) -> int:
  """Compares two checkpoints parameter by parameter (max absolute difference).

  Exit code 0: identical names, shapes and values; 1: any difference; 2: either path is
  not a readable checkpoint (like diff(1), so scripts can tell "differ" from "broken").
  """
  with loading.open_checkpoint(a) as ra, loading.open_checkpoint(b) as rb:
    ia, ib = ra.arrays(), rb.arrays()
    only_a = sorted(set(ia) - set(ib))
    only_b = sorted(set(ib) - set(ia))
    common = sorted(set(ia) & set(ib))
    reshaped = [n for n in common if ia[n].shape != ib[n].shape]
    comparable = [n for n in common if ia[n].shape == ib[n].shape]
    differing: list[tuple[str, float]] = []
    # The same batches of names from both sides (their dtypes may differ).
    nbytes = lambda n: max(ia[n].nbytes, ib[n].nbytes)  # noqa: E731
    for names in _name_batches(nbytes, comparable):
      batch_a, batch_b = ra.read_many(names), rb.read_many(names)
      for name, value in batch_a.items():
        diff = np.max(
          np.abs(np.asarray(value, np.float64) - np.asarray(batch_b[name], np.float64)), initial=0.0
        )
        if diff != 0 or np.isnan(diff):
          differing.append((name, float(diff)))
  print(f"a: {a} ({ra.format}, {len(ia)} arrays)")
  print(f"b: {b} ({rb.format}, {len(ib)} arrays)")
  for name in only_a:
    print(f"  only in a: {name} {list(ia[name].shape)}")
  for name in only_b:
    print(f"  only in b: {name} {list(ib[name].shape)}")
  for name in reshaped:
    print(f"  shape differs: {name} {list(ia[name].shape)} vs {list(ib[name].shape)}")
  for name, diff in differing:
    print(f"  differs: {name} max |a-b| = {diff:.6g}")
  same = len(comparable) - len(differing)
  print(
    f"{same} of {len(common)} shared parameters identical; {len(differing)} differ, "
    f"{len(reshaped)} reshaped, {len(only_a)} only in a, {len(only_b)} only in b"
  )
  return DIFF_IDENTICAL if not (only_a or only_b or reshaped or differing) else DIFF_DIFFERENT
