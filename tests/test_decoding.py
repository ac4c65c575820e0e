"""Tests of prompt_tuning.decoding against a toy decoder with a numpy twin.

The toy decoder's next-token logits depend on the previous and current token (kept
per row in the cache), on how often each token was fed so far (a per-row [rows, vocab]
cache leaf) and on a shared scalar step index. A wrong beam gather or an expanded
scalar therefore changes the results, and a step-by-step numpy rollout gives the
exact expected outputs. Every decoder runs under jax.jit.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning import decoding

EOS = 1
PAD_LOGIT = -1e9  # The toy model never emits the pad token 0, so 0 always means padding.


REPEAT_PENALTY = 0.5


def toy_tokens_to_logits(params, token_ids, cache):
  """logits = pair[prev, cur] + position[index] - REPEAT_PENALTY * counts."""
  cur = token_ids[:, 0]
  rows = cache["rows"]
  logits = (
    params["pair"][rows["prev"], cur]
    + params["position"][cache["index"]]
    - REPEAT_PENALTY * rows["counts"]
  )
  new_rows = {"prev": cur, "counts": rows["counts"] + jax.nn.one_hot(cur, params["pair"].shape[0])}
  return logits, {"rows": new_rows, "index": cache["index"] + 1}


@functools.lru_cache(maxsize=None)
def _jitted(decoder: str, options: tuple):
  """One compiled decoder per option set; the model tables are arguments, so
  tests with the same shapes and options share the compilation (threefry
  sampling takes seconds to compile on a small CPU)."""
  options = dict(options)
  if decoder == "sample":
    return jax.jit(
      lambda params, inputs, cache, rng: decoding.temperature_sample(
        inputs,
        cache,
        functools.partial(toy_tokens_to_logits, params),
        EOS,
        decode_rng=rng,
        **options,
      )
    )
  return jax.jit(
    lambda params, inputs, cache: decoding.beam_search(
      inputs, cache, functools.partial(toy_tokens_to_logits, params), EOS, **options
    )
  )


@dataclasses.dataclass(frozen=True)
class ToyDecoder:
  """Random tables for `toy_tokens_to_logits`, its numpy twin, and jitted decoders."""

  pair: np.ndarray  # [vocab, vocab, vocab]
  position: np.ndarray  # [max_len + 1, vocab]

  @classmethod
  def create(
    cls, vocab: int = 10, max_len: int = 8, seed: int = 0, eos_bias: float = 0.0, scale: float = 2.0
  ) -> "ToyDecoder":
    rng = np.random.default_rng(seed)
    pair = rng.normal(size=(vocab, vocab, vocab)) * scale
    pair[..., 0] = PAD_LOGIT
    pair[..., EOS] += eos_bias
    position = rng.normal(size=(max_len + 1, vocab)) * 0.5
    return cls(pair=pair, position=position)

  @property
  def vocab(self) -> int:
    return self.pair.shape[0]

  @property
  def params(self) -> dict:
    return {
      "pair": jnp.asarray(self.pair, jnp.float32),
      "position": jnp.asarray(self.position, jnp.float32),
    }

  def init_cache(self, first_prev) -> dict:
    first_prev = np.asarray(first_prev, np.int32)
    return {
      "rows": {
        "prev": jnp.asarray(first_prev),
        "counts": jnp.zeros((len(first_prev), self.vocab), jnp.float32),
      },
      "index": jnp.zeros((), jnp.int32),
    }

  def tokens_to_logits(self, token_ids, cache):
    return toy_tokens_to_logits(self.params, token_ids, cache)

  def sample(self, inputs, first_prev, rng=None, **options):
    """temperature_sample under jit; returns numpy arrays."""
    rng = jax.random.PRNGKey(0) if rng is None else rng
    fn = _jitted("sample", tuple(sorted(options.items())))
    inputs = jnp.asarray(inputs, jnp.int32)
    out = fn(self.params, inputs, self.init_cache(first_prev), rng)
    return tuple(np.asarray(x) for x in out)

  def beam(self, inputs, first_prev, **options):
    """beam_search under jit; returns numpy arrays."""
    fn = _jitted("beam", tuple(sorted(options.items())))
    out = fn(self.params, jnp.asarray(inputs, jnp.int32), self.init_cache(first_prev))
    return tuple(np.asarray(x) for x in out)

  # numpy twin ------------------------------------------------------------------

  def step_log_probs(self, prev0: int, fed: list[int]) -> np.ndarray:
    """log_softmax of the logits after feeding `fed` (fed[0] is BOS 0)."""
    prev, counts = prev0, np.zeros(self.vocab)
    for index, cur in enumerate(fed):
      logits = self.pair[prev, cur] + self.position[index] - REPEAT_PENALTY * counts
      counts[cur] += 1
      prev = cur
    logits = logits - logits.max()
    return logits - np.log(np.exp(logits).sum())

  def sequence_log_prob(self, prev0: int, tokens, forced=None) -> float:
    """Sum of log-probs of generated tokens up to and including the first EOS."""
    total, fed = 0.0, [0]
    for t, token in enumerate(tokens):
      is_forced = forced is not None and forced[t] != 0
      if not is_forced:
        total += self.step_log_probs(prev0, fed)[token]
        if token == EOS:
          break
      fed.append(int(token))
    return total

  def greedy(self, prev0: int, length: int, forced=None) -> tuple[np.ndarray, float]:
    tokens, fed, total = np.zeros(length, np.int64), [0], 0.0
    for t in range(length):
      if forced is not None and forced[t] != 0:
        token = forced[t]
      else:
        log_probs = self.step_log_probs(prev0, fed)
        token = int(np.argmax(log_probs))
        total += log_probs[token]
      tokens[t] = token
      fed.append(token)
      if token == EOS and (forced is None or forced[t] == 0):
        break
    return tokens, total


def _penalty(alpha: float, length: int) -> float:
  return ((5.0 + length) / 6.0) ** alpha


def _length(tokens) -> int:
  """Length including EOS, or the full length when there is none."""
  tokens = list(tokens)
  return tokens.index(EOS) + 1 if EOS in tokens else len(tokens)


def _assert_padded_after_eos(sequences: np.ndarray) -> None:
  for row in sequences.reshape(-1, sequences.shape[-1]):
    n = _length(row)
    assert np.all(row[:n] != 0), row
    assert np.all(row[n:] == 0), row


PREVS = [2, 5, 7]  # Different per-row cache state, so batch rows decode differently.
LENGTH = 8  # Most tests share vocab 10, this length and batch 3, hence compilations.
ZEROS = np.zeros((3, LENGTH), np.int32)
GREEDY = {"temperature": 0.0}
SAMPLE = {"num_decodes": 8, "temperature": 1.0}
BEAM = {"num_decodes": 4, "alpha": 0.6}


# ------------------------------------------------------------------------------
# Greedy
# ------------------------------------------------------------------------------


def test_greedy_equals_numpy_argmax_rollout():
  model = ToyDecoder.create(seed=0, eos_bias=1.5)
  sequences, log_probs = model.sample(ZEROS, PREVS, **GREEDY)
  assert sequences.shape == (3, 1, LENGTH) and sequences.dtype == np.int32
  assert log_probs.shape == (3, 1) and log_probs.dtype == np.float32
  lengths = []
  for b, prev in enumerate(PREVS):
    expected, expected_lp = model.greedy(prev, LENGTH)
    np.testing.assert_array_equal(sequences[b, 0], expected)
    np.testing.assert_allclose(log_probs[b, 0], expected_lp, rtol=1e-5, atol=1e-5)
    lengths.append(_length(expected))
  assert len(set(lengths)) > 1, "the fixture should give rows of different lengths"


def test_greedy_with_forced_prefix():
  model = ToyDecoder.create(seed=1, eos_bias=-1e9)
  inputs = ZEROS.copy()
  inputs[0, 1:3] = [5, 9]  # Shifted-right prompt: forces outputs 0 and 1.
  inputs[2, 1:4] = [4, EOS, 6]  # A forced EOS does not end the sequence.
  sequences, log_probs = model.sample(inputs, PREVS, **GREEDY)
  for b, prev in enumerate(PREVS):
    forced = np.append(inputs[b, 1:], 0)
    expected, expected_lp = model.greedy(prev, LENGTH, forced=forced)
    np.testing.assert_array_equal(sequences[b, 0], expected)
    np.testing.assert_allclose(log_probs[b, 0], expected_lp, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(sequences[0, 0, :2], [5, 9])
  np.testing.assert_array_equal(sequences[2, 0, :3], [4, EOS, 6])
  assert np.all(sequences[2, 0] != 0)


def test_max_decode_steps_counts_generated_tokens_only():
  model = ToyDecoder.create(seed=2, eos_bias=-1e9)
  inputs = ZEROS.copy()
  inputs[1, 1:3] = [3, 4]
  sequences, _ = model.sample(inputs, PREVS, max_decode_steps=2, **GREEDY)
  np.testing.assert_array_equal(np.count_nonzero(sequences[:, 0], axis=-1), [2, 4, 2])
  full, _ = model.sample(inputs, PREVS, **GREEDY)
  np.testing.assert_array_equal(sequences[0, 0, :2], full[0, 0, :2])
  np.testing.assert_array_equal(sequences[1, 0, :4], full[1, 0, :4])


# ------------------------------------------------------------------------------
# Beam search
# ------------------------------------------------------------------------------


def test_beam_of_one_equals_greedy_when_eos_is_never_a_candidate():
  # With one beam, the live path is the greedy path; only a finished EOS
  # alternative could differ, and here EOS never ranks in the top two.
  model = ToyDecoder.create(seed=3, eos_bias=-1e9)
  sequences, scores = model.beam(ZEROS, PREVS, num_decodes=1, alpha=0.6)
  assert sequences.shape == (3, 1, LENGTH) and scores.shape == (3, 1)
  for b, prev in enumerate(PREVS):
    expected, expected_lp = model.greedy(prev, LENGTH)
    np.testing.assert_array_equal(sequences[b, 0], expected)
    np.testing.assert_allclose(
      scores[b, 0], expected_lp / _penalty(0.6, LENGTH), rtol=1e-5, atol=1e-5
    )


def test_beam_of_one_is_never_worse_than_greedy():
  # Greedy's own result is always among the finished candidates of one beam.
  model = ToyDecoder.create(seed=4, eos_bias=1.5)
  _, scores = model.beam(ZEROS, PREVS, num_decodes=1, alpha=0.6)
  for b, prev in enumerate(PREVS):
    expected, expected_lp = model.greedy(prev, LENGTH)
    greedy_score = expected_lp / _penalty(0.6, _length(expected))
    assert scores[b, 0] >= greedy_score - 1e-5


def _brute_force(model: ToyDecoder, prev0: int, length: int, alpha: float):
  """All distinct outputs (cut at the first EOS, or full length) with scores."""
  results = {}
  for tokens in itertools.product(range(1, model.vocab), repeat=length):
    n = _length(tokens)
    padded = tuple(tokens[:n]) + (0,) * (length - n)
    if padded not in results:
      lp = model.sequence_log_prob(prev0, padded)
      results[padded] = lp / _penalty(alpha, n)
  return sorted(results.items(), key=lambda item: -item[1])


@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_beam_search_matches_brute_force(alpha):
  # vocab 5 = pad, EOS and 3 other tokens; length 5. With 3**4 beams nothing that
  # could rank in the top set is ever pruned, so the result must be exact.
  length, beams = 5, 81
  model = ToyDecoder.create(vocab=5, max_len=length, seed=5, eos_bias=0.5, scale=1.0)
  prevs = [2, 4]
  sequences, scores = model.beam(
    np.zeros((2, length), np.int32), prevs, num_decodes=beams, alpha=alpha
  )
  assert sequences.shape == (2, beams, length)
  for b, prev in enumerate(prevs):
    everything = _brute_force(model, prev, length, alpha)
    expected = everything[:beams]
    np.testing.assert_array_equal(sequences[b], np.array([s for s, _ in expected]))
    np.testing.assert_allclose(scores[b], [score for _, score in expected], rtol=1e-5, atol=1e-5)
    if alpha == 0.0:
      # alpha = 0 ranks by plain log-probability: the top is the most likely output.
      best_lp = max(model.sequence_log_prob(prev, s) for s, _ in everything)
      np.testing.assert_allclose(scores[b, 0], best_lp, rtol=1e-5)


def test_beam_search_small_beam_is_consistent():
  # With few beams the search is not exhaustive, but every returned sequence must
  # be distinct, padded after EOS, sorted, and carry exactly its own score.
  model = ToyDecoder.create(seed=6, eos_bias=1.0)
  sequences, scores = model.beam(ZEROS, PREVS, **BEAM)
  _assert_padded_after_eos(sequences)
  assert np.all(np.diff(scores, axis=1) <= 0)
  for b, prev in enumerate(PREVS):
    assert len({tuple(s) for s in sequences[b]}) == 4
    for seq, score in zip(sequences[b], scores[b]):
      expected = model.sequence_log_prob(prev, seq) / _penalty(0.6, _length(seq))
      np.testing.assert_allclose(score, expected, rtol=1e-5, atol=1e-5)
    greedy_tokens, greedy_lp = model.greedy(prev, LENGTH)
    assert scores[b, 0] >= greedy_lp / _penalty(0.6, _length(greedy_tokens)) - 1e-5


def test_beam_search_does_not_stop_before_a_longer_sequence_can_win():
  # One beam, alpha 3 (long outputs favoured). Step 1 finishes [EOS] (p 0.6); the
  # live [2] (p 0.4) then continues with 2s at probability ~1. Its penalised
  # score at full length, log(0.4) / penalty(8), beats log(0.6) / penalty(1), so
  # the early-exit bound must use the largest reachable penalty, not the next.
  vocab = 10
  pair = np.full((vocab, vocab, vocab), -30.0)
  pair[..., 0] = PAD_LOGIT
  pair[:, 0, EOS] = np.log(0.6)
  pair[:, 0, 2] = np.log(0.4)
  pair[:, 2, 2] = 20.0
  model = ToyDecoder(pair=pair, position=np.zeros((LENGTH + 1, vocab)))
  sequences, scores = model.beam(ZEROS, PREVS, num_decodes=1, alpha=3.0)
  np.testing.assert_array_equal(sequences[:, 0], [[2] * LENGTH] * 3)
  expected = model.sequence_log_prob(2, [2] * LENGTH) / _penalty(3.0, LENGTH)
  assert expected > np.log(0.6)
  np.testing.assert_allclose(scores[:, 0], expected, rtol=1e-5)


def test_beam_search_forced_prefix():
  model = ToyDecoder.create(seed=7, eos_bias=0.5)
  inputs = ZEROS.copy()
  inputs[0, 1:3] = [3, 6]
  sequences, scores = model.beam(inputs, PREVS, **BEAM)
  np.testing.assert_array_equal(sequences[0, :, :2], [[3, 6]] * 4)
  for b, prev in enumerate(PREVS):
    forced = np.append(inputs[b, 1:], 0)
    for seq, score in zip(sequences[b], scores[b]):
      # Forced tokens cost nothing but count towards the penalised length.
      expected = model.sequence_log_prob(prev, seq, forced=forced) / _penalty(0.6, _length(seq))
      np.testing.assert_allclose(score, expected, rtol=1e-5, atol=1e-5)


def test_beam_search_max_decode_len():
  model = ToyDecoder.create(seed=8, eos_bias=-1e9)
  sequences, _ = model.beam(ZEROS, PREVS, max_decode_len=3, **BEAM)
  assert sequences.shape == (3, 4, 3)
  assert np.all(sequences != 0)


# ------------------------------------------------------------------------------
# Sampling
# ------------------------------------------------------------------------------


def test_sampling_is_deterministic_given_rng_and_scores_are_exact():
  model = ToyDecoder.create(seed=9, eos_bias=1.0)
  first = model.sample(ZEROS, PREVS, jax.random.PRNGKey(11), **SAMPLE)
  again = model.sample(ZEROS, PREVS, jax.random.PRNGKey(11), **SAMPLE)
  other = model.sample(ZEROS, PREVS, jax.random.PRNGKey(12), **SAMPLE)
  np.testing.assert_array_equal(first[0], again[0])
  np.testing.assert_array_equal(first[1], again[1])
  assert not np.array_equal(first[0], other[0])

  sequences, log_probs = first
  assert sequences.shape == (3, 8, LENGTH) and log_probs.shape == (3, 8)
  _assert_padded_after_eos(sequences)
  assert np.all(np.diff(log_probs, axis=1) <= 0), "samples must be sorted best first"
  for b, prev in enumerate(PREVS):
    assert len({tuple(s) for s in sequences[b]}) > 1
    for seq, lp in zip(sequences[b], log_probs[b]):
      # Scored under the unmodified (temperature 1) model, not the sampling one.
      np.testing.assert_allclose(lp, model.sequence_log_prob(prev, seq), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
  "options",
  [
    {"temperature": 1.0, "topk": 1},
    {"temperature": 1.0, "topp": 1e-6},
    {"temperature": 0.0, "topp": 0.9},
  ],
)
def test_degenerate_sampling_is_greedy(options):
  model = ToyDecoder.create(seed=10, eos_bias=1.0)
  sequences, log_probs = model.sample(ZEROS, PREVS, jax.random.PRNGKey(5), num_decodes=4, **options)
  for b, prev in enumerate(PREVS):
    expected, expected_lp = model.greedy(prev, LENGTH)
    np.testing.assert_array_equal(sequences[b], np.stack([expected] * 4))
    np.testing.assert_allclose(log_probs[b], [expected_lp] * 4, rtol=1e-5, atol=1e-5)


def _first_token_distribution(
  log_probs: np.ndarray, temperature: float, topk: int, topp: float
) -> np.ndarray:
  scaled = log_probs / temperature
  probs = np.exp(scaled - scaled.max())
  probs /= probs.sum()
  order = np.argsort(-probs)
  keep = np.zeros_like(probs, bool)
  if topk:
    keep[order[:topk]] = True
  elif topp:
    mass_above = np.cumsum(probs[order]) - probs[order]
    keep[order[mass_above < topp]] = True
  else:
    keep[:] = True
  restricted = np.where(keep, probs, 0.0)
  return restricted / restricted.sum()


def test_top_k_and_nucleus_masks_match_a_sort_based_reference():
  # The masks use a bisection threshold instead of a sort; check them exactly,
  # with ties, negative logits and -inf entries.
  rng = np.random.default_rng(0)
  logits = np.round(rng.normal(size=(6, 50)) * 3, 1).astype(np.float32)
  logits[0, :5] = 9.0  # Five-way tie at the top.
  logits[1, 10:] = -np.inf
  logits[2] = -np.abs(logits[2]) - 100.0
  restrict = jax.jit(
    lambda x: (
      decoding._restrict_to_top_k(x, 7),
      decoding._restrict_to_nucleus(x, 0.8),
      decoding._restrict_to_nucleus(x, 1e-6),
    )
  )
  top_k, nucleus, tiny = (np.isfinite(np.asarray(m)) for m in restrict(logits))
  for row, k_mask, p_mask, tiny_mask in zip(logits, top_k, nucleus, tiny):
    strictly_above = (row[None, :] > row[:, None]).sum(axis=1)
    np.testing.assert_array_equal(k_mask, strictly_above < 7)
    probs = np.exp(row.astype(np.float64) - row.max())
    probs /= probs.sum()
    mass_above = np.where(probs[None, :] > probs[:, None], probs[None, :], 0).sum(1)
    np.testing.assert_array_equal(p_mask, mass_above < 0.8)
    np.testing.assert_array_equal(tiny_mask, row == row.max())
  assert top_k[0, :5].all() and top_k[0].sum() >= 7 and top_k[1].sum() == 7


@pytest.mark.parametrize("temperature,topk,topp", [(0.6, 0, 0.0), (1.0, 3, 0.0), (1.5, 0, 0.7)])
def test_first_token_frequencies_match_the_distribution(temperature, topk, topp):
  num_decodes = 4000
  model = ToyDecoder.create(seed=11, eos_bias=0.0, scale=1.0)
  sequences, _ = model.sample(
    ZEROS,
    PREVS,
    jax.random.PRNGKey(21),
    num_decodes=num_decodes,
    temperature=temperature,
    topk=topk,
    topp=topp,
    max_decode_steps=1,
  )
  for b, prev in enumerate(PREVS):
    expected = _first_token_distribution(model.step_log_probs(prev, [0]), temperature, topk, topp)
    assert np.count_nonzero(expected) > 2, "the fixture should leave a real choice"
    freq = np.bincount(sequences[b, :, 0], minlength=model.vocab) / num_decodes
    assert np.all(freq[expected == 0] == 0), (freq, expected)
    sigma = np.sqrt(expected * (1 - expected) / num_decodes)
    np.testing.assert_array_less(np.abs(freq - expected), 5 * sigma + 2e-3)


# ------------------------------------------------------------------------------
# EOS, early exit, cache handling, errors
# ------------------------------------------------------------------------------


def test_without_eos_every_decoder_runs_to_max_length():
  model = ToyDecoder.create(seed=12, eos_bias=-1e9)
  greedy, _ = model.sample(ZEROS, PREVS, **GREEDY)
  sampled, _ = model.sample(ZEROS, PREVS, **SAMPLE)
  beams, _ = model.beam(ZEROS, PREVS, **BEAM)
  for sequences in (greedy, sampled, beams):
    assert np.all(sequences != 0)
    assert not np.any(sequences == EOS)


def test_tokens_after_eos_are_padding_in_every_decoder():
  model = ToyDecoder.create(seed=13, eos_bias=2.0)
  greedy, _ = model.sample(ZEROS, PREVS, **GREEDY)
  sampled, _ = model.sample(ZEROS, PREVS, **SAMPLE)
  beams, _ = model.beam(ZEROS, PREVS, **BEAM)
  for sequences in (greedy, sampled, beams):
    assert np.any(sequences == EOS)
    _assert_padded_after_eos(sequences)
  # Some samples end early and some run to the last position.
  lengths = {_length(s) for s in sampled.reshape(-1, LENGTH)}
  assert min(lengths) < LENGTH and LENGTH in lengths


def test_loops_exit_once_every_sequence_is_settled():
  calls = []
  model = ToyDecoder.create(seed=14, eos_bias=40.0)

  def counting_tokens_to_logits(token_ids, cache):
    jax.debug.callback(lambda: calls.append(1))
    return model.tokens_to_logits(token_ids, cache)

  inputs = jnp.asarray(ZEROS)
  greedy = jax.jit(
    lambda i, c: decoding.temperature_sample(
      i, c, counting_tokens_to_logits, EOS, num_decodes=3, temperature=0.0
    )
  )
  sequences, _ = greedy(inputs, model.init_cache(PREVS))
  jax.effects_barrier()
  assert np.all(np.asarray(sequences)[:, :, 0] == EOS)
  assert len(calls) == 1

  # Beam search: step 1 finishes [EOS] (probability ~1); step 2 fills the second
  # finished slot, after which no live beam (log-prob ~ -40) can compete.
  calls.clear()
  beam = jax.jit(
    lambda i, c: decoding.beam_search(
      i, c, counting_tokens_to_logits, EOS, num_decodes=2, alpha=0.6
    )
  )
  sequences, _ = beam(inputs, model.init_cache(PREVS))
  jax.effects_barrier()
  np.testing.assert_array_equal(np.asarray(sequences)[:, 0, :2], [[EOS, 0]] * 3)
  assert len(calls) == 2


def test_repeat_rows_keeps_copies_adjacent_and_scalars_shared():
  tree = {"a": jnp.arange(6).reshape(3, 2), "index": jnp.array(7), "n": 3}
  out = decoding.repeat_rows(tree, 2)
  np.testing.assert_array_equal(out["a"][:, 0], [0, 0, 2, 2, 4, 4])
  assert out["index"].shape == () and int(out["index"]) == 7 and out["n"] == 3


@pytest.mark.parametrize(
  "call,message",
  [
    (
      lambda m, c: decoding.temperature_sample(
        jnp.zeros((4,), jnp.int32), c, m.tokens_to_logits, EOS
      ),
      "inputs must be",
    ),
    (
      lambda m, c: decoding.temperature_sample(
        jnp.zeros((2, 4), jnp.int32), c, m.tokens_to_logits, EOS, temperature=-1.0
      ),
      "temperature",
    ),
    (
      lambda m, c: decoding.temperature_sample(
        jnp.zeros((2, 4), jnp.int32), c, m.tokens_to_logits, EOS, topp=1.5
      ),
      "topp",
    ),
    (
      lambda m, c: decoding.temperature_sample(
        jnp.zeros((2, 4), jnp.int32), c, m.tokens_to_logits, EOS, num_decodes=0
      ),
      "num_decodes",
    ),
    (
      lambda m, c: decoding.beam_search(
        jnp.zeros((2, 4), jnp.int32), c, m.tokens_to_logits, EOS, max_decode_len=5
      ),
      "max_decode_len",
    ),
  ],
)
def test_bad_arguments_raise_clear_errors(call, message):
  model = ToyDecoder.create(vocab=6, max_len=4)
  with pytest.raises(ValueError, match=message):
    call(model, model.init_cache([2, 3]))
