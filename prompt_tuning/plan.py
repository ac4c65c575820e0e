"""`prompt-tuning plan`: will this prompt-tuning run fit on that many accelerators?

It compiles the real sharded train step (Transformer + Prompt, or another method of the
prompt family, + Adafactor through the Partitioner) for shapes only, on fake CPU devices
laid out as the requested mesh, and reads the per-device memory XLA assigned. Nothing
is allocated and no accelerator is needed, so an XXL plan for a TPU pod runs on a laptop.

The figures are XLA's buffer assignment for the CPU backend. Parameters, optimiser
state and batch are exact (the same shards as on an accelerator). Activations and
temporaries depend on the backend: XLA:CPU computes many bfloat16 operations in float32
and keeps some of those float32 intermediates, and its fusion differs, so the figure is
usually on the high side of what a TPU or GPU needs. Leave a margin either way.

When the setting does not fit, `main` searches the memory levers cheapest first
(`lever_steps`, `search_levers`) with this same estimator and prints the cheapest
setting that fits with its `plan` command and `train` gin bindings (docs/scale.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import re
import shlex
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from prompt_tuning import errors, head_models, models, tree
from prompt_tuning.data import labels as labels_lib
from prompt_tuning.prompts import family
from prompt_tuning.t5 import T5Config, Transformer, abstract_params, heads, logical_axes
from prompt_tuning.training import optimizers
from prompt_tuning.training import partitioning
from prompt_tuning.training import trainable as trainable_lib
from prompt_tuning.training.train_step import TrainState, make_train_step

GiB = 2**30
_UNITS = {
  "": 1,
  "b": 1,
  "k": 2**10,
  "m": 2**20,
  "g": 2**30,
  "t": 2**40,
  "kib": 2**10,
  "mib": 2**20,
  "gib": 2**30,
  "tib": 2**40,
  "kb": 10**3,
  "mb": 10**6,
  "gb": 10**9,
  "tb": 10**12,
}
# XLA:CPU options for a program that is compiled but never run. The CPU pipeline
# normally expands the optimisation barriers that keep rematerialised layers from being
# merged back (CSE) into the forward pass, so remat would show no saving; keeping them
# plans memory as TPU and GPU compilers treat it. LLVM's optimisations do not change
# the buffer assignment and take most of the compile time.
PLAN_COMPILER_OPTIONS = {
  "xla_disable_hlo_passes": "cse_barrier_expander",
  "xla_backend_optimization_level": 0,
}
FEATURES = (
  "encoder_input_tokens",
  "decoder_input_tokens",
  "decoder_target_tokens",
  "decoder_loss_weights",
)
# A linear head (docs/heads.md): its module, model class and label length per example
# (None: one label per input token).
HEADS = {
  "sequence": (
    heads.SequenceHead,
    head_models.SequenceClassificationModel,
    labels_lib.SEQUENCE_LABELS,
  ),
  "token": (heads.TokenHead, head_models.TokenClassificationModel, None),
  "span": (heads.SpanHead, head_models.SpanExtractionModel, labels_lib.SPAN_LABELS),
}


def parse_bytes(text: str) -> int:
  """`16GiB`, `80G` (binary), `16GB` (decimal), `512MiB` or a plain byte count."""
  match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
  if not match or match.group(2).lower() not in _UNITS:
    raise errors.ConfigurationError(
      f"cannot read memory size {text!r}; write e.g. 16GiB, 80G or 512MiB"
    )
  return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def parse_mesh(text: str) -> tuple[int, int]:
  """`4x8` -> (data=4, model=8)."""
  match = re.fullmatch(r"\s*(\d+)\s*[xX*]\s*(\d+)\s*", text)
  if not match or min(int(match.group(1)), int(match.group(2))) < 1:
    raise errors.ConfigurationError(f"cannot read mesh {text!r}; write DATAxMODEL, e.g. 4x8")
  return int(match.group(1)), int(match.group(2))


def human_bytes(n: float) -> str:
  for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
    if n >= scale:
      return f"{n / scale:.2f} {unit}"
  return f"{int(n)} B"


def _gib(n: float) -> str:
  value = n / GiB
  return f"{value:.2f}" if value >= 0.1 else f"{value:.3g}"


def cpu_devices(count: int) -> list[Any]:
  """`count` CPU devices, faking them when the backend has not started yet.

  The number of host devices is fixed when jax starts its backends, so this must run
  before any jax computation in the process.
  """
  try:
    jax.config.update("jax_num_cpu_devices", count)
    # Only the CPU backend is needed; do not start (and reserve memory on) a GPU.
    jax.config.update("jax_platforms", "cpu")
  except RuntimeError:
    pass  # Already started: use what it has, if it is enough.
  devices = jax.devices("cpu")
  if len(devices) < count:
    raise RuntimeError(
      f"the mesh needs {count} devices but jax already started with {len(devices)} CPU "
      f"devices; run the plan in a fresh process or set "
      f"XLA_FLAGS=--xla_force_host_platform_device_count={count} before starting python"
    )
  return devices[:count]


def check_batch(mesh_shape: tuple[int, int], batch_size: int, num_microbatches: int) -> None:
  """Every microbatch must split evenly over the data shards."""
  data = mesh_shape[0]
  if batch_size < 1 or batch_size % data:
    raise errors.ConfigurationError(
      f"batch {batch_size} does not split over {data} data shards; use a "
      "batch divisible by the mesh's data size"
    )
  if num_microbatches < 1 or batch_size % num_microbatches:
    raise errors.ConfigurationError(
      f"batch {batch_size} does not split into {num_microbatches} microbatches; use a number of "
      "microbatches that divides the batch"
    )
  if (batch_size // num_microbatches) % data:
    raise errors.ConfigurationError(
      f"microbatches of {batch_size // num_microbatches} examples do not "
      f"split over {data} data shards; use fewer microbatches"
    )


@dataclasses.dataclass
class Plan:
  """Per-device bytes of one compiled train step."""

  frozen: int
  trainable: int
  opt_state: int
  batch: int
  rng: int
  temporaries: int
  xla_arguments: int
  xla_outputs: int
  xla_aliased: int
  generated_code: int
  trainable_count: int
  compile_seconds: float

  @property
  def inputs(self) -> int:
    """Every input array, used or not (jit leaves unused ones out of `xla_arguments`,
    but they still occupy the device)."""
    return self.frozen + self.trainable + self.opt_state + self.batch + self.rng

  @property
  def total(self) -> int:
    """What must be resident at the peak: the inputs, outputs that do not reuse a
    donated input, and XLA's temporaries."""
    return self.inputs + self.xla_outputs - self.xla_aliased + self.temporaries


