"""Targets of the linear-head tasks as seqio vocabularies: label names and positions.

A head task (docs/heads.md) keeps seqio's shape: its "targets" feature is a sequence of
ids, and its vocabulary turns them into text, so seqio's evaluator decodes the model's
predictions and runs the task's postprocessor and metrics as for any other task.

  LabelVocabulary(labels, per_token)  label k <-> id k + 1; id 0 is padding, i.e. a
      position without a label (a word's later word pieces, padding, a hidden test
      label). Text is the label names separated by spaces: "entailment" for a sequence
      task, "B-PER I-PER O" for a tagging task.
  PositionVocabulary(max_positions)   input position p <-> id p + 1: a span "start end".

Ids start at 1 so that seqio's padding (0) always means "no label"; the models subtract
the 1 (head_models.py).
"""

from __future__ import annotations

from typing import Sequence

import seqio
import tensorflow as tf

# Length of the label sequence per example, whatever TASK_FEATURE_LENGTHS["targets"] is.
SEQUENCE_LABELS = 1
SPAN_LABELS = 2


class _HeadVocabulary(seqio.Vocabulary):
  """Ids with no end-of-sequence or unknown id: seqio's padding 0 is "no label"."""

  @property
  def eos_id(self) -> int | None:
    return None

  @property
  def unk_id(self) -> int | None:
    return None


class LabelVocabulary(_HeadVocabulary):
  """Label names <-> ids (module docstring). `per_token`: one label per input position
  (tagging), so the feature converter gives the labels the inputs' length.

  `mixture`: the multi-task head mixture (data/task_mixtures.py) whose member this
  task's variant is. There an id means "label k of the row's own task" (each task has
  its own head), so the members' vocabularies compare equal, which seqio requires of a
  mixture, while each decodes with its own label names."""

  def __init__(self, labels: Sequence[str], per_token: bool = False, mixture: str | None = None):
    labels = tuple(str(label) for label in labels)
    if not labels or len(set(labels)) != len(labels):
      raise ValueError(f"labels must be distinct and at least one, got {labels}")
    if any(not label or label.split() != [label] for label in labels):
      raise ValueError(f"labels must be single words without spaces, got {labels}")
    self.labels = labels
    self.per_token = per_token
    self.mixture = mixture
    super().__init__(extra_ids=0)

  def in_mixture(self, mixture: str) -> "LabelVocabulary":
    """This vocabulary as a member of the multi-task head mixture `mixture`."""
    return LabelVocabulary(self.labels, self.per_token, mixture)

  @property
  def num_labels(self) -> int:
    return len(self.labels)

  def label_length(self, inputs_length: int) -> int:
    return inputs_length if self.per_token else SEQUENCE_LABELS

  @property
  def _base_vocab_size(self) -> int:
    return len(self.labels) + 1

  def _encode(self, s: str) -> list[int]:
    index = {label: i + 1 for i, label in enumerate(self.labels)}
    return [index.get(word, 0) for word in s.split()]

  def _decode(self, ids: Sequence[int]) -> str:
    return " ".join(self.labels[i - 1] for i in ids if 0 < i <= len(self.labels))

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
    """Names -> ids in the graph; an unknown name (e.g. T5's "<unk>" for a hidden
    label) becomes 0, no label."""
    words = tf.strings.split(s)
    names = tf.constant(self.labels)
    matches = tf.equal(tf.expand_dims(words, -1), names)
    ids = tf.cast(tf.argmax(tf.cast(matches, tf.int32), axis=-1), tf.int32) + 1
    return tf.where(tf.reduce_any(matches, axis=-1), ids, tf.zeros_like(ids))

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    names = tf.constant(("",) + self.labels)
    kept = tf.boolean_mask(ids, ids > 0)
    return tf.strings.reduce_join(tf.gather(names, kept), separator=" ", axis=-1)

  def __eq__(self, other: object) -> bool:
    if not isinstance(other, LabelVocabulary) or other.per_token != self.per_token:
      return False
    if self.mixture is not None or other.mixture is not None:
      return other.mixture == self.mixture
    return other.labels == self.labels

  def __hash__(self) -> int:
    if self.mixture is not None:
      return hash((self.mixture, self.per_token))
    return hash((self.labels, self.per_token))


class PositionVocabulary(_HeadVocabulary):
  """Input positions <-> ids (module docstring): a span's "start end" text."""

  def __init__(self, max_positions: int):
    if max_positions < 1:
      raise ValueError(f"max_positions must be positive, got {max_positions}")
    self.max_positions = int(max_positions)
    super().__init__(extra_ids=0)

  def label_length(self, inputs_length: int) -> int:
    del inputs_length
    return SPAN_LABELS

  @property
  def _base_vocab_size(self) -> int:
    return self.max_positions + 1

  def _encode(self, s: str) -> list[int]:
    return [int(word) + 1 for word in s.split()]

  def _decode(self, ids: Sequence[int]) -> str:
    return " ".join(str(i - 1) for i in ids if i > 0)

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
    return tf.strings.to_number(tf.strings.split(s), tf.int32) + 1

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    kept = tf.boolean_mask(ids, ids > 0) - 1
    return tf.strings.reduce_join(tf.strings.as_string(kept), separator=" ", axis=-1)

  def __eq__(self, other: object) -> bool:
    return isinstance(other, PositionVocabulary) and other.max_positions == self.max_positions

  def __hash__(self) -> int:
    return hash(("positions", self.max_positions))


HEAD_VOCABULARIES = (LabelVocabulary, PositionVocabulary)


def is_head_task(task: seqio.Task) -> bool:
  """Whether the task's targets are head labels (this module) rather than text."""
  targets = task.output_features.get("targets")
  return targets is not None and isinstance(targets.vocabulary, HEAD_VOCABULARIES)


def head_output_features(
  inputs_vocabulary: seqio.Vocabulary, targets_vocabulary: seqio.Vocabulary
) -> dict[str, seqio.Feature]:
  """A head task's output features: text inputs ending in EOS, label targets without."""
  return {
    "inputs": seqio.Feature(vocabulary=inputs_vocabulary, add_eos=True),
    "targets": seqio.Feature(vocabulary=targets_vocabulary, add_eos=False),
  }
