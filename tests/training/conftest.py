"""Fixtures of the training tests."""

from __future__ import annotations

import pytest

from prompt_tuning import convert


@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory, model, random_params) -> str:
  """A random frozen model for the test module's `model` fixture, as an orbax tree."""
  path = str(tmp_path_factory.mktemp("base") / "tiny")
  convert.save_params_orbax(random_params(model.module.config), path)
  return path
