"""The two ways a checkpoint can be wrong: it is damaged, or it is not this model."""

from __future__ import annotations

import re
from typing import Sequence

# How many names of one kind a message lists before it summarises the rest; enough to
# see the pattern (e.g. every layer's MLP is a different width) without a wall of text.
_LISTED = 12


class CheckpointReadError(ValueError):
  """A checkpoint file is missing, truncated or unreadable."""


class CheckpointMismatchError(ValueError):
  """The checkpoint's parameter names or shapes do not fit what it is read into: the
  configured model, or (resuming a run) the run's train state.

  Raised once, with every mismatch, so a user sees the whole picture (e.g. "this is a
  `base` checkpoint, you configured `small`") instead of fixing one name at a time.
  `missing`, `unexpected` and `wrong_shape` list the differences when they are known.
  """

  def __init__(
    self,
    message: str,
    *,
    source: str = "",
    missing: Sequence[str] = (),
    unexpected: Sequence[str] = (),
    wrong_shape: Sequence[tuple[str, tuple[int, ...], tuple[int, ...]]] = (),
    looks_like: str | None = None,
  ):
    super().__init__(message)
    self.source = source
    self.missing = list(missing)
    self.unexpected = list(unexpected)
    self.wrong_shape = list(wrong_shape)
    self.looks_like = looks_like

  @classmethod
  def listing(
    cls,
    source: str,
    model: str,
    missing: Sequence[str],
    unexpected: Sequence[str],
    wrong_shape: Sequence[tuple[str, tuple[int, ...], tuple[int, ...]]],
    looks_like: str | None,
  ) -> "CheckpointMismatchError":
    """The error for a checkpoint checked against the model `model` (a phrase), with
    every difference listed, whole-model tensors first."""
    missing = sorted(missing, key=_order)
    unexpected = sorted(unexpected, key=_order)
    wrong_shape = sorted(wrong_shape, key=lambda item: _order(item[0]))
    counts = []
    if missing:
      counts.append(f"{len(missing)} missing")
    if unexpected:
      counts.append(f"{len(unexpected)} unexpected")
    if wrong_shape:
      counts.append(f"{len(wrong_shape)} with the wrong shape")
    lines = [f"checkpoint {source} does not match the model ({model}): " + ", ".join(counts) + "."]
    if looks_like:
      lines.append(
        f"The checkpoint looks like {looks_like}; configure that size "
        "or pass the matching checkpoint."
      )
    lines += _section("missing from the checkpoint", missing)
    lines += _section("unexpected in the checkpoint", unexpected)
    lines += _section(
      "wrong shape (checkpoint vs model)",
      [f"{name}: {tuple(got)} vs {tuple(want)}" for name, got, want in wrong_shape],
    )
    return cls(
      "\n".join(lines),
      source=source,
      missing=missing,
      unexpected=unexpected,
      wrong_shape=wrong_shape,
      looks_like=looks_like,
    )


def _order(name: str) -> tuple:
  """Whole-model tensors (embedding, norms, relative positions) first, as they tell the
  size at a glance; then layers in numeric order (layers_2 before layers_10)."""
  parts = tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))
  return ("layers_" in name, tuple((isinstance(p, str), p) for p in parts))


def _section(title: str, items: Sequence[str]) -> list[str]:
  if not items:
    return []
  lines = [f"{title}:"] + [f"  {item}" for item in items[:_LISTED]]
  if len(items) > _LISTED:
    lines.append(f"  ... and {len(items) - _LISTED} more")
  return lines
