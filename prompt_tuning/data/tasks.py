"""Registers every task and mixture of the package with one vocabulary.

Task modules register themselves at import with the default vocabulary; after gin has
been parsed (which may point `get_vocabulary.spm_path` elsewhere), the CLI calls
`register_all()` so that every task uses the configured vocabulary.
"""

from __future__ import annotations

import seqio

from prompt_tuning.data import c4, demo, demo_heads, demo_table, generation, glue, mrqa  # noqa: F401
from prompt_tuning.data import classification, spans, spot, super_glue, tagging
from prompt_tuning.data import task_mixtures
from prompt_tuning.data import vocab as vocab_lib

# The demo tasks keep their own bundled vocabulary.
_MODULES_WITH_TASK_VOCABULARY = (
  super_glue,
  glue,
  mrqa,
  spot,
  generation,
  c4,
  classification,
  tagging,
  spans,
)


def register_all(vocabulary: seqio.Vocabulary | None = None) -> list[str]:
  """(Re)registers the benchmark tasks with `vocabulary` (default: the gin-bound one)."""
  vocabulary = vocabulary or vocab_lib.get_vocabulary()
  names: list[str] = []
  for module in _MODULES_WITH_TASK_VOCABULARY:
    names.extend(module.register(vocabulary))
  # Last: the multi-task mixtures are made of the tasks registered above.
  names.extend(task_mixtures.register_configured())
  return names
