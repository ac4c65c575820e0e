"""TFDS sources that read prepared data and never download.

seqio's `TfdsDataSource` reads through `tfds.load(download=True, try_gcs=True)`: a task
whose data is not prepared tries to fetch it, which without network retries for minutes
and leaves a `downloads/` folder behind. Every benchmark task here reads through
`TfdsSource` instead: it only reads what `tfds build` prepared (seqio's `read_only`), and
checks, when a read fails, whether the dataset is there, so an unprepared task fails at
once with one line naming the dataset and the command that prepares it: `python -m
prompt_tuning.data.sources NAME --data_dir=DIR` (this module's `main`, the dataset's own
TFDS builder, as `tfds build` runs it; TFDS 4.9.10's `tfds` script needs apache-beam).

The data directory is the one TFDS itself would use: seqio's override when one is set,
else `TFDS_DATA_DIR`, else `~/tensorflow_datasets`. `TFDS_DATA_DIR` is read when a task is
first read, not when TensorFlow Datasets is imported (TFDS freezes it at import), so a
job started from a process that already imported TFDS still follows it.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Iterable, Mapping, Sequence, TypeVar

import seqio
import tensorflow_datasets as tfds

DATA_DIR_ENV = "TFDS_DATA_DIR"
T = TypeVar("T")


def default_data_dir() -> str:
  """The directory TFDS reads when none is given: `TFDS_DATA_DIR` or ~/tensorflow_datasets."""
  return os.environ.get(DATA_DIR_ENV) or os.path.join(
    os.path.expanduser("~"), "tensorflow_datasets"
  )


def prepare_command(tfds_name: str, data_dir: str) -> str:
  """The command that prepares `tfds_name` with this install (see `main`): TFDS's own
  `tfds build` does the same, but in tensorflow-datasets 4.9.10 the `tfds` script imports
  apache-beam at start, which this project does not install."""
  return f"python -m prompt_tuning.data.sources {tfds_name} --data_dir={data_dir}"


def not_prepared_message(tfds_name: str, data_dir: str) -> str:
  """One line, short enough for the CLI's 400 characters with two long paths in it."""
  return (
    f"TFDS dataset '{tfds_name}' is not prepared in {data_dir} ({DATA_DIR_ENV}); prepare "
    f"it with `{prepare_command(tfds_name, data_dir)}` (needs network; `tfds build` without "
    "apache-beam)."
  )


def prepare(tfds_name: str, data_dir: str) -> str:
  """Downloads and prepares `tfds_name` under `data_dir` with the dataset's own TFDS
  builder (what `tfds build` does); returns the prepared version's directory."""
  builder = tfds.builder(tfds_name, data_dir=data_dir)
  builder.download_and_prepare()
  return str(builder.data_path)


def main(argv: Sequence[str] | None = None) -> int:
  """`python -m prompt_tuning.data.sources NAME --data_dir=DIR`: prepares one dataset."""
  parser = argparse.ArgumentParser(
    prog="python -m prompt_tuning.data.sources",
    description="Download and prepare a TFDS dataset for the tasks (needs network).",
  )
  parser.add_argument("tfds_name", help="name/config:version, e.g. super_glue/rte:1.0.2")
  parser.add_argument("--data_dir", default=None, help="default: TFDS_DATA_DIR")
  args = parser.parse_args(argv)
  data_dir = args.data_dir or default_data_dir()
  try:
    path = prepare(args.tfds_name, data_dir)
  except Exception as e:  # One line, as the CLI reports errors.
    text = " ".join(str(e).split()) or type(e).__name__
    print(f"error: cannot prepare {args.tfds_name} in {data_dir}: {text[:300]}", file=sys.stderr)
    return 1
  print(f"prepared {args.tfds_name} in {path}; set {DATA_DIR_ENV}={data_dir} to read it")
  return 0


class TfdsSource(seqio.TfdsDataSource):
  """A `seqio.TfdsDataSource` over prepared data only (see the module docstring)."""

  def __init__(self, tfds_name: str, splits: Iterable[str] | Mapping[str, str]):
    super().__init__(tfds_name=tfds_name, splits=splits, read_only=True)
    self._follows_environment = False

  @property
  def data_dir(self) -> str:
    """Where this source reads: seqio's override or an explicit directory, else TFDS's."""
    return self.tfds_dataset.data_dir or default_data_dir()

  def _pin_data_dir(self) -> None:
    """Points the loader at TFDS's directory as of this read (TFDS_DATA_DIR set after
    import counts); an explicit directory or seqio's global override wins."""
    loader = self.tfds_dataset
    if self._follows_environment or not loader.data_dir:
      loader.override_data_dir(default_data_dir())
      self._follows_environment = True

  def _builder(self):
    try:
      return self.tfds_dataset.builder
    except ValueError as e:  # An unknown dataset, config or version.
      raise ValueError(
        f"TFDS cannot build '{self.tfds_dataset.name}': {str(e).splitlines()[0]} "
        "Check the dataset's name, config and version (`tfds build --help`)."
      ) from None

  def _is_prepared(self) -> bool:
    """Whether `tfds build` finished here: the version folder holds its dataset_info.json
    (what `builder.is_prepared()` checks, without its warning about the missing file)."""
    return (self._builder().data_path / "dataset_info.json").exists()

  def _not_prepared(self) -> FileNotFoundError:
    return FileNotFoundError(not_prepared_message(self.tfds_dataset.name, self.data_dir))

  def _read(self, read: Callable[[], T]) -> T:
    """Runs `read`; a failure on data that is not prepared becomes the one-line error.

    The check follows a failed read rather than preceding every read: TFDS's own read
    (`as_dataset`) is what fails on missing data, and what `tfds.testing.mock_data`
    replaces, so mocked tests and prepared data read exactly as seqio would read them.
    """
    self._pin_data_dir()
    try:
      return read()
    except (AssertionError, KeyError, ValueError, FileNotFoundError):
      if not self._is_prepared():
        raise self._not_prepared() from None
      raise

  def get_dataset(self, split=None, shuffle=True, seed=None, shard_info=None, **kwargs):
    return self._read(
      lambda: super(TfdsSource, self).get_dataset(split, shuffle, seed, shard_info, **kwargs)
    )

  def num_input_examples(self, split: str):
    return self._read(lambda: super(TfdsSource, self).num_input_examples(split))

  def list_shards(self, split: str):
    return self._read(lambda: super(TfdsSource, self).list_shards(split))


if __name__ == "__main__":
  sys.exit(main())
