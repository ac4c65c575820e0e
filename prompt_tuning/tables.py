"""Aligned text tables, the one formatter behind every table the tools print (ensemble
results, nearest neighbours, method comparisons, benchmarks)."""

from __future__ import annotations

from typing import Sequence


def format_table(
  header: Sequence[str],
  rows: Sequence[Sequence[str]],
  *,
  align: str | None = None,
  gap: int = 2,
  markdown: bool = False,
) -> str:
  """Columns padded to their widest cell.

  align: one character per column, "<" (left) or ">" (right); default: the first column
    left, the others right, as numbers read best.
  markdown: a Markdown table (`| a | b |` with a rule whose colons match `align`) that
    also lines up in a terminal; otherwise cells are separated by `gap` spaces.
  """
  table = [[str(cell) for cell in header]] + [[str(cell) for cell in row] for row in rows]
  columns = len(table[0])
  if any(len(row) != columns for row in table):
    raise ValueError(f"every row needs {columns} cells: {[len(r) for r in table]}")
  align = align or "<" + ">" * (columns - 1)
  if len(align) != columns or set(align) - set("<>"):
    raise ValueError(f"align needs one of '<' or '>' per column, got {align!r}")
  widths = [max(len(row[i]) for row in table) for i in range(columns)]

  def pad(row: Sequence[str]) -> list[str]:
    return [c.ljust(w) if a == "<" else c.rjust(w) for c, w, a in zip(row, widths, align)]

  if not markdown:
    return "\n".join((" " * gap).join(pad(row)).rstrip() for row in table)
  rule = (
    "|" + "|".join("-" * (w + 1) + (":" if a == ">" else "-") for w, a in zip(widths, align)) + "|"
  )
  lines = ["| " + " | ".join(pad(row)) + " |" for row in table]
  return "\n".join([lines[0], rule] + lines[1:])
