"""Checkpoints: round trips, numpy export, retention, damaged checkpoints, meshes."""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import pathlib
import shutil
import socket

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from prompt_tuning import convert
from prompt_tuning.convert import orbax_io
from prompt_tuning.training import checkpoints, fingerprint
from prompt_tuning.training import optimizers
from prompt_tuning.training.train_step import TrainState

PROMPT_SHAPE = (4, 8)


@pytest.fixture
def collect_garbage_after():
  yield
  gc.collect()


def _orbax_async_noise(test):
  """Reading a damaged checkpoint makes orbax/tensorstore leave failed asyncio futures
  behind; Python reports them as "unraisable" when they are collected. Harmless here,
  so ignored, and collected before the test ends (while the filter applies) instead of
  in whichever test the garbage collector happens to run next."""
  test = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")(test)
  return pytest.mark.usefixtures("collect_garbage_after")(test)


def _trainable(seed: int = 0, shape: tuple[int, int] = PROMPT_SHAPE) -> dict:
  values = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
  return {"encoder": {"prompt": {"prompt": jnp.asarray(values)}}}


def _frozen() -> dict:
  rng = np.random.default_rng(0)
  return {
    "encoder": {"layers_0": {"mlp": {"wi": rng.normal(size=(8, 16)).astype(np.float32)}}},
    "token_embedder": {"embedding": rng.normal(size=(32, 8)).astype(np.float32)},
  }


def _state(step: int, seed: int = 0, shape: tuple[int, int] = PROMPT_SHAPE) -> TrainState:
  """Adafactor's real state structure, filled with non-zero values as after training."""
  state = TrainState.create(_trainable(seed, shape), optimizers.adafactor())
  rng = np.random.default_rng(seed + 1000)
  opt_state = jax.tree.map(
    lambda x: jnp.asarray(rng.uniform(1, 10, size=x.shape).astype(x.dtype)), state.opt_state
  )
  return state.replace(step=jnp.asarray(step, jnp.int32), opt_state=opt_state)


def _assert_trees_equal(a, b) -> None:
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert np.asarray(x).dtype == np.asarray(y).dtype
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _save_steps(model_dir, steps, **kwargs) -> dict[int, TrainState]:
  states = {}
  with checkpoints.CheckpointManager(str(model_dir), **kwargs) as manager:
    for step in steps:
      states[step] = _state(step, seed=step)
      manager.save(states[step], data_position=10 * step, metadata={"at": step})
  return states


def _skip_warnings(caplog) -> list[str]:
  return [
    r.getMessage()
    for r in caplog.records
    if r.levelno == logging.WARNING and "unreadable checkpoint" in r.getMessage()
  ]


def test_round_trip_state_data_position_and_metadata(tmp_path):
  state = _state(7)
  metadata = {
    "base_checkpoint": "/ckpt/t5_small",
    "base_fingerprint": "abc",
    "seed": 3,
    "train_steps": 100,
  }
  with checkpoints.CheckpointManager(str(tmp_path)) as manager:
    manager.save(state, data_position=np.int64(42), metadata=metadata)
  manager = checkpoints.CheckpointManager(str(tmp_path))
  assert manager.latest_step() == 7
  assert manager.all_steps() == [7]
  target = _state(0, seed=99)
  restored = manager.restore(target)
  assert restored.step == 7 and int(restored.state.step) == 7
  assert restored.data_position == 42
  assert restored.metadata == metadata
  assert restored.frozen is None
  _assert_trees_equal(restored.state, state)
  # An abstract target (what the trainer builds for big models) restores the same values.
  restored = manager.restore(jax.eval_shape(lambda: target), step=7)
  _assert_trees_equal(restored.state, state)
  with pytest.raises(ValueError, match="available steps: \\[7\\]"):
    manager.restore(target, step=8)
  manager.close()