def _shard_bytes(tree: Any) -> int:
  """Bytes one device holds of a tree of ShapeDtypeStructs with shardings."""
  total = 0
  for leaf in jax.tree.leaves(tree):
    shard = leaf.sharding.shard_shape(leaf.shape)
    total += math.prod(shard) * jnp.dtype(leaf.dtype).itemsize
  return total


def _with_shardings(tree: Any, shardings: Any) -> Any:
  return jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), tree, shardings
  )


def _hooks(method: str, prompt_length: int) -> tuple[Any, Any]:
  """(input_prompt, layer_prefix) of a method; "prompt" at length 0 is no prompt at all."""
  if prompt_length:
    return family.hooks(method, prompt_length)
  if method == "prompt":
    return None, None
  raise errors.ConfigurationError(
    f"method {method!r} needs a prompt length above 0; set --prompt to 1 or more"
  )


def _abstract_batch(
  partitioner: partitioning.Partitioner,
  batch_size: int,
  input_length: int,
  target_length: int,
  head: str | None = None,
) -> dict[str, jax.ShapeDtypeStruct]:
  """The train step's batch as sharded shapes: inputs of `input_length`, the decoder's
  features of `target_length`, or with a head its labels."""
  lengths = {"encoder_input_tokens": input_length}
  if head is None:
    names = FEATURES
  else:
    names = ("encoder_input_tokens", "label_ids")
    lengths["label_ids"] = HEADS[head][2] or input_length
  return {
    name: jax.ShapeDtypeStruct(
      (batch_size, lengths.get(name, target_length)), jnp.int32, sharding=partitioner.batch_sharding
    )
    for name in names
  }


