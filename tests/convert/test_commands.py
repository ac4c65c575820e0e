"""The checkpoint tools: inspect, convert, extract, diff (exit codes and output)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from prompt_tuning import tree
from prompt_tuning.convert import commands, save_params_orbax, write_t5x_checkpoint
from tests.convert.conftest import assert_trees_equal


@pytest.fixture(scope="module")
def t5x_path(tmp_path_factory, tiny_params):
  return write_t5x_checkpoint(tiny_params, str(tmp_path_factory.mktemp("c") / "t5x"))


def test_inspect(t5x_path, capsys):
  assert commands.inspect_checkpoint(t5x_path) == 0
  out = capsys.readouterr().out
  assert "format: t5x" in out
  assert "encoder/layers_1/mlp/wi_1/kernel" in out and "[32, 64]" in out
  assert "parameters: 52 arrays, 2,105,984 values" in out
  assert "model: 'tiny'" in out


def test_convert_chain_preserves_values(tmp_path, t5x_path, tiny_params, capsys):
  hf_dir, orbax_dir, back = (str(tmp_path / n) for n in ("hf", "orbax", "back"))
  assert commands.convert(t5x_path, "t5x", hf_dir, "hf") == 0
  assert os.path.isfile(os.path.join(hf_dir, "config.json"))
  assert commands.convert(hf_dir, "hf", orbax_dir, "orbax", size="tiny") == 0
  assert commands.convert(orbax_dir, "orbax", back, "hf") == 0
  assert "'tiny' model from t5x" in capsys.readouterr().out
  assert commands.diff_checkpoints(t5x_path, back) == 0
  assert "52 of 52 shared parameters identical" in capsys.readouterr().out
  from prompt_tuning.convert import load_params

  assert_trees_equal(tiny_params, load_params(orbax_dir))


def test_convert_rejects_wrong_size_and_format(tmp_path, t5x_path, capsys):
  assert commands.convert(t5x_path, "t5x", str(tmp_path / "x"), "orbax", size="small") == 1
  err = capsys.readouterr().err
  assert err.startswith("error: checkpoint") and "looks like 'tiny'" in err
  assert commands.convert(t5x_path, "hf", str(tmp_path / "y"), "orbax") == 1
  assert "is a 't5x' checkpoint, not 'hf'" in capsys.readouterr().err
  assert commands.convert(t5x_path, "t5x", str(tmp_path / "z"), "t5x") == 1


def test_extract_variable(tmp_path, t5x_path, tiny_params, capsys):
  out = str(tmp_path / "emb.npy")
  assert commands.extract_variable(t5x_path, "token_embedder/embedding", out) == 0
  np.testing.assert_array_equal(np.load(out), tiny_params["token_embedder"]["embedding"])
  assert commands.extract_variable(t5x_path, "kernel", out) == 1
  assert "must match exactly one parameter" in capsys.readouterr().err


def test_diff_reports_changes_and_extras(tmp_path, t5x_path, tiny_params, capsys):
  flat = tree.flatten(tiny_params)
  flat = dict(flat)
  flat["encoder/layers_0/mlp/wo/kernel"] = flat["encoder/layers_0/mlp/wo/kernel"] + 0.25
  flat["encoder/prompt/prompt"] = np.zeros((4, 32), np.float32)
  other = save_params_orbax(tree.unflatten(flat), str(tmp_path / "tuned"))
  assert commands.diff_checkpoints(t5x_path, other) == 1
  out = capsys.readouterr().out
  assert "differs: encoder/layers_0/mlp/wo/kernel max |a-b| = 0.25" in out
  assert "only in b: encoder/prompt/prompt [4, 32]" in out
  assert "51 of 52 shared parameters identical" in out


def test_missing_path_is_a_one_line_error(tmp_path, capsys):
  assert commands.inspect_checkpoint(str(tmp_path / "nope")) == 1
  err = capsys.readouterr().err
  assert err.startswith("error: ") and "does not exist" in err and err.count("\n") == 1


def test_diff_across_dtypes(tmp_path, t5x_path, tiny_params, capsys):
  import ml_dtypes

  rounded = {
    n: np.asarray(a).astype(ml_dtypes.bfloat16) for n, a in tree.flatten(tiny_params).items()
  }
  other = save_params_orbax(tree.unflatten(rounded), str(tmp_path / "bf16"))
  assert commands.diff_checkpoints(t5x_path, other) == 1
  out = capsys.readouterr().out
  assert "0 of 52 shared parameters identical; 52 differ" in out
