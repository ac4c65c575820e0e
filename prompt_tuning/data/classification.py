"""SuperGLUE and GLUE classification for the sequence head: T5's inputs, integer labels.

  super_glue_{boolq,cb,copa,rte,wic,axb,axg}_v102_cls
  glue_{cola,sst2,mrpc,qqp,mnli,mnli_matched,mnli_mismatched,qnli,rte,wnli,ax}_v002_cls

The inputs are exactly those of the text-to-text tasks (`super_glue_{name}_v102`,
`glue_{name}_v002`: T5's format, the benchmark word first); the target is the label's
name in a `labels.LabelVocabulary` of the task's label names, i.e. one integer label,
which a linear head predicts without a verbalizer. COPA is the two-way choice between
`choice1` and `choice2` (T5's labels), AX-b and AX-g are posed as RTE, and the hidden
test labels (`<unk>`) become "no label". Postprocessors and metrics are the text tasks'
own, so accuracy, F1 and the rest are computed the same way. STS-B (a regression),
MultiRC, ReCoRD and WSC are not classification tasks in this sense and have no `_cls`
variant.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import seqio

from prompt_tuning.data import glue
from prompt_tuning.data import labels as labels_lib
from prompt_tuning.data import sources
from prompt_tuning.data import super_glue
from prompt_tuning.data import vocab as vocab_lib

SUFFIX = "_cls"
SUPER_GLUE_LABELS = {
  "boolq": super_glue.BOOL_LABELS,
  "cb": super_glue.NLI_3_LABELS,
  "copa": super_glue.COPA_LABELS,
  "rte": super_glue.NLI_2_LABELS,
  "wic": super_glue.BOOL_LABELS,
  "axb": super_glue.NLI_2_LABELS,
  "axg": super_glue.NLI_2_LABELS,
}


def add_classification_task(
  name: str,
  source: seqio.DataSource,
  text_preprocessors: Sequence[Callable[..., Any]],
  label_names: Sequence[str],
  postprocess_fn: Callable[..., Any] | None,
  metric_fns: Sequence[Callable[..., Any]],
  vocabulary: seqio.Vocabulary,
) -> str:
  """Registers a sequence-head task whose text preprocessors produce {inputs, targets}
  text with the label's name as the target; returns its name."""
  seqio.TaskRegistry.remove(name)
  seqio.TaskRegistry.add(
    name,
    source=source,
    preprocessors=[
      *text_preprocessors,
      seqio.preprocessors.tokenize,
      seqio.CacheDatasetPlaceholder(),
      seqio.preprocessors.append_eos_after_trim,
    ],
    postprocess_fn=postprocess_fn,
    metric_fns=list(metric_fns),
    output_features=labels_lib.head_output_features(
      vocabulary, labels_lib.LabelVocabulary(label_names)
    ),
  )
  return name


def register(vocabulary: seqio.Vocabulary | None = None) -> list[str]:
  """(Re)registers every `_cls` task with `vocabulary`; returns their names."""
  vocabulary = vocabulary or vocab_lib.get_vocabulary()
  names = []
  for spec in super_glue.TASK_SPECS:
    if spec.name not in SUPER_GLUE_LABELS:
      continue
    source = sources.TfdsSource(
      tfds_name=f"super_glue/{spec.tfds_config}:{super_glue.TFDS_VERSION}", splits=list(spec.splits)
    )
    names.append(
      add_classification_task(
        super_glue.task_name(spec.name) + SUFFIX,
        source,
        [*spec.pre_text, spec.text_preprocessor],
        SUPER_GLUE_LABELS[spec.name],
        spec.postprocess_fn,
        spec.metric_fns,
        vocabulary,
      )
    )
  for config in glue.CONFIGS.values():
    if config.label_classes is None:
      continue
    source = sources.TfdsSource(f"glue/{config.name}:{glue.TFDS_VERSION}", splits=config.splits)
    names.append(
      add_classification_task(
        glue.task_name(config.name) + SUFFIX,
        source,
        glue.text_preprocessors(config),
        config.label_classes,
        glue.postprocessor(config),
        config.metric_fns,
        vocabulary,
      )
    )
  return names


register()
