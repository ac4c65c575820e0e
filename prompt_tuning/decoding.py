"""Autoregressive decoding: greedy, temperature / top-k / top-p sampling, beam search.

The functions here know nothing about T5; they drive a `tokens_to_logits` callable
one token at a time, so the model layer can wrap any cached decoder in a closure:

  tokens_to_logits(token_ids: int32[rows, 1], cache) -> (logits: [rows, vocab], cache)

`cache` is any pytree. Leaves with ndim >= 1 hold one row per decoded sequence along
their leading axis; when several decodes per example are needed (`num_decodes > 1`,
beams) those rows are repeated with `repeat_rows` (row b becomes rows b*n .. b*n+n-1)
and, for beam search, re-gathered every step. Scalar leaves (e.g. a shared cache
index) are the same for every row and are passed through unchanged. Anything else the
closure reads per row (encoder outputs, masks) must be repeated the same way by the
caller, with `repeat_rows(x, num_decodes)`.

Prompts follow T5X's "decoder prompt" convention: `inputs` is in decoder-input
(shifted-right) coordinates. `inputs[:, 0]` is the slot of the start token and is
ignored (decoding always starts from token 0, T5's BOS = pad), and a non-zero
`inputs[:, j]` (j >= 1) forces output position j - 1 to that token instead of choosing
one. With all-zero `inputs` everything is generated. For example, with eos 1:

  inputs  = [0, 5, 6, 0, 0]   # force "5 6", then generate
  outputs = [5, 6, a, b, 1]   # output length == inputs.shape[1]

Forced tokens add nothing to log-probabilities or scores and never end a sequence,
even when they are EOS; the first *generated* EOS does, and every later position is 0.

Both decoders run in `jax.lax.while_loop` and stop as soon as every sequence of the
batch is settled, so a batch whose answers are short costs few model calls. They are
jit-compatible when `tokens_to_logits` and the Python-valued options are closed over.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any
TokensToLogits = Callable[[jax.Array, PyTree], tuple[jax.Array, PyTree]]

_NEG_INF = -np.inf


# ------------------------------------------------------------------------------
# Row bookkeeping shared by sampling and beam search.
# ------------------------------------------------------------------------------


def repeat_rows(tree: PyTree, n: int) -> PyTree:
  """Repeats every row of every non-scalar leaf `n` times, keeping copies adjacent.

  Row b of the input becomes rows b*n .. b*n+n-1, which is the layout the decoders
  use for `num_decodes` samples or beams of example b. Scalars stay shared.
  """
  if n == 1:
    return tree

  def repeat(x):
    if jnp.ndim(x) == 0:
      return x
    return jnp.repeat(x, n, axis=0)

  return jax.tree_util.tree_map(repeat, tree)


def _gather_beams(tree: PyTree, parents: jax.Array) -> PyTree:
  """Selects, per example, rows of a flat [batch * beams, ...] tree by beam index.

  `parents[b, k]` names which old beam of example b becomes new beam k. The gather
  is vmapped over the example axis so that XLA sees a batched gather, which stays
  local to each shard when the batch is partitioned.
  """
  batch, beams = parents.shape

  def gather(x):
    if jnp.ndim(x) == 0:
      return x
    per_example = x.reshape((batch, beams) + x.shape[1:])
    picked = jax.vmap(lambda rows, idx: rows[idx])(per_example, parents)
    return picked.reshape(x.shape)

  return jax.tree_util.tree_map(gather, tree)


def _forced_tokens(inputs: jax.Array, length: int) -> jax.Array:
  """Output-aligned forced tokens: `forced[:, t]` != 0 forces output position t."""
  shifted = jnp.concatenate([inputs[:, 1:], jnp.zeros_like(inputs[:, :1])], axis=1)
  return shifted[:, :length].astype(jnp.int32)


def _check_inputs(inputs: jax.Array) -> None:
  if jnp.ndim(inputs) != 2:
    raise ValueError(
      f"inputs must be int[batch, max_decode_len], got shape {jnp.shape(inputs)}; "
      "pass zeros of the target shape when there is no decoder prompt"
    )
  if not jnp.issubdtype(jnp.result_type(inputs), jnp.integer):
    raise ValueError(f"inputs must hold integer token ids, got dtype {jnp.result_type(inputs)}")
  if inputs.shape[1] < 1:
    raise ValueError("inputs must have at least one position (max_decode_len >= 1)")


def _call_model(
  tokens_to_logits: TokensToLogits, tokens: jax.Array, cache: PyTree
) -> tuple[jax.Array, PyTree]:
  """Runs one decoder step and checks the logits' shape once, at trace time."""
  logits, new_cache = tokens_to_logits(tokens[:, None], cache)
  if logits.ndim != 2 or logits.shape[0] != tokens.shape[0]:
    raise ValueError(
      f"tokens_to_logits must return logits of shape [{tokens.shape[0]}, vocab], got {logits.shape}"
    )
  return logits.astype(jnp.float32), new_cache


