"""Extractive QA tasks for the span head: the answer as (start, end) input positions,
read back as text through SentencePiece's byte offsets (docs/heads.md).

Tasks:

  squad_v110_span   TFDS `squad/v1.1:3.0.0`; metric SQuAD 1.1 EM / F1
  squad_v200_span   TFDS `squad/v2.0:3.0.0`; metric SQuAD 2.0 EM / F1 with HasAns /
                    NoAns (unanswerable questions point at the null span)
  mrqa_{name}_span  TFDS `mrqa/{name}` for the twelve subsets of data/mrqa.py (the
                    out-of-domain ones validation only, read from TFDS's test split);
                    labelled with the first detected answer, scored (SQuAD 1.1 EM / F1)
                    against every answer MRQA lists

Input: "question: {question} context:" and then the context's word pieces, cut by
SentencePiece as one string (`tokenize_with_offsets`), so each piece knows its byte
span of the original context; then EOS. Contexts that do not fit are cut at the end;
an answer that is cut off (or that no piece covers) is labelled with the null span, as
BERT's SQuAD code labels a window without the answer. Position 0 (the first piece of
"question:") is the null span. Unlike T5's text-to-text SQuAD, the context is not
padded around punctuation: offsets must point into the original text.

A prediction "start end" maps back to the bytes from the start piece's first byte to
the end piece's last, spaces stripped; the null span and spans outside the context
give "" (no answer). References are the dataset's answer texts, unchanged.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import seqio
import tensorflow as tf

from prompt_tuning.data import labels as labels_lib
from prompt_tuning.data import metrics
from prompt_tuning.data import mrqa
from prompt_tuning.data import sources
from prompt_tuning.data import vocab as vocab_lib

EOS_ID = 1
SQUAD_VERSION = "3.0.0"
SQUAD_SPLITS = ("train", "validation")
# Enough positions for any input length this project runs (the vocabulary's size).
MAX_POSITIONS = 8192


def _context_pieces(
  context: tf.Tensor, vocabulary: seqio.Vocabulary
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """(piece ids, start byte, limit byte) of the context, as SentencePiece cuts it."""
  ids, starts, limits = vocabulary.tf_tokenizer.tokenize_with_offsets(context)
  return tf.cast(ids, tf.int32), tf.cast(starts, tf.int32), tf.cast(limits, tf.int32)


def answer_positions(
  starts: tf.Tensor, limits: tf.Tensor, byte_start: tf.Tensor, byte_end: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
  """(first, last) piece index of the answer bytes [byte_start, byte_end), or (-1, -1)
  when no piece covers them: the first piece ending after the answer's start and the
  last piece starting before its end."""
  index = tf.range(tf.shape(starts)[0], dtype=tf.int32)
  first = tf.reduce_min(tf.where(limits > byte_start, index, tf.int32.max))
  last = tf.reduce_max(tf.where(starts < byte_end, index, -1))
  found = (first <= last) & (last >= 0) & (first < tf.int32.max)
  return tf.where(found, first, -1), tf.where(found, last, -1)


def span_features(
  dataset: tf.data.Dataset,
  sequence_length: Mapping[str, int] | None,
  output_features: Mapping[str, seqio.Feature],
) -> tf.data.Dataset:
  """{question, context, answers} -> inputs, targets [start + 1, end + 1] (the null
  span: [1, 1]), and what the postprocessor needs: the context, its pieces' byte
  offsets, where they start in the input, and the reference answer texts."""
  vocabulary = output_features["inputs"].vocabulary
  max_length = None if not sequence_length else sequence_length.get("inputs")

  def convert(example: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    prefix = tf.strings.join(["question: ", example["question"], " context:"])
    question = tf.cast(vocabulary.encode_tf(prefix), tf.int32)
    context = example["context"]
    ids, starts, limits = _context_pieces(context, vocabulary)
    offset = tf.shape(question)[0]
    if max_length:
      room = tf.maximum(max_length - 1 - offset, 0)
      ids, starts, limits = ids[:room], starts[:room], limits[:room]
    answers = example["answers"]["text"]
    answer_starts = tf.cast(example["answers"]["answer_start"], tf.int32)
    has_answer = tf.size(answers) > 0
    if "is_impossible" in example:
      has_answer = has_answer & tf.logical_not(example["is_impossible"])

    def first_answer_span() -> tuple[tf.Tensor, tf.Tensor]:
      # Characters before the answer, in bytes: where its bytes start.
      prefix = tf.strings.substr(context, 0, answer_starts[0], unit="UTF8_CHAR")
      byte_start = tf.strings.length(prefix)
      byte_end = byte_start + tf.strings.length(answers[0])
      return answer_positions(starts, limits, byte_start, byte_end)

    first, last = tf.cond(has_answer, first_answer_span, lambda: (tf.constant(-1), tf.constant(-1)))
    # Pieces -> input positions; not found (or no answer): the null span, position 0.
    span = tf.where(first >= 0, tf.stack([first, last]) + offset, 0)
    return {
      "inputs": tf.concat([question, ids, [EOS_ID]], 0),
      "targets": span + 1,
      "inputs_pretokenized": tf.strings.join(
        ["question: ", example["question"], " context: ", context]
      ),
      "context": context,
      "context_offset": offset,
      "piece_starts": starts,
      "piece_limits": limits,
      "answers": answers,
      "has_answer": has_answer,
      "id": example.get("id", tf.constant("")),
    }

  return dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE)


def _text(value: Any) -> str:
  return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def span_text(
  output: Any, example: Mapping[str, Any] | None = None, is_target: bool = False
) -> Any:
  """Predictions: "start end" -> the context's text there ("" for no answer). Targets:
  the example's reference answers (a list; empty for an unanswerable question)."""
  if is_target:
    if example is None:
      raise ValueError("span targets are read from the example; seqio passes it")
    if not bool(example["has_answer"]):
      return []
    return [_text(answer) for answer in np.asarray(example["answers"]).tolist()]
  if example is None:
    raise ValueError("a span prediction is mapped back through its example's offsets")
  positions = [int(word) for word in _text(output).split()]
  if len(positions) != 2:
    return ""
  start, end = (p - int(example["context_offset"]) for p in positions)
  starts, limits = np.asarray(example["piece_starts"]), np.asarray(example["piece_limits"])
  if not 0 <= start <= end < len(starts):
    return ""
  context = example["context"]
  context = context if isinstance(context, bytes) else str(context).encode("utf-8")
  return context[int(starts[start]) : int(limits[end])].decode("utf-8", "replace").strip()


