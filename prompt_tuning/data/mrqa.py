"""Extractive QA under domain shift: train on SQuAD, evaluate on MRQA's out-of-domain sets.

This is the paper's Table 1 experiment. Every QA example is posed in T5's SQuAD format,
`question: Q context: C` -> first answer, with ASCII punctuation padded with spaces in the
question, the context and the answers exactly as T5 does (see `pad_punctuation`), and
scored with SQuAD EM/F1 against *all* (padded) reference answers, which is why the
postprocessor replaces a target by the example's answer list.

Registered names:
  squad_v010_allanswers     TFDS `squad/v1.1`, splits train / validation.
  mrqa_{name}_v100          TFDS `mrqa/{name}` for all twelve MRQA subsets. The six
                            in-domain ones keep train / validation; the six out-of-domain
                            ones only have TFDS `test`, which is read as seqio `validation`
                            (as the upstream did), so they have no train split at all.
  squad_to_{name}           mixture: SQuAD + one out-of-domain set.
  squad_to_mrqa             mixture: SQuAD + all six out-of-domain sets.

In the mixtures the out-of-domain tasks have rate 0 (T5's convention for evaluation-only
members) *and* no train split, so they can never contribute a training example while the
evaluator still scores them on `validation`.
"""

from __future__ import annotations

from typing import Any, Mapping

import seqio
import tensorflow as tf

from prompt_tuning.data import metrics
from prompt_tuning.data import sources
from prompt_tuning.data import vocab as vocab_lib

SQUAD_TASK = "squad_v010_allanswers"
SQUAD_TFDS_NAME = "squad/v1.1:3.0.0"
MRQA_TFDS_VERSION = "1.0.0"

# The map functions here have no Python control flow on tensors; skipping autograph makes
# building each pipeline faster.
_plain_tf = tf.autograph.experimental.do_not_convert

# MRQA subsets in TFDS 4.9.10 (`tfds.builder("mrqa/...")` configs).
IN_DOMAIN = ("squad", "news_qa", "trivia_qa", "search_qa", "hotpot_qa", "natural_questions")
# In the order of the paper's Table 1; these are exactly TFDS's test-only subsets.
OUT_OF_DOMAIN = ("textbook_qa", "bio_asq", "race", "relation_extraction", "duo_rc", "drop")

ALL_OOD_MIXTURE = "squad_to_mrqa"


def mrqa_task_name(subset: str) -> str:
  return f"mrqa_{subset}_v100"


def mixture_name(subset: str) -> str:
  return f"squad_to_{subset}"


def pad_punctuation(text: tf.Tensor) -> tf.Tensor:
  """T5's SQuAD padding: a space either side of each ASCII punctuation mark, runs of
  whitespace collapsed to one space.

  The marks are RE2's `[[:punct:]]`, i.e. exactly Python's `string.punctuation`
  (`_` included); other characters (the en dash, curly quotes, `€`, `°`, a non-breaking
  space...) stay where they are, so `1990–91` stays one word, as under T5. Nothing is
  stripped: like T5, a text ending in a mark ends in a space ("1813 . "). T5 pads the
  question, the context and every reference answer (the scored answers included), and
  so does `_qa_example`; SQuAD scoring drops exactly these marks and extra spaces again,
  so the padding never costs a prediction that matches an answer's words.
  """
  text = tf.strings.regex_replace(text, r"([[:punct:]])", r" \1 ")
  return tf.strings.regex_replace(text, r"\s+", " ")


def _join_words(parts: list[tf.Tensor | str]) -> tf.Tensor:
  """T5's `_string_join`: join with spaces, then collapse runs of whitespace."""
  return tf.strings.regex_replace(tf.strings.join(parts, separator=" "), r"\s+", " ")


def _qa_example(
  question: tf.Tensor, context: tf.Tensor, answers: tf.Tensor, example_id: tf.Tensor
) -> dict[str, tf.Tensor]:
  question = pad_punctuation(question)
  context = pad_punctuation(context)
  answers = pad_punctuation(answers)
  return {
    "inputs": _join_words(["question:", question, "context:", context]),
    "targets": answers[0],
    "id": example_id,
    "question": question,
    "context": context,
    "answers": answers,
  }


