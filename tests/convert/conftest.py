"""Random `tiny` parameter trees, built from the network's own expected shapes."""

from __future__ import annotations

import numpy as np
import pytest

from prompt_tuning import tree
from prompt_tuning.convert import validation
from prompt_tuning.t5 import T5Config


def random_params(config: T5Config, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  flat = {
    name: rng.standard_normal(shape).astype(np.float32)
    for name, shape in validation.expected_shapes(config).items()
  }
  return tree.unflatten(flat)


def assert_trees_equal(expected: dict, actual: dict) -> None:
  want, got = tree.flatten(expected), tree.flatten(actual)
  assert sorted(want) == sorted(got)
  for name in want:
    got_array = np.asarray(got[name])
    assert got_array.shape == np.shape(want[name]), name
    assert got_array.dtype == np.asarray(want[name]).dtype, name
    np.testing.assert_array_equal(got_array, np.asarray(want[name]), err_msg=name)


@pytest.fixture(scope="session")
def tiny_config() -> T5Config:
  return T5Config.from_size("tiny")


@pytest.fixture(scope="session")
def tiny_params(tiny_config) -> dict:
  return random_params(tiny_config)
