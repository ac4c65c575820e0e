"""TFDS sources that read prepared data and never download.

seqio's `TfdsDataSource` reads through `tfds.load(download=True, try_gcs=True)`: a task
whose data is not prepared tries to fetch it, which without network retries for minutes
and leaves a `downloads/` folder behind. Every benchmark task here reads through
`TfdsSource` instead: it only reads what `tfds build` prepared (seqio's `read_only`), and
checks before the first read that the dataset is there, so an unprepared task fails at
once with one line naming the dataset and the command that prepares it.

The data directory is the one TFDS itself would use: seqio's override when one is set,
else `TFDS_DATA_DIR`, else `~/tensorflow_datasets`. `TFDS_DATA_DIR` is read when a task is
first read, not when TensorFlow Datasets is imported (TFDS freezes it at import), so a
job started from a process that already imported TFDS still follows it.
"""

from __future__ import annotations

import os
from typing import Callable, Iterable, Mapping, TypeVar

import seqio

DATA_DIR_ENV = "TFDS_DATA_DIR"
T = TypeVar("T")


def default_data_dir() -> str:
  """The directory TFDS reads when none is given: `TFDS_DATA_DIR` or ~/tensorflow_datasets."""
  return os.environ.get(DATA_DIR_ENV) or os.path.join(
    os.path.expanduser("~"), "tensorflow_datasets"
  )


def build_command(tfds_name: str, data_dir: str) -> str:
  """The shell command that prepares `tfds_name` (name/config[:version]) under `data_dir`."""
  return f"tfds build {tfds_name.split(':')[0]} --data_dir={data_dir}"


def not_prepared_message(tfds_name: str, data_dir: str) -> str:
  return (
    f"TFDS dataset '{tfds_name}' is not prepared in {data_dir}; prepare it with "
    f"`{build_command(tfds_name, data_dir)}` (needs network) or set {DATA_DIR_ENV} to a "
    "directory that holds it."
  )


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