def _model(
  config: T5Config, prompt: Any, prefix: Any, head: str | None, num_labels: int
) -> tuple[Any, Any]:
  """(the trained model, the head's factory or None)."""
  if head is None:
    return models.EncoderDecoderModel(
      Transformer(config, input_prompt=prompt, layer_prefix=prefix)
    ), None
  if head not in HEADS:
    raise errors.ConfigurationError(f"unknown head {head!r}; use one of {', '.join(HEADS)}")
  module_class, model_class, _ = HEADS[head]
  factory = (
    functools.partial(module_class, num_labels=num_labels) if head != "span" else module_class
  )
  module = Transformer(config, input_prompt=prompt, layer_prefix=prefix, head_factory=factory)
  return model_class(module), factory


def plan_train_step(
  config: T5Config,
  mesh_shape: tuple[int, int],
  batch_size: int,
  input_length: int,
  target_length: int,
  prompt_length: int,
  frozen_dtype: str = "float32",
  num_microbatches: int = 1,
  trainable_regex: str = trainable_lib.DEFAULT_TRAINABLE,
  method: str = "prompt",
  head: str | None = None,
  num_labels: int = 2,
) -> Plan:
  """Lowers and compiles the sharded train step on abstract inputs; reads its memory.

  `method` is a prompt-family method (`prompts.family.METHODS`); `prompt_length` 0 with
  "prompt" plans the frozen model with no prompt (model tuning with `trainable_regex`).
  `head` ("sequence", "token", "span") plans the encoder with a linear head of
  `num_labels` outputs instead of the decoder; the head trains too, as in `train`.
  """
  check_batch(mesh_shape, batch_size, num_microbatches)
  data, model_parallel = mesh_shape
  devices = cpu_devices(data * model_parallel)
  partitioner = partitioning.Partitioner(mesh_shape=mesh_shape, devices=devices)

  prompt, prefix = _hooks(method, prompt_length)
  model, head_factory = _model(config, prompt, prefix, head, num_labels)
  trainable_regex = trainable_lib.with_head(trainable_regex, model.module)
  trainable_abs, frozen_abs = trainable_lib.split(
    abstract_params(config, prompt, prefix, head_factory), trainable_regex
  )
  trainable_axes, frozen_axes = trainable_lib.split(
    logical_axes(config, prompt, prefix, head_factory), trainable_regex
  )
  frozen_abs = jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(
      x.shape, jnp.dtype(frozen_dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x.dtype
    ),
    frozen_abs,
  )
  optimizer = optimizers.adafactor(learning_rate=0.3)

  trainable_sh = partitioner.param_shardings(trainable_axes, trainable_abs)
  frozen_sh = partitioner.param_shardings(frozen_axes, frozen_abs)
  state_sh = partitioner.train_state_shardings(optimizer, trainable_abs, trainable_sh)
  state_abs = _with_shardings(
    jax.eval_shape(lambda t: TrainState.create(t, optimizer), trainable_abs), state_sh
  )
  frozen_abs = _with_shardings(frozen_abs, frozen_sh)
  batch_abs = _abstract_batch(partitioner, batch_size, input_length, target_length, head)
  rng_abs = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=partitioner.replicated)

  step = partitioner.partition_train_step(
    make_train_step(model, optimizer, num_microbatches),
    state_sh,
    frozen_sh,
    compiler_options=PLAN_COMPILER_OPTIONS,
  )
  start = time.perf_counter()
  compiled = step.lower(state_abs, frozen_abs, batch_abs, rng_abs).compile()
  seconds = time.perf_counter() - start
  memory = compiled.memory_analysis()
  if memory is None:
    raise RuntimeError("this jax backend reports no memory analysis for compiled programs")
  return Plan(
    frozen=_shard_bytes(frozen_abs),
    trainable=_shard_bytes(state_abs.trainable),
    opt_state=_shard_bytes(state_abs.opt_state) + _shard_bytes(state_abs.step),
    batch=_shard_bytes(batch_abs),
    rng=_shard_bytes(rng_abs),
    temporaries=memory.temp_size_in_bytes,
    xla_arguments=memory.argument_size_in_bytes,
    xla_outputs=memory.output_size_in_bytes,
    xla_aliased=memory.alias_size_in_bytes,
    generated_code=memory.generated_code_size_in_bytes,
    trainable_count=tree.count(trainable_abs),
    compile_seconds=seconds,
  )


