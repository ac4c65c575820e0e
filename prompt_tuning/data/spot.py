"""SPoT's source tasks (Vu et al. 2022): what a source prompt is trained on before it
initialises a target task's prompt (docs/transfer.md, "SPoT").

The names are the upstream's (`prompt_tuning/spot/data/`), so a user's gin files and
commands carry over:

  spot_glue_{name}_v200      every GLUE task but AX and MNLI (TFDS `glue/{name}:2.0.0`), in
                             T5's GLUE format (the same preprocessing as glue.py's tasks).
  spot_glue_mnli_train_v200  MNLI's training split alone, and
  spot_glue_mnli_validation_{matched,mismatched}_v200 its two dev sets;
  spot_glue_mnli_and_dev_v200  the upstream's mixture of those three (all at rate 1: the
                             dev tasks have no train split, so they are only evaluated).
  spot_{anli_r1,anli_r2,anli_r3}_v010, spot_doc_nli_v100, spot_snli_v110
                             the NLI sets: `{name} hypothesis: H {premise key}: P` ->
                             the label's name, scored by accuracy on the label strings.
  spot_mrqa_{name}_v100      the six in-domain MRQA sets in T5's SQuAD format (mrqa.py's
                             preprocessing); the out-of-domain six stay held out, as upstream.

Mixtures added here (not the upstream's; it trains on one task at a time or leaves the
mixing to the user): `spot_glue_v200`, `spot_nli_v100`, `spot_mrqa_v100` (and the
summarisation mixture below), each its family's
training tasks at equal rates (seqio's uniform sampling over members), the "GLUE", "NLI"
and "MRQA" sources of the SPoT paper's Table 1. A mixture with other rates is one
`seqio.MixtureRegistry.add` away.

As upstream, an NLI example without a gold label (SNLI's label -1) keeps its text and gets
the target `<unk>`, and the NLI tasks have no postprocessor: accuracy compares label
strings, so a prediction outside the label names is simply wrong.

  spot_{aeslc_v100,billsum_v300,gigaword_v120,cnn_dailymail_v340,multi_news_v210,
        samsum_v100,newsroom_v100}
                             the summarisation sources: `{dataset} summarize: {text}` ->
                             the summary, scored by ROUGE-1/2/Lsum as the T5 library
                             does (metrics.rouge). The upstream's cnn_dailymail_v320 and
                             multi_news_v100 read TFDS versions that TFDS 4.9 no longer
                             builds, so these two read (and are named after) 3.4.0 and
                             2.1.0. SAMSum and Newsroom need TFDS's manual download.

The summarisation mixture `spot_summarization_v100` (ours, equal rates) is the SPoT
paper's "SUMM" source.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Mapping

import seqio
import tensorflow as tf

from prompt_tuning.data import glue, metrics, mrqa, sources
from prompt_tuning.data import vocab as vocab_lib

_NLI3 = ("entailment", "neutral", "contradiction")
UNKNOWN_LABEL = "<unk>"


@dataclasses.dataclass(frozen=True)
class NliSet:
  """One TFDS NLI set: its SPoT name, TFDS name, the key of its second text, labels."""

  name: str
  tfds_name: str
  premise_key: str
  label_names: tuple[str, ...]

  @property
  def task_name(self) -> str:
    return f"spot_{self.name}_{version_suffix(self.tfds_name)}"


def version_suffix(tfds_name: str) -> str:
  """The upstream's version tag: `anli/r1:0.1.0` -> `v010`."""
  return "v" + tfds_name.split(":")[-1].replace(".", "")


NLI_SETS: tuple[NliSet, ...] = (
  NliSet("anli_r1", "anli/r1:0.1.0", "context", _NLI3),
  NliSet("anli_r2", "anli/r2:0.1.0", "context", _NLI3),
  NliSet("anli_r3", "anli/r3:0.1.0", "context", _NLI3),
  NliSet("doc_nli", "doc_nli:1.0.0", "premise", ("not_entailment", "entailment")),
  NliSet("snli", "snli:1.1.0", "premise", _NLI3),
)
NLI_SPLITS = ("train", "validation", "test")

