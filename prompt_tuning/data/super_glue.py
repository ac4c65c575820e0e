"""SeqIO tasks and mixtures for SuperGLUE (TFDS `super_glue/*:1.0.2`) in T5's formats.

Names (for every SuperGLUE task `name` in boolq, cb, copa, multirc, record, rte, wic,
axb, axg):

  super_glue_{name}_v102            T5's format, inputs start with the dataset name
  taskless_super_glue_{name}_v102   the paper's format: the dataset name removed
  ..._examples                      same data; predictions keep their input/target text
                                    and a text summary of examples goes to TensorBoard

WSC is T5's "simple" WSC over `wsc.fixed`: `{prefix}super_glue_wsc_v102_simple_train`
(correct referents only) and `{prefix}super_glue_wsc_v102_simple_eval{suffix}`, joined
in the mixture `{prefix}super_glue_wsc_v102{suffix}` (also registered under the
upstream name `{prefix}super_glue_wsc_and_dev_v102_simple{suffix}`).

Mixtures `{prefix}super_glue_v102{suffix}` mix all training sets proportionally to
their number of (preprocessed) training examples, as T5 does; AX-b and AX-g have only
a test split and are left out, WSC's evaluation task is in with rate 0 so evaluating
the mixture covers it.

`register(vocabulary)` (re)builds everything for one vocabulary; importing this module
registers with `vocab.get_vocabulary()` (loaded lazily, so no file is read yet).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Sequence

import seqio

from prompt_tuning.data import metrics
from prompt_tuning.data import postprocessors
from prompt_tuning.data import preprocessors
from prompt_tuning.data import sources
from prompt_tuning.data import vocab as vocab_lib

TFDS_VERSION = "1.0.2"
ALL_SPLITS = ("train", "validation", "test")

BOOL_LABELS = ("False", "True")
NLI_2_LABELS = ("entailment", "not_entailment")
NLI_3_LABELS = ("entailment", "contradiction", "neutral")
COPA_LABELS = ("choice1", "choice2")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """What differs between SuperGLUE tasks: source, text format, scoring."""

  name: str  # Used in the task names.
  tfds_config: str  # super_glue/<tfds_config>:1.0.2
  splits: Sequence[str]
  text_preprocessor: Callable[..., object]
  postprocess_fn: Callable[..., object] | None
  metric_fns: Sequence[Callable[..., dict]]
  # Steps run before `text_preprocessor`, e.g. AX-b's renaming of its fields to RTE's.
  pre_text: Sequence[Callable[..., object]] = ()


def _glue(benchmark: str, labels: Sequence[str], fields: Sequence[str]):
  return functools.partial(
    preprocessors.glue_text,
    benchmark_name=benchmark,
    label_names=tuple(labels),
    feature_names=tuple(fields),
  )


# AX-b names its pair sentence1 / sentence2 where RTE says premise / hypothesis. As T5's
# `super_glue_axb_v102` does, they are renamed first, so AX-b reads exactly like RTE
# ("rte hypothesis: <sentence2> premise: <sentence1>") and an RTE prompt sees on AX-b
# the field names it was trained with.
AXB_AS_RTE = {"premise": "sentence1", "hypothesis": "sentence2", "label": "label", "idx": "idx"}

# Field orders are T5's: alphabetical, except where T5 named an order (MultiRC, WiC).
# AX-b and AX-g are cast as RTE, whose labels they share.
TASK_SPECS: tuple[TaskSpec, ...] = (
  TaskSpec(
    "boolq",
    "boolq",
    ALL_SPLITS,
    _glue("boolq", BOOL_LABELS, ("passage", "question")),
    postprocessors.string_label(BOOL_LABELS),
    [metrics.accuracy],
  ),
  TaskSpec(
    "cb",
    "cb",
    ALL_SPLITS,
    _glue("cb", NLI_3_LABELS, ("hypothesis", "premise")),
    postprocessors.string_label(NLI_3_LABELS),
    [metrics.mean_multiclass_f1(3), metrics.accuracy],
  ),
  TaskSpec(
    "copa",
    "copa",
    ALL_SPLITS,
    _glue("copa", COPA_LABELS, ("choice1", "choice2", "premise", "question")),
    postprocessors.string_label(COPA_LABELS),
    [metrics.accuracy],
  ),
  TaskSpec(
    "multirc",
    "multirc",
    ALL_SPLITS,
    preprocessors.multirc_text,
    postprocessors.multirc,
    [metrics.multirc_f1_over_all_answers, metrics.multirc_exact_match],
  ),
  TaskSpec(
    "record",
    "record",
    ALL_SPLITS,
    preprocessors.record_text,
    postprocessors.record,
    [metrics.record],
  ),
  TaskSpec(
    "rte",
    "rte",
    ALL_SPLITS,
    _glue("rte", NLI_2_LABELS, ("hypothesis", "premise")),
    postprocessors.string_label(NLI_2_LABELS),
    [metrics.accuracy],
  ),
  TaskSpec(
    "wic",
    "wic",
    ALL_SPLITS,
    _glue("wic", BOOL_LABELS, ("sentence1", "sentence2", "word")),
    postprocessors.string_label(BOOL_LABELS),
    [metrics.accuracy],
  ),
  # The public AX-b/AX-g test labels are hidden (-1): scores appear only where labels do.
  # Gender parity needs no labels.
  TaskSpec(
    "axb",
    "axb",
    ("test",),
    _glue("rte", NLI_2_LABELS, ("hypothesis", "premise")),
    postprocessors.string_label(NLI_2_LABELS),
    [metrics.labeled_only(metrics.matthews_corrcoef), metrics.labeled_only(metrics.accuracy)],
    pre_text=(functools.partial(seqio.preprocessors.rekey, key_map=AXB_AS_RTE),),
  ),
  TaskSpec(
    "axg",
    "axg",
    ("test",),
    _glue("rte", NLI_2_LABELS, ("hypothesis", "premise")),
    postprocessors.axg(NLI_2_LABELS),
    [metrics.labeled_only(metrics.accuracy, value_key="value"), metrics.gender_parity],
  ),
  TaskSpec(
    "wsc_v102_simple_train",
    "wsc.fixed",
    ("train",),
    functools.partial(preprocessors.wsc_simple, correct_referent_only=True),
    None,
    [],
  ),
  TaskSpec(
    "wsc_v102_simple_eval",
    "wsc.fixed",
    ("validation", "test"),
    functools.partial(preprocessors.wsc_simple, correct_referent_only=False),
    postprocessors.wsc_simple,
    [metrics.accuracy],
  ),
)

# The SuperGLUE datasets with one task each (WSC has its train/eval pair instead).
SINGLE_TASK_NAMES = ("boolq", "cb", "copa", "multirc", "record", "rte", "wic", "axb", "axg")

# Mixing rates: T5's SuperGLUE weights, i.e. the number of training examples per task
# (WSC counts only its 259 correct-referent examples).
TRAIN_EXAMPLES = {
  "boolq": 9_427,
  "cb": 250,
  "copa": 400,
  "multirc": 27_243,
  "record": 138_854,
  "rte": 2_490,
  "wic": 5_428,
  "wsc": 259,
}

PREFIXES = ("", "taskless_")
SUFFIXES = ("", "_examples")


def task_name(spec_name: str, prefix: str = "", suffix: str = "") -> str:
  """TaskSpec name + variant -> task name: ("rte", "taskless_") -> taskless_super_glue_rte_v102."""
  base = spec_name if spec_name.startswith("wsc_") else f"{spec_name}_v102"
  return f"{prefix}super_glue_{base}{suffix}"


def _output_features(vocabulary: seqio.Vocabulary) -> dict[str, seqio.Feature]:
  return {
    "inputs": seqio.Feature(vocabulary=vocabulary, add_eos=True),
    "targets": seqio.Feature(vocabulary=vocabulary, add_eos=True),
  }


def _add_task(
  name: str, spec: TaskSpec, vocabulary: seqio.Vocabulary, taskless: bool, examples: bool
) -> None:
  text_preprocessors = [*spec.pre_text, spec.text_preprocessor]
  if taskless:
    text_preprocessors.append(preprocessors.remove_first_text_token)
  postprocess_fn = spec.postprocess_fn
  metric_fns = list(spec.metric_fns)
  if examples:
    postprocess_fn = postprocessors.with_examples(postprocess_fn)
    metric_fns = [metrics.metric_with_examples(fn) for fn in metric_fns] + [
      metrics.text_examples(name)
    ]
  seqio.TaskRegistry.remove(name)
  seqio.TaskRegistry.add(
    name,
    source=sources.TfdsSource(
      tfds_name=f"super_glue/{spec.tfds_config}:{TFDS_VERSION}", splits=list(spec.splits)
    ),
    preprocessors=text_preprocessors
    + [
      seqio.preprocessors.tokenize,
      seqio.CacheDatasetPlaceholder(),
      seqio.preprocessors.append_eos_after_trim,
    ],
    postprocess_fn=postprocess_fn,
    metric_fns=metric_fns,
    output_features=_output_features(vocabulary),
  )


def _add_mixture(name: str, tasks: Sequence[tuple[str, float]]) -> None:
  seqio.MixtureRegistry.remove(name)
  seqio.MixtureRegistry.add(name, list(tasks))


def register(vocabulary: seqio.Vocabulary | None = None) -> list[str]:
  """(Re)registers every SuperGLUE task and mixture with `vocabulary`; returns their names.

  Call again after changing the vocabulary (e.g. after gin has set
  `get_vocabulary.spm_path`): tasks are bound to a vocabulary when registered.
  """
  if vocabulary is None:
    vocabulary = vocab_lib.get_vocabulary()
  names = []
  for prefix in PREFIXES:
    taskless = bool(prefix)
    for spec in TASK_SPECS:
      # Training-only WSC has nothing to show at evaluation: no _examples variant.
      suffixes = ("",) if spec.name == "wsc_v102_simple_train" else SUFFIXES
      for suffix in suffixes:
        name = task_name(spec.name, prefix, suffix)
        _add_task(name, spec, vocabulary, taskless=taskless, examples=bool(suffix))
        names.append(name)

    for suffix in SUFFIXES:
      wsc_train = task_name("wsc_v102_simple_train", prefix)
      wsc_eval = task_name("wsc_v102_simple_eval", prefix, suffix)
      for wsc_mixture in (
        f"{prefix}super_glue_wsc_v102{suffix}",
        f"{prefix}super_glue_wsc_and_dev_v102_simple{suffix}",
      ):
        _add_mixture(wsc_mixture, [(wsc_train, 1.0), (wsc_eval, 1.0)])
        names.append(wsc_mixture)

      rates = [
        (task_name(t, prefix, suffix), float(TRAIN_EXAMPLES[t]))
        for t in ("boolq", "cb", "copa", "multirc", "record", "rte", "wic")
      ]
      rates += [(wsc_train, float(TRAIN_EXAMPLES["wsc"])), (wsc_eval, 0.0)]
      mixture = f"{prefix}super_glue_v102{suffix}"
      _add_mixture(mixture, rates)
      names.append(mixture)
  return names


register()
