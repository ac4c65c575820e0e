"""`prompt-tuning similarity`: which source prompts are closest to a target task's prompt.

SPoT (Vu et al. 2022) picks the source task to transfer from by comparing prompts, since
a prompt trained on a task works as that task's embedding. Its two measures, both over
prompts of the same width (their lengths may differ):

- `mean-pooled`: the cosine similarity of the two prompts averaged over their positions;
- `all-pairs`: the mean, over every (target position, source position) pair, of the
  cosine similarity of the two vectors.

A zero vector has cosine 0 to everything rather than NaN. The table is sorted by one of
the measures, most similar first (docs/transfer.md, "Choosing a source prompt").
"""

from __future__ import annotations

import argparse
import os
from typing import Sequence

import numpy as np

from prompt_tuning import tables

MEAN_POOLED = "mean-pooled"
ALL_PAIRS = "all-pairs"
MEASURES = (MEAN_POOLED, ALL_PAIRS)
_COLUMN = {MEAN_POOLED: "cosine of means", ALL_PAIRS: "mean pairwise cosine"}


def _unit(vectors: np.ndarray) -> np.ndarray:
  norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
  return vectors / np.where(norms == 0, 1.0, norms)


def _check_pair(target: np.ndarray, source: np.ndarray) -> None:
  for name, prompt in (("target", target), ("source", source)):
    if prompt.ndim != 2 or prompt.shape[0] == 0:
      raise ValueError(
        f"the {name} prompt has shape {prompt.shape}; expected [length, d_model] with length >= 1"
      )
  if target.shape[1] != source.shape[1]:
    raise ValueError(
      f"the target prompt's width {target.shape[1]} differs from the source prompt's "
      f"{source.shape[1]}; compare prompts trained on the same model"
    )


def mean_pooled_cosine(target: np.ndarray, source: np.ndarray) -> float:
  """Cosine similarity of the two prompts' means over positions."""
  target, source = np.asarray(target, np.float64), np.asarray(source, np.float64)
  _check_pair(target, source)
  return float(_unit(target.mean(axis=0)) @ _unit(source.mean(axis=0)))


def all_pairs_cosine(target: np.ndarray, source: np.ndarray) -> float:
  """Mean cosine similarity over all (target position, source position) pairs."""
  target, source = np.asarray(target, np.float64), np.asarray(source, np.float64)
  _check_pair(target, source)
  return float(np.mean(_unit(target) @ _unit(source).T))


def rank_sources(
  target: np.ndarray, sources: Sequence[tuple[str, np.ndarray]], by: str = MEAN_POOLED
) -> list[tuple[str, float, float]]:
  """(name, mean-pooled cosine, all-pairs cosine) per source, most similar first by
  measure `by`; ties keep the given order."""
  if by not in MEASURES:
    raise ValueError(f"unknown similarity measure {by!r}; choose one of {', '.join(MEASURES)}")
  if not sources:
    raise ValueError("no source prompts given; pass at least one SOURCE.npy after the target")
  scored = [
    (name, mean_pooled_cosine(target, prompt), all_pairs_cosine(target, prompt))
    for name, prompt in sources
  ]
  column = 1 if by == MEAN_POOLED else 2
  return sorted(scored, key=lambda row: -row[column])


def read_prompt(path: str, role: str) -> np.ndarray:
  """A [length, d_model] prompt .npy; `role` (target / source) names it in errors."""
  if not os.path.isfile(path):
    raise ValueError(
      f"{role} prompt {path} does not exist; pass a [length, d_model] .npy, e.g. "
      "MODEL_DIR/numpy_checkpoints/checkpoint_N/encoder.prompt.prompt.npy"
    )
  try:
    prompt = np.load(path, allow_pickle=False)
  except ValueError as error:
    raise ValueError(f"{role} prompt {path} is not a numpy array file ({error})") from None
  if prompt.ndim != 2 or prompt.shape[0] == 0:
    raise ValueError(
      f"{role} prompt {path} has shape {prompt.shape}; expected [length, d_model] "
      "(one prompt, as the trainer exports it)"
    )
  return prompt


def format_ranking(ranking: Sequence[tuple[str, float, float]], by: str) -> str:
  rows = [
    [str(rank), name, f"{pooled:.4f}", f"{pairs:.4f}"]
    for rank, (name, pooled, pairs) in enumerate(ranking, start=1)
  ]
  header = ["rank", "source", _COLUMN[MEAN_POOLED], _COLUMN[ALL_PAIRS]]
  table = tables.format_table(header, rows, align="><>>")
  return f"{table}\nsorted by the {_COLUMN[by]}, most similar first"


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog="prompt-tuning similarity",
    description="Rank source prompts by their similarity to a target task's prompt "
    "(SPoT's task similarity: cosine of mean-pooled prompts, mean of all position-pair "
    "cosines), to choose the prompt to initialise the target from.",
  )
  parser.add_argument("target", help="the target task's prompt .npy, [length, d_model]")
  parser.add_argument("sources", nargs="+", help="source prompts .npy, [length, d_model] each")
  parser.add_argument(
    "--sort-by",
    choices=MEASURES,
    default=MEAN_POOLED,
    help="the measure that orders the table (default %(default)s)",
  )
  args = parser.parse_args(argv)
  target = read_prompt(args.target, "target")
  sources = [(path, read_prompt(path, "source")) for path in args.sources]
  for path, prompt in sources:
    if prompt.shape[1] != target.shape[1]:
      raise ValueError(
        f"source prompt {path} has width {prompt.shape[1]} but the target {args.target} "
        f"has {target.shape[1]}; compare prompts trained on the same model"
      )
  print(format_ranking(rank_sources(target, sources, args.sort_by), args.sort_by))
  return 0