GLUE_TFDS_VERSION = "2.0.0"
GLUE_SUFFIX = version_suffix(f"glue:{GLUE_TFDS_VERSION}")
# GLUE tasks registered one for one (MNLI is split into train and dev tasks, AX has no
# labels). The order is TFDS's.
GLUE_TASKS = ("cola", "sst2", "mrpc", "qqp", "stsb", "qnli", "rte", "wnli")
MNLI_TRAIN = f"spot_glue_mnli_train_{GLUE_SUFFIX}"
MNLI_DEV = {
  "validation_matched": f"spot_glue_mnli_validation_matched_{GLUE_SUFFIX}",
  "validation_mismatched": f"spot_glue_mnli_validation_mismatched_{GLUE_SUFFIX}",
}
MNLI_MIXTURE = f"spot_glue_mnli_and_dev_{GLUE_SUFFIX}"
MRQA_SUFFIX = version_suffix(f"mrqa:{mrqa.MRQA_TFDS_VERSION}")

GLUE_MIXTURE = f"spot_glue_{GLUE_SUFFIX}"
NLI_MIXTURE = "spot_nli_v100"
MRQA_MIXTURE = f"spot_mrqa_{MRQA_SUFFIX}"

_plain_tf = tf.autograph.experimental.do_not_convert


def glue_task_name(name: str) -> str:
  return f"spot_glue_{name}_{GLUE_SUFFIX}"


def mrqa_task_name(subset: str) -> str:
  return f"spot_mrqa_{subset}_{MRQA_SUFFIX}"


