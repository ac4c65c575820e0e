"""Device mesh, T5X's logical axis rules, shardings and multi-host input.

Parameters and activations carry logical axis names (`batch`, `embed`, `mlp`, ...). One
table of rules maps them onto a two-axis mesh ("data", "model"), as T5X's
`PjitPartitioner` does: `data` splits the batch, `model` splits the wide dimensions of
the frozen backbone (vocabulary, MLP, heads). The prompt is replicated: it is tiny and
every example needs all of it.

Nothing here knows about prompts beyond the two rules that name them, so full model
tuning uses the same code.
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Any, Callable, Iterator, Mapping, Sequence

import flax.linen as nn
import gin
import jax
import numpy as np
import optax
from absl import logging
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from prompt_tuning import tree
from prompt_tuning.training.train_step import TrainState

LogicalRules = tuple[tuple[str, str | tuple[str, ...] | None], ...]
MESH_AXES = ("data", "model")

# T5X's standard rules for 1-D parameter and activation partitioning, plus the two names
# the prompt uses (upstream prompt tuning adds them the same way).
_STANDARD_RULES: LogicalRules = (
  ("batch", "data"),
  ("vocab", "model"),
  ("embed", None),
  ("mlp", "model"),
  ("heads", "model"),
  ("kv", None),
  ("joined_kv", "model"),
  ("relpos_buckets", None),
  ("abspos_buckets", None),
  ("length", None),
  ("layers", None),
  ("stack", None),
  ("mlp_activations", None),
  ("prompt", None),
  ("prompt_embed", None),
  ("prompts", None),  # The table axis of prompts.MultiPrompt (one row per prompt).
  ("classes", None),  # A linear head's outputs (t5/heads.py).
  ("head_tasks", None),  # A multi-task head's one kernel per task.
)


@gin.configurable
def standard_logical_axis_rules(
  additional_rules: Sequence[tuple[str, str | tuple[str, ...] | None]] = (),
) -> LogicalRules:
  """T5X's standard rules; `additional_rules` come first, so they override them.

  Flax gives each array dimension the first rule that names it and whose mesh axis is
  still free, hence the user's rules lead.
  """
  extra = tuple((str(name), mesh_axis) for name, mesh_axis in additional_rules)
  return extra + _STANDARD_RULES


def _mesh_axis_size(mesh: Mesh, axis: str | tuple[str, ...] | None) -> int:
  if axis is None:
    return 1
  names = (axis,) if isinstance(axis, str) else tuple(axis)
  return math.prod(mesh.shape[name] for name in names)


@gin.configurable
class Partitioner:
  """A ("data", "model") mesh plus logical axis rules, like T5X's `PjitPartitioner`.

  Give either `num_partitions` (the model-parallel size; the data-parallel size is the
  device count divided by it) or `mesh_shape=(data, model)`. With neither, every device
  does data parallelism. `devices` defaults to all devices of all processes.
  `compiler_options` (XLA debug options, e.g. a backend's scheduler flags) apply to every
  program compiled through this partitioner.
  """

  def __init__(
    self,
    num_partitions: int | None = None,
    mesh_shape: Sequence[int] | None = None,
    logical_axis_rules: Sequence[tuple[str, Any]] | None = None,
    devices: Sequence[Any] | None = None,
    compiler_options: Mapping[str, Any] | None = None,
  ):
    devices = list(jax.devices() if devices is None else devices)
    count = len(devices)
    if num_partitions is not None and mesh_shape is not None:
      raise ValueError("give either num_partitions or mesh_shape, not both")
    # Whether the data size was derived from the device count (see `for_batch`).
    self._data_size_from_devices = mesh_shape is None
    if mesh_shape is None:
      num_partitions = 1 if num_partitions is None else int(num_partitions)
      if num_partitions < 1 or count % num_partitions:
        raise ValueError(
          f"num_partitions={num_partitions} must be a positive divisor of the device count "
          f"{count}; choose one of {[d for d in range(1, count + 1) if count % d == 0]}"
        )
      mesh_shape = (count // num_partitions, num_partitions)
    mesh_shape = tuple(int(n) for n in mesh_shape)
    if len(mesh_shape) != 2 or min(mesh_shape) < 1:
      raise ValueError(f"mesh_shape must be two positive sizes (data, model), got {mesh_shape}")
    if math.prod(mesh_shape) != count:
      raise ValueError(
        f"mesh_shape {mesh_shape[0]}x{mesh_shape[1]} needs "
        f"{math.prod(mesh_shape)} devices but {count} are available; "
        "choose data x model equal to the device count"
      )
    # Auto axes: the compiler propagates shardings between the named constraints, as
    # under pjit in T5X (explicit axes would make every op's sharding part of its type).
    self._mesh = jax.make_mesh(
      mesh_shape, MESH_AXES, axis_types=(AxisType.Auto,) * 2, devices=devices
    )
    self._rules = tuple(
      standard_logical_axis_rules()
      if logical_axis_rules is None
      else (tuple(rule) for rule in logical_axis_rules)
    )
    self._compiler_options = dict(compiler_options or {})

  # ------------------------------------------------------------------ mesh and rules
  @property
  def mesh(self) -> Mesh:
    return self._mesh

  @property
  def rules(self) -> LogicalRules:
    return self._rules

  @property
  def data_size(self) -> int:
    return self._mesh.shape["data"]

  @property
  def model_size(self) -> int:
    return self._mesh.shape["model"]

  def for_batch(self, batch_size: int, num_microbatches: int = 1) -> "Partitioner":
    """A partitioner whose data axis splits every microbatch evenly: this one if it does.

    When the data size was derived from the device count (no `mesh_shape`) and a single
    process runs, a batch too small for it gets a mesh over the first devices instead,
    with a warning, so a quick run on a many-device machine still starts. An explicit
    mesh, or a multi-process job (every process must own part of the mesh), is an error.
    """
    if batch_size < 1:
      raise ValueError(f"batch size must be positive, got {batch_size}")
    if num_microbatches < 1 or batch_size % num_microbatches:
      raise ValueError(
        f"BATCH_SIZE {batch_size} does not split into {num_microbatches} "
        "microbatches; use a num_microbatches that divides it"
      )
    micro = batch_size // num_microbatches
    if micro % self.data_size == 0:
      return self
    pieces = (
      f"BATCH_SIZE {batch_size} does"
      if num_microbatches == 1
      else f"microbatches of {micro} examples (BATCH_SIZE {batch_size} / {num_microbatches}) do"
    )
    if not self._data_size_from_devices or jax.process_count() > 1:
      raise ValueError(
        f"{pieces} not split over the mesh's {self.data_size} data shards; use a "
        f"batch size divisible by {self.data_size * num_microbatches}, or a smaller data "
        "axis (partitioning.Partitioner.mesh_shape or a larger num_partitions)"
      )
    data = max(
      d for d in range(1, self.data_size + 1) if self.data_size % d == 0 and micro % d == 0
    )
    devices = list(np.asarray(self._mesh.devices)[:data].reshape(-1))
    logging.warning(
      "%s not split over %d data shards; training on a %dx%d mesh, %d of "
      "%d devices (use a batch size divisible by %d to use them all)",
      pieces,
      self.data_size,
      data,
      self.model_size,
      len(devices),
      self._mesh.devices.size,
      self.data_size * num_microbatches,
    )
    return Partitioner(
      mesh_shape=(data, self.model_size),
      logical_axis_rules=self._rules,
      devices=devices,
      compiler_options=self._compiler_options,
    )

  @contextlib.contextmanager
  def activate(self) -> Iterator[None]:
    """Mesh and rules in force, so the model's `with_logical_constraint`s shard activations.

    Tracing must happen inside this context; the functions returned by
    `partition_train_step` enter it themselves.
    """
    with jax.set_mesh(self._mesh), nn.logical_axis_rules(self._rules):
      yield

  # ------------------------------------------------------------------ shardings
  def mesh_axes(
    self, logical_spec: Sequence[str | None] | None, shape: Sequence[int] | None = None
  ) -> PartitionSpec:
    """The mesh PartitionSpec of a logical one.

    With `shape`, a dimension whose size the mesh axis does not divide is replicated
    instead (jax rejects uneven shardings), e.g. 6 heads over 4 model shards.
    """
    if logical_spec is None:
      return PartitionSpec()
    axes = list(nn.logical_to_mesh_axes(tuple(logical_spec), self._rules))
    if shape is not None:
      if len(axes) > len(shape):
        raise ValueError(
          f"logical axes {tuple(logical_spec)} name more dimensions than "
          f"the shape {tuple(shape)} has"
        )
      for dim, axis in enumerate(axes):
        if axis is not None and shape[dim] % _mesh_axis_size(self._mesh, axis):
          logging.warning(
            "dimension %d (%s, size %d) of shape %s does not divide over mesh "
            "axis %r of size %d; replicating it",
            dim,
            logical_spec[dim],
            shape[dim],
            tuple(shape),
            axis,
            _mesh_axis_size(self._mesh, axis),
          )
          axes[dim] = None
    return PartitionSpec(*axes)

  def sharding(
    self, logical_spec: Sequence[str | None] | None, shape: Sequence[int] | None = None
  ) -> NamedSharding:
    return NamedSharding(self._mesh, self.mesh_axes(logical_spec, shape))

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self._mesh, PartitionSpec())

  @property
  def batch_sharding(self) -> NamedSharding:
    """Leading (batch) dimension over `data`, the rest replicated; fits any rank."""
    return self.sharding(("batch",))

  def param_shardings(
    self, logical_axes_tree: Mapping[str, Any], abstract_params: Mapping[str, Any] | None = None
  ) -> dict[str, Any]:
    """Nested dict of NamedSharding with the structure of `logical_axes_tree`.

    `abstract_params` (arrays or ShapeDtypeStructs of the same structure) lets
    non-dividing dimensions fall back to replication.
    """
    flat_axes = tree.flatten(logical_axes_tree)
    flat_shapes = {} if abstract_params is None else tree.flatten(abstract_params)
    if flat_shapes and flat_shapes.keys() != flat_axes.keys():
      missing = sorted(flat_axes.keys() ^ flat_shapes.keys())
      raise ValueError(f"logical axes and parameters differ in: {', '.join(missing[:5])}")
    shardings = {}
    for path, spec in flat_axes.items():
      shape = flat_shapes[path].shape if flat_shapes else None
      shardings[path] = self.sharding(spec, shape)
    return tree.unflatten(shardings)

  def opt_state_shardings(
    self, optimizer: optax.GradientTransformation, trainable_abstract: Any, trainable_shardings: Any
  ) -> Any:
    """Shardings for `optimizer.init(trainable)`, derived from the parameters' own.

    `optax.tree_map_params` finds the copies of the parameter tree inside the state
    (moments, factored statistics) and pairs each of their leaves with its parameter. A
    leaf of the parameter's shape takes its sharding; a factored Adafactor row/column
    statistic (the shape with one dimension removed) keeps the spec of the remaining
    dimensions; everything else (step counts, the (1,) placeholders of unfactored
    moments) is replicated. When dropping either of two equal dimensions gives the same
    shape, the leaf is replicated, since which one was dropped is unknowable from shapes
    alone.
    """
    if jax.tree.structure(trainable_abstract) != jax.tree.structure(trainable_shardings):
      raise ValueError("trainable_shardings must have the structure of trainable_abstract")
    state_abstract = jax.eval_shape(optimizer.init, trainable_abstract)

    def state_sharding(leaf: Any, param: Any, param_sharding: NamedSharding) -> NamedSharding:
      return self._derived_sharding(tuple(leaf.shape), tuple(param.shape), param_sharding)

    return optax.tree_map_params(
      optimizer,
      state_sharding,
      state_abstract,
      trainable_abstract,
      trainable_shardings,
      transform_non_params=lambda _: self.replicated,
    )

  def _derived_sharding(
    self, shape: tuple[int, ...], param_shape: tuple[int, ...], param_sharding: NamedSharding
  ) -> NamedSharding:
    if shape == param_shape:
      return param_sharding
    spec = tuple(param_sharding.spec) + (None,) * (len(param_shape) - len(param_sharding.spec))
    if len(shape) == len(param_shape) - 1:
      candidates = {
        spec[:i] + spec[i + 1 :]
        for i in range(len(param_shape))
        if param_shape[:i] + param_shape[i + 1 :] == shape
      }
      if len(candidates) == 1:
        return NamedSharding(self._mesh, PartitionSpec(*candidates.pop()))
    return self.replicated

  def train_state_shardings(
    self, optimizer: optax.GradientTransformation, trainable_abstract: Any, trainable_shardings: Any
  ) -> TrainState:
    """A TrainState whose leaves are the shardings of a real one."""
    return TrainState(
      step=self.replicated,
      trainable=trainable_shardings,
      opt_state=self.opt_state_shardings(optimizer, trainable_abstract, trainable_shardings),
    )

  # ------------------------------------------------------------------ data
  def process_rows(self, batch_size: int) -> tuple[int, int]:
    """The rows [start, stop) of a global batch of `batch_size` that this process's
    devices hold: what it must feed `shard_batch`. One block, in process order, with a
    device mesh laid out process by process (the default); a mesh that interleaves one
    process's data shards with another's cannot be fed block-wise and is an error."""
    held = sorted(
      {
        (index[0].start or 0, batch_size if index[0].stop is None else index[0].stop)
        for index in self.batch_sharding.addressable_devices_indices_map((batch_size,)).values()
      }
    )
    start, stop = held[0][0], held[-1][1]
    covered = sum(b - a for a, b in held)
    if covered != stop - start:
      raise ValueError(
        f"this process's devices hold rows {held} of the batch, not one block; order the "
        "mesh's devices process by process (partitioning.Partitioner.devices)"
      )
    return start, stop

  def shard_batch(self, local_batch: Mapping[str, Any]) -> dict[str, jax.Array]:
    """Global arrays from this process's slice of the batch (numpy, leading batch axis).

    Each process passes its own rows (`process_rows`); the global batch is their
    concatenation in process order, split over `data`.
    """
    sharding = self.batch_sharding
    # Distinct row ranges among this process's devices (slices are unhashable here).
    local_data_shards = len(
      {
        (index[0].start, index[0].stop)
        for index in sharding.addressable_devices_indices_map((self.data_size,)).values()
      }
    )
    result = {}
    for name, value in local_batch.items():
      value = np.asarray(value)
      if value.ndim == 0 or value.shape[0] % local_data_shards:
        raise ValueError(
          f"batch feature {name!r} has {value.shape[:1] or 'no'} rows, which "
          f"this process cannot split over its {local_data_shards} data "
          "shards; use a per-process batch size divisible by it"
        )
      result[name] = jax.make_array_from_process_local_data(sharding, value)
    return result

  def shard_replicated_batch(self, batch: Mapping[str, Any]) -> dict[str, jax.Array]:
    """Global arrays from a batch every process holds whole (evaluation reads the same
    examples everywhere): split over `data` when the rows divide, else replicated."""
    rows = len(next(iter(batch.values())))
    sharding = self.batch_sharding if rows % self.data_size == 0 else self.replicated
    return self.place(dict(batch), {name: sharding for name in batch})

  def place(self, tree: Any, shardings: Any) -> Any:
    """Global arrays laid out as `shardings` (a tree of the same structure).

    Leaves may be numpy arrays or jax arrays; values that are not already global must be
    the same in every process. Each device receives only its own slice of a host array,
    so a large frozen model never sits whole on one accelerator.
    """

    def put(value: Any, sharding: NamedSharding) -> jax.Array:
      if jax.process_count() == 1 or (
        isinstance(value, jax.Array) and not value.is_fully_addressable
      ):
        return jax.device_put(value, sharding)
      host = np.asarray(value)
      return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree, shardings)

  # ------------------------------------------------------------------ compilation
  def partition_train_step(
    self,
    step_fn: Callable[..., Any],
    state_shardings: TrainState,
    frozen_shardings: Any,
    compiler_options: Mapping[str, Any] | None = None,
  ) -> "PartitionedFunction":
    """`step(state, frozen, batch, rng)` compiled with shardings; the state is donated.

    `compiler_options` are XLA debug options for this program only (e.g.
    `{"xla_backend_optimization_level": 0}` to compile faster when the code is never
    run, as in `prompt-tuning plan`).
    """
    return self.partition(
      step_fn,
      in_shardings=(state_shardings, frozen_shardings, self.batch_sharding, self.replicated),
      out_shardings=(state_shardings, self.replicated),
      donate_argnums=(0,),
      compiler_options=compiler_options,
    )

  def partition(
    self,
    fn: Callable[..., Any],
    in_shardings: Any,
    out_shardings: Any,
    donate_argnums: Sequence[int] = (),
    compiler_options: Mapping[str, Any] | None = None,
  ) -> "PartitionedFunction":
    """Any function (evaluation's score / predict too) jitted over this mesh."""
    options = {**self._compiler_options, **(compiler_options or {})}
    jitted = jax.jit(
      fn,
      in_shardings=in_shardings,
      out_shardings=out_shardings,
      donate_argnums=tuple(donate_argnums),
      compiler_options=options or None,
    )
    return PartitionedFunction(jitted, self)


class PartitionedFunction:
  """A jitted function that is traced, lowered and called with the mesh and rules on."""

  def __init__(self, jitted: Any, partitioner: Partitioner):
    self._jitted = jitted
    self._partitioner = partitioner

  def __call__(self, *args: Any) -> Any:
    with self._partitioner.activate():
      return self._jitted(*args)

  def lower(self, *args: Any) -> Any:
    with self._partitioner.activate():
      return self._jitted.lower(*args)


# ---------------------------------------------------------------------- multi-host
@gin.configurable
def initialize_distributed(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  auto_detect: bool = False,
  heartbeat_timeout_seconds: int | None = None,
) -> bool:
  """Joins a multi-process job; returns whether `jax.distributed.initialize` ran.

  Arguments fall back to the environment (`JAX_COORDINATOR_ADDRESS`,
  `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`). One process, or nothing configured, is a no-op
  so the same command runs on a laptop. `auto_detect=True` lets jax find the cluster
  itself (Cloud TPU pods, SLURM) when nothing is given. `heartbeat_timeout_seconds`
  (jax's default: 100) bounds how long the others wait for a process that stopped
  answering before jax ends them (a killed process's closed connections are noticed at
  once). Must run before any jax computation.
  """
  env = os.environ
  if coordinator_address is None:
    coordinator_address = env.get("JAX_COORDINATOR_ADDRESS") or None
  if num_processes is None and env.get("JAX_NUM_PROCESSES"):
    num_processes = int(env["JAX_NUM_PROCESSES"])
  if process_id is None and env.get("JAX_PROCESS_ID"):
    process_id = int(env["JAX_PROCESS_ID"])
  if num_processes == 1:
    return False
  configured = (coordinator_address, num_processes, process_id) != (None, None, None)
  if not configured and not auto_detect:
    return False
  if configured and (coordinator_address is None or num_processes is None or process_id is None):
    raise ValueError(
      "multi-process runs need coordinator_address, num_processes and "
      "process_id together (or none of them, with auto_detect)"
    )
  if process_id is not None and not 0 <= process_id < num_processes:
    raise ValueError(
      f"process_id {process_id} is outside [0, {num_processes}); give each process a "
      "distinct id from 0 to num_processes - 1"
    )
  timeouts = {}
  if heartbeat_timeout_seconds is not None:
    if heartbeat_timeout_seconds < 1:
      raise ValueError(f"heartbeat_timeout_seconds must be >= 1, got {heartbeat_timeout_seconds}")
    timeouts["heartbeat_timeout_seconds"] = heartbeat_timeout_seconds
  jax.distributed.initialize(
    coordinator_address=coordinator_address,
    num_processes=num_processes,
    process_id=process_id,
    **timeouts,
  )
  logging.info(
    "process %d of %d joined; %d local of %d devices",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )
  return True


def fetch(tree: Any) -> Any:
  """numpy copies of (global) arrays, in every process.

  A replicated array is read from a local copy; one split across processes is gathered
  (a collective, so every process must call this for the same arrays).
  """

  def get(value: Any) -> np.ndarray:
    if not isinstance(value, jax.Array) or value.is_fully_addressable:
      return np.asarray(value)
    if value.sharding.is_fully_replicated:
      return np.asarray(value.addressable_data(0))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(value, tiled=True))

  return jax.tree.map(get, tree)


def process_shard_info() -> Any:
  """This process's slice of the input: seqio reads shard `index` of `num_shards`."""
  import seqio

  return seqio.ShardInfo(index=jax.process_index(), num_shards=jax.process_count())
