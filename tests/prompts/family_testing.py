"""What the prompt-family tests share: the tiny backbone, a learnable toy batch, eager
init, jitted logits and the cached-against-uncached greedy decoding check."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import numpy as np

from prompt_tuning import models
from prompt_tuning.t5 import T5Config, Transformer

CFG = T5Config.from_size("tiny", vocab_size=128)


def toy_batch(size: int = 8) -> dict[str, np.ndarray]:
  """Label 5 or 6 depending on the first input token, then EOS."""
  rng = np.random.RandomState(0)
  enc = rng.randint(3, 128, (size, 6)).astype(np.int32)
  enc[0, 4:] = 0
  label = np.where(enc[:, 0] < 64, 5, 6).astype(np.int32)
  tgt = np.stack([label, np.ones_like(label)], axis=1)
  dec = np.stack([np.zeros_like(label), label], axis=1)
  return {"encoder_input_tokens": enc, "decoder_input_tokens": dec, "decoder_target_tokens": tgt}


def eager_init(input_prompt=None, layer_prefix=None) -> dict:
  """Parameters of the tiny model with a hook, initialised eagerly (cheaper than
  compiling an init); the backbone's values do not depend on the hook."""
  tokens = np.ones((1, 1), np.int32)
  module = Transformer(CFG, input_prompt=input_prompt, layer_prefix=layer_prefix)
  return nn.unbox(module.init(jax.random.PRNGKey(0), tokens, tokens, tokens)["params"])


def logits(module: Transformer, params: dict, size: int = 8) -> np.ndarray:
  b = toy_batch(size)
  return np.asarray(
    jax.jit(module.apply)(
      {"params": params},
      b["encoder_input_tokens"],
      b["decoder_input_tokens"],
      b["decoder_target_tokens"],
    )
  )


def assert_cached_greedy_equals_uncached(
  module: Transformer, params: dict, length: int = 4, prompt_ids: np.ndarray | None = None
) -> None:
  """Greedy cached decoding through the model layer equals step-by-step argmax over
  uncached full forwards, up to and including the first EOS (the decoder pads after).
  `prompt_ids` [2]: each row's prompt or task, for modules that read them."""
  b = toy_batch(size=2)
  extra = {} if prompt_ids is None else {"prompt_ids": np.asarray(prompt_ids, np.int32)}
  decoded = np.asarray(
    jax.jit(models.EncoderDecoderModel(module).predict_batch)(
      params,
      {
        "encoder_input_tokens": b["encoder_input_tokens"],
        "decoder_target_tokens": np.ones((2, length), np.int32),
        **extra,
      },
    )
  )
  forward = jax.jit(functools.partial(module.apply, prompt_inputs=extra or None))
  tokens = np.zeros((2, length), np.int32)
  for t in range(length):
    inputs = np.concatenate([np.zeros((2, 1), np.int32), tokens[:, :-1]], axis=1)
    step_logits = forward(
      {"params": params}, b["encoder_input_tokens"], inputs, np.ones_like(inputs)
    )
    tokens[:, t] = np.argmax(np.asarray(step_logits)[:, t], axis=-1)
  for row in range(2):
    end = (list(tokens[row]).index(1) + 1) if 1 in tokens[row] else length
    np.testing.assert_array_equal(decoded[row, :end], tokens[row, :end])


def train_hook(
  module: Transformer,
  params: dict,
  learning_rate: float,
  steps: int,
  prompt_ids: np.ndarray | None = None,
):
  """Trains the default-trainable part of `params` on the toy batch with Adafactor and
  checks that the frozen backbone stayed bit-identical and every trainable array moved.
  Returns (losses, initial trainable
  values, final train state)."""
  from prompt_tuning.training import optimizers, trainable
  from prompt_tuning.training.train_step import TrainState, make_train_step

  train, frozen = trainable.split(params)
  frozen_before = jax.tree.map(np.array, frozen)
  optimizer = optimizers.adafactor(learning_rate=learning_rate)
  state = TrainState.create(train, optimizer)
  step = jax.jit(make_train_step(models.EncoderDecoderModel(module), optimizer))
  batch = toy_batch()
  if prompt_ids is not None:
    batch["prompt_ids"] = np.asarray(prompt_ids, np.int32)
  losses = []
  for _ in range(steps):
    state, metrics = step(state, frozen, batch, jax.random.PRNGKey(0))
    losses.append(float(metrics["loss"]))
  jax.tree.map(np.testing.assert_array_equal, frozen, frozen_before)
  moved = jax.tree.map(lambda a, b: not np.allclose(a, b), state.trainable, train)
  assert all(jax.tree.leaves(moved)), "some trainable parameters did not move"
  return losses, train, state


def assert_mesh_scores_equal_one_device(
  module: Transformer, params: dict, prompt_ids: np.ndarray | None = None
) -> None:
  """The model's per-example scores on the toy batch on a 2x4 mesh (parameters placed by
  their logical axes, the new ones included) equal those on one device."""
  from prompt_tuning.evaluation import evaluator
  from prompt_tuning.training import partitioning, trainer

  model = models.EncoderDecoderModel(module)
  batch = {**toy_batch(), "decoder_loss_weights": np.ones((8, 2), np.float32)}
  if prompt_ids is not None:
    batch["prompt_ids"] = np.asarray(prompt_ids, np.int32)
  alone = evaluator.on_mesh(model.score_batch)(params, batch)
  partitioner = partitioning.Partitioner(mesh_shape=(2, 4))
  placed = trainer.place_params(partitioner, module, params)
  on_mesh = evaluator.on_mesh(model.score_batch, partitioner)(placed, batch)
  np.testing.assert_allclose(on_mesh, alone, rtol=1e-5, atol=1e-5)
