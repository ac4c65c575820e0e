"""`prompt-tuning recycle`: move a prompt trained on one frozen model to another, without
training on the second (prompt recycling, Lester et al. 2022).

A map from the source model's input-embedding space to the target's is fit on the two
models' embeddings of the same words, then applied to the prompt. The three recyclers:

- `v2v-nn`: a ReLU MLP (one hidden layer of 4 x E_target units) from a source word
  vector to the target's, trained with optax's L2 loss (half the squared error, averaged)
  by Adam at 3e-4, batch 50, 25 epochs, the words reshuffled every epoch; the prompt's
  rows go through it.
- `v2v-lin`: the least-squares linear map W with source_words @ W ~ target_words; the
  prompt becomes prompt @ W.
- `lin-comb`: each prompt row as the least-squares (minimum-norm) combination of the
  source word vectors; the same weights applied to the target's word vectors. With more
  words than dimensions and source word vectors of full rank, the minimum-norm weights
  make this the same map as `v2v-lin` (up to rounding); both are kept, as upstream has
  both.

The words: upstream fits on 4,000 English words, skipping the 1,000 most frequent, from a
16,779-word list that is not shipped with T5 and that we cannot download. We use an
offline filter over the SentencePiece vocabulary both models share instead
(`recycling_words`; docs/transfer.md, "Prompt recycling"): pieces that are a whole
lower-case ASCII word with the word-start mark (`▁dog`), ranked by piece id (SentencePiece
orders pieces by score, so low ids are frequent pieces), skipping the first 1,000 and
taking the next 4,000. On a vocabulary with fewer candidates the window slides towards
the start, and a vocabulary with at most 4,000 candidates uses them all.
"""

from __future__ import annotations

import argparse
import os
import re
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import seqio

from prompt_tuning import convert
from prompt_tuning.data import vocab as vocab_lib

EMBEDDING_NAME = "token_embedder/embedding"
SKIP_WORDS = 1000
NUM_WORDS = 4000
_WORD_PIECE = re.compile("\u2581[a-z]+")

# v2v-nn's training, as upstream.
HIDDEN_MULTIPLIER = 4
LEARNING_RATE = 3e-4
BATCH_SIZE = 50
EPOCHS = 25


def recycling_words(
  pieces: Sequence[str], skip: int = SKIP_WORDS, size: int = NUM_WORDS
) -> np.ndarray:
  """Ids of the vocabulary words the map is fit on: whole lower-case word pieces (`▁dog`)
  by id, the `size` after the first `skip`, the window moved earlier when the vocabulary
  ends first (all of them when there are at most `size`)."""
  if skip < 0 or size < 1:
    raise ValueError(f"skip must be >= 0 and size >= 1, got skip={skip} size={size}")
  candidates = np.array([i for i, p in enumerate(pieces) if _WORD_PIECE.fullmatch(p)], np.int64)
  start = max(0, min(skip, len(candidates) - size))
  return candidates[start : start + size]


def _check_pairs(source_words: np.ndarray, target_words: np.ndarray) -> None:
  if source_words.ndim != 2 or target_words.ndim != 2:
    raise ValueError(
      f"word embeddings must be [words, width], got {source_words.shape} and {target_words.shape}"
    )
  if len(source_words) != len(target_words) or len(source_words) < 2:
    raise ValueError(
      f"need the same words (at least 2) from both models, got {len(source_words)} source "
      f"and {len(target_words)} target vectors"
    )


def fit_linear(source_words: np.ndarray, target_words: np.ndarray) -> np.ndarray:
  """v2v-lin's map: W [E_source, E_target] minimising ||source_words W - target_words||."""
  _check_pairs(source_words, target_words)
  weights, *_ = np.linalg.lstsq(
    np.asarray(source_words, np.float64), np.asarray(target_words, np.float64), rcond=None
  )
  return weights


