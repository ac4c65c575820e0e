"""The model layer: loss conventions, rank-classification scores, decoding with a prompt."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning import decoding, models
from prompt_tuning.prompts import Prompt
from prompt_tuning.prompts.multi_prompt import MultiPrompt
from prompt_tuning.t5 import T5Config, Transformer

CFG = T5Config.from_size("tiny", vocab_size=128)
PROMPT = functools.partial(Prompt, length=4)


@pytest.fixture(scope="module")
def setup(random_params):
  module = Transformer(CFG, input_prompt=PROMPT)
  params = random_params(CFG, input_prompt=PROMPT)
  rng = np.random.RandomState(0)
  enc = rng.randint(1, 128, (3, 8)).astype(np.int32)
  enc[2, 5:] = 0
  tgt = rng.randint(2, 128, (3, 5)).astype(np.int32)
  tgt[1, 3:] = 0
  dec = np.concatenate([np.zeros((3, 1), np.int32), tgt[:, :-1]], axis=1) * (tgt > 0)
  batch = {
    "encoder_input_tokens": enc,
    "decoder_input_tokens": dec,
    "decoder_target_tokens": tgt,
    "decoder_loss_weights": (tgt > 0).astype(np.int32),
  }
  return module, params, batch


@pytest.fixture(scope="module")
def forward(setup):
  """The backbone's logits, jitted once for the module's tests (run eagerly, every
  operation compiles on its own, which costs more than the whole forward)."""
  module, _, _ = setup
  return jax.jit(lambda params, enc, dec, tgt: module.apply({"params": params}, enc, dec, tgt))


@pytest.fixture(scope="module")
def greedy(setup):
  """Greedy predictions of the prompted model (cached decoding), shared by the tests
  that compare other decoders with them."""
  module, params, batch = setup
  return np.asarray(jax.jit(models.EncoderDecoderModel(module).predict_batch)(params, batch))


def test_loss_is_summed_cross_entropy_plus_z_loss(setup, forward):
  module, params, batch = setup
  model = models.EncoderDecoderModel(module, z_loss=1e-4)
  loss, metrics = jax.jit(model.loss_fn)(params, batch)
  logits = np.asarray(
    forward(
      params,
      batch["encoder_input_tokens"],
      batch["decoder_input_tokens"],
      batch["decoder_target_tokens"],
    ),
    np.float64,
  )
  log_z = np.log(np.exp(logits).sum(-1))
  tgt = batch["decoder_target_tokens"]
  picked = np.take_along_axis(logits, tgt[..., None], -1)[..., 0]
  weights = tgt > 0
  expected = np.sum(((log_z - picked) + 1e-4 * log_z**2) * weights)
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  np.testing.assert_allclose(metrics["z_loss"], np.sum(1e-4 * log_z**2 * weights), rtol=1e-5)
  assert metrics["num_tokens"] == weights.sum()


def test_loss_normalising_factors(setup):
  module, params, batch = setup

  def losses(params, batch):  # The three losses in one compiled program.
    return [
      models.EncoderDecoderModel(module, loss_normalizing_factor=factor).loss_fn(params, batch)[0]
      for factor in (None, "NUM_REAL_TARGET_TOKENS", 2.0)
    ]

  total, per_token, constant = jax.jit(losses)(params, batch)
  tokens = float((batch["decoder_target_tokens"] > 0).sum())
  np.testing.assert_allclose(per_token, total / tokens, rtol=1e-6)
  np.testing.assert_allclose(constant, total / 2.0, rtol=1e-6)
  with pytest.raises(ValueError, match="unknown loss_normalizing_factor"):
    jax.jit(models.EncoderDecoderModel(module, loss_normalizing_factor="bogus").loss_fn)(
      params, batch
    )


def test_label_smoothing_keeps_a_zero_minimum():
  logits = jnp.array([[[0.0, 0.0, 0.0, 0.0]]])
  targets = jnp.array([[1]])
  smooth = 0.1
  loss, _ = models.cross_entropy_with_z_loss(logits, targets, 0.0, smooth)
  # Loss of a uniform prediction minus the entropy of the smoothed target.
  soft = np.array([smooth / 3, 1 - smooth, smooth / 3, smooth / 3])
  expected = -np.sum(soft * np.log(0.25)) + np.sum(soft * np.log(soft))
  np.testing.assert_allclose(loss[0, 0], expected, rtol=1e-5)


def test_scores_are_sums_of_token_log_probabilities(setup, forward):
  module, params, batch = setup
  model = models.EncoderDecoderModel(module)
  scores = jax.jit(model.score_batch)(params, batch)
  logits = forward(
    params,
    batch["encoder_input_tokens"],
    batch["decoder_input_tokens"],
    batch["decoder_target_tokens"],
  )
  log_probs = np.asarray(jax.nn.log_softmax(logits), np.float64)
  tgt = batch["decoder_target_tokens"]
  per_token = np.take_along_axis(log_probs, tgt[..., None], -1)[..., 0] * (tgt > 0)
  np.testing.assert_allclose(scores, per_token.sum(-1), rtol=1e-5)


def _uncached_greedy(forward, params, batch, length):
  """Greedy decoding by uncached full forward passes. The decoder is causal, so the
  logits at position i see only tokens 0..i: the sequence keeps its final length (one
  compilation; positions not decoded yet hold zeros) and step i reads position i."""
  enc = batch["encoder_input_tokens"]
  seq = np.zeros((enc.shape[0], length), np.int32)  # Position 0 holds BOS (0).
  done = np.zeros(enc.shape[0], bool)
  out = np.zeros((enc.shape[0], length), np.int32)
  for i in range(length):
    logits = forward(params, enc, seq, None)
    nxt = np.asarray(jnp.argmax(logits[:, i], -1))
    out[:, i] = np.where(done, 0, nxt)
    done |= nxt == 1
    if i + 1 < length:
      seq[:, i + 1] = nxt
  return out


def test_greedy_prediction_with_a_prompt_equals_uncached_argmax(setup, forward, greedy):
  _, params, batch = setup
  expected = _uncached_greedy(forward, params, batch, batch["decoder_target_tokens"].shape[1])
  np.testing.assert_array_equal(greedy, expected)


def test_beam_search_with_one_beam_equals_greedy(setup, greedy):
  module, params, batch = setup
  beam = models.EncoderDecoderModel(
    module, decode_fn=decoding.beam_search, decode_kwargs={"num_decodes": 1, "alpha": 0.6}
  )
  np.testing.assert_array_equal(jax.jit(beam.predict_batch)(params, batch), greedy)
  beams, aux = jax.jit(
    functools.partial(
      models.EncoderDecoderModel(
        module, decode_fn=decoding.beam_search, decode_kwargs={"num_decodes": 3}
      ).predict_batch_with_aux,
      return_all_decodes=True,
    )
  )(params, batch)
  assert beams.shape == (3, 3, 5)
  assert (np.diff(np.asarray(aux["scores"]), axis=1) <= 1e-6).all()  # Best first.


def test_loss_forwards_prompt_ids_to_a_prompt_table(setup):
  """One batch, two prompts chosen per row: the summed loss is the sum of each prompt's
  loss on its own rows (decodes and scores: tests/prompts/test_multi_prompt.py)."""
  _, params, batch = setup
  table_prompt = functools.partial(MultiPrompt, num_prompts=2, length=4)
  table = np.stack(
    [params["encoder"]["prompt"]["prompt"], np.asarray(params["encoder"]["prompt"]["prompt"]) + 0.5]
  )
  plain = models.EncoderDecoderModel(Transformer(CFG, input_prompt=PROMPT))
  model = plain.with_module(Transformer(CFG, input_prompt=table_prompt))
  table_params = {**params, "encoder": {**params["encoder"], "prompt": {"prompt": table}}}
  ids = np.array([1, 0, 1], np.int32)
  loss, _ = jax.jit(model.loss_fn)(table_params, {**batch, "prompt_ids": ids})
  expected = 0.0
  for index in (0, 1):
    rows = ids == index
    single = {**params, "encoder": {**params["encoder"], "prompt": {"prompt": table[index]}}}
    part = {k: v[rows] for k, v in batch.items()}
    expected += float(jax.jit(plain.loss_fn)(single, part)[0])
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  # Changing only the ids changes the result: they really reach the prompt table.
  other, _ = jax.jit(model.loss_fn)(table_params, {**batch, "prompt_ids": 1 - ids})
  assert abs(float(other) - float(loss)) > 1e-3


def test_with_module_copies_the_settings_and_leaves_the_model_alone(setup):
  module, _, _ = setup
  model = models.EncoderDecoderModel(
    module, z_loss=2e-4, decode_fn=decoding.beam_search, decode_kwargs={"num_decodes": 2}, eos_id=7
  )
  other_module = Transformer(CFG)
  other = model.with_module(other_module)
  assert other.module is other_module and model.module is module
  assert (other.z_loss, other.decode_fn, other.decode_kwargs, other.eos_id) == (
    2e-4,
    decoding.beam_search,
    {"num_decodes": 2},
    7,
  )
  other.decode_kwargs["num_decodes"] = 5
  assert model.decode_kwargs == {"num_decodes": 2}