def test_a_relative_model_dir_saves_restores_and_reads_through_the_registry(tmp_path, monkeypatch):
  """orbax refuses relative paths ("Checkpoint path should be absolute"); users pass them."""
  monkeypatch.chdir(tmp_path)
  state = _state(3)
  with checkpoints.CheckpointManager("runs/relative") as manager:
    manager.save(state, data_position=np.int64(1), metadata={})
  restored = checkpoints.CheckpointManager("runs/relative").restore(_state(0, seed=5))
  _assert_trees_equal(restored.state, state)
  params = convert.load_params("runs/relative/checkpoint_3")
  np.testing.assert_array_equal(
    params["encoder"]["prompt"]["prompt"], state.trainable["encoder"]["prompt"]["prompt"]
  )


def test_save_survives_donated_source_arrays(tmp_path):
  # The trainer donates the state to the next step while orbax may still be writing.
  state = _state(3)
  expected = jax.tree.map(np.array, state)
  manager = checkpoints.CheckpointManager(str(tmp_path))
  manager.save(state, data_position=1)
  for leaf in jax.tree.leaves(state):
    leaf.delete()
  manager.wait()
  _assert_trees_equal(manager.restore(_state(0)).state, expected)
  manager.close()


def test_numpy_export_names_and_values(tmp_path):
  state = _state(5)
  with checkpoints.CheckpointManager(str(tmp_path)) as manager:
    manager.save(state)
  export = tmp_path / "numpy_checkpoints" / "checkpoint_5"
  assert sorted(p.name for p in export.iterdir()) == ["encoder.prompt.prompt.npy"]
  prompt = np.load(export / "encoder.prompt.prompt.npy")
  assert prompt.dtype == np.float32
  np.testing.assert_array_equal(prompt, np.asarray(state.trainable["encoder"]["prompt"]["prompt"]))


def test_export_numpy_is_atomic_and_writes_bfloat16_as_float32(tmp_path):
  params = {
    "a": {"b": np.arange(6, dtype=np.float32).reshape(2, 3)},
    "c": jnp.ones((2,), jnp.bfloat16),
  }
  target = tmp_path / "export"
  paths = checkpoints.export_numpy(params, str(target))
  assert sorted(pathlib.Path(p).name for p in paths) == ["a.b.npy", "c.npy"]
  assert sorted(os.listdir(tmp_path)) == ["export"]  # No temporary directory left over.
  np.testing.assert_array_equal(np.load(target / "a.b.npy"), params["a"]["b"])
  c = np.load(target / "c.npy")
  assert c.dtype == np.float32 and c.tolist() == [1.0, 1.0]
  # Exporting again replaces the directory as a whole.
  checkpoints.export_numpy({"z": np.zeros(1)}, str(target))
  assert sorted(os.listdir(target)) == ["z.npy"]
  assert sorted(os.listdir(tmp_path)) == ["export"]


def test_keep_n_deletes_old_checkpoints_and_their_numpy_exports(tmp_path):
  _save_steps(tmp_path, [10, 20, 30, 40], keep=2)
  manager = checkpoints.CheckpointManager(str(tmp_path), keep=2)
  assert manager.all_steps() == [30, 40]
  assert sorted(os.listdir(tmp_path / "numpy_checkpoints")) == ["checkpoint_30", "checkpoint_40"]
  assert not (tmp_path / "checkpoint_10").exists()
  assert not (tmp_path / "checkpoint_20").exists()
  manager.close()


def test_keep_none_keeps_everything(tmp_path):
  _save_steps(tmp_path, [1, 2, 3, 4], keep=None)
  with checkpoints.CheckpointManager(str(tmp_path), keep=None) as manager:
    assert manager.all_steps() == [1, 2, 3, 4]
  assert len(os.listdir(tmp_path / "numpy_checkpoints")) == 4


