"""T5X legacy checkpoints (msgpack + tensorstore zarr), as released for t5_1_1_lm100k."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import ml_dtypes
import msgpack
import numpy as np
import pytest

from prompt_tuning import tree
from prompt_tuning.convert import (
  CheckpointReadError,
  detect_format,
  load_params,
  write_t5x_checkpoint,
)
from prompt_tuning.convert.t5x_legacy import T5XLegacyReader, chunk_shape
from tests.convert import t5x_by_hand
from tests.convert.conftest import assert_trees_equal

KERNEL = "encoder/layers_0/attention/key/kernel"


@pytest.fixture(scope="module")
def hand_written(tmp_path_factory, tiny_params):
  directory = str(tmp_path_factory.mktemp("t5x") / "checkpoint_1100000")
  t5x_by_hand.write_checkpoint(directory, tiny_params)
  return directory


def test_reads_checkpoint_written_to_the_documented_format(hand_written, tiny_params, tiny_config):
  assert detect_format(hand_written) == "t5x"
  # The embedding spans 7 gzip chunks, the last one partial.
  embedding_dir = os.path.join(hand_written, "target.token_embedder.embedding")
  assert len([f for f in os.listdir(embedding_dir) if f != ".zarray"]) == 7
  loaded = load_params(hand_written, tiny_config)
  assert_trees_equal(tiny_params, loaded)  # Optimiser state and step are not returned.


def test_accepts_the_checkpoint_file_itself(hand_written, tiny_params):
  loaded = load_params(os.path.join(hand_written, "checkpoint"))
  assert_trees_equal(tiny_params, loaded)


def test_reads_old_spec_layout_with_gcs_dummy_bucket(tmp_path, tiny_params):
  """Older T5X wrote `path` beside `kvstore` and, on GCS, a placeholder bucket; a local
  copy must still resolve every array relative to the checkpoint directory."""
  directory = str(tmp_path / "ckpt")
  t5x_by_hand.write_checkpoint(directory, tiny_params, old_layout=True)
  assert_trees_equal(tiny_params, load_params(directory))


def test_writer_produces_the_documented_layout(tmp_path, tiny_params):
  directory = write_t5x_checkpoint(tiny_params, str(tmp_path / "out"), step=7, chunk_bytes=1 << 16)
  with open(os.path.join(directory, "checkpoint"), "rb") as f:
    ext_codes = []

    def hook(code, data):
      ext_codes.append(code)
      return msgpack.ExtType(code, data)

    contents = msgpack.unpackb(f.read(), ext_hook=hook, raw=False)
  assert set(contents) == {"version", "optimizer"} and contents["version"] == 3
  assert set(contents["optimizer"]) == {"target", "state"}
  target = contents["optimizer"]["target"]
  norm = target["encoder"]["layers_0"]["pre_attention_layer_norm"]["scale"]
  assert isinstance(norm, msgpack.ExtType) and norm.code == 1  # Inline ndarray.
  assert set(ext_codes) == {1}
  spec = target["encoder"]["layers_0"]["attention"]["key"]["kernel"]
  assert spec["driver"] == "zarr"
  assert spec["kvstore"] == {
    "driver": "file",
    "path": "target.encoder.layers_0.attention.key.kernel",
  }
  with open(os.path.join(directory, spec["kvstore"]["path"], ".zarray")) as f:
    zarray = json.load(f)
  assert zarray["compressor"]["id"] == "gzip" and zarray["shape"] == [32, 32]
  # 64 KiB chunks split the 4 MiB embedding into many files.
  assert len(os.listdir(os.path.join(directory, "target.token_embedder.embedding"))) > 60
  assert_trees_equal(tiny_params, load_params(directory))


def test_chunk_shape_tiles_exactly_within_budget():
  assert chunk_shape((32128, 512), 4, 64 * 1024 * 1024) == [32128, 512]
  chunks = chunk_shape((32128, 4096), 4, 64 * 1024 * 1024)
  assert 32128 % chunks[0] == 0 and 4096 % chunks[1] == 0
  assert chunks[0] * chunks[1] * 4 <= 64 * 1024 * 1024
  assert chunk_shape((7,), 4, 4) == [1]


def test_bfloat16_inline_and_zarr_round_trip(tmp_path, tiny_params):
  params = {
    name: np.asarray(a).astype(ml_dtypes.bfloat16) for name, a in tree.flatten(tiny_params).items()
  }
  directory = write_t5x_checkpoint(tree.unflatten(params), str(tmp_path / "bf16"))
  reader = T5XLegacyReader(directory)
  assert reader.arrays()[KERNEL].dtype == np.dtype(ml_dtypes.bfloat16)
  assert_trees_equal(tree.unflatten(params), load_params(directory))


def test_dtype_cast_and_sliced_reads(hand_written, tiny_params):
  loaded = load_params(hand_written, dtype=ml_dtypes.bfloat16)
  kernel = tree.flatten(loaded)[KERNEL]
  assert kernel.dtype == np.dtype(ml_dtypes.bfloat16)
  np.testing.assert_array_equal(
    np.asarray(kernel), tree.flatten(tiny_params)[KERNEL].astype(ml_dtypes.bfloat16)
  )
  reader = T5XLegacyReader(hand_written)
  part = reader.read("token_embedder/embedding", (slice(4990, 5010), slice(8, 16)))
  np.testing.assert_array_equal(
    part, tree.flatten(tiny_params)["token_embedder/embedding"][4990:5010, 8:16]
  )


def test_truncated_chunk_names_array_and_file(tmp_path, tiny_params):
  directory = str(tmp_path / "ckpt")
  t5x_by_hand.write_checkpoint(directory, tiny_params)
  chunk = os.path.join(directory, "target.encoder.layers_0.attention.key.kernel", "0.0")
  with open(chunk, "rb") as f:
    data = f.read()
  with open(chunk, "wb") as f:
    f.write(data[: len(data) // 2])
  with pytest.raises(CheckpointReadError) as error:
    load_params(directory)
  message = str(error.value)
  assert KERNEL in message and "target.encoder.layers_0.attention.key.kernel" in message
  assert "truncated or damaged" in message


def test_missing_chunk_is_an_error_not_zeros(tmp_path, tiny_params):
  directory = str(tmp_path / "ckpt")
  t5x_by_hand.write_checkpoint(directory, tiny_params)
  os.remove(os.path.join(directory, "target.token_embedder.embedding", "3.0"))
  with pytest.raises(CheckpointReadError, match=r"token_embedder/embedding.*3\.0.*missing"):
    load_params(directory)


def test_damaged_msgpack_is_reported(tmp_path, tiny_params):
  directory = str(tmp_path / "ckpt")
  t5x_by_hand.write_checkpoint(directory, tiny_params)
  path = os.path.join(directory, "checkpoint")
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[:100])
  with pytest.raises(CheckpointReadError, match="not a readable msgpack"):
    load_params(directory)


_SHARDED_LOAD = textwrap.dedent("""
    import os, sys
    import jax, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from prompt_tuning import tree
    from prompt_tuning.convert import load_params
    from prompt_tuning.convert.t5x_legacy import T5XLegacyReader

    requested = []
    original = T5XLegacyReader.read
    def recording_read(self, name, index=None):
      requested.append((name, index))
      return original(self, name, index)
    T5XLegacyReader.read = recording_read

    mesh = Mesh(np.array(jax.devices()).reshape(2, 2), ("data", "model"))
    name = "token_embedder/embedding"
    shardings = {"token_embedder": {"embedding": NamedSharding(mesh, P("model", None))},
                 "decoder": {"logits_dense": {"kernel": NamedSharding(mesh, P(None, "model"))}}}
    params = load_params(sys.argv[1], shardings=shardings)
    embedding = params["token_embedder"]["embedding"]
    assert embedding.sharding == shardings["token_embedder"]["embedding"]
    full = T5XLegacyReader(sys.argv[1]).read(name)
    np.testing.assert_array_equal(np.asarray(embedding), full)
    # Each of the two row-halves was read once (not the whole table, not per device).
    rows = sorted(index[0].indices(full.shape[0]) for n, index in requested
                  if n == name and index is not None)
    assert rows == [(0, 16064, 1), (16064, 32128, 1)], rows
    print("ok")
""")


def test_sharded_load_reads_only_each_shard(hand_written):
  """Runs in a subprocess: a 4-device CPU mesh needs XLA flags set before jax starts."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  result = subprocess.run(
    [sys.executable, "-c", _SHARDED_LOAD, hand_written],
    env=env,
    cwd=root,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip().endswith("ok")