def squad_preprocessor(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """TFDS `squad` (answers under `answers/text`) -> the QA format.

  An example without any answer has no target, so it is dropped.
  """
  dataset = dataset.filter(_plain_tf(lambda x: tf.size(x["answers"]["text"]) > 0))
  return dataset.map(
    _plain_tf(lambda x: _qa_example(x["question"], x["context"], x["answers"]["text"], x["id"])),
    num_parallel_calls=tf.data.AUTOTUNE,
  )


def mrqa_preprocessor(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """TFDS `mrqa/*` (answers as a list of strings, id under `qid`) -> the QA format."""
  dataset = dataset.filter(_plain_tf(lambda x: tf.size(x["answers"]) > 0))
  return dataset.map(
    _plain_tf(lambda x: _qa_example(x["question"], x["context"], x["answers"], x["qid"])),
    num_parallel_calls=tf.data.AUTOTUNE,
  )


def _as_text(value: Any) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def qa_postprocessor(
  output: str, example: Mapping[str, Any] | None = None, is_target: bool = False
) -> Any:
  """Targets become every reference answer of the example; predictions stay text.

  Without the example (a caller that has only the target text) the target text is the
  only answer known, so it is returned as a one-answer list.
  """
  if not is_target:
    return _as_text(output)
  if example is None or "answers" not in example:
    return [_as_text(output)]
  return [_as_text(a) for a in example["answers"]]


def output_features(vocabulary: seqio.Vocabulary) -> dict[str, seqio.Feature]:
  return {
    "inputs": seqio.Feature(vocabulary=vocabulary, add_eos=True, required=False),
    "targets": seqio.Feature(vocabulary=vocabulary, add_eos=True),
  }


def _add_task(
  name: str, source: seqio.DataSource, preprocessor, features: Mapping[str, seqio.Feature]
) -> None:
  seqio.TaskRegistry.remove(name)
  seqio.TaskRegistry.add(
    name,
    source=source,
    preprocessors=[
      preprocessor,
      seqio.preprocessors.tokenize,
      seqio.CacheDatasetPlaceholder(),
      seqio.preprocessors.append_eos_after_trim,
    ],
    output_features=features,
    postprocess_fn=qa_postprocessor,
    metric_fns=[metrics.squad],
  )


def _add_eval_mixture(name: str, eval_tasks: list[str]) -> None:
  seqio.MixtureRegistry.remove(name)
  seqio.MixtureRegistry.add(name, [(SQUAD_TASK, 1.0)] + [(t, 0.0) for t in eval_tasks])


def register(vocabulary: seqio.Vocabulary | None = None) -> list[str]:
  """(Re)registers the QA tasks and domain-shift mixtures with `vocabulary`."""
  vocabulary = vocabulary if vocabulary is not None else vocab_lib.get_vocabulary()
  features = output_features(vocabulary)
  names = []

  _add_task(
    SQUAD_TASK,
    sources.TfdsSource(SQUAD_TFDS_NAME, splits=("train", "validation")),
    squad_preprocessor,
    features,
  )
  names.append(SQUAD_TASK)

  for subset in IN_DOMAIN:
    source = sources.TfdsSource(
      f"mrqa/{subset}:{MRQA_TFDS_VERSION}", splits=("train", "validation")
    )
    _add_task(mrqa_task_name(subset), source, mrqa_preprocessor, features)
    names.append(mrqa_task_name(subset))

  for subset in OUT_OF_DOMAIN:
    source = sources.TfdsSource(f"mrqa/{subset}:{MRQA_TFDS_VERSION}", splits={"validation": "test"})
    _add_task(mrqa_task_name(subset), source, mrqa_preprocessor, features)
    names.append(mrqa_task_name(subset))

  for subset in OUT_OF_DOMAIN:
    _add_eval_mixture(mixture_name(subset), [mrqa_task_name(subset)])
    names.append(mixture_name(subset))
  _add_eval_mixture(ALL_OOD_MIXTURE, [mrqa_task_name(s) for s in OUT_OF_DOMAIN])
  names.append(ALL_OOD_MIXTURE)
  return names


register()