def _truncate_arrays(step_dir: pathlib.Path) -> None:
  files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
  assert files, "expected orbax data files under state/**/d/"
  for path in files:
    with open(path, "r+b") as f:
      f.truncate(path.stat().st_size // 2)


def _delete_manifest(step_dir: pathlib.Path) -> None:
  (step_dir / "state" / "manifest.ocdbt").unlink()


def _delete_progress(step_dir: pathlib.Path) -> None:
  (step_dir / "progress" / "metadata").unlink()


def _garble_metadata_json(step_dir: pathlib.Path) -> None:
  (step_dir / "metadata" / "metadata").write_text('{"base_checkpoint": ')


@_orbax_async_noise
@pytest.mark.parametrize(
  "damage", [_truncate_arrays, _delete_manifest, _delete_progress, _garble_metadata_json]
)
def test_damaged_latest_checkpoint_falls_back_with_a_warning(tmp_path, caplog, damage):
  states = _save_steps(tmp_path, [10, 20])
  damage(tmp_path / "checkpoint_20")
  manager = checkpoints.CheckpointManager(str(tmp_path))
  with caplog.at_level(logging.WARNING):
    assert manager.latest_step() == 10
    restored = manager.restore(_state(0))
  warnings = _skip_warnings(caplog)
  assert len(warnings) == 1 and "checkpoint_20" in warnings[0]
  assert restored.step == 10 and restored.data_position == 100
  _assert_trees_equal(restored.state, states[10])
  # Training on from step 10 saves step 20 again, replacing the damaged one.
  manager.save(states[20], data_position=200)
  manager.wait()
  assert manager.latest_step() == 20
  _assert_trees_equal(manager.restore(_state(0)).state, states[20])
  manager.close()


@_orbax_async_noise
def test_damage_seen_only_by_a_full_read_still_falls_back(tmp_path, caplog, monkeypatch):
  # States above FULL_READ_CHECK_BYTES are checked through their metadata only. Cutting
  # the end off the file holding a big array's chunks leaves the metadata readable, so
  # the damage shows up in restore, which must then fall back too.
  shape = (256, 1024)
  states = {step: _state(step, seed=step, shape=shape) for step in (10, 20)}
  with checkpoints.CheckpointManager(str(tmp_path)) as manager:
    for state in states.values():
      manager.save(state)
  data = max(
    (
      p
      for p in (tmp_path / "checkpoint_20" / "state").rglob("*")
      if p.is_file() and p.parent.name == "d"
    ),
    key=lambda p: p.stat().st_size,
  )
  assert data.stat().st_size > 2 * math.prod(shape)  # The prompt's chunks (compressed).
  with open(data, "r+b") as f:
    f.truncate(data.stat().st_size * 9 // 10)

  assert checkpoints.CheckpointManager(str(tmp_path)).latest_step() == 10  # Full read.
  monkeypatch.setattr(checkpoints, "FULL_READ_CHECK_BYTES", 0)
  manager = checkpoints.CheckpointManager(str(tmp_path))
  assert manager.latest_step() == 20  # Metadata alone looks fine.
  with caplog.at_level(logging.WARNING):
    restored = manager.restore(_state(0, shape=shape))
  assert restored.step == 10
  _assert_trees_equal(restored.state, states[10])
  assert any("checkpoint_20" in w for w in _skip_warnings(caplog))
  manager.close()


@_orbax_async_noise
def test_no_readable_checkpoint_is_a_clear_error(tmp_path):
  _save_steps(tmp_path, [10, 20])
  for step in (10, 20):
    _truncate_arrays(tmp_path / f"checkpoint_{step}")
  manager = checkpoints.CheckpointManager(str(tmp_path))
  with pytest.raises(checkpoints.NoUsableCheckpointError, match="new MODEL_DIR"):
    manager.latest_step()
  with pytest.raises(checkpoints.NoUsableCheckpointError, match="none of the checkpoints"):
    manager.restore(_state(0))
  manager.close()


def test_empty_model_dir_has_no_latest_step(tmp_path):
  with checkpoints.CheckpointManager(str(tmp_path / "new")) as manager:
    assert manager.latest_step() is None
    assert manager.all_steps() == []


def test_half_written_temporary_directories_are_ignored(tmp_path, caplog):
  states = _save_steps(tmp_path, [10, 20])
  # What a SIGKILL during orbax's save of step 30 leaves on disk (observed with this
  # orbax version): the step directory and its items under a temporary name.
  partial = tmp_path / "checkpoint_30.orbax-checkpoint-tmp"
  shutil.copytree(tmp_path / "checkpoint_20", partial)
  shutil.rmtree(partial / "state")
  (partial / "state.orbax-checkpoint-tmp").mkdir()
  (partial / "commit_success.txt").unlink(missing_ok=True)
  # And a numpy export interrupted before its rename.
  numpy_partial = tmp_path / "numpy_checkpoints" / "checkpoint_30.tmp-1234abcd"
  numpy_partial.mkdir()
  (numpy_partial / "encoder.prompt.prompt.npy").write_bytes(b"\x93NUMPY")
  with caplog.at_level(logging.WARNING):
    manager = checkpoints.CheckpointManager(str(tmp_path))
    assert manager.latest_step() == 20
    assert manager.all_steps() == [10, 20]
    restored = manager.restore(_state(0))
  assert not _skip_warnings(caplog)
  _assert_trees_equal(restored.state, states[20])
  assert not numpy_partial.exists()
  manager.save(_state(30), data_position=300)
  manager.close()
  assert checkpoints.CheckpointManager(str(tmp_path)).latest_step() == 30
  assert sorted(os.listdir(tmp_path / "numpy_checkpoints")) == [
    "checkpoint_10",
    "checkpoint_20",
    "checkpoint_30",
  ]


def test_saving_an_existing_good_step_again_keeps_it(tmp_path):
  first = _state(5, seed=1)
  with checkpoints.CheckpointManager(str(tmp_path)) as manager:
    manager.save(first, data_position=1, metadata={"run": 1})
    manager.save(_state(5, seed=2), data_position=2, metadata={"run": 2})
    restored = manager.restore(_state(0))
  assert restored.metadata == {"run": 1} and restored.data_position == 1
  _assert_trees_equal(restored.state, first)


def test_mismatched_target_is_a_one_line_value_error(tmp_path):
  _save_steps(tmp_path, [10])
  manager = checkpoints.CheckpointManager(str(tmp_path))
  with pytest.raises(ValueError) as info:
    manager.restore(_state(0, shape=(6, 8)))
  message = str(info.value)
  assert isinstance(info.value, convert.CheckpointMismatchError)
  assert "\n" not in message
  assert "trainable/encoder/prompt/prompt is (4, 8) there but (6, 8) here" in message
  assert "new MODEL_DIR" in message
  # A different tree structure (another optimiser) is reported by name.
  other = TrainState.create(_trainable(), optax.adam(1e-3))
  with pytest.raises(convert.CheckpointMismatchError, match="only in the checkpoint"):
    manager.restore(other, step=10)
  manager.close()


def test_save_full_stores_and_restores_frozen(tmp_path):
  state, frozen = _state(4), _frozen()
  with checkpoints.CheckpointManager(str(tmp_path), save_full=True) as manager:
    manager.save(state, frozen=frozen, data_position=8)
    with pytest.raises(ValueError, match="frozen"):
      manager.save(_state(5))
  manager = checkpoints.CheckpointManager(str(tmp_path))
  restored = manager.restore(_state(0), frozen_target=jax.tree.map(jnp.zeros_like, frozen))
  _assert_trees_equal(restored.state, state)
  _assert_trees_equal(restored.frozen, frozen)
  assert isinstance(restored.frozen["token_embedder"]["embedding"], jax.Array)
  assert manager.restore(_state(0)).frozen is None
  manager.close()


def test_trainable_only_checkpoint_has_no_frozen_params(tmp_path):
  _save_steps(tmp_path, [3])
  with checkpoints.CheckpointManager(str(tmp_path)) as manager:
    assert not (tmp_path / "checkpoint_3" / "frozen").exists()
    with pytest.raises(convert.CheckpointMismatchError, match="base checkpoint"):
      manager.restore(_state(0), frozen_target=_frozen())


def test_metadata_must_be_json(tmp_path):
  with checkpoints.CheckpointManager(str(tmp_path)) as manager:
    with pytest.raises(ValueError, match="JSON"):
      manager.save(_state(1), metadata={"bad": object()})
    assert manager.all_steps() == []


def test_fingerprint_is_stable_and_sees_every_value():
  params = {
    "encoder": {"w": np.arange(32, dtype=np.float32).reshape(4, 8)},
    "decoder": {"b": np.ones(3, np.float32)},
  }
  base = fingerprint.fingerprint_params(params)
  assert base == fingerprint.fingerprint_params(jax.tree.map(np.copy, params))
  assert base == fingerprint.fingerprint_params(jax.tree.map(jnp.asarray, params))
  seen = {base}
  for i in range(32):  # The smallest possible change at each position.
    changed = params["encoder"]["w"].copy().reshape(-1)
    changed[i] = np.nextafter(changed[i], np.float32(np.inf))
    seen.add(
      fingerprint.fingerprint_params(
        {"encoder": {"w": changed.reshape(4, 8)}, "decoder": params["decoder"]}
      )
    )
  assert len(seen) == 33
  swapped = params["encoder"]["w"].copy()
  swapped[0, [0, 1]] = swapped[0, [1, 0]]
  assert fingerprint.fingerprint_params({**params, "encoder": {"w": swapped}}) != base
  assert (
    fingerprint.fingerprint_params({**params, "encoder": {"v": params["encoder"]["w"]}}) != base
  )
  assert (
    fingerprint.fingerprint_params(
      {**params, "encoder": {"w": params["encoder"]["w"].reshape(8, 4)}}
    )
    != base
  )
  assert (
    fingerprint.fingerprint_params(
      {**params, "encoder": {"w": params["encoder"]["w"].astype(ml_dtypes.bfloat16)}}
    )
    != base
  )


def test_fingerprint_does_not_depend_on_placement():
  if len(jax.devices()) < 8:
    pytest.skip("needs 8 devices (tests/conftest.py sets XLA_FLAGS)")
  values = {
    "w": np.random.default_rng(0).normal(size=(16, 24)).astype(np.float32),
    "e": np.random.default_rng(1).normal(size=(8, 4)).astype(ml_dtypes.bfloat16),
  }
  mesh = Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("data", "model"))
  sharded = {
    "w": jax.device_put(values["w"], NamedSharding(mesh, PartitionSpec("data", "model"))),
    "e": jax.device_put(values["e"], NamedSharding(mesh, PartitionSpec("model"))),
  }
  assert fingerprint.fingerprint_params(sharded) == fingerprint.fingerprint_params(values)


def _mesh(shape: tuple[int, int]) -> Mesh:
  return Mesh(np.array(jax.devices()[:8]).reshape(shape), ("data", "model"))


def test_restore_across_meshes(tmp_path):
  if len(jax.devices()) < 8:
    pytest.skip("needs 8 devices (tests/conftest.py sets XLA_FLAGS)")
  state = _state(12)
  expected = jax.tree.map(np.array, state)
  replicated = jax.device_put(state, NamedSharding(_mesh((2, 4)), PartitionSpec()))
  with checkpoints.CheckpointManager(str(tmp_path)) as manager:
    manager.save(replicated, data_position=5)

  mesh = _mesh((1, 8))

  def on_1x8(x):
    # Split the last dimension over "model" where it divides, to exercise resharding.
    spec = (
      PartitionSpec(*([None] * (x.ndim - 1)), "model")
      if x.ndim and x.shape[-1] % 8 == 0
      else PartitionSpec()
    )
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(mesh, spec))

  manager = checkpoints.CheckpointManager(str(tmp_path))
  target = jax.tree.map(on_1x8, state)
  restored = manager.restore(target)
  _assert_trees_equal(restored.state, expected)
  for got, want in zip(jax.tree.leaves(restored.state), jax.tree.leaves(target)):
    assert got.sharding == want.sharding
  prompt = restored.state.trainable["encoder"]["prompt"]["prompt"]
  assert len(prompt.addressable_shards) == 8 and prompt.addressable_shards[0].data.shape == (4, 1)

  device = jax.devices()[3]
  single = jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(
      x.shape, x.dtype, sharding=jax.sharding.SingleDeviceSharding(device)
    ),
    state,
  )
  restored = manager.restore(single)
  _assert_trees_equal(restored.state, expected)
  assert restored.state.trainable["encoder"]["prompt"]["prompt"].devices() == {device}
  manager.close()