def span_task(
  name: str,
  source: seqio.DataSource,
  vocabulary: seqio.Vocabulary,
  metric_fns: Sequence[Any] = (metrics.squad,),
  prepare: Sequence[Any] = (),
) -> str:
  """Registers a span task over a source with `question`, `context` and `answers`
  ({text, answer_start}) features (after the `prepare` steps); returns its name."""
  seqio.TaskRegistry.remove(name)
  seqio.TaskRegistry.add(
    name,
    source=source,
    # Cut to the run's input length, hence after the cache point.
    preprocessors=[*prepare, seqio.CacheDatasetPlaceholder(), span_features],
    postprocess_fn=span_text,
    metric_fns=list(metric_fns),
    output_features=labels_lib.head_output_features(
      vocabulary, labels_lib.PositionVocabulary(MAX_POSITIONS)
    ),
  )
  return name


def mrqa_as_squad(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """TFDS `mrqa/*` -> SQuAD's fields: the label is the first detected answer (its text
  and character start in the context), the references are that text and every answer
  MRQA lists. Questions without a detected answer are dropped, as MRQA's own
  evaluation has none."""

  def has_detected(x: Mapping[str, tf.Tensor]) -> tf.Tensor:
    return tf.size(x["detected_answers"]["text"]) > 0

  def convert(x: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    detected = x["detected_answers"]
    starts = detected["char_spans"]["start"]
    first_start = starts[0][0] if isinstance(starts, tf.RaggedTensor) else starts[0, 0]
    return {
      "question": x["question"],
      "context": x["context"],
      "answers": {
        "text": tf.concat([detected["text"][:1], x["answers"]], 0),
        "answer_start": tf.reshape(tf.cast(first_start, tf.int32), [1]),
      },
      "id": x["qid"],
    }

  return dataset.filter(has_detected).map(convert, num_parallel_calls=tf.data.AUTOTUNE)


def mrqa_span_task_name(subset: str) -> str:
  return f"mrqa_{subset}_span"


def register(vocabulary: seqio.Vocabulary | None = None) -> list[str]:
  """(Re)registers the SQuAD and MRQA span tasks with `vocabulary`; returns their names."""
  vocabulary = vocabulary or vocab_lib.get_vocabulary()

  def squad(version: str) -> seqio.DataSource:
    return sources.TfdsSource(
      tfds_name=f"squad/{version}:{SQUAD_VERSION}", splits=list(SQUAD_SPLITS)
    )

  names = [
    span_task("squad_v110_span", squad("v1.1"), vocabulary, (metrics.squad,)),
    span_task("squad_v200_span", squad("v2.0"), vocabulary, (metrics.squad_v2,)),
  ]
  # As data/mrqa.py: the in-domain sets keep train / validation, the out-of-domain ones
  # have TFDS's test split only, read as validation.
  for subset in (*mrqa.IN_DOMAIN, *mrqa.OUT_OF_DOMAIN):
    splits: Any = ("train", "validation")
    if subset in mrqa.OUT_OF_DOMAIN:
      splits = {"validation": "test"}
    source = sources.TfdsSource(f"mrqa/{subset}:{mrqa.MRQA_TFDS_VERSION}", splits=splits)
    names.append(
      span_task(mrqa_span_task_name(subset), source, vocabulary, prepare=(mrqa_as_squad,))
    )
  return names


register()
