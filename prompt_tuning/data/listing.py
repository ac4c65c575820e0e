"""Finding registered tasks and looking at what they feed the model.

Backs `prompt-tuning tasks [PATTERN]` and `prompt-tuning show-task NAME`. Looking at a few
preprocessed examples is the quickest check that a task reads the data one expects and
formats it as the prompt will see it.

Patterns: one containing `*`, `?` or `[` is a shell glob matched against the whole name
(`glue_*_v002`); anything else is a regular expression searched within the name (`mrqa`,
`^squad_to_`, `(qqp|mrpc)`); a `re:` prefix forces a regular expression
(`re:^glue_.*_v002$`).
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any, Mapping

import seqio

_GLOB_CHARACTERS = frozenset("*?[")
_REGEX_PREFIX = "re:"
_FEATURES = ("inputs", "targets")


def _matcher(pattern: str):
  if pattern.startswith(_REGEX_PREFIX) or not _GLOB_CHARACTERS & set(pattern):
    expression = pattern[len(_REGEX_PREFIX) :] if pattern.startswith(_REGEX_PREFIX) else pattern
    try:
      compiled = re.compile(expression)
    except re.error as e:
      raise ValueError(
        f"'{expression}' is not a valid regular expression ({e}); escape its special "
        "characters, or drop the regex prefix to match a glob pattern."
      ) from None
    return lambda name: compiled.search(name) is not None
  return lambda name: fnmatch.fnmatchcase(name, pattern)


def list_tasks(pattern: str | None = None) -> list[str]:
  """Sorted names of the registered tasks and mixtures that match `pattern` (all if None)."""
  names = set(seqio.TaskRegistry.names()) | set(seqio.MixtureRegistry.names())
  if pattern:
    matches = _matcher(pattern)
    names = {n for n in names if matches(n)}
  return sorted(names)


def _provider(name: str) -> seqio.DatasetProviderBase:
  if name in seqio.MixtureRegistry.names():
    return seqio.MixtureRegistry.get(name)
  if name in seqio.TaskRegistry.names():
    return seqio.TaskRegistry.get(name)
  close = [n for n in list_tasks() if name in n or n in name][:5]
  hint = f" Similar names: {', '.join(close)}." if close else ""
  raise ValueError(
    f"No task or mixture named '{name}' is registered.{hint} "
    "Run `prompt-tuning tasks` to list them."
  )


def _text(value: Any) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _format_feature(key: str, example: Mapping[str, Any], vocabulary: seqio.Vocabulary) -> str:
  """Pretokenized text when the task keeps it, else (or also, if they differ) the tokens
  decoded, because the tokens are what the model actually sees."""
  tokens = [int(t) for t in example[key]]
  without_eos = tokens[:-1] if tokens and tokens[-1] == vocabulary.eos_id else tokens
  decoded = vocabulary.decode(without_eos)
  pretokenized = example.get(f"{key}_pretokenized")
  if pretokenized is None:
    return f"{key} ({len(tokens)} tokens, decoded): {decoded}"
  text = _text(pretokenized)
  lines = [f"{key} ({len(tokens)} tokens): {text}"]
  if " ".join(decoded.split()) != " ".join(text.split()):
    lines.append(f"{key} as tokens: {decoded}")
  return "\n".join(lines)


def member_tasks(mixture_or_task_name: str) -> list[seqio.Task]:
  """The task itself, or the tasks of the mixture (nested mixtures flattened by seqio)."""
  provider = seqio.get_mixture_or_task(mixture_or_task_name)
  return list(provider.tasks) if isinstance(provider, seqio.Mixture) else [provider]


def show_task(name: str, split: str = "train", num_examples: int = 3) -> str:
  """The first `num_examples` preprocessed examples of `split`, unshuffled, as text."""
  if num_examples < 1:
    raise ValueError(f"num_examples must be at least 1, got {num_examples}.")
  provider = _provider(name)
  if split not in provider.splits:
    raise ValueError(f"'{name}' has no split '{split}'; its splits are {sorted(provider.splits)}.")
  kwargs: dict[str, Any] = dict(
    sequence_length=None, split=split, shuffle=False, seed=0, num_epochs=1, try_in_mem_cache=False
  )
  if isinstance(provider, seqio.Mixture):
    kwargs["copy_pretokenized"] = True
  dataset = provider.get_dataset(**kwargs).take(num_examples)
  vocabularies = {k: provider.output_features[k].vocabulary for k in _FEATURES}

  blocks = [f"{name} ({split})"]
  for i, example in enumerate(dataset.as_numpy_iterator(), start=1):
    lines = [f"--- example {i} ---"]
    lines += [_format_feature(k, example, vocabularies[k]) for k in _FEATURES if k in example]
    blocks.append("\n".join(lines))
  if len(blocks) == 1:
    blocks.append(f"(no examples in split '{split}')")
  return "\n".join(blocks)
