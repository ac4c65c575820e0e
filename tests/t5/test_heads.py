"""Linear heads on the encoder: pooling, per-task kernels, span masking, starting from
a trained head's files."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning.t5 import heads

HIDDEN = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
MASK = np.array([[True, True, True], [True, True, False]])


@pytest.mark.parametrize(
  "pooling, expected",
  [
    ("first", [[0, 1], [6, 7]]),
    ("mean", [[2, 3], [7, 8]]),  # Row 2 averages its two real positions only.
    ("eos", [[4, 5], [8, 9]]),  # The last real position.
  ],
)
def test_pooling_reads_the_positions_its_name_says(pooling, expected):
  np.testing.assert_allclose(heads.pool(jnp.asarray(HIDDEN), jnp.asarray(MASK), pooling), expected)


def test_an_unknown_pooling_is_refused_with_the_choices():
  with pytest.raises(ValueError, match="first, mean, eos"):
    heads.SequenceHead(2, pooling="max").init(jax.random.PRNGKey(0), HIDDEN, MASK)


def test_a_head_starts_near_zero_logits_and_names_its_parameters_kernel_and_bias():
  params = heads.SequenceHead(3).init(jax.random.PRNGKey(0), HIDDEN, MASK)["params"]
  assert params["kernel"].value.shape == (2, 3) and params["bias"].value.shape == (3,)
  assert params["kernel"].names == ("embed", "classes")
  assert float(np.std(params["kernel"].value)) < 0.05
  assert not np.any(params["bias"].value)


def test_a_multi_task_head_uses_each_rows_own_kernel():
  head = heads.TokenHead(2, num_tasks=3)
  variables = head.init(jax.random.PRNGKey(0), HIDDEN, MASK, jnp.zeros(2, jnp.int32))
  kernel = np.asarray(variables["params"]["kernel"].value)
  assert kernel.shape == (3, 2, 2)
  logits = head.apply(variables, HIDDEN, MASK, jnp.array([2, 0]))
  np.testing.assert_allclose(logits[0], HIDDEN[0] @ kernel[2], rtol=1e-6)
  np.testing.assert_allclose(logits[1], HIDDEN[1] @ kernel[0], rtol=1e-6)
  with pytest.raises(ValueError, match="prompt_ids"):
    head.apply(variables, HIDDEN, MASK, None)


def test_a_span_head_never_points_at_padding():
  head = heads.SpanHead()
  variables = head.init(jax.random.PRNGKey(0), HIDDEN, MASK)
  logits = np.asarray(head.apply(variables, HIDDEN, MASK))
  assert logits.shape == (2, 3, 2)
  assert np.all(logits[1, 2] < -1e30) and np.all(np.abs(logits[0]) < 1e3)


def test_a_head_starts_from_saved_files_and_refuses_another_shape(tmp_path):
  kernel = np.arange(4, dtype=np.float32).reshape(2, 2)
  np.save(tmp_path / "head.kernel.npy", kernel)
  np.save(tmp_path / "head.bias.npy", np.array([1.0, -1.0], np.float32))
  head = heads.SequenceHead(2, pooling="first", init_dir=str(tmp_path))
  variables = head.init(jax.random.PRNGKey(0), HIDDEN, MASK)
  np.testing.assert_allclose(head.apply(variables, HIDDEN, MASK), HIDDEN[:, 0] @ kernel + [1, -1])
  with pytest.raises(ValueError, match=r"shape \(2, 2\).*\(2, 3\)"):
    heads.SequenceHead(3, init_dir=str(tmp_path)).init(jax.random.PRNGKey(0), HIDDEN, MASK)
  with pytest.raises(FileNotFoundError, match="HEAD_DIR"):
    heads.SequenceHead(2, init_dir=str(tmp_path / "missing")).init(
      jax.random.PRNGKey(0), HIDDEN, MASK
    )


def test_a_task_with_fewer_labels_never_predicts_or_trains_the_classes_it_lacks():
  head = heads.SequenceHead(3, pooling="first", num_tasks=2, labels_per_task=(2, 3))
  task_ids = jnp.array([0, 1])
  variables = head.init(jax.random.PRNGKey(0), HIDDEN, MASK, task_ids)
  logits = np.asarray(head.apply(variables, HIDDEN, MASK, task_ids))
  assert logits[0, 2] < -1e30 and np.all(np.abs(logits[0, :2]) < 1e3)
  assert np.all(np.abs(logits[1]) < 1e3)

  def loss(params):
    out = head.apply({"params": params}, HIDDEN, MASK, task_ids)
    return -jnp.sum(jax.nn.log_softmax(out)[:, 0])

  grads = jax.jit(jax.grad(loss))(variables["params"])
  assert grads["kernel"].value[0, :, 2].tolist() == [0.0, 0.0]
  assert grads["bias"].value[0, 2] == 0.0 and grads["bias"].value[1, 2] != 0.0
  with pytest.raises(ValueError, match="HEAD_LABELS_PER_TASK"):
    heads.SequenceHead(3, num_tasks=2, labels_per_task=(2, 4)).init(
      jax.random.PRNGKey(0), HIDDEN, MASK, task_ids
    )


def test_a_single_task_head_starts_from_one_task_of_a_multi_task_head(tmp_path):
  kernel = np.arange(2 * 2 * 3, dtype=np.float32).reshape(2, 2, 3)
  np.save(tmp_path / "head.kernel.npy", kernel)
  np.save(tmp_path / "head.bias.npy", np.array([[1.0, -1.0, 0.0], [2.0, 3.0, 4.0]], np.float32))
  head = heads.SequenceHead(2, pooling="first", init_dir=str(tmp_path), init_task=1)
  variables = head.init(jax.random.PRNGKey(0), HIDDEN, MASK)
  np.testing.assert_allclose(
    head.apply(variables, HIDDEN, MASK), HIDDEN[:, 0] @ kernel[1][:, :2] + [2, 3]
  )
  with pytest.raises(ValueError, match="HEAD_INIT_TASK is 2"):
    heads.SequenceHead(2, init_dir=str(tmp_path), init_task=2).init(
      jax.random.PRNGKey(0), HIDDEN, MASK
    )
