"""Each prompt initialiser produces exactly the documented values."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from prompt_tuning.prompts import initializers

RNG = jax.random.PRNGKey(0)


@pytest.fixture(scope="module")
def table():
  return np.random.RandomState(0).normal(size=(400, 16)).astype(np.float32)


def test_uniform_is_symmetric_and_bounded():
  value = np.asarray(initializers.uniform(0.5)(RNG, (100, 64)))
  assert value.shape == (100, 64)
  assert value.min() >= -0.5 and value.max() <= 0.5
  assert value.min() < -0.4 and value.max() > 0.4  # Both signs are used.


def test_uniform_positive_matches_the_upstream_range():
  value = np.asarray(initializers.uniform_positive(0.5)(RNG, (100, 64)))
  assert value.min() >= 0.0 and value.max() < 0.5


def test_sampled_vocab_rows_come_from_the_first_ids(table):
  init = initializers.sampled_vocab(embedding=table, population_size=50, population_start=3)
  value = np.asarray(init(RNG, (20, 16)))
  # Every row is exactly one embedding row with an id in [3, 53), all distinct.
  matches = [np.flatnonzero((table == row).all(axis=1)) for row in value]
  ids = [int(m[0]) for m in matches]
  assert all(len(m) == 1 for m in matches)
  assert all(3 <= i < 53 for i in ids)
  assert len(set(ids)) == 20


def test_sampled_vocab_reads_an_npy_file(table, tmp_path):
  path = tmp_path / "embedding.npy"
  np.save(path, table)
  a = initializers.sampled_vocab(embedding=str(path))(RNG, (5, 16))
  b = initializers.sampled_vocab(embedding=table)(RNG, (5, 16))
  np.testing.assert_array_equal(a, b)


def test_sampled_vocab_rejects_a_wrong_width(table):
  with pytest.raises(ValueError, match=r"prompt shape \(5, 8\) does not match"):
    initializers.sampled_vocab(embedding=table)(RNG, (5, 8))


def test_class_label_rows_are_mean_sub_token_embeddings(table, test_vocabulary):
  labels = ["entailment", "not_entailment"]
  init = initializers.class_labels(labels=labels, embedding=table, vocabulary=test_vocabulary)
  value = np.asarray(init(RNG, (6, 16)))
  for i, label in enumerate(labels):
    ids = test_vocabulary.encode(label)
    assert len(ids) >= 1
    np.testing.assert_allclose(value[i], table[ids].mean(axis=0), rtol=1e-6)
  # The remaining rows are sampled vocabulary rows.
  for row in value[2:]:
    assert (table == row).all(axis=1).any()


def test_class_labels_longer_than_the_prompt_is_an_error(table, test_vocabulary):
  init = initializers.class_labels(
    labels=["a", "b", "c"], embedding=table, vocabulary=test_vocabulary
  )
  with pytest.raises(ValueError, match="needs 3 prompt positions but the prompt length is 2"):
    init(RNG, (2, 16))


def test_from_string_embeds_the_text_first(table, test_vocabulary):
  text = "premise hypothesis"
  init = initializers.from_string(
    text=text, embedding=table, vocabulary=test_vocabulary, fallback=initializers.uniform(0.01)
  )
  value = np.asarray(init(RNG, (30, 16)))
  ids = test_vocabulary.encode(text)
  np.testing.assert_array_equal(value[: len(ids)], table[ids])
  assert np.abs(value[len(ids) :]).max() <= 0.01


def test_from_file_loads_and_checks_the_shape(tmp_path):
  prompt = np.arange(12, dtype=np.float32).reshape(3, 4)
  path = tmp_path / "prompt.npy"
  np.save(path, prompt)
  np.testing.assert_array_equal(initializers.from_file(str(path))(RNG, (3, 4)), prompt)
  with pytest.raises(ValueError, match=r"has shape \(3, 4\) but the model expects \(5, 4\)"):
    initializers.from_file(str(path))(RNG, (5, 4))


def test_missing_embedding_source_says_what_to_bind():
  with pytest.raises(ValueError, match="needs the frozen embedding table"):
    initializers.sampled_vocab()(RNG, (2, 4))


def test_a_prompt_file_is_refused_when_damaged_pickled_or_not_numeric(tmp_path):
  good = tmp_path / "good.npy"
  np.save(good, np.ones((3, 4), np.float32))
  truncated = tmp_path / "truncated.npy"
  truncated.write_bytes(good.read_bytes()[:-8])
  with pytest.raises(ValueError, match="truncated.npy is a damaged .npy file"):
    initializers.load_prompt_file(str(truncated))
  pickled = tmp_path / "pickled.npy"
  np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
  with pytest.raises(ValueError, match="pickled.npy holds pickled Python objects") as error:
    initializers.load_prompt_file(str(pickled))
  assert "allow_pickle" not in str(error.value)  # Never numpy's advice to load it.
  strings = tmp_path / "strings.npy"
  np.save(strings, np.array([["a", "b"]]))
  with pytest.raises(ValueError, match="holds <U1 values; a prompt is a float array"):
    initializers.load_prompt_file(str(strings))
  np.testing.assert_array_equal(initializers.load_prompt_file(str(good)), np.ones((3, 4)))


class _Pieces:
  """A vocabulary stand-in with a given number of ids."""

  def __init__(self, size):
    self.vocab_size = size

  def encode(self, text):
    return [3, 4]


def test_class_labels_refuse_a_vocabulary_larger_than_the_embedding(table):
  init = initializers.class_labels(["yes"], embedding=table, vocabulary=_Pieces(401))
  with pytest.raises(ValueError, match="has 401 ids but the model's embedding has only 400 rows"):
    init(RNG, (3, 16))
  assert initializers.class_labels(["yes"], embedding=table, vocabulary=_Pieces(400))(
    RNG, (3, 16)
  ).shape == (3, 16)
