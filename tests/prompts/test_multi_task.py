"""Multi-task prompts: a shared prompt and per-task parts combined four ways, each row
with its own task's prompt, read from `prompt_ids` or from the upstream's task-index
token."""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning import models, tree
from prompt_tuning.prompts import Prompt
from prompt_tuning.prompts.multi_task import COMBINES, MultiTaskPrompt, combine_prompts
from prompt_tuning.t5 import Transformer
from tests.prompts.family_testing import (
  CFG,
  assert_cached_greedy_equals_uncached,
  assert_mesh_scores_equal_one_device,
  eager_init,
  logits,
  toy_batch,
  train_hook,
)

P, TASKS = 2, 3
H = CFG.emb_dim
IDS = np.array([0, 2, 1, 2, 0, 1, 1, 0], np.int32)  # The toy batch's 8 rows.


def _factory(combine, **kwargs):
  return functools.partial(MultiTaskPrompt, num_tasks=TASKS, length=P, combine=combine, **kwargs)


def test_each_combination_by_hand():
  rng = np.random.RandomState(0)
  shared = rng.randn(P, H).astype(np.float32)
  tasks = rng.randn(2, P * H).astype(np.float32)
  added = combine_prompts("add", shared, tasks, H)
  np.testing.assert_allclose(added[1], shared + tasks[1].reshape(P, H), rtol=1e-6)
  concat = combine_prompts("concat", shared, rng.randn(2, 3 * H).astype(np.float32), H)
  assert concat.shape == (2, P + 3, H)
  np.testing.assert_array_equal(concat[0, :P], shared)
  half = shared[:, : H // 2]
  features = combine_prompts("concat_features", half, tasks[:, : P * H // 2], H)
  np.testing.assert_array_equal(features[1, :, : H // 2], half)
  np.testing.assert_array_equal(features[1, :, H // 2 :], tasks[1, : P * H // 2].reshape(P, H // 2))
  # project: task vector = row-major kernel [H, H_s] then bias [H], applied per position.
  width_s = 4
  small = rng.randn(P, width_s).astype(np.float32)
  flat = rng.randn(2, H * width_s + H).astype(np.float32)
  projected = np.asarray(combine_prompts("project", small, flat, H))
  for b in range(2):
    kernel, bias = flat[b, : H * width_s].reshape(H, width_s), flat[b, H * width_s :]
    for p in range(P):
      np.testing.assert_allclose(projected[b, p], kernel @ small[p] + bias, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("combine", COMBINES)
def test_parameters_are_the_upstreams_shared_prompt_and_flat_task_table(combine):
  params = tree.flatten(eager_init(_factory(combine)))
  shared, table = (
    params["encoder/prompt/shared_prompt"],
    params["encoder/prompt/task_prompts/embedding"],
  )
  expected = {
    "add": ((P, H), P * H),
    "concat": ((P, H), P * H),
    "concat_features": ((P, H // 2), P * H // 2),
    "project": ((P, H), H * H + H),
  }[combine]
  assert (shared.shape, table.shape) == (expected[0], (TASKS, expected[1]))
  assert 0 <= shared.min() and shared.max() < 0.5  # U[0, 0.5), the upstream's uniform(0.5).


def _alone(combine, params, task):
  """The model with a plain Prompt holding task `task`'s combined prompt."""
  flat = tree.flatten(params)
  shared = jnp.asarray(flat["encoder/prompt/shared_prompt"])
  row = jnp.asarray(flat["encoder/prompt/task_prompts/embedding"])[task : task + 1]
  prompt = np.asarray(combine_prompts(combine, shared, row, H)[0])
  rest = {n: v for n, v in flat.items() if not n.startswith("encoder/prompt/")}
  plain = tree.unflatten({**rest, "encoder/prompt/prompt": prompt})
  module = Transformer(CFG, input_prompt=functools.partial(Prompt, length=prompt.shape[0]))
  return logits(module, plain)


@pytest.mark.parametrize("combine", COMBINES)
def test_a_mixed_batch_gives_each_row_what_its_task_alone_gives(combine):
  params = eager_init(_factory(combine))
  model = models.EncoderDecoderModel(Transformer(CFG, input_prompt=_factory(combine)))
  batch = {**toy_batch(), "prompt_ids": IDS}
  mixed = np.asarray(model.compute_logits(params, batch))
  for task in range(TASKS):
    rows = IDS == task
    np.testing.assert_allclose(mixed[rows], _alone(combine, params, task)[rows], atol=1e-5)


def test_the_task_index_token_is_removed_and_read_as_the_task():
  params = eager_init(_factory("add"))
  module = Transformer(CFG, input_prompt=_factory("add"))
  batch = {**toy_batch(), "prompt_ids": IDS}
  sentinel = CFG.vocab_size - 1
  indexed = dict(toy_batch())
  indexed["encoder_input_tokens"] = np.concatenate(
    [(sentinel - IDS)[:, None], batch["encoder_input_tokens"]], axis=1
  )
  by_feature = models.EncoderDecoderModel(module).compute_logits(params, batch)
  by_index = models.EncoderDecoderModel(module, task_index_sentinel=sentinel)
  np.testing.assert_array_equal(by_index.compute_logits(params, indexed), by_feature)
  with pytest.raises(ValueError, match="use one of the two"):
    by_index.compute_logits(params, {**indexed, "prompt_ids": IDS})


def test_without_task_ids_the_prompt_says_where_they_come_from():
  params = eager_init(_factory("add"))
  model = models.EncoderDecoderModel(Transformer(CFG, input_prompt=_factory("add")))
  with pytest.raises(ValueError, match="prompt_ids"):
    model.compute_logits(params, toy_batch())
  with pytest.raises(ValueError, match="0 < shared_features < d_model"):
    eager_init(_factory("concat_features", shared_features=H))


@pytest.mark.parametrize("combine", ["add", "project"])
def test_training_moves_the_shared_prompt_and_the_task_table_and_the_loss_falls(combine):
  module = Transformer(CFG, input_prompt=_factory(combine))
  params = eager_init(_factory(combine))
  losses, before, state = train_hook(module, params, 0.3, 8, prompt_ids=IDS)
  assert losses[-1] < losses[0]
  assert sorted(tree.names(state.trainable)) == [
    "encoder/prompt/shared_prompt",
    "encoder/prompt/task_prompts/embedding",
  ]


def test_cached_decoding_per_task_equals_uncached_and_a_mesh_equals_one_device():
  module = Transformer(CFG, input_prompt=_factory("concat"))
  params = eager_init(_factory("concat"))
  assert_cached_greedy_equals_uncached(module, params, prompt_ids=np.array([2, 1]))
  assert_mesh_scores_equal_one_device(module, params, prompt_ids=IDS)
