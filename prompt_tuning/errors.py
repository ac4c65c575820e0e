"""Errors as one line: what the command line prints and what warnings about skipped
checkpoints quote, so that a user sees what went wrong without a traceback."""

from __future__ import annotations

MAX_LENGTH = 400


def one_line(error: BaseException, *, with_type: bool = False) -> str:
  """The error's message with its whitespace folded, cut to MAX_LENGTH characters;
  `with_type` prefixes the exception's class (for errors from libraries, whose messages
  alone can be cryptic)."""
  text = " ".join(str(error).split())
  if len(text) > MAX_LENGTH:
    text = text[: MAX_LENGTH - 3] + "..."
  return f"{type(error).__name__}: {text}" if with_type else text