# ------------------------------------------------------------------------------
# Temperature sampling (and greedy decoding).
# ------------------------------------------------------------------------------


def _ordered_int(x: jax.Array) -> jax.Array:
  """Maps float32 to int32 so that integer order equals float order (no NaNs)."""
  bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.int32)
  # Negative floats store sign + magnitude, so their int order is reversed.
  return jnp.where(bits < 0, jnp.iinfo(jnp.int32).min - bits, bits)


def _lowest_kept(values: jax.Array, fits: Callable[[jax.Array], jax.Array]) -> jax.Array:
  """Per row, the smallest threshold c (as `_ordered_int`) with fits(c) true.

  `fits(c)` must be monotone: false below some threshold, true from it on. The
  threshold is found by bisection over the 2**32 integer images of float32, so it
  is exact in 32 masked reductions over the vocabulary, with no sort: on CPU,
  XLA's sort or top_k of [32, 32128] logits measured about 5x slower than this.
  """
  lo = jnp.min(values, axis=-1, keepdims=True) - 1  # Invariant: fits(lo) false,
  hi = jnp.max(values, axis=-1, keepdims=True)  # fits(hi) true.

  def halve(_, bounds):
    lo, hi = bounds
    mid = (lo >> 1) + (hi >> 1) + (lo & hi & 1)  # floor((lo + hi) / 2), no overflow
    ok = fits(mid)
    return jnp.where(ok, lo, mid), jnp.where(ok, mid, hi)

  return jax.lax.fori_loop(0, 32, halve, (lo, hi))[1]


def _restrict_to_top_k(logits: jax.Array, topk: int) -> jax.Array:
  """Keeps tokens with fewer than k tokens strictly above them (ties all kept)."""
  keys = _ordered_int(logits)
  cutoff = _lowest_kept(keys, lambda c: jnp.sum(keys > c, axis=-1, keepdims=True) < topk)
  return jnp.where(keys >= cutoff, logits, _NEG_INF)


def _restrict_to_nucleus(logits: jax.Array, topp: float) -> jax.Array:
  """Keeps tokens whose more likely tokens hold less than topp of the mass.

  That is the smallest set of most likely tokens whose probability reaches topp
  (plus ties with its least likely member); the most likely token always
  survives, so a tiny topp is greedy.
  """
  probs = jax.nn.softmax(logits, axis=-1)
  keys = _ordered_int(probs)
  cutoff = _lowest_kept(
    keys, lambda c: jnp.sum(jnp.where(keys > c, probs, 0.0), axis=-1, keepdims=True) < topp
  )
  return jnp.where(keys >= cutoff, logits, _NEG_INF)


def _sample_tokens(
  logits: jax.Array, rng: jax.Array, temperature: float, topk: int, topp: float
) -> jax.Array:
  """Samples one token per row from float32 logits under the sampling options."""
  scaled = logits / temperature
  if 0 < topk < logits.shape[-1]:
    scaled = _restrict_to_top_k(scaled, topk)
  if 0.0 < topp < 1.0:
    scaled = _restrict_to_nucleus(scaled, topp)
  return jax.random.categorical(rng, scaled, axis=-1).astype(jnp.int32)


