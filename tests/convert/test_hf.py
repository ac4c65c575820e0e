"""Hugging Face T5 weights: name map, safetensors (single / sharded), pytorch .bin."""

from __future__ import annotations

import json
import os

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

from prompt_tuning import tree
from prompt_tuning.convert import (
  CheckpointMismatchError,
  detect_format,
  hf_to_params,
  load_params,
  params_to_hf,
  validation,
  write_hf_checkpoint,
)
from prompt_tuning.convert.hf import HFReader, hf_name_to_param, param_name_to_hf
from prompt_tuning.t5 import T5Config
from tests.convert.conftest import assert_trees_equal


def test_name_map_covers_every_parameter_both_ways(tiny_config):
  for config in (
    tiny_config,
    tiny_config.replace(mlp_activations=("relu",), logits_via_embedding=True),
  ):
    for name, shape in validation.expected_shapes(config).items():
      hf_key, transposed = param_name_to_hf(name)
      assert hf_name_to_param(hf_key) == (name, transposed)
      assert transposed == (len(shape) == 2 and name != "token_embedder/embedding")


def test_hf_layout_is_transposed_and_round_trips(tiny_params, tiny_config):
  state = params_to_hf(tiny_params, tiny_config)
  flat = tree.flatten(tiny_params)
  np.testing.assert_array_equal(
    state["encoder.block.1.layer.1.DenseReluDense.wi_0.weight"],
    flat["encoder/layers_1/mlp/wi_0/kernel"].T,
  )
  np.testing.assert_array_equal(
    state["decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"],
    flat["decoder/relpos_bias/rel_embedding"].T,
  )
  assert state["lm_head.weight"].shape == (tiny_config.vocab_size, tiny_config.emb_dim)
  assert_trees_equal(tiny_params, hf_to_params(state, tiny_config))


def test_prompt_is_skipped_for_hf_and_other_extras_rejected(tiny_params, tiny_config):
  with_prompt = tree.flatten(tiny_params)
  with_prompt["encoder/prompt/prompt"] = np.zeros((5, 32), np.float32)
  state = params_to_hf(tree.unflatten(with_prompt), tiny_config)
  assert len(state) == len(tree.flatten(tiny_params))
  with_prompt["encoder/adapter/kernel"] = np.zeros((2, 2), np.float32)
  with pytest.raises(CheckpointMismatchError, match="encoder/adapter/kernel"):
    params_to_hf(tree.unflatten(with_prompt), tiny_config)


def test_safetensors_directory(tmp_path, tiny_params, tiny_config):
  directory = str(tmp_path / "hf")
  files = write_hf_checkpoint(tiny_params, tiny_config, directory)
  assert [os.path.basename(f) for f in files] == ["model.safetensors"]
  assert detect_format(directory) == "hf"
  reader = HFReader(directory)
  assert reader.config == tiny_config
  assert_trees_equal(tiny_params, load_params(directory, tiny_config))
  # A single weights file works too.
  assert_trees_equal(tiny_params, load_params(files[0]))


def test_sharded_safetensors_with_index(tmp_path, tiny_params, tiny_config):
  directory = str(tmp_path / "hf")
  files = write_hf_checkpoint(tiny_params, tiny_config, directory, max_shard_bytes=1 << 20)
  assert len(files) > 2
  with open(os.path.join(directory, "model.safetensors.index.json")) as f:
    index = json.load(f)
  assert set(index["weight_map"].values()) == {os.path.basename(f) for f in files}
  assert_trees_equal(tiny_params, load_params(directory, tiny_config))


def test_pytorch_bin_with_tied_copies_and_bf16(tmp_path, tiny_params, tiny_config):
  torch = pytest.importorskip("torch")
  state = params_to_hf(tiny_params, tiny_config)
  tensors = {k: torch.from_numpy(v.copy()).to(torch.bfloat16) for k, v in state.items()}
  # .bin files carry the tied embedding copies; they must not count as unexpected.
  tensors["encoder.embed_tokens.weight"] = tensors["shared.weight"]
  tensors["decoder.embed_tokens.weight"] = tensors["shared.weight"]
  keys = sorted(tensors)
  half = len(keys) // 2
  directory = tmp_path / "bin"
  directory.mkdir()
  weight_map = {}
  for i, part in enumerate((keys[:half], keys[half:])):
    name = f"pytorch_model-0000{i + 1}-of-00002.bin"
    torch.save({k: tensors[k] for k in part}, str(directory / name))
    weight_map.update({k: name for k in part})
  with open(directory / "pytorch_model.bin.index.json", "w") as f:
    json.dump({"metadata": {}, "weight_map": weight_map}, f)
  expected = {
    n: np.asarray(a).astype(ml_dtypes.bfloat16) for n, a in tree.flatten(tiny_params).items()
  }
  loaded = load_params(str(directory), tiny_config)
  assert_trees_equal(tree.unflatten(expected), loaded)
  as_float = load_params(str(directory), tiny_config, dtype=np.float32)
  assert tree.flatten(as_float)["token_embedder/embedding"].dtype == np.float32


