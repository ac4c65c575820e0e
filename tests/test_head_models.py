"""Models with a linear head on the frozen encoder: what `classify` reads, the three
losses and predictions, span decoding rules, and training under `jax.jit` with the
frozen parameters untouched and the loss falling."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from prompt_tuning import head_models, tree
from prompt_tuning.prompts import Prompt
from prompt_tuning.prompts.deep_prompt import DeepPrompt
from prompt_tuning.t5 import T5Config, Transformer, heads
from prompt_tuning.training import trainable as trainable_lib
from prompt_tuning.training.train_step import TrainState, make_train_step

CFG = T5Config.from_size("tiny", vocab_size=64)
PROMPT = functools.partial(Prompt, length=3)
RNG = np.random.RandomState(0)
TOKENS = RNG.randint(2, 64, (4, 8)).astype(np.int32)
TOKENS[1, 6:] = 0
TOKENS[3, 4:] = 0

HEADS = {
  "sequence": (
    head_models.SequenceClassificationModel,
    functools.partial(heads.SequenceHead, num_labels=3),
    np.array([[1], [2], [3], [0]], np.int32),  # Row 4 has no label.
  ),
  "token": (
    head_models.TokenClassificationModel,
    functools.partial(heads.TokenHead, num_labels=3),
    np.array(
      [[1, 0, 2, 3, 0, 1, 2, 0], [3, 3, 0, 1, 2, 0, 0, 0], [2] * 8, [1, 0, 3, 0, 0, 0, 0, 0]],
      np.int32,
    ),
  ),
  "span": (
    head_models.SpanExtractionModel,
    heads.SpanHead,
    np.array([[2, 4], [1, 1], [5, 8], [3, 3]], np.int32),
  ),
}


def _setup(kind, random_params, layer_prefix=None, input_prompt=PROMPT):
  model_class, head, labels = HEADS[kind]
  module = Transformer(CFG, input_prompt=input_prompt, layer_prefix=layer_prefix, head_factory=head)
  params = random_params(CFG, input_prompt, layer_prefix, head=head)
  batch = {"encoder_input_tokens": TOKENS, "label_ids": labels}
  return model_class(module), params, batch


def test_classify_runs_the_head_on_the_input_tokens_states_alone(random_params):
  model, params, _ = _setup("token", random_params)
  encoded = model.module.apply({"params": params}, TOKENS, method=model.module.encode)
  assert encoded.sequence.shape[1] == 3 + TOKENS.shape[1]
  hidden = np.asarray(encoded.sequence[:, 3:])
  expected = hidden @ params["head"]["kernel"] + params["head"]["bias"]
  logits = model.module.apply({"params": params}, TOKENS, method=model.module.classify)
  np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)


def test_the_head_parameters_are_made_by_init_beside_the_backbone():
  module = Transformer(CFG, input_prompt=PROMPT, head_factory=HEADS["sequence"][1])
  params = module.init(jax.random.PRNGKey(0), TOKENS, TOKENS, TOKENS)["params"]
  assert set(tree.flatten(params)) >= {"head/kernel", "head/bias", "encoder/prompt/prompt"}


def test_a_head_model_refuses_a_network_without_a_head():
  with pytest.raises(ValueError, match="configs/heads"):
    head_models.TokenClassificationModel(Transformer(CFG))


def test_the_trainable_regex_grows_by_the_head_only_when_there_is_one():
  with_head = Transformer(CFG, head_factory=HEADS["span"][1])
  assert trainable_lib.with_head(".*prompt.*", Transformer(CFG)) == ".*prompt.*"
  regex = trainable_lib.with_head(".*prompt.*", with_head)
  assert all(
    __import__("re").fullmatch(regex, name)
    for name in ("head/kernel", "head/bias", "encoder/prompt/prompt")
  )
  assert trainable_lib.with_head(".*", with_head) == ".*"


@pytest.mark.parametrize("kind", sorted(HEADS))
def test_the_loss_counts_the_labelled_items_only(kind, random_params):
  model, params, batch = _setup(kind, random_params)
  loss, metrics = jax.jit(model.loss_fn)(params, batch)
  labels = batch["label_ids"]
  expected = {"sequence": 3, "token": int((labels > 0).sum()), "span": 4}[kind]
  assert float(metrics["num_tokens"]) == expected
  # An unlabelled item changes nothing: drop every label, the loss is 0.
  empty = {**batch, "label_ids": np.zeros_like(labels)}
  assert float(jax.jit(model.loss_fn)(params, empty)[0]) == 0.0
  assert np.isfinite(float(loss)) and float(loss) > 0


def test_token_predictions_sit_on_the_labelled_positions_and_keep_the_label_length(random_params):
  model, params, batch = _setup("token", random_params)
  # Inputs cut to a bucket of 6: predictions still come back at the labels' length.
  cut = {**batch, "encoder_input_tokens": TOKENS[:, :6]}
  predicted = np.asarray(jax.jit(model.predict_batch)(params, cut))
  assert predicted.shape == batch["label_ids"].shape
  labelled = batch["label_ids"][:, :6] > 0
  assert np.all((predicted[:, :6] > 0) == labelled) and not predicted[:, 6:].any()


def _span_model(start, end, **kwargs):
  model = head_models.SpanExtractionModel(Transformer(CFG, head_factory=heads.SpanHead), **kwargs)
  logits = jnp.stack([jnp.asarray(start, jnp.float32), jnp.asarray(end, jnp.float32)], -1)
  model.head_logits = lambda params, batch, dropout_rng=None: logits[None]
  return model


def test_span_decoding_takes_the_best_span_within_the_answer_length():
  tokens = {"encoder_input_tokens": np.array([[5, 6, 7, 8, 9, 0]], np.int32)}
  # Best start 1, best end 4: too long for max 3 -> the best allowed pair.
  start = [9.0, 5.0, 0.0, 4.0, 0.0, 50.0]
  end = [9.0, 0.0, 1.0, 0.0, 6.0, 50.0]  # Position 5 is padding: never chosen.
  model = _span_model(start, end, max_answer_length=3)
  predicted = np.asarray(model.predict_batch(None, tokens))
  np.testing.assert_array_equal(predicted, [[4, 5]])  # Positions (3, 4), + 1.
  model = _span_model(start, end, max_answer_length=4)
  np.testing.assert_array_equal(model.predict_batch(None, tokens), [[2, 5]])  # (1, 4)


def test_the_null_span_wins_only_when_it_beats_the_best_span_by_the_threshold():
  tokens = {"encoder_input_tokens": np.array([[5, 6, 7, 8]], np.int32)}
  start, end = [6.0, 5.0, 0.0, 0.0], [6.0, 0.0, 6.0, 0.0]  # null 12, best (1, 2) = 11
  assert _span_model(start, end).predict_batch(None, tokens).tolist() == [[2, 3]]
  null = _span_model(start, end, null_threshold=0.0).predict_batch(None, tokens)
  assert null.tolist() == [[1, 1]]
  strict = _span_model(start, end, null_threshold=2.0).predict_batch(None, tokens)
  assert strict.tolist() == [[2, 3]]


@pytest.mark.parametrize("kind", sorted(HEADS))
def test_each_head_trains_under_jit_with_the_frozen_parameters_bit_identical(kind, random_params):
  prefix = functools.partial(DeepPrompt, length=2, stacks=("encoder",))
  model, params, batch = _setup(kind, random_params, layer_prefix=prefix, input_prompt=None)
  regex = trainable_lib.with_head(".*prompt.*", model.module)
  trainable, frozen = trainable_lib.split(params, regex)
  assert set(tree.flatten(trainable)) == {"head/kernel", "head/bias", "encoder/layer_prompt/prompt"}
  frozen_before = jax.tree.map(np.array, frozen)
  optimizer = optax.adam(3e-2)
  step = jax.jit(make_train_step(model, optimizer))
  state = TrainState.create(jax.tree.map(jnp.asarray, trainable), optimizer)
  losses = []
  for _ in range(15):
    state, metrics = step(state, frozen, batch, jax.random.PRNGKey(0))
    losses.append(float(metrics["loss"]))
  assert losses[-1] < 0.5 * losses[0]
  for name, value in tree.flatten(frozen).items():
    np.testing.assert_array_equal(value, tree.flatten(frozen_before)[name], err_msg=name)


def test_a_multi_task_head_trains_each_rows_own_head_and_keeps_task_ids_from_the_prompt(
  random_params,
):
  head = functools.partial(heads.SequenceHead, num_labels=3, num_tasks=2)
  module = Transformer(CFG, input_prompt=PROMPT, head_factory=head)
  model = head_models.SequenceClassificationModel(module)
  params = random_params(CFG, PROMPT, head=head)
  assert params["head"]["kernel"].shape == (2, CFG.emb_dim, 3)
  batch = {
    "encoder_input_tokens": TOKENS,
    "label_ids": HEADS["sequence"][2],
    "prompt_ids": np.zeros(4, np.int32),  # Every row is task 0.
  }
  # The plain prompt takes no prompt inputs: the ids went to the head alone.
  grads = jax.jit(jax.grad(lambda p: model.loss_fn(p, batch)[0]))(params)
  kernel_grads = np.asarray(grads["head"]["kernel"])
  assert np.abs(kernel_grads[0]).max() > 0 and not kernel_grads[1].any()
  with pytest.raises(ValueError, match="prompt_ids"):
    model.loss_fn(params, {k: v for k, v in batch.items() if k != "prompt_ids"})
