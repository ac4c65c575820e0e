"""Prompt initialisers, each a flax-style `init(rng, shape, dtype)` callable.

The paper compares three: random uniform, sampled vocabulary and class labels (its
default). Upstream also ships "from string" and "from file" (released prompts). The ones
that read the frozen embedding take an `embedding` source: an array, a `.npy` file, or
any checkpoint `prompt_tuning.convert` can read (its `token_embedder/embedding`).
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Sequence

import gin
import jax
import jax.numpy as jnp
import numpy as np

from prompt_tuning import convert
from prompt_tuning.data import vocab

Array = jax.Array
Initializer = Callable[..., Array]
EMBEDDING_PATH = "token_embedder/embedding"


@gin.configurable
def uniform(scale: float = 0.5) -> Initializer:
  """U[-scale, scale]: the paper's "random uniform" initialisation."""

  def init(rng: Array, shape: Sequence[int], dtype: Any = jnp.float32) -> Array:
    return jax.random.uniform(rng, tuple(shape), dtype, minval=-scale, maxval=scale)

  return init


@gin.configurable
def uniform_positive(scale: float = 0.5) -> Initializer:
  """U[0, scale): what the upstream code actually used (flax's `uniform(0.5)`)."""

  def init(rng: Array, shape: Sequence[int], dtype: Any = jnp.float32) -> Array:
    return jax.random.uniform(rng, tuple(shape), dtype, minval=0.0, maxval=scale)

  return init


NPY_MAGIC = b"\x93NUMPY"


def load_prompt_file(path: str) -> np.ndarray:
  """A saved prompt as an array, refused with one line naming the file when it is missing,
  not a `.npy` file, damaged, or holds NaN / inf: a diverged run's prompt would otherwise
  evaluate to zero scores, or train with a loss blamed on the learning rate.

  Pickles are never loaded: numpy's own error for a non-`.npy` file advises loading it
  unsafely, which would run code from an untrusted file."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ValueError(f"prompt file {path} does not exist; pass a saved prompt .npy")
  with open(path, "rb") as f:
    magic = f.read(len(NPY_MAGIC))
  if magic != NPY_MAGIC:
    raise ValueError(
      f"prompt file {path} is not a NumPy .npy file; pass a prompt saved with numpy.save, "
      "e.g. MODEL_DIR/numpy_checkpoints/checkpoint_N/encoder.prompt.prompt.npy"
    )
  try:
    value = np.load(path, allow_pickle=False)
  except (ValueError, EOFError, OSError) as e:
    if "pickle" in str(e):
      raise ValueError(
        f"prompt file {path} holds pickled Python objects, which are never loaded; a "
        "prompt is a float array [prompt length, d_model]"
      ) from None
    raise ValueError(
      f"prompt file {path} is a damaged .npy file ({' '.join(str(e).split())}); "
      "export it again or use another checkpoint's prompt"
    ) from e
  if value.dtype.kind not in "fiu":
    raise ValueError(
      f"prompt file {path} holds {value.dtype} values; a prompt is a float array "
      "[prompt length, d_model]"
    )
  bad = int(value.size - np.count_nonzero(np.isfinite(value)))
  if bad:
    raise ValueError(
      f"prompt file {path} holds {bad} non-finite values (NaN or inf) of {value.size}; "
      "the run that wrote it diverged: use an earlier checkpoint's prompt"
    )
  return value


@functools.lru_cache(maxsize=4)
def _load_embedding_cached(source: str) -> np.ndarray:
  if source.endswith(".npy"):
    if not os.path.exists(source):
      raise ValueError(
        f"embedding file {source} does not exist; extract one with "
        f"`prompt-tuning extract-variable CKPT '{EMBEDDING_PATH}' OUT.npy`"
      )
    return np.load(source)
  # Initialisers run while `init` is being traced; reading must happen eagerly.
  with jax.ensure_compile_time_eval():
    return np.asarray(convert.read_variable(source, EMBEDDING_PATH))


def load_embedding(embedding: Any) -> np.ndarray:
  """The [vocab, d_model] embedding table from an array, a `.npy` file or a checkpoint."""
  if embedding is None:
    raise ValueError(
      "this prompt initialiser needs the frozen embedding table: bind "
      "`embedding` to a checkpoint path or an embedding .npy file"
    )
  if isinstance(embedding, (str, os.PathLike)):
    table = _load_embedding_cached(os.fspath(embedding))
  else:
    table = np.asarray(embedding)
  if table.ndim != 2:
    raise ValueError(
      f"embedding table must be 2-D [vocab, d_model], got shape {table.shape}; pass the "
      "token embedding (token_embedder/embedding of the frozen checkpoint)"
    )
  return table


def _check_width(table: np.ndarray, shape: Sequence[int]) -> None:
  if len(shape) != 2 or table.shape[1] != shape[1]:
    raise ValueError(
      f"prompt shape {tuple(shape)} does not match the embedding width "
      f"{table.shape[1]} (embedding shape {table.shape}); use the embedding of the model "
      "being prompted"
    )


@gin.configurable
def sampled_vocab(
  embedding: Any = None, population_size: int = 5000, population_start: int = 3
) -> Initializer:
  """Rows of the frozen embedding drawn (without replacement when possible) from ids
  [population_start, population_start + population_size).

  SentencePiece orders pieces by frequency, so the first ids after the special ones
  (pad 0, eos 1, unk 2) are the most common tokens, as in the paper.
  """

  def init(rng: Array, shape: Sequence[int], dtype: Any = jnp.float32) -> Array:
    table = load_embedding(embedding)
    _check_width(table, shape)
    stop = min(population_start + population_size, table.shape[0])
    population = np.arange(population_start, stop)
    if population.size == 0:
      raise ValueError(
        f"no ids to sample from: population [{population_start}, "
        f"{stop}) of a {table.shape[0]}-row embedding; lower population_start or raise "
        "population_size"
      )
    replace = shape[0] > population.size
    ids = jax.random.choice(rng, jnp.asarray(population), (shape[0],), replace=replace)
    return jnp.asarray(table, dtype)[ids]

  return init


def _fill_rows(
  rows: np.ndarray, rng: Array, shape: Sequence[int], dtype: Any, fallback: Initializer, what: str
) -> Array:
  if rows.shape[0] > shape[0]:
    raise ValueError(
      f"{what} needs {rows.shape[0]} prompt positions but the prompt "
      f"length is {shape[0]}; lengthen the prompt or shorten the {what}"
    )
  rest = fallback(rng, (shape[0] - rows.shape[0], shape[1]), dtype)
  return jnp.concatenate([jnp.asarray(rows, dtype), rest], axis=0)


def _resolve_vocabulary(vocabulary: Any) -> Any:
  if vocabulary is None:
    return vocab.get_vocabulary()  # The gin-configured task vocabulary.
  return vocabulary


def vocabulary_size(vocabulary: Any) -> int:
  """The number of ids `vocabulary` produces, read here so that a file that is not a
  SentencePiece model fails with one line naming it, not with protobuf's "Wire format was
  corrupt" from deep inside seqio."""
  path = getattr(vocabulary, "sentencepiece_model_file", None)
  try:
    return int(vocabulary.vocab_size)
  except Exception as e:  # protobuf DecodeError, TensorFlow's NotFoundError, ...
    if type(e).__name__ == "DecodeError":
      raise ValueError(
        f"vocabulary file {path} is not a SentencePiece model; point "
        "get_vocabulary.spm_path at the .model file the base model was trained with"
      ) from e
    raise ValueError(
      f"cannot read the vocabulary {path or vocabulary!r} ({type(e).__name__}: "
      f"{' '.join(str(e).split())[:200]}); point get_vocabulary.spm_path at a readable "
      "SentencePiece .model file"
    ) from e