def test_unknown_hf_tensor_is_reported(tmp_path, tiny_params, tiny_config):
  state = params_to_hf(tiny_params, tiny_config)
  state["encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight"] = np.zeros(
    (32, 4), np.float32
  )  # A per-layer bias (umT5): not T5 1.1.
  directory = tmp_path / "hf"
  directory.mkdir()
  save_file(state, str(directory / "model.safetensors"))
  with pytest.raises(CheckpointMismatchError) as error:
    load_params(str(directory), tiny_config)
  assert error.value.unexpected == [
    "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight"
  ]
  with pytest.raises(CheckpointMismatchError, match="relative_attention_bias"):
    hf_to_params(state, tiny_config)


def test_transformers_loads_what_we_write_and_agrees(tmp_path, tiny_params, tiny_config):
  """HF's own loader reads our config.json + safetensors, and computes our logits."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  import jax
  import jax.numpy as jnp

  from prompt_tuning.t5 import Transformer

  # Scale the random tree like T5's init so logits are well conditioned in float32.
  params = {
    n: a * (0.2 if a.ndim == 2 and "embedding" not in n else 1.0)
    for n, a in tree.flatten(tiny_params).items()
  }
  params = tree.unflatten(
    {n: (1.0 + 0.1 * a) if n.endswith("scale") else a for n, a in params.items()}
  )
  directory = str(tmp_path / "hf")
  write_hf_checkpoint(params, tiny_config, directory)
  model = transformers.T5ForConditionalGeneration.from_pretrained(directory).eval()
  inputs = np.array([[5, 9, 200, 31000, 1, 0, 0], [7, 7, 1, 0, 0, 0, 0]], np.int32)
  targets = np.array([[4, 88, 1], [12, 1, 0]], np.int32)
  decoder_inputs = np.concatenate([np.zeros((2, 1), np.int32), targets[:, :-1]], 1)
  with torch.no_grad():
    theirs = model(
      input_ids=torch.tensor(inputs).long(),
      attention_mask=torch.tensor(inputs > 0).long(),
      decoder_input_ids=torch.tensor(decoder_inputs).long(),
    ).logits.numpy()
  forward = jax.jit(lambda p, x, y, z: Transformer(tiny_config).apply({"params": p}, x, y, z))
  ours = np.asarray(
    forward(params, jnp.asarray(inputs), jnp.asarray(decoder_inputs), jnp.asarray(targets))
  )
  real = targets > 0
  np.testing.assert_allclose(ours[real], theirs[real], atol=1e-4, rtol=0)


def test_config_json_round_trip():
  from prompt_tuning.convert.hf import config_from_hf_dict, hf_config_dict

  for size in ("tiny", "small", "mt5_xl"):
    config = T5Config.from_size(size)
    assert config_from_hf_dict(hf_config_dict(config)) == config


def test_the_lm_head_check_reports_what_from_pretrained_does_here(
  tmp_path, tiny_params, tiny_config
):
  """`check_lm_head_loading` answers for the installed transformers: a tied load would
  give T5 1.1 the input embedding as its output matrix (docs/interop.md)."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  from prompt_tuning.convert.hf import check_lm_head_loading, loading_advice, restore_lm_head

  directory = str(tmp_path / "hf")
  write_hf_checkpoint(tiny_params, tiny_config, directory)
  model = transformers.T5ForConditionalGeneration.from_pretrained(directory)
  own_head = np.array_equal(
    model.lm_head.weight.detach().numpy(),
    tree.flatten(tiny_params)["decoder/logits_dense/kernel"].T,
  )
  check = check_lm_head_loading()
  assert check.from_pretrained_untied == own_head
  assert check.transformers_version == transformers.__version__
  assert ("restore_lm_head" in loading_advice(directory)) == (not own_head)
  # The remedy works whatever the load did: lm_head is the stored one, apart from shared.
  model.tie_weights()
  restore_lm_head(model, directory)
  assert model.lm_head.weight.data_ptr() != model.shared.weight.data_ptr()
  np.testing.assert_array_equal(
    model.lm_head.weight.detach().numpy(),
    tree.flatten(tiny_params)["decoder/logits_dense/kernel"].T,
  )
  assert not torch.equal(model.lm_head.weight, model.shared.weight)