def test_keep_must_be_positive(tmp_path):
  with pytest.raises(ValueError, match="keep"):
    checkpoints.CheckpointManager(str(tmp_path), keep=0)


def test_fingerprint_host_chunks_agree_with_device(monkeypatch):
  # Big numpy leaves are checksummed in chunks on threads; the split must not matter.
  monkeypatch.setattr(fingerprint, "_NUMPY_CHUNK", 7)
  params = {
    "w": np.random.default_rng(2).normal(size=(5, 9)).astype(np.float32),
    "i": np.arange(30, dtype=np.int32),
    "m": np.array([True, False, True]),
  }
  assert fingerprint.fingerprint_params(params) == fingerprint.fingerprint_params(
    jax.tree.map(jnp.asarray, params)
  )


def test_a_full_checkpoint_loads_on_fewer_devices_than_wrote_it(tmp_path):
  """A full checkpoint written from arrays sharded over 8 devices loads, through the
  one checkpoint registry, in a process with one device (orbax's plain restore refuses
  the topology change)."""
  import subprocess
  import sys

  import flax

  if len(jax.devices()) < 8:
    pytest.skip("needs 8 devices (tests/conftest.py sets XLA_FLAGS)")
  mesh = _mesh((2, 4))
  state = jax.device_put(_state(3, shape=(4, 8)), NamedSharding(mesh, PartitionSpec()))
  frozen = jax.device_put(_frozen(), NamedSharding(mesh, PartitionSpec(None, "model")))
  with checkpoints.CheckpointManager(str(tmp_path), save_full=True) as manager:
    manager.save(state, frozen=frozen)
  expected = {
    **_frozen(),
    "encoder": {**_frozen()["encoder"], **jax.tree.map(np.asarray, _trainable(0))["encoder"]},
  }
  np.savez(tmp_path / "expected.npz", **flax.traverse_util.flatten_dict(expected, sep="/"))
  code = (
    "import sys, numpy as np\n"
    "from prompt_tuning import convert, tree\n"
    "got = tree.flatten(convert.load_params(sys.argv[1]))\n"
    "want = dict(np.load(sys.argv[2]))\n"
    "assert sorted(got) == sorted(want), (sorted(got), sorted(want))\n"
    "for k in want:\n"
    "  np.testing.assert_array_equal(np.asarray(got[k]), want[k])\n"
    "print('read', len(got))\n"
  )
  env = {
    **os.environ,
    "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
    "JAX_PLATFORMS": "cpu",
  }
  result = subprocess.run(
    [sys.executable, "-c", code, str(tmp_path / "checkpoint_3"), str(tmp_path / "expected.npz")],
    capture_output=True,
    text=True,
    env=env,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  assert "read 3" in result.stdout


# ---------------------------------------------------------------------------------------
# The MODEL_DIR lock and the run a prompt came from.


def test_a_model_dir_lock_admits_one_holder_until_released(tmp_path):
  model_dir = str(tmp_path / "run")
  first = checkpoints.ModelDirLock(model_dir, enabled=True)
  first.acquire()
  with open(os.path.join(model_dir, checkpoints.LOCK_FILE)) as f:
    holder = json.load(f)
  assert (holder["host"], holder["pid"]) == (socket.gethostname(), os.getpid())
  with pytest.raises(checkpoints.ModelDirLockedError, match=f"pid {os.getpid()}"):
    checkpoints.ModelDirLock(model_dir, enabled=True).acquire()
  first.release()
  assert os.listdir(model_dir) == []  # No lock, no temporary file left behind.
  with checkpoints.ModelDirLock(model_dir, enabled=True):
    assert os.listdir(model_dir) == [checkpoints.LOCK_FILE]
  assert os.listdir(model_dir) == []


def test_only_process_zero_takes_the_model_dir_lock(tmp_path):
  model_dir = str(tmp_path / "run")
  with checkpoints.ModelDirLock(model_dir, enabled=True):
    with checkpoints.ModelDirLock(model_dir, enabled=False):  # Another process of the job.
      pass
    assert os.listdir(model_dir) == [checkpoints.LOCK_FILE]


def test_the_lock_is_released_when_the_trainer_raises(tmp_path):
  model_dir = str(tmp_path / "run")

  @checkpoints.holding_model_dir_lock
  def train(*, model_dir):
    assert os.path.exists(os.path.join(model_dir, checkpoints.LOCK_FILE))
    raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    train(model_dir=model_dir)
  assert os.listdir(model_dir) == []


def test_run_metadata_is_found_from_a_checkpoint_a_model_dir_or_its_numpy_prompt(tmp_path):
  manager = checkpoints.CheckpointManager(str(tmp_path / "run"), keep=1)
  state = TrainState.create({"prompt": jnp.ones(PROMPT_SHAPE)}, optax.sgd(0.1))
  manager.save(state, metadata={"base_fingerprint": "abc"})
  manager.save(state.replace(step=state.step + 1), metadata={"base_fingerprint": "abc"})
  manager.close()
  newest = manager.step_dir(1)
  prompt = os.path.join(manager.numpy_dir(1), "prompt.npy")
  # A prompt kept by hand after its step's checkpoint was pruned: the run's newest answers.
  kept = os.path.join(manager.numpy_dir(0), "prompt.npy")
  os.makedirs(os.path.dirname(kept))
  shutil.copy(prompt, kept)
  assert not os.path.exists(manager.step_dir(0))
  for path in (newest, manager.model_dir, prompt, kept):
    where, metadata = checkpoints.run_metadata(path)
    assert where == newest and metadata["base_fingerprint"] == "abc"
  bare = tmp_path / "bare.npy"
  np.save(bare, np.ones(PROMPT_SHAPE))
  assert checkpoints.run_metadata(str(bare)) is None
  assert checkpoints.run_metadata(str(tmp_path / "nothing_here")) is None


def test_a_run_checkpoint_as_a_base_reads_its_parameters_and_not_its_optimiser_state(
  tmp_path, monkeypatch
):
  manager = checkpoints.CheckpointManager(str(tmp_path / "run"), keep=1)
  trainable = {"encoder": {"prompt": {"prompt": jnp.arange(32.0).reshape(PROMPT_SHAPE)}}}
  manager.save(TrainState.create(trainable, optax.adam(0.1)))  # Two moments per parameter.
  manager.close()
  asked = []
  restore_item = orbax_io._restore_item

  def spy(item, restore_args):
    asked.append((item.prefix, sorted(restore_args)))
    return restore_item(item, restore_args)

  monkeypatch.setattr(orbax_io, "_restore_item", spy)
  params = convert.load_params(manager.step_dir(0))
  # Orbax is asked for `state/trainable` alone (partial restore leaves the rest unread).
  assert asked == [(("trainable",), ["encoder/prompt/prompt"])]
  np.testing.assert_array_equal(
    params["encoder"]["prompt"]["prompt"], np.arange(32.0).reshape(PROMPT_SHAPE)
  )
