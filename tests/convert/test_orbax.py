"""Orbax checkpoints: ours (a plain parameter tree) and newer T5X train states."""

from __future__ import annotations

import os

import jax
import ml_dtypes
import numpy as np
import orbax.checkpoint as ocp
import pytest
from etils import epath

from prompt_tuning import tree
from prompt_tuning.convert import detect_format, load_params, save_params_orbax
from prompt_tuning.convert.orbax_io import OrbaxReader
from tests.convert.conftest import assert_trees_equal


def _with_prompt(params: dict) -> dict:
  flat = tree.flatten(params)
  flat["encoder/prompt/prompt"] = np.arange(20, dtype=np.float32).reshape(5, 4)
  return tree.unflatten(flat)


def test_own_orbax_round_trip(tmp_path, tiny_params, tiny_config):
  path = save_params_orbax(tiny_params, str(tmp_path / "params"))
  assert detect_format(path) == "orbax"
  assert_trees_equal(tiny_params, load_params(path, tiny_config))
  with pytest.raises(ValueError, match="already exists"):
    save_params_orbax(tiny_params, path)


def test_t5x_orbax_train_state_layout(tmp_path, tiny_params, tiny_config):
  """T5X's orbax CheckpointManager: `checkpoint_N/state/` holds {target, state}; only
  `target` comes back, and the prompt of a prompt-tuned run comes back with it."""
  params = _with_prompt(tiny_params)
  train_state = {
    "target": params,
    "state": {
      "step": np.asarray(1000, np.int32),
      "param_states": {
        "token_embedder": {
          "embedding": {"v_row": np.ones(32128, np.float32), "v_col": np.ones(32, np.float32)}
        }
      },
    },
  }
  manager = ocp.CheckpointManager(
    epath.Path(tmp_path / "model"),
    item_names=("state",),
    options=ocp.CheckpointManagerOptions(step_prefix="checkpoint"),
  )
  manager.save(1000, args=ocp.args.Composite(state=ocp.args.PyTreeSave(train_state)))
  manager.wait_until_finished()
  step_dir = str(tmp_path / "model" / "checkpoint_1000")
  assert os.path.isdir(os.path.join(step_dir, "state"))
  assert detect_format(step_dir) == "t5x_orbax"
  assert_trees_equal(params, load_params(step_dir, tiny_config))
  with pytest.raises(ValueError, match="checkpoint_1000"):
    detect_format(str(tmp_path / "model"))  # A model dir, not a checkpoint.


def test_per_array_zarr_orbax_with_dtype_and_sharding(tmp_path, tiny_params, tiny_config):
  """Pre-OCDBT orbax layout (one zarr directory per array)."""
  path = tmp_path / "zarr"
  checkpointer = ocp.Checkpointer(ocp.PyTreeCheckpointHandler(use_ocdbt=False))
  checkpointer.save(epath.Path(path), args=ocp.args.PyTreeSave({"target": tiny_params}))
  assert os.path.isdir(path / "target.token_embedder.embedding")
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  loaded = load_params(
    str(path),
    tiny_config,
    dtype=ml_dtypes.bfloat16,
    shardings={"token_embedder": {"embedding": sharding}},
  )
  embedding = loaded["token_embedder"]["embedding"]
  assert isinstance(embedding, jax.Array) and embedding.sharding == sharding
  assert embedding.dtype == np.dtype(ml_dtypes.bfloat16)
  np.testing.assert_array_equal(
    np.asarray(embedding), tiny_params["token_embedder"]["embedding"].astype(ml_dtypes.bfloat16)
  )


def test_reader_reads_single_arrays_and_slices(tmp_path, tiny_params):
  path = save_params_orbax(tiny_params, str(tmp_path / "params"))
  reader = OrbaxReader(path)
  name = "encoder/layers_1/mlp/wo/kernel"
  assert reader.arrays()[name].shape == (64, 32)
  np.testing.assert_array_equal(
    reader.read(name, (slice(3, 9), slice(0, 4))), tree.flatten(tiny_params)[name][3:9, :4]
  )


_LOAD_IN_PROCESS = """
import os, sys
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
import jax
import numpy as np
jax.distributed.initialize(sys.argv[1], 2, int(sys.argv[2]))
from prompt_tuning import tree
from prompt_tuning.convert import load_params
flat = tree.flatten(load_params(sys.argv[3]))
checksum = sum(float(np.sum(np.asarray(v))) for v in flat.values())
# A file, not stdout: Gloo's threads write to stdout, even into the middle of a line.
with open(sys.argv[4], "w") as report:
  report.write(f"{jax.process_index()} {checksum!r}")
"""


def test_every_process_of_a_multi_process_job_loads_an_orbax_checkpoint(tmp_path, tiny_params):
  """Arrays with no requested sharding land on the process's own device; on process 0's
  device (jax.devices()[0]) process 1 could not hold them and the load failed there."""
  import socket
  import subprocess
  import sys

  path = save_params_orbax(tiny_params, str(tmp_path / "params"))
  with socket.socket() as s:
    s.bind(("localhost", 0))
    address = f"localhost:{s.getsockname()[1]}"
  script = tmp_path / "load.py"
  script.write_text(_LOAD_IN_PROCESS)
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
  env["PYTHONPATH"] = os.getcwd()
  reports = [tmp_path / f"report_{i}.txt" for i in range(2)]
  processes = [
    subprocess.Popen(
      [sys.executable, str(script), address, str(i), path, str(reports[i])],
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
      env=env,
    )
    for i in range(2)
  ]
  outputs = [p.communicate(timeout=240) for p in processes]
  total = sum(float(np.sum(v)) for v in tree.flatten(tiny_params).values())
  for i, (process, (_, stderr)) in enumerate(zip(processes, outputs)):
    assert process.returncode == 0, stderr[-2000:]
    index, checksum = reports[i].read_text().split()
    assert int(index) == i
    np.testing.assert_allclose(float(checksum), total, rtol=1e-6)
