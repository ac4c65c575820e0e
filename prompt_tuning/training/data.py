"""Batches from seqio, deterministic and resumable by position.

Training data is `seqio.get_dataset` with a fixed seed, so the order of batches is a
function of (task, lengths, seed) alone; resuming skips the batches already consumed.
Each process reads its own shard (multi-host) and the trainer assembles global arrays.
"""

from __future__ import annotations

from typing import Iterator, Mapping

import jax
import numpy as np
import seqio
import tensorflow as tf

from prompt_tuning.training import partitioning


def feature_converter() -> seqio.FeatureConverter:
  """Encoder-decoder features, unpacked (the paper's setting)."""
  return seqio.EncDecFeatureConverter(pack=False)


def shard_info() -> seqio.ShardInfo | None:
  """This process's share of the input in a multi-process job (None: read everything).

  seqio shards a file-based source by files, so it needs at least as many files as
  processes; in-memory and function sources are split example by example.
  """
  if jax.process_count() == 1:
    return None
  return partitioning.process_shard_info()


def train_batches(
  mixture_or_task_name: str,
  task_feature_lengths: Mapping[str, int],
  batch_size: int,
  seed: int,
  start_position: int = 0,
  split: str = "train",
) -> Iterator[dict[str, np.ndarray]]:
  """Endless per-process batches, starting after `start_position` batches.

  `batch_size` is global: each process yields `batch_size / process_count` rows of its
  own shard, which the partitioner assembles into one global batch.
  """
  if batch_size % jax.process_count():
    raise ValueError(
      f"BATCH_SIZE {batch_size} is not divisible by the number of processes {jax.process_count()}"
    )
  dataset = seqio.get_dataset(
    mixture_or_task_name,
    task_feature_lengths=dict(task_feature_lengths),
    dataset_split=split,
    shuffle=True,
    num_epochs=None,
    seed=seed,
    feature_converter=feature_converter(),
    shard_info=shard_info(),
    use_cached=False,
  )
  dataset = dataset.batch(batch_size // jax.process_count(), drop_remainder=True)
  if start_position:
    dataset = dataset.skip(start_position)
  dataset = dataset.prefetch(tf.data.AUTOTUNE)
  for batch in dataset.as_numpy_iterator():
    yield {k: np.asarray(v) for k, v in batch.items()}


def pad_batch(
  batch: Mapping[str, np.ndarray], batch_size: int
) -> tuple[dict[str, np.ndarray], int]:
  """Pads a short final batch with zero rows so every call has one compiled shape."""
  rows = len(next(iter(batch.values())))
  if rows == batch_size:
    return dict(batch), rows
  padded = {}
  for key, value in batch.items():
    pad = np.zeros((batch_size - rows,) + value.shape[1:], value.dtype)
    padded[key] = np.concatenate([value, pad], axis=0)
  return padded, rows