def format_plan(plan: Plan, device_memory: int) -> list[str]:
  rows: list[tuple[str, int]] = [
    ("frozen parameters", plan.frozen),
    ("trainable parameters", plan.trainable),
    ("optimiser state", plan.opt_state),
    ("batch", plan.batch),
    ("activations/temporaries", plan.temporaries),
  ]
  other = plan.total - sum(value for _, value in rows)
  rows.append(("other (new outputs, rng key)", other))
  width = max(len(name) for name, _ in rows) + 2
  lines = [f"  {'per device':<{width}}{'bytes':>16}"]
  lines += [f"  {name:<{width}}{value:>16,}  {human_bytes(value):>10}" for name, value in rows]
  lines.append(f"  {'total':<{width}}{plan.total:>16,}  {human_bytes(plan.total):>10}")
  lines.append(
    f"  (XLA: arguments {human_bytes(plan.xla_arguments)}, outputs "
    f"{human_bytes(plan.xla_outputs)} of which {human_bytes(plan.xla_aliased)} "
    f"reuse donated inputs, temporaries {human_bytes(plan.temporaries)}, code "
    f"{human_bytes(plan.generated_code)}; compiled in "
    f"{plan.compile_seconds:.1f} s)"
  )
  fits = plan.total <= device_memory
  lines.append(
    f"fits: {'yes' if fits else 'no'} ({_gib(plan.total)} GiB of "
    f"{_gib(device_memory)} GiB per device)"
  )
  return lines


@dataclasses.dataclass(frozen=True)
class Setting:
  """The memory levers of one planned train step: what the search changes."""

  frozen_dtype: str
  remat: str
  microbatches: int
  mesh: tuple[int, int]


class Step(NamedTuple):
  """One lever of the search: the setting with it `alone`, and `cumulative`, with every
  cheaper lever before it too."""

  lever: str
  alone: Setting
  cumulative: Setting


@dataclasses.dataclass
class Search:
  """What the search compiled, in order, and the cheapest setting that fits (None when
  nothing does; `closest` is then the smallest of `tried`)."""

  tried: list[tuple[Setting, Plan]]
  proposal: Setting | None

  @property
  def closest(self) -> tuple[Setting, Plan]:
    return min(self.tried, key=lambda item: item[1].total)


def describe_setting(setting: Setting, base: Setting) -> str:
  """The levers `setting` pulls beyond `base`, cheapest first, e.g. 'bfloat16 frozen
  weights + remat full'."""
  parts = []
  if setting.frozen_dtype != base.frozen_dtype:
    parts.append(f"{setting.frozen_dtype} frozen weights")
  if setting.remat != base.remat:
    parts.append(f"remat {setting.remat}")
  if setting.microbatches != base.microbatches:
    parts.append(f"{setting.microbatches} microbatches")
  if setting.mesh != base.mesh:
    parts.append(f"mesh {setting.mesh[0]}x{setting.mesh[1]}")
  return " + ".join(parts) or "as given"


