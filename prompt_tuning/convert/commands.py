"""Checkpoint tools behind `prompt-tuning inspect|convert|extract|diff`.

Each takes plain arguments, prints to stdout (errors to stderr) and returns an exit
code, so the CLI only parses flags. Arrays are read one at a time (or in bounded
batches), so the tools work on checkpoints larger than host memory allows twice.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import re
import sys
from typing import Callable, Iterator, Sequence

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


# T5 1.1's relative-attention settings; a T5X or orbax tree records the number of buckets
# (the position table's width) but not the maximum distance.
DEFAULT_MAX_DISTANCE = 128
DEFAULT_NUM_BUCKETS = 32


@dataclasses.dataclass(frozen=True)
class ShapeFlags:
  """convert's shape flags: None where the user passed none. They fill in what the arrays
  do not record (the maximum distance) and are checked against what they do."""

  num_heads: int | None = None
  relative_attention_max_distance: int | None = None
  relative_attention_num_buckets: int | None = None

  def __post_init__(self) -> None:
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"--{field.name} must be an integer >= 1, got {value!r}")


def _check_flag(flag: str, given: int | None, found: int, record: str) -> None:
  """record: where the checkpoint keeps the value, a phrase with `{}` for it."""
  if given is not None and given != found:
    raise ValueError(
      f"--{flag} {given} disagrees with the checkpoint: {record.format(found)}; "
      "drop the flag or check that this is the checkpoint you meant"
    )


def _resolve_config(
  reader: CheckpointReader, size: str | None, flags: ShapeFlags
) -> tuple[T5Config, str]:
  """The model to convert and a line saying where its relative-attention settings came
  from. Shapes come from --size, Hugging Face's config.json, or the arrays themselves
  (layers counted from the names, heads and buckets from the position table)."""
  shapes = {n: i.shape for n, i in reader.arrays().items()}
  table = validation.position_table_shape(shapes)
  recorded = getattr(reader, "config", None)  # Only config.json records the max distance.
  if size is not None:
    config = T5Config.from_size(size)
  else:
    config = loading.checkpoint_config(reader)
    if config is None:
      what = "has no relative position table" if table is None else "is not a T5 1.1 tree"
      raise ValueError(
        f"cannot read the model shape of {reader.path}: it {what} "
        "(encoder/relpos_bias/rel_embedding, token_embedder/embedding, layer 0's attention "
        "and MLP); pass --size if it is a named size"
      )
  if table is not None:
    _check_flag(
      "num_heads", flags.num_heads, table[0], "its relative position table has {} heads (rows)"
    )
    _check_flag(
      "relative_attention_num_buckets",
      flags.relative_attention_num_buckets,
      table[1],
      "its relative position table has {} buckets (columns)",
    )
  overrides = {
    k: v
    for k, v in (
      ("num_heads", flags.num_heads),
      ("relative_attention_num_buckets", flags.relative_attention_num_buckets),
    )
    if v is not None
  }
  if recorded is not None:
    _check_flag(
      "relative_attention_max_distance",
      flags.relative_attention_max_distance,
      recorded.relative_attention_max_distance,
      "its config.json records {}",
    )
    distance = recorded.relative_attention_max_distance
    how = "from the checkpoint's config.json"
  elif flags.relative_attention_max_distance is not None:
    distance = flags.relative_attention_max_distance
    how = "from --relative_attention_max_distance"
  else:
    distance = DEFAULT_MAX_DISTANCE
    how = (
      "T5 1.1's default; this format does not record it, so pass "
      "--relative_attention_max_distance if the checkpoint used another"
    )
  config = config.replace(relative_attention_max_distance=distance, **overrides)
  buckets = config.relative_attention_num_buckets
  origin = "read from the position table" if table is not None else "from the model size"
  line = f"relative attention: {buckets} buckets ({origin}), max distance {distance} ({how})"
  return config, line


@_guard
def convert(
  src: str,
  src_format: str | None,
  dst: str,
  dst_format: str,
  size: str | None = None,
  flags: ShapeFlags | None = None,
) -> int:
  """Converts a checkpoint (t5x, t5x_orbax, orbax, hf) to orbax or Hugging Face.

  size: the named model size to check against; None reads the shape from the checkpoint
    (any d_model, layers, heads, MLP width and vocabulary converts, not only named sizes).
  flags: the relative-attention settings a T5X or orbax tree does not record, and
    optional checks of heads / buckets (see `ShapeFlags`).
  """
  flags = flags or ShapeFlags()
  if dst_format not in TARGET_FORMATS:
    raise ValueError(f"cannot write {dst_format!r}; choose one of {TARGET_FORMATS}")
  if src_format not in (None,) + SOURCE_FORMATS:
    raise ValueError(f"unknown source format {src_format!r}; choose one of {SOURCE_FORMATS}")
  if os.path.isdir(dst) and os.listdir(dst):
    raise ValueError(f"{dst} exists and is not empty; choose a new directory")
  with loading.open_checkpoint(src, src_format) as reader:
    config, attention = _resolve_config(reader, size, flags)
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
    f"converted {len(written)} arrays ({_human(nbytes)}) of "
    f"{validation.model_phrase(config)} from {source_format} {src} to {dst_format} {dst}"
  )
  print(attention)
  if dst_format == "hf":  # transformers 5 may tie T5 1.1's lm_head on some load paths.
    print(hf.loading_advice(dst))
  distance = config.relative_attention_max_distance
  if dst_format == "orbax" and distance != DEFAULT_MAX_DISTANCE:
    print(
      "note: an orbax tree records no max distance; a model loading this one must set "
      f"network.t5_config.relative_attention_max_distance = {distance}"
    )
  return 0


def _positive_int(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    value = 0
  if value < 1:
    raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
  return value


def convert_main(argv: Sequence[str]) -> int:
  """`prompt-tuning convert ARGS`: parses the flags and runs `convert`."""
  parser = argparse.ArgumentParser(
    prog="prompt-tuning convert",
    description="Convert a checkpoint: T5X (legacy or orbax), orbax or Hugging Face in; "
    "orbax or Hugging Face out. Any shape converts: without --size the model's shape is "
    "read from the arrays.",
  )
  parser.add_argument("src")
  parser.add_argument("dst")
  parser.add_argument(
    "--from",
    dest="src_format",
    choices=["t5x", "hf", "orbax"],
    default=None,
    help="source format (detected when omitted)",
  )
  parser.add_argument("--to", dest="dst_format", choices=["orbax", "hf"], required=True)
  parser.add_argument(
    "--size",
    default=None,
    help="a named model size to check against (read from the arrays when omitted)",
  )
  parser.add_argument(
    "--num_heads",
    type=_positive_int,
    default=None,
    help="attention heads; read from the relative position table, so only a check",
  )
  parser.add_argument(
    "--relative_attention_max_distance",
    type=_positive_int,
    default=None,
    help=f"not recorded by T5X or orbax trees (default: T5 1.1's {DEFAULT_MAX_DISTANCE})",
  )
  parser.add_argument(
    "--relative_attention_num_buckets",
    type=_positive_int,
    default=None,
    help="read from the relative position table's width, so only a check "
    f"(T5 1.1: {DEFAULT_NUM_BUCKETS})",
  )
  args = parser.parse_args(argv)
  flags = ShapeFlags(
    num_heads=args.num_heads,
    relative_attention_max_distance=args.relative_attention_max_distance,
    relative_attention_num_buckets=args.relative_attention_num_buckets,
  )
  return convert(args.src, args.src_format, args.dst, args.dst_format, args.size, flags)


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
        f"{len(names)} ({what}: {listed}); narrow or correct the pattern"
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