def linear_combination(
  prompt: np.ndarray, source_words: np.ndarray, target_words: np.ndarray
) -> np.ndarray:
  """lin-comb: weights x [P, words] with x source_words ~ prompt (least squares, minimum
  norm when there are more words than dimensions), applied as x target_words."""
  _check_pairs(source_words, target_words)
  coefficients, *_ = np.linalg.lstsq(
    np.asarray(source_words, np.float64).T, np.asarray(prompt, np.float64).T, rcond=None
  )
  return coefficients.T @ np.asarray(target_words, np.float64)


class _VectorToVector(nn.Module):
  """v2v-nn's network: Dense(hidden) -> ReLU -> Dense(width)."""

  hidden: int
  width: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return nn.Dense(self.width)(nn.relu(nn.Dense(self.hidden)(x)))


def fit_network(
  source_words: np.ndarray,
  target_words: np.ndarray,
  *,
  epochs: int = EPOCHS,
  batch_size: int = BATCH_SIZE,
  learning_rate: float = LEARNING_RATE,
  seed: int = 0,
) -> tuple[Callable[[np.ndarray], np.ndarray], list[float]]:
  """v2v-nn: trains the MLP on (source, target) word pairs, shuffled every epoch (the
  last batch of an epoch may be smaller). Returns the fitted map and each epoch's mean
  training loss."""
  _check_pairs(source_words, target_words)
  source_words = np.asarray(source_words, np.float32)
  target_words = np.asarray(target_words, np.float32)
  width = target_words.shape[1]
  network = _VectorToVector(hidden=HIDDEN_MULTIPLIER * width, width=width)
  params = network.init(jax.random.PRNGKey(seed), source_words[:1])["params"]
  optimizer = optax.adam(learning_rate)
  opt_state = optimizer.init(params)

  def loss_fn(params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean(optax.l2_loss(network.apply({"params": params}, x), y))

  @jax.jit
  def step(params: Any, opt_state: Any, x: jax.Array, y: jax.Array):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  key = jax.random.PRNGKey(seed)
  history = []
  for _ in range(epochs):
    shuffle_key, key = jax.random.split(key)
    order = np.asarray(jnp.argsort(jax.random.uniform(shuffle_key, (len(source_words),))))
    losses, sizes = [], []
    for start in range(0, len(order), batch_size):
      batch = order[start : start + batch_size]
      params, opt_state, loss = step(params, opt_state, source_words[batch], target_words[batch])
      losses.append(float(loss))
      sizes.append(len(batch))
    history.append(float(np.average(losses, weights=sizes)))

  apply = jax.jit(lambda x: network.apply({"params": params}, x))
  return lambda x: np.asarray(apply(np.asarray(x, np.float32)), np.float64), history


METHODS = ("v2v-nn", "v2v-lin", "lin-comb")


def recycle(
  prompt: np.ndarray,
  source_words: np.ndarray,
  target_words: np.ndarray,
  method: str,
  *,
  seed: int = 0,
) -> np.ndarray:
  """The prompt [P, E_source] as a prompt for the target model [P, E_target], float32."""
  prompt = np.asarray(prompt)
  if prompt.ndim != 2 or prompt.shape[1] != np.shape(source_words)[1]:
    raise ValueError(
      f"the prompt has shape {prompt.shape} but the source model's embedding width is "
      f"{np.shape(source_words)[1]}; pass the source model the prompt was trained on"
    )
  if method == "v2v-lin":
    recycled = prompt.astype(np.float64) @ fit_linear(source_words, target_words)
  elif method == "lin-comb":
    recycled = linear_combination(prompt, source_words, target_words)
  elif method == "v2v-nn":
    mapping, _ = fit_network(source_words, target_words, seed=seed)
    recycled = mapping(prompt)
  else:
    raise ValueError(f"unknown recycling method {method!r}; choose one of {', '.join(METHODS)}")
  return recycled.astype(np.float32)


def read_embedding(checkpoint: str, role: str) -> np.ndarray:
  """A model's input embedding, from a checkpoint of any format `convert` reads."""
  if not os.path.exists(checkpoint) and "://" not in checkpoint:
    raise ValueError(
      f"{role} checkpoint {checkpoint} does not exist; pass the frozen {role} model's "
      "checkpoint (its token embedding is read from it)"
    )
  return convert.read_variable(checkpoint, EMBEDDING_NAME)


def _read_prompt(path: str) -> np.ndarray:
  if not os.path.isfile(path):
    raise ValueError(
      f"prompt file {path} does not exist; pass a [length, d_model] .npy, e.g. "
      "MODEL_DIR/numpy_checkpoints/checkpoint_N/encoder.prompt.prompt.npy"
    )
  prompt = np.load(path, allow_pickle=False)
  if prompt.ndim != 2:
    raise ValueError(f"prompt {path} has shape {prompt.shape}; expected [length, d_model]")
  return prompt


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog="prompt-tuning recycle",
    description="Recycle a prompt trained on a source model for a target model (Lester "
    "et al. 2022): fit a map between the two models' word embeddings and apply it.",
  )
  parser.add_argument("--prompt", required=True, help="the source model's prompt .npy")
  parser.add_argument(
    "--source-checkpoint", required=True, help="the frozen model the prompt was trained on"
  )
  parser.add_argument("--target-checkpoint", required=True, help="the frozen model to move it to")
  parser.add_argument("--method", required=True, choices=METHODS)
  parser.add_argument("--out", required=True, help="the recycled prompt's .npy path")
  parser.add_argument(
    "--vocab",
    default=vocab_lib.DEFAULT_SPM_PATH,
    help="SentencePiece model the two models share (default: T5's, %(default)s)",
  )
  parser.add_argument(
    "--skip-words", type=int, default=SKIP_WORDS, help="most frequent words left out"
  )
  parser.add_argument("--num-words", type=int, default=NUM_WORDS, help="words the map is fit on")
  parser.add_argument("--seed", type=int, default=0, help="v2v-nn's initialisation and shuffling")
  args = parser.parse_args(argv)
  if not args.out.endswith(".npy"):
    raise ValueError(f"--out {args.out} must name a .npy file")
  prompt = _read_prompt(args.prompt)
  source = read_embedding(args.source_checkpoint, "source")
  target = read_embedding(args.target_checkpoint, "target")
  if prompt.shape[1] != source.shape[1]:
    raise ValueError(
      f"prompt width {prompt.shape[1]} ({args.prompt}) does not match the source "
      f"embedding width {source.shape[1]} ({args.source_checkpoint}); pass the model "
      "the prompt was trained on as --source-checkpoint"
    )
  if "://" not in args.vocab and not os.path.isfile(args.vocab):
    raise ValueError(f"SentencePiece model {args.vocab} does not exist; pass --vocab")
  processor = seqio.SentencePieceVocabulary(args.vocab).tokenizer
  pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
  words = recycling_words(pieces, args.skip_words, args.num_words)
  rows = min(len(source), len(target))
  if len(words) < 2 or words[-1] >= rows:
    raise ValueError(
      f"the vocabulary {args.vocab} gives {len(words)} word ids (up to "
      f"{words[-1] if len(words) else None}) but the embeddings have {len(source)} and "
      f"{len(target)} rows; pass the --vocab both models were trained with"
    )
  recycled = recycle(prompt, source[words], target[words], args.method, seed=args.seed)
  directory = os.path.dirname(os.path.abspath(args.out))
  os.makedirs(directory, exist_ok=True)
  np.save(args.out, recycled)
  print(
    f"recycled a {prompt.shape[0]}-position prompt with {args.method} over {len(words)} "
    f"words: width {prompt.shape[1]} -> {recycled.shape[1]}, saved to {args.out}"
  )
  return 0