def _validate_sampling(num_decodes: int, temperature: float, topk: int, topp: float) -> None:
  if not isinstance(num_decodes, (int, np.integer)) or num_decodes < 1:
    raise ValueError(f"num_decodes must be a positive int, got {num_decodes!r}")
  if not isinstance(temperature, (int, float, np.number)):
    raise ValueError(
      f"temperature must be a Python number (it selects the code path at trace "
      f"time), got {type(temperature).__name__}"
    )
  if not math.isfinite(temperature) or temperature < 0:
    raise ValueError(f"temperature must be >= 0 (0 means greedy), got {temperature}")
  if not isinstance(topk, (int, np.integer)) or topk < 0:
    raise ValueError(f"topk must be an int >= 0 (0 disables it), got {topk!r}")
  if not 0.0 <= topp <= 1.0:
    raise ValueError(f"topp must be in [0, 1] (0 or 1 disables it), got {topp}")


def temperature_sample(
  inputs: jax.Array,
  cache: PyTree,
  tokens_to_logits: TokensToLogits,
  eos_id: int,
  *,
  decode_rng: jax.Array | None = None,
  num_decodes: int = 1,
  temperature: float = 1.0,
  topk: int = 0,
  topp: float = 0.0,
  max_decode_steps: int | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Samples `num_decodes` continuations per example; greedy when temperature is 0.

  Each step divides the logits by `temperature`, then (if enabled) keeps only the
  `topk` best tokens, then only the `topp` nucleus of what remains, and samples.
  `temperature == 0` or `topk == 1` takes the argmax instead (no randomness), for
  any topp. `topk >= vocab` and `topp` of 0 or 1 restrict nothing.

  The returned log-probabilities are deliberately those of the *unmodified* model
  (temperature 1, no top-k / top-p): the sum over generated tokens, up to and
  including the first EOS, of log_softmax(logits)[token]. That makes them
  comparable across sampling settings and with `score`-style likelihoods. Forced
  prompt tokens and the padding after EOS contribute nothing.

  Args:
    inputs: int[batch, max_decode_len] decoder prompt (see the module docstring).
    cache: decoder cache for `batch` rows; repeated `num_decodes` times here.
    tokens_to_logits: one decoder step, see the module docstring.
    eos_id: the token that ends a sequence.
    decode_rng: PRNG key; defaults to `jax.random.PRNGKey(0)`. Step t draws
      with `fold_in(decode_rng, t)`, so no key is carried through the loop.
    num_decodes: samples per example; the cache rows are replicated.
    temperature: Python float >= 0.
    topk: restrict to the k most likely tokens; 0 disables.
    topp: restrict to the nucleus of this probability mass; 0 disables.
    max_decode_steps: at most this many *generated* (non-forced) tokens per
      sequence; the rest is padding. None: fill the whole length.

  Returns:
    sequences: int32[batch, num_decodes, max_decode_len], 0 after EOS.
    log_probs: float32[batch, num_decodes]. Both sorted by log_probs, best first.
  """
  _check_inputs(inputs)
  _validate_sampling(num_decodes, temperature, topk, topp)
  if max_decode_steps is not None and (
    not isinstance(max_decode_steps, (int, np.integer)) or max_decode_steps < 1
  ):
    raise ValueError(f"max_decode_steps must be a positive int or None, got {max_decode_steps!r}")
  if decode_rng is None:
    decode_rng = jax.random.PRNGKey(0)
  batch, length = inputs.shape
  forced = repeat_rows(_forced_tokens(inputs, length), num_decodes)
  # Last position (exclusive) each row may write; forced tokens do not count as steps.
  if max_decode_steps is None:
    row_end = jnp.full((batch * num_decodes,), length, jnp.int32)
  else:
    num_forced = jnp.sum(forced != 0, axis=1).astype(jnp.int32)
    row_end = jnp.minimum(length, num_forced + max_decode_steps)

  temperature = float(temperature)
  if temperature == 0.0 or topk == 1:  # Greedy: no randomness.

    def choose(logits: jax.Array, step: jax.Array) -> jax.Array:
      del step
      return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  else:

    def choose(logits: jax.Array, step: jax.Array) -> jax.Array:
      return _sample_tokens(logits, jax.random.fold_in(decode_rng, step), temperature, topk, topp)

  sequences, log_probs = _sampling_loop(
    tokens_to_logits, repeat_rows(cache, num_decodes), forced, row_end, eos_id, choose
  )

  sequences = sequences.reshape(batch, num_decodes, length)
  log_probs = log_probs.reshape(batch, num_decodes)
  # top_k sorts descending and keeps the earlier sample first on ties.
  log_probs, order = jax.lax.top_k(log_probs, num_decodes)
  sequences = jnp.take_along_axis(sequences, order[:, :, None], axis=1)
  return sequences, log_probs


class _SamplingState(NamedTuple):
  step: jax.Array  # Scalar: the output position written next.
  last_tokens: jax.Array  # [rows]: fed to the model at this step.
  sequences: jax.Array  # [rows, length]
  log_probs: jax.Array  # [rows]: the unmodified model's, of generated tokens.
  ended: jax.Array  # [rows]: EOS generated or the row's end reached.
  cache: PyTree


def _sampling_loop(
  tokens_to_logits: TokensToLogits,
  cache: PyTree,
  forced: jax.Array,
  row_end: jax.Array,
  eos_id: int,
  choose: Callable[[jax.Array, jax.Array], jax.Array],
) -> tuple[jax.Array, jax.Array]:
  """Decodes every row until all have ended: `choose(logits, step)` picks the token of a
  row where no token is forced. Returns (sequences [rows, length], log_probs [rows])."""
  rows, length = forced.shape

  def cond_fn(state: _SamplingState) -> jax.Array:
    return (state.step < length) & ~jnp.all(state.ended)

  def body_fn(state: _SamplingState) -> _SamplingState:
    step, ended = state.step, state.ended
    logits, cache = _call_model(tokens_to_logits, state.last_tokens, state.cache)
    chosen = choose(logits, step)
    forced_now = jax.lax.dynamic_index_in_dim(forced, step, axis=1, keepdims=False)
    is_forced = forced_now != 0
    tokens = jnp.where(is_forced, forced_now, chosen)
    tokens = jnp.where(ended, 0, tokens)

    token_log_probs = jnp.take_along_axis(
      jax.nn.log_softmax(logits, axis=-1), tokens[:, None], axis=-1
    )[:, 0]
    log_probs = state.log_probs + jnp.where(ended | is_forced, 0.0, token_log_probs)
    sequences = jax.lax.dynamic_update_index_in_dim(state.sequences, tokens, step, axis=1)
    ended = ended | (~is_forced & (tokens == eos_id)) | (step + 1 >= row_end)
    return _SamplingState(step + 1, tokens, sequences, log_probs, ended, cache)

  init = _SamplingState(
    step=jnp.zeros((), jnp.int32),
    last_tokens=jnp.zeros((rows,), jnp.int32),
    sequences=jnp.zeros((rows, length), jnp.int32),
    log_probs=jnp.zeros((rows,), jnp.float32),
    ended=jnp.zeros((rows,), jnp.bool_),
    cache=cache,
  )
  final = jax.lax.while_loop(cond_fn, body_fn, init)
  return final.sequences, final.log_probs


# ------------------------------------------------------------------------------
# Beam search.
# ------------------------------------------------------------------------------


def brevity_penalty(alpha: float, length: jax.Array | int) -> jax.Array:
  """T5X's length normaliser ((5 + length) / 6) ** alpha (Wu et al., 2016)."""
  return jnp.power((5.0 + jnp.asarray(length, jnp.float32)) / 6.0, alpha)


def beam_search(
  inputs: jax.Array,
  cache: PyTree,
  tokens_to_logits: TokensToLogits,
  eos_id: int,
  *,
  num_decodes: int = 4,
  alpha: float = 0.6,
  max_decode_len: int | None = None,
) -> tuple[jax.Array, jax.Array]:
  """The `num_decodes` best sequences by length-penalised log-probability.

  A sequence's score is its log-probability (generated tokens up to and
  including EOS; forced tokens count 0) divided by `brevity_penalty(alpha, n)`
  with n its length including EOS and any forced prefix, as in T5X.

  Each step extends every live beam by every token, keeps the 2 * num_decodes best
  candidates (so that num_decodes live beams survive even if many end at once),
  moves those ending in EOS to a finished set of the num_decodes best scores, and
  keeps the best non-ended ones live. Unlike T5X, a beam that reaches
  `max_decode_len` without EOS is also finished (scored at that length), so that
  sequences that never emit EOS are candidates rather than a fallback. The search
  stops early once, for every example, the finished set is full and no live beam
  can beat its worst member whatever it appends: appended tokens only lower the
  log-probability, so the bound is live / max(penalty over the remaining lengths).

  Args:
    inputs: int[batch, length] decoder prompt (see the module docstring).
    cache: decoder cache for `batch` rows; repeated `num_decodes` times here.
    tokens_to_logits: one decoder step, see the module docstring.
    eos_id: the token that ends a sequence.
    num_decodes: beam size, also the number of sequences returned.
    alpha: brevity-penalty exponent; 0 ranks by plain log-probability.
    max_decode_len: output length, at most `inputs.shape[1]` (the default).

  Returns:
    sequences: int32[batch, num_decodes, max_decode_len], 0 after EOS.
    scores: float32[batch, num_decodes], best first. A slot is -inf (and its
    sequence all 0) only when fewer than num_decodes distinct sequences exist.
  """
  _check_inputs(inputs)
  if not isinstance(num_decodes, (int, np.integer)) or num_decodes < 1:
    raise ValueError(f"num_decodes must be a positive int, got {num_decodes!r}")
  if not math.isfinite(alpha):
    raise ValueError(f"alpha must be a finite number, got {alpha}")
  batch, input_length = inputs.shape
  length = input_length if max_decode_len is None else max_decode_len
  if not isinstance(length, (int, np.integer)) or not 1 <= length <= input_length:
    raise ValueError(
      f"max_decode_len must be an int in [1, {input_length}] (inputs.shape[1]), "
      f"got {max_decode_len!r}"
    )
  forced = _forced_tokens(inputs, length)
  final = jax.lax.while_loop(
    functools.partial(_beam_search_continues, alpha=alpha, length=length),
    functools.partial(_beam_search_step, tokens_to_logits, forced, eos_id, alpha),
    _beam_search_start(batch, num_decodes, length, cache),
  )
  return (
    jnp.where(final.finished_flags[:, :, None], final.finished_seqs, 0),
    final.finished_scores,
  )


class _BeamState(NamedTuple):
  step: jax.Array  # Scalar: the output position written next.
  live_log_probs: jax.Array  # [batch, beams]; -inf for a dead beam.
  live_seqs: jax.Array  # [batch, beams, length]
  finished_seqs: jax.Array  # [batch, beams, length]
  finished_scores: jax.Array  # [batch, beams], length-penalised, best first.
  finished_flags: jax.Array  # [batch, beams]: whether the slot holds a sequence.
  last_tokens: jax.Array  # [batch, beams]: fed to the model at this step.
  cache: PyTree  # batch * beams rows.


def _beam_search_start(batch: int, beams: int, length: int, cache: PyTree) -> _BeamState:
  # Only beam 0 is live at first, so the first step does not pick duplicates.
  initial_live = jnp.concatenate(
    [jnp.zeros((batch, 1), jnp.float32), jnp.full((batch, beams - 1), _NEG_INF, jnp.float32)],
    axis=1,
  )
  return _BeamState(
    step=jnp.zeros((), jnp.int32),
    live_log_probs=initial_live,
    live_seqs=jnp.zeros((batch, beams, length), jnp.int32),
    finished_seqs=jnp.zeros((batch, beams, length), jnp.int32),
    finished_scores=jnp.full((batch, beams), _NEG_INF, jnp.float32),
    finished_flags=jnp.zeros((batch, beams), jnp.bool_),
    last_tokens=jnp.zeros((batch, beams), jnp.int32),
    cache=repeat_rows(cache, beams),
  )


def _beam_search_continues(state: _BeamState, *, alpha: float, length: int) -> jax.Array:
  """False once every example is settled: its finished set is full and no live beam can
  beat the worst member, or nothing is live."""
  # Lengths still reachable are step + 1 .. length; the penalty is monotone in length,
  # so its maximum over them is at one of the two ends.
  largest_penalty = jnp.maximum(
    brevity_penalty(alpha, state.step + 1), brevity_penalty(alpha, length)
  )
  best_live = jnp.max(state.live_log_probs, axis=1) / largest_penalty
  settled = jnp.all(state.finished_flags, axis=1) & (
    jnp.min(state.finished_scores, axis=1) >= best_live
  )
  nothing_live = best_live == _NEG_INF
  return (state.step < length) & ~jnp.all(settled | nothing_live)


def _beam_search_step(
  tokens_to_logits: TokensToLogits, forced: jax.Array, eos_id: int, alpha: float, state: _BeamState
) -> _BeamState:
  """Extends every live beam by every token and keeps the best finished and live ones."""
  batch, beams = state.live_log_probs.shape
  length = forced.shape[1]
  step = state.step
  logits, cache = _call_model(tokens_to_logits, state.last_tokens.reshape(-1), state.cache)
  vocab = logits.shape[-1]
  token_log_probs = jax.nn.log_softmax(logits, axis=-1).reshape(batch, beams, vocab)

  # A forced position offers each beam only the forced token, at no cost.
  forced_now = jax.lax.dynamic_index_in_dim(forced, step, axis=1, keepdims=False)
  is_forced = forced_now != 0
  forced_only = jnp.where(
    jnp.arange(vocab)[None, None, :] == forced_now[:, None, None], 0.0, _NEG_INF
  )
  token_log_probs = jnp.where(is_forced[:, None, None], forced_only, token_log_probs)

  # The best 2 * beams extensions of all live beams of each example.
  candidates = (state.live_log_probs[:, :, None] + token_log_probs).reshape(batch, -1)
  cand_log_probs, flat_index = jax.lax.top_k(candidates, min(2 * beams, beams * vocab))
  cand_parents = flat_index // vocab
  cand_tokens = (flat_index % vocab).astype(jnp.int32)
  cand_seqs = jnp.take_along_axis(state.live_seqs, cand_parents[:, :, None], axis=1)
  cand_seqs = jax.lax.dynamic_update_index_in_dim(cand_seqs, cand_tokens, step, axis=2)

  real = cand_log_probs > _NEG_INF  # Extensions of dead beams are not candidates.
  ends_here = real & (((cand_tokens == eos_id) & ~is_forced[:, None]) | (step + 1 >= length))

  # Finished set: the best `beams` of the old members and the newly ended.
  new_scores = jnp.where(ends_here, cand_log_probs / brevity_penalty(alpha, step + 1), _NEG_INF)
  all_scores = jnp.concatenate([state.finished_scores, new_scores], axis=1)
  all_flags = jnp.concatenate([state.finished_flags, ends_here], axis=1)
  all_seqs = jnp.concatenate([state.finished_seqs, cand_seqs], axis=1)
  finished_scores, keep = jax.lax.top_k(all_scores, beams)
  finished_flags = jnp.take_along_axis(all_flags, keep, axis=1)
  finished_seqs = jnp.take_along_axis(all_seqs, keep[:, :, None], axis=1)

  # Live set: the best `beams` candidates that did not end.
  live_candidates = jnp.where(ends_here, _NEG_INF, cand_log_probs)
  live_log_probs, keep = jax.lax.top_k(live_candidates, beams)
  return _BeamState(
    step=step + 1,
    live_log_probs=live_log_probs,
    live_seqs=jnp.take_along_axis(cand_seqs, keep[:, :, None], axis=1),
    finished_seqs=finished_seqs,
    finished_scores=finished_scores,
    finished_flags=finished_flags,
    last_tokens=jnp.take_along_axis(cand_tokens, keep, axis=1),
    cache=_gather_beams(cache, jnp.take_along_axis(cand_parents, keep, axis=1)),
  )