def check_vocabulary_fits(vocabulary: Any, rows: int, what: str) -> None:
  """Refuses a vocabulary with more ids than the embedding has rows: ids past the table
  would index outside it (jax clamps such gathers silently, so nothing else would tell)."""
  size = vocabulary_size(vocabulary)
  if size > rows:
    path = getattr(vocabulary, "sentencepiece_model_file", None)
    raise ValueError(
      f"{what}{f' ({path})' if path else ''} has {size} ids but the model's embedding has "
      f"only {rows} rows; use the vocabulary the base model was trained with "
      "(get_vocabulary.spm_path) or a model with network.t5_config.vocab_size >= "
      f"{size}"
    )


@gin.configurable
def class_labels(
  labels: Sequence[str] = gin.REQUIRED,
  embedding: Any = None,
  vocabulary: Any = None,
  fallback: Initializer | None = None,
) -> Initializer:
  """Row i is the mean embedding of label i's sub-tokens; the rest come from `fallback`
  (sampled vocabulary from the same embedding by default, as in the paper)."""

  def init(rng: Array, shape: Sequence[int], dtype: Any = jnp.float32) -> Array:
    table = load_embedding(embedding)
    _check_width(table, shape)
    pieces = _resolve_vocabulary(vocabulary)
    check_vocabulary_fits(pieces, table.shape[0], "the class labels' vocabulary")
    rows = []
    for label in labels:
      ids = list(pieces.encode(label))
      if not ids:
        raise ValueError(
          f"class label {label!r} tokenises to nothing; give labels of at least one "
          "character the vocabulary knows"
        )
      rows.append(table[ids].mean(axis=0))
    filler = fallback or sampled_vocab(embedding=table)
    return _fill_rows(np.stack(rows), rng, shape, dtype, filler, "class-label list")

  return init


@gin.configurable
def from_string(
  text: str = gin.REQUIRED,
  embedding: Any = None,
  vocabulary: Any = None,
  fallback: Initializer | None = None,
) -> Initializer:
  """The embedded tokens of `text` (a discrete prompt) first, the rest from `fallback`."""

  def init(rng: Array, shape: Sequence[int], dtype: Any = jnp.float32) -> Array:
    table = load_embedding(embedding)
    _check_width(table, shape)
    pieces = _resolve_vocabulary(vocabulary)
    check_vocabulary_fits(pieces, table.shape[0], "the prompt text's vocabulary")
    ids = list(pieces.encode(text))
    filler = fallback or sampled_vocab(embedding=table)
    return _fill_rows(table[ids], rng, shape, dtype, filler, "prompt text")

  return init


@gin.configurable
def from_file(path: str = gin.REQUIRED) -> Initializer:
  """A saved prompt (`.npy` of shape [P, d_model]), e.g. a released or exported one."""

  def init(rng: Array, shape: Sequence[int], dtype: Any = jnp.float32) -> Array:
    del rng
    value = load_prompt_file(path)
    if tuple(value.shape) != tuple(shape):
      raise ValueError(
        f"prompt file {path} has shape {tuple(value.shape)} but the model "
        f"expects {tuple(shape)} (prompt length x d_model); set PROMPT_LENGTH to the "
        "file's length, or pass a prompt trained on this model size"
      )
    return jnp.asarray(value, dtype)

  init.prompt_file = path  # Where evaluation looks for the run that trained it.
  return init