def lever_steps(base: Setting, batch_size: int) -> list[Step]:
  """The levers `base` does not use yet, in order of what they cost at run time.

  bfloat16 frozen weights cost almost nothing (the prompt and its gradients stay
  float32); remat `dots` recomputes attention and the element-wise work of each layer
  in the backward pass (it keeps the projections' outputs), `full` its whole forward
  pass; microbatches run smaller matmuls one after another; a wider model axis adds
  communication to every layer. Microbatches
  double while each one still splits over the data axis; the model axis widens by every
  factor k of the data axis (data/k x model*k, the same devices), which keeps the
  microbatches of the cumulative setting dividing.
  """
  steps = []
  cumulative = base
  if base.frozen_dtype != "bfloat16":
    cumulative = dataclasses.replace(cumulative, frozen_dtype="bfloat16")
    steps.append(Step("bfloat16 frozen weights", cumulative, cumulative))
  if base.remat == "none":
    alone = dataclasses.replace(base, remat="dots")
    steps.append(Step("remat dots", alone, dataclasses.replace(cumulative, remat="dots")))
  if base.remat != "full":
    cumulative = dataclasses.replace(cumulative, remat="full")
    steps.append(Step("remat full", dataclasses.replace(base, remat="full"), cumulative))
  data, model = base.mesh
  count = base.microbatches * 2
  while batch_size % count == 0 and (batch_size // count) % data == 0:
    cumulative = dataclasses.replace(cumulative, microbatches=count)
    alone = dataclasses.replace(base, microbatches=count)
    steps.append(Step(f"{count} microbatches", alone, cumulative))
    count *= 2
  for k in range(2, data + 1):
    if data % k == 0:
      mesh = (data // k, model * k)
      alone = dataclasses.replace(base, mesh=mesh)
      steps.append(
        Step(f"mesh {mesh[0]}x{mesh[1]}", alone, dataclasses.replace(cumulative, mesh=mesh))
      )
  return steps


def search_levers(
  base: Setting, batch_size: int, device_memory: int, estimate: Callable[[Setting], Plan]
) -> Search:
  """The cheapest setting that fits in `device_memory`, trying `lever_steps` in order.

  Candidates in order of cost are each lever alone, then with the cheaper ones
  (cumulative). The search compiles the cumulative setting first: it needs the least
  memory of the two, so when it does not fit, the lever alone cannot either and is not
  compiled (this assumes that adding cheaper levers to a lever never raises its memory;
  more microbatches can, on a tiny model, so each count is compiled in turn). When it
  fits, the lever alone is compiled, and is the proposal if it fits too. `estimate` is
  the one estimator (`plan_train_step`) for a setting; each setting is compiled once.
  """
  plans: dict[Setting, Plan] = {}
  tried: list[tuple[Setting, Plan]] = []

  def total(setting: Setting) -> int:
    if setting not in plans:
      plans[setting] = estimate(setting)
      tried.append((setting, plans[setting]))
    return plans[setting].total

  for step in lever_steps(base, batch_size):
    if total(step.cumulative) > device_memory:
      continue
    if step.alone != step.cumulative and total(step.alone) <= device_memory:
      return Search(tried, step.alone)
    return Search(tried, step.cumulative)
  return Search(tried, None)


def _shell_word(text: str) -> str:
  """`text` as one shell word; a `--gin.NAME=VALUE` flag in the docs' spelling, with
  double quotes around a value that holds quotes, spaces or brackets, e.g.
  --gin.MESH_SHAPE="(4, 8)"."""
  if re.fullmatch(r"[\w./=:,+-]+", text):
    return text
  name, eq, value = text.partition("=")
  if eq and name.startswith("--gin.") and not re.search(r'["$`\\!]', value):
    return f'{name}="{value}"'
  return shlex.quote(text)


def plan_command(args: argparse.Namespace, setting: Setting) -> str:
  """The `prompt-tuning plan` command line of `args` with `setting`'s levers."""
  words = [
    "prompt-tuning plan",
    f"--size {args.size}",
    f"--mesh {setting.mesh[0]}x{setting.mesh[1]}",
    f"--batch {args.batch}",
    f"--inputs {args.inputs}",
    f"--targets {args.targets}",
    f"--prompt {args.prompt}",
    f"--device-memory {_shell_word(args.device_memory)}",
  ]
  defaults = _parser().parse_args([])
  for name in ("method", "head", "labels", "activation_dtype", "dropout", "trainable"):
    if getattr(args, name) != getattr(defaults, name):
      words.append(f"--{name.replace('_', '-')} {_shell_word(str(getattr(args, name)))}")
  if setting.frozen_dtype != "float32":
    words.append(f"--frozen-dtype {setting.frozen_dtype}")
  if setting.remat != "none":
    words.append(f"--remat {setting.remat}")
  if setting.microbatches != 1:
    words.append(f"--microbatches {setting.microbatches}")
  return " ".join(words)


def train_bindings(args: argparse.Namespace, setting: Setting) -> list[str]:
  """The `prompt-tuning train` gin flags that run what was planned: the shapes of the
  plan and the levers of `setting`, with the gin names of the project's model and run
  files (docs/scale.md, "Memory levers")."""
  lengths = {"inputs": args.inputs, "targets": args.targets}
  bindings = {
    "MESH_SHAPE": repr(setting.mesh),
    "BATCH_SIZE": str(args.batch),
    "TASK_FEATURE_LENGTHS": repr(lengths),
    "ACTIVATION_DTYPE": repr(args.activation_dtype),
    "DROPOUT_RATE": repr(args.dropout),
  }
  if args.prompt:
    bindings["PROMPT_LENGTH"] = str(args.prompt)
  if args.head in ("sequence", "token"):
    bindings["NUM_LABELS"] = str(args.labels)
  if args.trainable != trainable_lib.DEFAULT_TRAINABLE:
    bindings["trainer.train.trainable_regex"] = repr(args.trainable)
  if setting.frozen_dtype != "float32":
    bindings["trainer.train.frozen_dtype"] = repr(setting.frozen_dtype)
  if setting.remat != "none":
    bindings["network.t5_config.remat_policy"] = repr(setting.remat)
  if setting.microbatches != 1:
    bindings["trainer.train.num_microbatches"] = str(setting.microbatches)
  return [_shell_word(f"--gin.{name}={value}") for name, value in bindings.items()]


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="prompt-tuning plan",
    description="Per-device memory of the sharded prompt-tuning train step, compiled "
    "for shapes only on fake CPU devices. When it does not fit, the memory levers are "
    "tried cheapest first and the cheapest setting that fits is printed with its "
    "commands. Exit 0 if the setting as given fits, 1 if not, 2 for bad options. "
    "Defaults are the paper's XXL run on a TPU v3-32; compiling XXL "
    "takes about a minute of one CPU core per setting.",
  )
  parser.add_argument(
    "--size", default="xxl", help="tiny, small, base, large, xl, xxl, mt5_small ... mt5_xxl"
  )
  parser.add_argument("--mesh", default="4x8", help="DATAxMODEL device mesh, e.g. 4x8 (32 devices)")
  parser.add_argument("--batch", type=int, default=32, help="global batch size")
  parser.add_argument("--inputs", type=int, default=512, help="input length (tokens)")
  parser.add_argument("--targets", type=int, default=8, help="target length (tokens)")
  parser.add_argument("--prompt", type=int, default=100, help="prompt length")
  parser.add_argument(
    "--method",
    default="prompt",
    choices=tuple(family.METHODS),
    help="prompt-family method (default prompt tuning); see `prompt-tuning info --compare-methods`",
  )
  parser.add_argument(
    "--head",
    default=None,
    choices=tuple(HEADS),
    help="plan a linear head on the encoder instead of the decoder (docs/heads.md)",
  )
  parser.add_argument(
    "--labels", type=int, default=2, help="the head's number of labels (sequence, token)"
  )
  parser.add_argument(
    "--device-memory",
    default="16GiB",
    help="memory of one device, e.g. 16GiB (TPU v3), 80GiB (A100/H100)",
  )
  parser.add_argument(
    "--frozen-dtype",
    default="float32",
    choices=("float32", "bfloat16"),
    help="storage dtype of the frozen parameters (float32 as in `train` "
    "by default; bfloat16 halves them)",
  )
  parser.add_argument(
    "--activation-dtype",
    default="bfloat16",
    choices=("bfloat16", "float32"),
    help="activation dtype (T5X trains in bfloat16)",
  )
  parser.add_argument(
    "--remat",
    default="none",
    choices=("none", "full", "dots"),
    help="activation rematerialisation per layer",
  )
  parser.add_argument(
    "--microbatches", type=int, default=1, help="split the batch and accumulate gradients"
  )
  parser.add_argument(
    "--dropout", type=float, default=0.1, help="dropout rate (its masks cost memory)"
  )
  parser.add_argument(
    "--trainable",
    default=trainable_lib.DEFAULT_TRAINABLE,
    help="regex of trained parameters ('.*' plans full model tuning)",
  )
  parser.add_argument(
    "--no-propose",
    action="store_true",
    help="when it does not fit, do not search the memory levers (one compile only)",
  )
  return parser


def _check_args(args: argparse.Namespace, mesh: tuple[int, int]) -> None:
  for name in ("batch", "inputs", "targets"):
    if getattr(args, name) < 1:
      raise errors.ConfigurationError(f"--{name} must be positive, got {getattr(args, name)}")
  if args.prompt < 0:
    raise errors.ConfigurationError(f"--prompt must be zero or positive, got {args.prompt}")
  if args.labels < 1:
    raise errors.ConfigurationError(f"--labels must be positive, got {args.labels}")
  if not 0 <= args.dropout < 1:
    raise errors.ConfigurationError(f"--dropout must be in [0, 1), got {args.dropout}")
  check_batch(mesh, args.batch, args.microbatches)


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  mesh = parse_mesh(args.mesh)
  device_memory = parse_bytes(args.device_memory)
  _check_args(args, mesh)
  base = Setting(args.frozen_dtype, args.remat, args.microbatches, mesh)
  config = _config(args, base)
  print(
    f"plan: T5 1.1 {args.size} (d_model {config.emb_dim}, "
    f"{config.num_encoder_layers}+{config.num_decoder_layers} layers), mesh "
    f"{mesh[0]}x{mesh[1]} (data x model) = {mesh[0] * mesh[1]} devices"
  )
  head = f", {args.head} head ({args.labels} labels)" if args.head else ""
  if args.head == "span":
    head = ", span head"
  print(
    f"  method {args.method}{head}, prompt length {args.prompt}; batch {args.batch} "
    f"({args.batch // mesh[0]} per data shard), inputs {args.inputs}, targets "
    f"{args.targets}; activations {args.activation_dtype}, frozen {args.frozen_dtype}, "
    f"remat {args.remat}, microbatches {args.microbatches}, dropout {args.dropout}"
  )
  plan = _estimate(args, base)
  with_head = " and the head" if args.head else ""
  print(f"  trainable {args.trainable!r}{with_head}: {plan.trainable_count:,} values")
  for line in format_plan(plan, device_memory):
    print(line)
  if plan.total <= device_memory:
    return 0
  if args.no_propose:
    return 1
  _propose(args, base, device_memory, plan)
  return 1


def _config(args: argparse.Namespace, setting: Setting) -> T5Config:
  return T5Config.from_size(
    args.size, dtype=args.activation_dtype, remat_policy=setting.remat, dropout_rate=args.dropout
  )


def _estimate(args: argparse.Namespace, setting: Setting) -> Plan:
  """`plan_train_step` for `args` with `setting`'s levers: the one estimator of every
  figure plan prints, the search's included."""
  return plan_train_step(
    _config(args, setting),
    setting.mesh,
    args.batch,
    args.inputs,
    args.targets,
    args.prompt,
    frozen_dtype=setting.frozen_dtype,
    num_microbatches=setting.microbatches,
    trainable_regex=args.trainable,
    method=args.method,
    head=args.head,
    num_labels=args.labels,
  )


def _propose(args: argparse.Namespace, base: Setting, device_memory: int, plan: Plan) -> None:
  """Searches the levers, printing each compiled setting, then the proposal and its
  commands, or the closest setting and by how much it is over."""
  print("searching the memory levers, cheapest first (one compile each):")

  def estimate(setting: Setting) -> Plan:
    result = plan if setting == base else _estimate(args, setting)
    verdict = "fits" if result.total <= device_memory else "does not fit"
    print(f"  {describe_setting(setting, base)}: {human_bytes(result.total)}, {verdict}")
    return result

  search = search_levers(base, args.batch, device_memory, estimate)
  if search.proposal is None:
    closest, closest_plan = search.closest if search.tried else (base, plan)
    over = closest_plan.total - device_memory
    print(
      f"nothing fits: the closest is {describe_setting(closest, base)} at "
      f"{human_bytes(closest_plan.total)}, {human_bytes(over)} ({over / device_memory:.0%}) "
      f"over the {human_bytes(device_memory)} per device; use more devices or devices with "
      "more memory"
    )
    return
  proposed = dict(search.tried)[search.proposal]
  print(
    f"proposal: {describe_setting(search.proposal, base)} fits "
    f"({human_bytes(proposed.total)} of {human_bytes(device_memory)} per device)"
  )
  print(f"  plan it:  {plan_command(args, search.proposal)}")
  print(f"  train with these gin bindings: {' '.join(train_bindings(args, search.proposal))}")