def nli_text(dataset: tf.data.Dataset, nli: NliSet) -> tf.data.Dataset:
  """`{name} hypothesis: H {premise_key}: P` -> label name (`<unk>` without a label),
  whitespace runs collapsed as T5's string join does."""
  labels = tf.constant(nli.label_names)

  def convert(x: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    parts = [nli.name, "hypothesis:", x["hypothesis"], f"{nli.premise_key}:", x[nli.premise_key]]
    inputs = tf.strings.regex_replace(tf.strings.join(parts, separator=" "), r"\s+", " ")
    label = tf.cast(x["label"], tf.int64)
    known = tf.gather(labels, tf.maximum(label, 0))
    return {"inputs": inputs, "targets": tf.where(label < 0, UNKNOWN_LABEL, known)}

  return dataset.map(_plain_tf(convert), num_parallel_calls=tf.data.AUTOTUNE)


def _add_task(name, source, text_steps, features, postprocess_fn, metric_fns) -> None:
  seqio.TaskRegistry.remove(name)
  seqio.TaskRegistry.add(
    name,
    source=source,
    preprocessors=[
      *text_steps,
      seqio.preprocessors.tokenize,
      seqio.CacheDatasetPlaceholder(),
      seqio.preprocessors.append_eos_after_trim,
    ],
    output_features=features,
    postprocess_fn=postprocess_fn,
    metric_fns=list(metric_fns),
  )


def _add_mixture(name: str, tasks_and_rates: list[tuple[str, float]]) -> None:
  seqio.MixtureRegistry.remove(name)
  seqio.MixtureRegistry.add(name, tasks_and_rates)


def _register_glue(features: Mapping[str, seqio.Feature]) -> list[str]:
  names = []
  for name in GLUE_TASKS:
    config = glue.CONFIGS[name]
    source = sources.TfdsSource(f"glue/{name}:{GLUE_TFDS_VERSION}", splits=config.splits)
    _add_task(
      glue_task_name(name),
      source,
      glue.text_preprocessors(config),
      features,
      glue.postprocessor(config),
      config.metric_fns,
    )
    names.append(glue_task_name(name))
  mnli = glue.CONFIGS["mnli"]
  mnli_splits = {MNLI_TRAIN: {"train": "train"}}
  mnli_splits.update({task: {"validation": split} for split, task in MNLI_DEV.items()})
  for task, splits in mnli_splits.items():
    source = sources.TfdsSource(f"glue/mnli:{GLUE_TFDS_VERSION}", splits=splits)
    _add_task(
      task,
      source,
      glue.text_preprocessors(mnli),
      features,
      glue.postprocessor(mnli),
      mnli.metric_fns,
    )
    names.append(task)
  _add_mixture(MNLI_MIXTURE, [(MNLI_TRAIN, 1.0)] + [(task, 1.0) for task in MNLI_DEV.values()])
  _add_mixture(GLUE_MIXTURE, [(glue_task_name(n), 1.0) for n in GLUE_TASKS] + [(MNLI_TRAIN, 1.0)])
  return names + [MNLI_MIXTURE, GLUE_MIXTURE]


def _register_nli(features: Mapping[str, seqio.Feature]) -> list[str]:
  names = []
  for nli in NLI_SETS:
    _add_task(
      nli.task_name,
      sources.TfdsSource(nli.tfds_name, splits=NLI_SPLITS),
      [functools.partial(nli_text, nli=nli)],
      features,
      None,
      [metrics.accuracy],
    )
    names.append(nli.task_name)
  _add_mixture(NLI_MIXTURE, [(nli.task_name, 1.0) for nli in NLI_SETS])
  return names + [NLI_MIXTURE]


def _register_mrqa(features: Mapping[str, seqio.Feature]) -> list[str]:
  names = []
  for subset in mrqa.IN_DOMAIN:
    source = sources.TfdsSource(
      f"mrqa/{subset}:{mrqa.MRQA_TFDS_VERSION}", splits=("train", "validation")
    )
    _add_task(
      mrqa_task_name(subset),
      source,
      [mrqa.mrqa_preprocessor],
      features,
      mrqa.qa_postprocessor,
      [metrics.squad],
    )
    names.append(mrqa_task_name(subset))
  _add_mixture(MRQA_MIXTURE, [(mrqa_task_name(s), 1.0) for s in mrqa.IN_DOMAIN])
  return names + [MRQA_MIXTURE]


@dataclasses.dataclass(frozen=True)
class SummarizationSet:
  """One summarisation source: its TFDS name, splits and text fields."""

  name: str
  tfds_name: str
  source_key: str
  target_key: str
  splits: tuple[str, ...] = ("train", "validation", "test")

  @property
  def task_name(self) -> str:
    return f"spot_{self.name}_{version_suffix(self.tfds_name)}"


SUMMARIZATION_SETS: tuple[SummarizationSet, ...] = (
  SummarizationSet("aeslc", "aeslc:1.0.0", "email_body", "subject_line"),
  SummarizationSet("billsum", "billsum:3.0.0", "text", "summary", ("train", "test", "ca_test")),
  SummarizationSet("gigaword", "gigaword:1.2.0", "document", "summary"),
  # The upstream reads cnn_dailymail 3.2.0 and multi_news 1.0.0, which TFDS 4.9 no longer
  # builds; the names follow the versions read here.
  SummarizationSet("cnn_dailymail", "cnn_dailymail:3.4.0", "article", "highlights"),
  SummarizationSet("multi_news", "multi_news:2.1.0", "document", "summary"),
  SummarizationSet("samsum", "samsum:1.0.0", "dialogue", "summary"),
  SummarizationSet("newsroom", "newsroom:1.0.0", "text", "summary"),
)
SUMMARIZATION_MIXTURE = "spot_summarization_v100"


def summarization_text(dataset: tf.data.Dataset, summary: SummarizationSet) -> tf.data.Dataset:
  """`{name} summarize: {text}` -> the summary (joined with single spaces, the text as
  it is: the upstream's `preprocess_text_generation`)."""

  def convert(x: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    inputs = tf.strings.join([summary.name, "summarize:", x[summary.source_key]], separator=" ")
    return {"inputs": inputs, "targets": x[summary.target_key]}

  return dataset.map(_plain_tf(convert), num_parallel_calls=tf.data.AUTOTUNE)


def _register_summarization(features: Mapping[str, seqio.Feature]) -> list[str]:
  names = []
  for summary in SUMMARIZATION_SETS:
    _add_task(
      summary.task_name,
      sources.TfdsSource(summary.tfds_name, splits=summary.splits),
      [functools.partial(summarization_text, summary=summary)],
      features,
      None,
      [metrics.rouge],
    )
    names.append(summary.task_name)
  _add_mixture(SUMMARIZATION_MIXTURE, [(s.task_name, 1.0) for s in SUMMARIZATION_SETS])
  return names + [SUMMARIZATION_MIXTURE]


def register(vocabulary: seqio.Vocabulary | None = None) -> list[str]:
  """(Re)registers SPoT's source tasks and mixtures with `vocabulary`."""
  vocabulary = vocabulary if vocabulary is not None else vocab_lib.get_vocabulary()
  features = glue.output_features(vocabulary)
  return (
    _register_glue(features)
    + _register_nli(features)
    + _register_mrqa(features)
    + _register_summarization(features)
  )


register()
