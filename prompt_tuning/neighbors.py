"""`prompt-tuning neighbors`: which vocabulary tokens each learned prompt vector is near.

The paper reads its prompts this way (Section 7): for every prompt position, the top-k
vocabulary embeddings by cosine similarity to the frozen model's embedding table. Class
labels tend to stay the nearest neighbours of the positions they initialised, so
positions whose nearest token is (a piece of) a class label are flagged.

Rows of the embedding past the SentencePiece pieces and the sentinels are padding (T5
pads 32,100 ids to 32,128 rows) and are never reported; sentinels show as
`<extra_id_N>`.
"""

from __future__ import annotations

import argparse
import os
import re
from typing import Any, Sequence

import numpy as np
import seqio

from prompt_tuning import convert, tables
from prompt_tuning.data import vocab as vocab_lib

EMBEDDING_NAME = "token_embedder/embedding"
_SENTINEL_PIECE = re.compile("\u2581?<extra_id_[0-9]+>")


def nearest_neighbors(
  prompt: np.ndarray, embedding: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
  """For each prompt row, the ids of its `k` most cosine-similar embedding rows, most
  similar first, and those similarities: two [P, k] arrays.

  Zero vectors have similarity 0 to everything rather than NaN.
  """
  prompt = np.asarray(prompt, np.float64)
  embedding = np.asarray(embedding, np.float64)
  if prompt.ndim != 2 or embedding.ndim != 2:
    raise ValueError(
      f"prompt and embedding must be 2-D, got shapes {prompt.shape} and {embedding.shape}"
    )
  if prompt.shape[1] != embedding.shape[1]:
    raise ValueError(
      f"prompt width {prompt.shape[1]} does not match the embedding width "
      f"{embedding.shape[1]}; use the checkpoint the prompt was trained on"
    )
  if not 1 <= k <= embedding.shape[0]:
    raise ValueError(
      f"k must be between 1 and the number of vocabulary rows ({embedding.shape[0]}), got {k}"
    )
  similarities = _unit_rows(prompt) @ _unit_rows(embedding).T
  # argpartition keeps this linear in the vocabulary; only the top k are sorted.
  top = np.argpartition(-similarities, k - 1, axis=1)[:, :k]
  top_sims = np.take_along_axis(similarities, top, axis=1)
  order = np.lexsort((top, -top_sims), axis=1)  # Highest first, ties by smaller id.
  ids = np.take_along_axis(top, order, axis=1)
  return ids, np.take_along_axis(top_sims, order, axis=1)


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
  norms = np.linalg.norm(matrix, axis=1, keepdims=True)
  return matrix / np.where(norms == 0, 1.0, norms)


class PieceNames:
  """Text of an id: its SentencePiece piece, or `<extra_id_N>` for T5's sentinels (which
  count down from the last id: extra_id_0 is the highest). seqio appends the sentinels to
  the model as pieces `▁<extra_id_N>`; they are shown without the word-start mark."""

  def __init__(self, vocabulary: Any):
    self.processor = vocabulary.tokenizer
    self.num_pieces = int(self.processor.get_piece_size())
    self.size = int(vocabulary.vocab_size)

  def __call__(self, token_id: int) -> str:
    if token_id >= self.num_pieces:
      return f"<extra_id_{self.size - 1 - token_id}>"
    piece = self.processor.id_to_piece(int(token_id))
    return piece.lstrip("\u2581") if _SENTINEL_PIECE.fullmatch(piece) else piece


def label_token_ids(vocabulary: Any, labels: Sequence[str]) -> dict[int, str]:
  """Id -> label for every sub-token of every label, without the bare word-start piece
  `▁` that many words begin with and that says nothing about the label."""
  names = PieceNames(vocabulary)
  ids: dict[int, str] = {}
  for label in labels:
    for token_id in vocabulary.encode(label):
      if names(token_id) != "\u2581":
        ids.setdefault(int(token_id), label)
  return ids


def read_embedding(checkpoint: str) -> np.ndarray:
  """The frozen embedding table from a checkpoint (any format the trainer reads) or from
  a `.npy` written by `prompt-tuning extract-variable`."""
  if checkpoint.endswith(".npy"):
    if not os.path.isfile(checkpoint):
      raise ValueError(
        f"embedding file {checkpoint} does not exist; pass the .npy that "
        "`prompt-tuning extract-variable` wrote, or the frozen model's checkpoint"
      )
    return np.load(checkpoint)
  if not os.path.exists(checkpoint) and "://" not in checkpoint:
    raise ValueError(
      f"checkpoint {checkpoint} does not exist; pass the frozen model's checkpoint "
      "(its token embedding is read from it)"
    )
  with convert.open_checkpoint(checkpoint) as reader:
    # A trainer checkpoint usually holds only the prompt.
    if EMBEDDING_NAME not in reader.arrays():
      raise ValueError(
        f"checkpoint {checkpoint} has no {EMBEDDING_NAME!r} (prompt-tuning "
        "checkpoints keep only the prompt); pass the frozen model's "
        "checkpoint, the run's INITIAL_CHECKPOINT_PATH"
      )
  return convert.read_variable(checkpoint, EMBEDDING_NAME)


def read_prompt(path: str) -> np.ndarray:
  if not os.path.isfile(path):
    raise ValueError(
      f"prompt file {path} does not exist; pass a [length, d_model] .npy, "
      "e.g. MODEL_DIR/numpy_checkpoints/checkpoint_N/encoder.prompt.prompt.npy"
    )
  prompt = np.load(path)
  if prompt.ndim != 2:
    raise ValueError(f"prompt {path} has shape {prompt.shape}; expected [length, d_model]")
  return prompt


def format_table(
  ids: np.ndarray, sims: np.ndarray, names: PieceNames, label_ids: dict[int, str]
) -> str:
  """One line per prompt position: the label flag, then `piece (cosine)` by rank."""
  rows = []
  for position, (row_ids, row_sims) in enumerate(zip(ids, sims)):
    flag = label_ids.get(int(row_ids[0]), "")
    shown = "  ".join(f"{names(int(i))} ({s:.3f})" for i, s in zip(row_ids, row_sims))
    rows.append([str(position), f"*{flag}" if flag else "", shown])
  table = tables.format_table(
    ["position", "label", "nearest tokens (cosine similarity)"], rows, align="><<"
  )
  if label_ids:
    flagged = sum(int(row[0]) in label_ids for row in ids)
    table += f"\n{flagged} of {len(ids)} positions have a class label (*) as their nearest token"
  return table


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog="prompt-tuning neighbors",
    description="For each prompt position, its k nearest vocabulary tokens by cosine "
    "similarity to the frozen embedding (the paper's interpretability check).",
  )
  parser.add_argument("--prompt", required=True, help="prompt .npy, [length, d_model]")
  parser.add_argument(
    "--checkpoint",
    required=True,
    help="the frozen model's checkpoint (any supported format) or its embedding as .npy",
  )
  parser.add_argument(
    "--vocab",
    default=vocab_lib.DEFAULT_SPM_PATH,
    help="SentencePiece model of the checkpoint (default: T5's, %(default)s)",
  )
  parser.add_argument(
    "--extra-ids",
    type=int,
    default=vocab_lib.DEFAULT_EXTRA_IDS,
    help="sentinel ids after the pieces (default %(default)s)",
  )
  parser.add_argument("-k", type=int, default=5, help="neighbours per position")
  parser.add_argument(
    "--labels", default="", help="comma-separated class labels to flag, e.g. positive,negative"
  )
  args = parser.parse_args(argv)
  prompt = read_prompt(args.prompt)
  embedding = read_embedding(args.checkpoint)
  if prompt.shape[1] != embedding.shape[1]:
    raise ValueError(
      f"prompt width {prompt.shape[1]} ({args.prompt}) does not match the "
      f"embedding width {embedding.shape[1]} ({args.checkpoint}); use the "
      "checkpoint the prompt was trained on"
    )
  if "://" not in args.vocab and not os.path.isfile(args.vocab):
    raise ValueError(f"SentencePiece model {args.vocab} does not exist; pass --vocab")
  vocabulary = seqio.SentencePieceVocabulary(args.vocab, extra_ids=args.extra_ids)
  names = PieceNames(vocabulary)
  if embedding.shape[0] < names.size:
    raise ValueError(
      f"the embedding has {embedding.shape[0]} rows but the vocabulary "
      f"{args.vocab} has {names.size} ids; pass the model's --vocab"
    )
  labels = [label.strip() for label in args.labels.split(",") if label.strip()]
  ids, sims = nearest_neighbors(prompt, embedding[: names.size], args.k)
  print(format_table(ids, sims, names, label_token_ids(vocabulary, labels)))
  return 0
