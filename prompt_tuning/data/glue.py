"""GLUE in T5's text-to-text format, and zero-shot paraphrase transfer between QQP and MRPC.

T5's format: `{benchmark} {key}: {text} {key}: {text}` with the text features in sorted
key order (so MNLI reads `mnli hypothesis: ... premise: ...`), the label's name as the
target (`<unk>` for the unlabelled test sets), MNLI's diagnostic AX posed as MNLI, and
STS-B's score rounded to steps of 0.2 and written with one decimal (`3.8`). The metrics
are T5's per-task GLUE metrics.

Registered names (each also as `taskless_...`, without the leading benchmark word, the
paper's prompt-tuning format):
  glue_{name}_v002                   every TFDS `glue` config.
  glue_mnli_and_dev_v002             MNLI trained, matched + mismatched evaluated.
  glue_{target}_from_{source}_v002   (mrpc from qqp), (qqp from mrpc): the target's
                                     validation set posed *as the source task*.
  glue_{target}_from_{source}_zeroshot_v002
                                     mixture: train on the source, evaluate on target.

Paraphrase transfer. QQP says duplicate / not_duplicate about question pairs, MRPC says
equivalent / not_equivalent about sentence pairs. A prompt trained on the source knows
only the source's input format and label words, so a transfer task rewrites each target
example into the source's input format and writes its label as the source's word
(`LABEL_TRANSLATIONS`). Its postprocessor translates a generated source word back into
the target's label and class id, and the target's own metrics score it. Keeping the
targets in the source's words also keeps teacher-forced evaluation losses and rank
classification meaningful for the source prompt.

Unlike the upstream, each transfer task builds its own postprocessor (the upstream's
plain variant reused the one left over from a previous loop iteration), and the taskless
mixtures list the taskless tasks.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, Sequence

import seqio
import tensorflow as tf

from prompt_tuning.data import metrics
from prompt_tuning.data import postprocessors
from prompt_tuning.data import preprocessors
from prompt_tuning.data import sources
from prompt_tuning.data import vocab as vocab_lib

TFDS_VERSION = "2.0.0"
VERSION_SUFFIX = "v002"
TASKLESS_PREFIX = "taskless_"
UNLABELED_TARGET = preprocessors.UNKNOWN_LABEL


@dataclasses.dataclass(frozen=True)
class GlueConfig:
  """What T5's format needs to know about one TFDS `glue` config.

  `label_classes` is None for STS-B (a regression); `benchmark` is the word the inputs
  start with (MNLI's evaluation sets and AX are posed as MNLI).
  """

  name: str
  text_keys: tuple[str, ...]
  label_classes: tuple[str, ...] | None
  splits: tuple[str, ...]
  metric_fns: tuple[Callable[..., dict[str, float]], ...]
  benchmark: str = ""

  def __post_init__(self):
    object.__setattr__(self, "text_keys", tuple(sorted(self.text_keys)))
    object.__setattr__(self, "benchmark", self.benchmark or self.name)


_STANDARD_SPLITS = ("train", "validation", "test")
_NLI_LABELS = ("entailment", "neutral", "contradiction")
_NLI_KEYS = ("premise", "hypothesis")
_BINARY_F1 = (metrics.f1_with_invalid, metrics.accuracy)

# Label names and split names as in TFDS 4.9.10's `glue` builder (its label order is the
# class id order); metrics as T5's GLUE_METRICS.
CONFIGS: dict[str, GlueConfig] = {
  c.name: c
  for c in [
    GlueConfig(
      "cola",
      ("sentence",),
      ("unacceptable", "acceptable"),
      _STANDARD_SPLITS,
      (metrics.matthews_corrcoef,),
    ),
    GlueConfig(
      "sst2", ("sentence",), ("negative", "positive"), _STANDARD_SPLITS, (metrics.accuracy,)
    ),
    GlueConfig(
      "mrpc",
      ("sentence1", "sentence2"),
      ("not_equivalent", "equivalent"),
      _STANDARD_SPLITS,
      _BINARY_F1,
    ),
    GlueConfig(
      "qqp",
      ("question1", "question2"),
      ("not_duplicate", "duplicate"),
      _STANDARD_SPLITS,
      _BINARY_F1,
    ),
    GlueConfig(
      "stsb",
      ("sentence1", "sentence2"),
      None,
      _STANDARD_SPLITS,
      (metrics.pearson_corrcoef, metrics.spearman_corrcoef),
    ),
    GlueConfig(
      "mnli",
      _NLI_KEYS,
      _NLI_LABELS,
      ("train", "validation_matched", "validation_mismatched", "test_matched", "test_mismatched"),
      (metrics.accuracy,),
    ),
    GlueConfig(
      "mnli_matched",
      _NLI_KEYS,
      _NLI_LABELS,
      ("validation", "test"),
      (metrics.accuracy,),
      benchmark="mnli",
    ),
    GlueConfig(
      "mnli_mismatched",
      _NLI_KEYS,
      _NLI_LABELS,
      ("validation", "test"),
      (metrics.accuracy,),
      benchmark="mnli",
    ),
    GlueConfig(
      "qnli",
      ("question", "sentence"),
      ("entailment", "not_entailment"),
      _STANDARD_SPLITS,
      (metrics.accuracy,),
    ),
    GlueConfig(
      "rte",
      ("sentence1", "sentence2"),
      ("entailment", "not_entailment"),
      _STANDARD_SPLITS,
      (metrics.accuracy,),
    ),
    GlueConfig(
      "wnli",
      ("sentence1", "sentence2"),
      ("not_entailment", "entailment"),
      _STANDARD_SPLITS,
      (metrics.accuracy,),
    ),
    # The diagnostic set has only an unlabelled test split, hence no metrics (as in T5).
    GlueConfig("ax", _NLI_KEYS, _NLI_LABELS, ("test",), (), benchmark="mnli"),
  ]
}

# (source, target) -> {source label word: target label word}.
LABEL_TRANSLATIONS: dict[tuple[str, str], dict[str, str]] = {
  ("qqp", "mrpc"): {"not_duplicate": "not_equivalent", "duplicate": "equivalent"},
  ("mrpc", "qqp"): {"not_equivalent": "not_duplicate", "equivalent": "duplicate"},
}


def task_name(name: str, taskless: bool = False) -> str:
  return f"{TASKLESS_PREFIX if taskless else ''}glue_{name}_{VERSION_SUFFIX}"


def transfer_task_name(target: str, source: str, taskless: bool = False) -> str:
  return task_name(f"{target}_from_{source}", taskless)


def zeroshot_mixture_name(target: str, source: str, taskless: bool = False) -> str:
  return task_name(f"{target}_from_{source}_zeroshot", taskless)


def mnli_mixture_name(taskless: bool = False) -> str:
  return task_name("mnli_and_dev", taskless)


# ----------------------------------------------------------------------------------------
# Preprocessing: T5's GLUE format comes from `preprocessors.glue_text`, the taskless form
# from `preprocessors.remove_first_text_token` (both shared with SuperGLUE).


def stsb_target(score: tf.Tensor) -> tf.Tensor:
  """T5's STS-B target: the 0-5 similarity rounded to a multiple of 0.2, one decimal."""
  return tf.strings.as_string(tf.round(score * 5.0) / 5.0, precision=1)


@seqio.map_over_dataset
@tf.autograph.experimental.do_not_convert
def stsb_text(x: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  """STS-B in T5's format: the inputs as for any GLUE task, a number as the target."""
  inputs = tf.strings.join(
    ["stsb sentence1:", x["sentence1"], "sentence2:", x["sentence2"]], separator=" "
  )
  return {"inputs": inputs, "targets": stsb_target(x["label"]), "idx": x["idx"]}


def text_preprocessors(config: GlueConfig, taskless: bool = False) -> list[Callable[..., Any]]:
  """One TFDS `glue` example -> {inputs, targets, idx} in T5's format."""
  if config.label_classes is None:
    steps = [stsb_text]
  else:
    steps = [
      functools.partial(
        preprocessors.glue_text,
        benchmark_name=config.benchmark,
        label_names=config.label_classes,
        feature_names=config.text_keys,
      )
    ]
  return steps + ([preprocessors.remove_first_text_token] if taskless else [])


def transfer_text_preprocessors(
  source: GlueConfig, target: GlueConfig, taskless: bool = False
) -> list[Callable[..., Any]]:
  """A target example posed as the source task: the source's keys and label words.

  The target's text fields are renamed to the source's (in sorted-key order, e.g. MRPC's
  sentence1/2 become QQP's question1/2), and each target class id is written as the
  source word that `LABEL_TRANSLATIONS` maps to that class.
  """
  to_target = LABEL_TRANSLATIONS[(source.name, target.name)]
  to_source = {t: s for s, t in to_target.items()}
  key_map = dict(zip(source.text_keys, target.text_keys)) | {"label": "label", "idx": "idx"}
  steps = [
    functools.partial(seqio.preprocessors.rekey, key_map=key_map),
    functools.partial(
      preprocessors.glue_text,
      benchmark_name=source.benchmark,
      label_names=[to_source[word] for word in target.label_classes],
      feature_names=source.text_keys,
    ),
  ]
  return steps + ([preprocessors.remove_first_text_token] if taskless else [])


# ----------------------------------------------------------------------------------------
# Postprocessing: text -> the value the metrics compare (class id, or float for STS-B).


def string_to_float(output: Any, example=None, is_target: bool = False) -> float:
  """STS-B's generated number; -1 (outside the 0-5 range) if it is no number."""
  del example, is_target
  try:
    return float(postprocessors.as_text(output).strip())
  except ValueError:
    return float(metrics.INVALID)


def translated_label_to_class_id(
  output: Any,
  translation: Mapping[str, str],
  label_classes: Sequence[str],
  example=None,
  is_target: bool = False,
) -> int:
  """Source label word -> target label word -> target class id (-1 if unknown).

  A target label word passes through: it names the class just as unambiguously.
  """
  del example, is_target
  text = postprocessors.as_text(output).strip()
  return postprocessors.label_to_class_id(translation.get(text, text), label_classes)


def postprocessor(config: GlueConfig) -> Callable[..., Any]:
  if config.label_classes is None:
    return string_to_float
  return postprocessors.string_label(config.label_classes)


def transfer_postprocessor(source: GlueConfig, target: GlueConfig) -> Callable[..., Any]:
  return functools.partial(
    translated_label_to_class_id,
    translation=LABEL_TRANSLATIONS[(source.name, target.name)],
    label_classes=target.label_classes,
  )


# ----------------------------------------------------------------------------------------
# Registration.


def output_features(vocabulary: seqio.Vocabulary) -> dict[str, seqio.Feature]:
  return {
    "inputs": seqio.Feature(vocabulary=vocabulary, add_eos=True, required=False),
    "targets": seqio.Feature(vocabulary=vocabulary, add_eos=True),
  }


def _add_task(
  name: str, source: seqio.DataSource, text_steps, postprocess_fn, metric_fns, features
) -> None:
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
    metric_fns=metric_fns,
  )


def _add_mixture(name: str, tasks_and_rates: list[tuple[str, float]]) -> None:
  seqio.MixtureRegistry.remove(name)
  seqio.MixtureRegistry.add(name, tasks_and_rates)


def register(vocabulary: seqio.Vocabulary | None = None) -> list[str]:
  """(Re)registers every GLUE task, transfer task and mixture with `vocabulary`."""
  vocabulary = vocabulary if vocabulary is not None else vocab_lib.get_vocabulary()
  features = output_features(vocabulary)
  names = []
  for taskless in (False, True):
    for config in CONFIGS.values():
      name = task_name(config.name, taskless)
      _add_task(
        name,
        sources.TfdsSource(f"glue/{config.name}:{TFDS_VERSION}", splits=config.splits),
        text_preprocessors(config, taskless),
        postprocessor(config),
        list(config.metric_fns),
        features,
      )
      names.append(name)

    # MNLI's validation sets are separate configs; rate 0 marks them evaluation-only.
    mnli = mnli_mixture_name(taskless)
    _add_mixture(
      mnli,
      [
        (task_name("mnli", taskless), 1.0),
        (task_name("mnli_matched", taskless), 0.0),
        (task_name("mnli_mismatched", taskless), 0.0),
      ],
    )
    names.append(mnli)

    for source_name, target_name in LABEL_TRANSLATIONS:
      source, target = CONFIGS[source_name], CONFIGS[target_name]
      name = transfer_task_name(target_name, source_name, taskless)
      _add_task(
        name,
        sources.TfdsSource(f"glue/{target_name}:{TFDS_VERSION}", splits=("validation",)),
        transfer_text_preprocessors(source, target, taskless),
        transfer_postprocessor(source, target),
        list(target.metric_fns),
        features,
      )
      mixture = zeroshot_mixture_name(target_name, source_name, taskless)
      _add_mixture(mixture, [(task_name(source_name, taskless), 1.0), (name, 0.0)])
      names += [name, mixture]
  return names


register()
