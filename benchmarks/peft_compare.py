"""Prompt-tuning speed and memory, ours (JAX) side by side with Hugging Face PEFT.

Both sides build the same network from random weights: T5 1.1 `small` (d_model 512,
d_ff 1024, 8+8 layers, 6 heads of 64, gated GELU, vocabulary 32,128, untied output
layer), a prompt of 100 vectors prepended to the encoder input, batch 8, inputs 256,
targets 8, dropout 0.1 while training. PEFT's side is `PromptTuningConfig` on
`transformers.T5ForConditionalGeneration`, in PyTorch, on the CPU (default) or on one
NVIDIA GPU (`--device gpu`). The workloads:

  prompt_train  one optimiser step that trains the prompt only (Adafactor, the paper's
                settings, on both sides)
  prompt_train_no_dropout
                the same step with dropout 0: the same matmuls without the cost of
                drawing dropout masks, which is what "step / forward ~ 2" is about
  full_train    the same step with every parameter trainable (model tuning with the
                prompt kept, so that the two steps see identical inputs)
  forward       rank-classification scoring: log-likelihood of the targets, no dropout
  decode        greedy decoding of `--new-tokens` tokens with a key/value cache; no EOS
                id on either side, so both always decode exactly that many tokens

Dropout masks are each side's own, and ours are T5X's: hidden-state masks shared along
the length axis and attention-weight masks shared by every query; transformers draws one
entry per element everywhere.

Each (side, workload) runs in its own subprocess, pinned to the same `--threads` CPUs
(sched_setaffinity, which sizes XLA's intra-op pool and torch's default alike), with
`torch.set_num_threads` and OMP/MKL thread counts set to the same number, so the peak
resident memory of each is its own. The first call (compilation for JAX) and the
warm-up are excluded; the table shows medians of the timed repeats.

With `--device gpu` nothing is pinned: ours runs on JAX's GPU backend, PEFT's model and
batch live on `cuda`, and every timed call waits for the device (block_until_ready,
torch.cuda.synchronize). Memory is then the peak of device memory allocated by each
framework's allocator (JAX's `memory_stats()["peak_bytes_in_use"]`, torch's
`max_memory_allocated()`), with JAX allocating on demand rather than preallocating.
`--dtype bfloat16` runs both frozen models in bfloat16 and keeps the prompt in float32
on both sides; on the CPU it measures each framework's bfloat16 kernels (what a CPU user
in bfloat16 gets), not the implementations alone. Float32 matmuls use TF32 on both sides unless
`--matmul-precision highest` (JAX's GPU default is TF32, torch's is full float32, so
one of them is always set explicitly).

  python benchmarks/peft_compare.py                   # the issue's configuration
  python benchmarks/peft_compare.py --quick           # tiny model, for a smoke run
  python benchmarks/peft_compare.py --quick --sides ours --isolate side
  python benchmarks/peft_compare.py --device gpu      # -> benchmarks/results_gpu.md
  python benchmarks/peft_compare.py --device gpu --size base --dtype bfloat16
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Iterable, Sequence

from prompt_tuning import tables  # Pure Python: the parent process stays jax-free.

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DEFAULT_RESULTS = {
  "cpu": os.path.join(_ROOT, "benchmarks", "results.md"),
  "gpu": os.path.join(_ROOT, "benchmarks", "results_gpu.md"),
}

SIDES = ("ours", "peft")
WORKLOADS = ("prompt_train", "prompt_train_no_dropout", "full_train", "forward", "decode")
TRAIN_WORKLOADS = ("prompt_train", "prompt_train_no_dropout", "full_train")
SIDE_NAMES = {"ours": "ours (JAX)", "peft": "PEFT (PyTorch)"}
DEVICES = ("cpu", "gpu")
DTYPES = ("float32", "bfloat16")
# Float32 matmuls on the GPU: TF32 tensor cores (JAX's default there) or full float32
# (torch's default). Both sides always get the same one.
MATMUL_PRECISIONS = ("tf32", "highest")
# prompt_tuning.t5.layers.ATTENTION_IMPLEMENTATIONS, named here so that the parent
# process need not import jax.
ATTENTION_IMPLEMENTATIONS = ("einsum", "xla", "cudnn")
MIB = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Setting:
  """One benchmark configuration; the same for both sides and every workload."""

  size: str = "small"
  batch: int = 8
  inputs: int = 256
  prompt: int = 100
  targets: int = 8
  new_tokens: int = 16
  dropout: float = 0.1
  threads: int = 1
  warmup: int = 2
  repeats: int = 5
  seed: int = 0
  device: str = "cpu"
  # Activations and frozen parameters; the prompt is float32 whatever this says.
  dtype: str = "float32"
  # GPU only (None on the CPU): one of MATMUL_PRECISIONS.
  matmul_precision: str | None = None
  # Our attention (T5Config.attention_implementation); PEFT's is transformers' default.
  attention: str = "einsum"

  def check(self) -> None:
    for name in (
      "batch",
      "inputs",
      "prompt",
      "targets",
      "new_tokens",
      "threads",
      "warmup",
      "repeats",
    ):
      if getattr(self, name) < 1:
        raise ValueError(
          f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}"
        )
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"--dropout must be in [0, 1), got {self.dropout}")
    if self.device not in DEVICES:
      raise ValueError(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
    if self.dtype not in DTYPES:
      raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
    if self.device == "cpu" and self.matmul_precision is not None:
      raise ValueError("--matmul-precision applies to --device gpu only")
    if self.attention not in ATTENTION_IMPLEMENTATIONS:
      raise ValueError(
        f"--attention must be one of {', '.join(ATTENTION_IMPLEMENTATIONS)}, got {self.attention!r}"
      )
    if self.device == "gpu" and self.matmul_precision not in MATMUL_PRECISIONS:
      raise ValueError(
        f"--matmul-precision must be one of "
        f"{', '.join(MATMUL_PRECISIONS)}, got {self.matmul_precision!r}"
      )


QUICK = dict(
  size="tiny", batch=2, inputs=32, prompt=8, targets=4, new_tokens=4, warmup=1, repeats=2
)

# ------------------------------------------------------------------------ measuring


@dataclasses.dataclass
class Timing:
  """Seconds of the first call (includes JAX compilation) and of each timed repeat."""

  first: float
  samples: list[float]

  @property
  def median(self) -> float:
    return statistics.median(self.samples)


def measure_alternating(
  fns: Sequence[Callable[[], Any]],
  warmup: int,
  repeats: int,
  clock: Callable[[], float] = time.perf_counter,
) -> list[Timing]:
  """Times each of `fns`, which must return only when their work is done.

  The first of the `warmup` calls of each is timed on its own (compilation); the others
  are untimed, so caches and allocators settle. Then `repeats` rounds call every
  function once in turn, so that the k-th samples of all of them saw the same machine
  load and their differences or ratios stay meaningful on a busy machine.
  """
  if warmup < 1 or repeats < 1:
    raise ValueError(f"warmup and repeats must be at least 1, got {warmup}, {repeats}")

  def timed(fn: Callable[[], Any]) -> float:
    start = clock()
    fn()
    return clock() - start

  firsts = [timed(fn) for fn in fns]
  for _ in range(warmup - 1):
    for fn in fns:
      fn()
  samples: list[list[float]] = [[] for _ in fns]
  for _ in range(repeats):
    for fn, out in zip(fns, samples):
      out.append(timed(fn))
  return [Timing(first, s) for first, s in zip(firsts, samples)]


def measure(
  fn: Callable[[], Any], warmup: int, repeats: int, clock: Callable[[], float] = time.perf_counter
) -> Timing:
  """`measure_alternating` of one function."""
  return measure_alternating([fn], warmup, repeats, clock)[0]


def _peak_rss_bytes() -> int:
  """The kernel's high-water mark of this process's resident memory (exact, unlike
  sampling the current RSS)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB.


def _current_rss_bytes() -> int:
  import psutil

  return psutil.Process().memory_info().rss


def _jax_device_memory() -> tuple[int | None, int | None]:
  """(bytes in use, peak bytes in use since the process started) on JAX's device, or
  Nones where the backend keeps no allocator statistics (`memory_stats()` is None)."""
  import jax

  stats = jax.devices()[0].memory_stats() or {}
  return stats.get("bytes_in_use"), stats.get("peak_bytes_in_use")


def _use_jax_gpu(setting: Setting) -> dict[str, Any]:
  """Checks that JAX really runs on a GPU (without its CUDA plugin it silently falls
  back to the CPU) and sets the float32 matmul precision; returns the device's name."""
  import jax

  device = jax.devices()[0]
  if device.platform != "gpu":
    raise RuntimeError(
      f"--device gpu, but JAX's default device is {device.platform!r}: "
      f"install jax with its CUDA plugin (pip install 'jax[cuda12]')"
    )
  if setting.matmul_precision == "highest":
    jax.config.update("jax_default_matmul_precision", "float32")
  # "tf32" is JAX's own default on GPUs with tensor cores: nothing to set.
  backend = getattr(getattr(device, "client", None), "platform_version", None) or "n/a"
  return {"device_name": device.device_kind, "backend": " ".join(str(backend).split())}


def random_batch(setting: Setting, vocab_size: int) -> dict[str, Any]:
  """int32 numpy arrays shared by both sides: no padding, ids >= 2 (not pad or EOS)."""
  import numpy as np

  rng = np.random.default_rng(setting.seed)
  inputs = rng.integers(2, vocab_size, (setting.batch, setting.inputs), dtype=np.int32)
  targets = rng.integers(2, vocab_size, (setting.batch, setting.targets), dtype=np.int32)
  decoder_inputs = np.concatenate([np.zeros((setting.batch, 1), np.int32), targets[:, :-1]], axis=1)
  return {
    "encoder_input_tokens": inputs,
    "decoder_input_tokens": decoder_inputs,
    "decoder_target_tokens": targets,
  }


def _measure_workload(
  setting: Setting, call: Callable[[], Any], one_token: Callable[[], Any] | None
) -> tuple[Timing, dict[str, Any]]:
  """Times `call`; for decoding, alternately with a 1-token decode (`one_token`), whose
  paired differences give the cost of the cached decoding loop without the encoder."""
  if one_token is None:
    return measure(call, setting.warmup, setting.repeats), {}
  timing, one = measure_alternating([call, one_token], setting.warmup, setting.repeats)
  return timing, {"samples_one_token": one.samples}


def _dropout(setting: Setting, workload: str) -> float:
  return 0.0 if workload == "prompt_train_no_dropout" else setting.dropout


# ------------------------------------------------------------------------ our side


def random_params(abstract: Any, seed: int) -> Any:
  """Random weights of T5's scales, drawn with numpy from the parameter shapes.

  Speed does not depend on the values as long as they stay normal floats; drawing them
  here skips compiling flax's init, which takes longer than the benchmark's own steps
  on a small machine.
  """
  import flax
  import jax.numpy as jnp
  import numpy as np

  rng = np.random.default_rng(seed)
  flat = {}
  for path, leaf in flax.traverse_util.flatten_dict(abstract).items():
    name, shape = "/".join(path), leaf.shape
    if name.endswith("/scale"):
      value = np.ones(shape, np.float32)
    elif name.endswith("prompt/prompt"):
      value = rng.uniform(-0.5, 0.5, shape).astype(np.float32)
    elif name.endswith("token_embedder/embedding"):
      value = rng.standard_normal(shape, np.float32)
    else:  # Kernels [fan_in, fan_out] and relative position tables.
      value = rng.standard_normal(shape, np.float32) / np.float32(np.sqrt(shape[0]))
    flat[path] = jnp.asarray(value.astype(leaf.dtype))
  return flax.traverse_util.unflatten_dict(flat)


@dataclasses.dataclass
class OursWorkload:
  """One of our workloads, ready to call: `call` runs it once and blocks; `one_token` is
  the 1-token decode timed alternately with a decode (None otherwise)."""

  call: Callable[[], Any]
  one_token: Callable[[], Any] | None
  counts: dict[str, Any]


def build_ours(setting: Setting, workload: str) -> OursWorkload:
  """Our code as the trainer and evaluator run it: `make_train_step` jitted with the
  state donated, `score_batch` and `predict_batch` jitted."""
  import jax
  import jax.numpy as jnp

  from prompt_tuning import decoding, models, tree
  from prompt_tuning.prompts import Prompt
  from prompt_tuning.t5 import T5Config, Transformer, abstract_params
  from prompt_tuning.training import optimizers, train_step, trainable

  # The frozen parameters and activations in `setting.dtype`; Prompt keeps its own
  # parameter in float32 (its param_dtype), as the trainer does.
  config = T5Config.from_size(
    setting.size,
    dropout_rate=_dropout(setting, workload),
    dtype=setting.dtype,
    param_dtype=setting.dtype,
    attention_implementation=setting.attention,
  )
  prompt = functools.partial(Prompt, length=setting.prompt)
  module = Transformer(config, input_prompt=prompt)
  params = random_params(abstract_params(config, input_prompt=prompt), setting.seed)
  batch = {k: jnp.asarray(v) for k, v in random_batch(setting, config.vocab_size).items()}

  one_token = None  # Decoding only: a 1-token decode, timed alternately with it.
  if workload in TRAIN_WORKLOADS:
    model = models.EncoderDecoderModel(module)
    regex = ".*" if workload == "full_train" else trainable.DEFAULT_TRAINABLE
    trained, frozen = trainable.split(params, regex)
    del params
    optimizer = optimizers.adafactor()
    state = [train_step.TrainState.create(trained, optimizer)]
    step = jax.jit(train_step.make_train_step(model, optimizer), donate_argnums=(0,))
    rng = jax.random.PRNGKey(1)

    def call() -> None:
      state[0], metrics = step(state[0], frozen, batch, rng)
      jax.block_until_ready((state[0], metrics))

    counts = {
      "trainable": tree.count(trained),
      "parameters": tree.count(trained) + tree.count(frozen),
      "param_dtypes": _jax_param_dtypes(trainable.merge(trained, frozen)),
    }
  elif workload == "forward":
    model = models.EncoderDecoderModel(module)
    score = jax.jit(model.score_batch)
    counts = {"parameters": tree.count(params), "param_dtypes": _jax_param_dtypes(params)}

    def call() -> None:
      jax.block_until_ready(score(params, batch))
  else:
    # eos_id -1 is no token: decoding never stops early, as PEFT's side with no EOS.
    model = models.EncoderDecoderModel(
      module, decode_fn=decoding.temperature_sample, decode_kwargs={"temperature": 0.0}, eos_id=-1
    )
    predict = jax.jit(model.predict_batch)
    counts = {"parameters": tree.count(params), "param_dtypes": _jax_param_dtypes(params)}

    def decode_call(tokens: int) -> Callable[[], Any]:
      decode_batch = {
        "encoder_input_tokens": batch["encoder_input_tokens"],
        "decoder_target_tokens": jnp.zeros((setting.batch, tokens), jnp.int32),
      }
      return lambda: jax.block_until_ready(predict(params, decode_batch))

    call, one_token = decode_call(setting.new_tokens), decode_call(1)
  return OursWorkload(call, one_token, counts)


def run_ours(setting: Setting, workload: str, shapes: dict[str, int]) -> dict[str, Any]:
  """Times `build_ours`'s workload and reads memory. `shapes` is unused: our side builds
  the network from the size name, which `shapes` was derived from."""
  import flax
  import jax
  import jaxlib
  import optax

  gpu = _use_jax_gpu(setting) if setting.device == "gpu" else {}
  built = build_ours(setting, workload)
  call, one_token, counts = built.call, built.one_token, built.counts
  rss_before = _current_rss_bytes()
  device_before = _jax_device_memory()[0]
  timing, extra = _measure_workload(setting, call, one_token)
  if workload == "decode":
    shape = call().shape
    if shape != (setting.batch, setting.new_tokens):
      raise RuntimeError(
        f"our decode gave shape {shape}, expected {(setting.batch, setting.new_tokens)}"
      )
  memory = {"rss_before": rss_before, "peak_rss": _peak_rss_bytes()}
  if setting.device == "gpu":
    memory.update(
      device_before=device_before,
      peak_device=_jax_device_memory()[1],
      device_name=gpu["device_name"],
    )
  versions = {
    "jax": jax.__version__,
    "jaxlib": jaxlib.__version__,
    "flax": flax.__version__,
    "optax": optax.__version__,
  }
  if setting.device == "gpu":
    versions["jax GPU backend"] = gpu["backend"]
  return {
    "first": timing.first,
    "samples": timing.samples,
    **memory,
    **counts,
    **extra,
    "versions": versions,
  }


def _jax_param_dtypes(params: Any) -> dict[str, str]:
  """{"prompt": dtype, "model": dtype(s)}: what the --dtype flag did to each part."""
  import jax

  from prompt_tuning.training import trainable

  prompt, model = trainable.split(params)
  return {
    "prompt": _joined_dtypes(str(x.dtype) for x in jax.tree.leaves(prompt)),
    "model": _joined_dtypes(str(x.dtype) for x in jax.tree.leaves(model)),
  }


def _joined_dtypes(names: Iterable[str]) -> str:
  return "+".join(sorted(set(names)))


# ------------------------------------------------------------------------ PEFT's side


def _hf_model(setting: Setting, shapes: dict[str, int], dropout: float) -> Any:
  """T5ForConditionalGeneration with our shapes and an untied, unscaled output layer
  (T5 1.1). Recent transformers tie `lm_head` to the embedding whatever the config
  says, so the head gets its own weight here, as a T5 1.1 checkpoint would load."""
  import torch
  from transformers import T5Config, T5ForConditionalGeneration

  config = T5Config(
    vocab_size=shapes["vocab_size"],
    d_model=shapes["d_model"],
    d_kv=shapes["d_kv"],
    d_ff=shapes["d_ff"],
    num_layers=shapes["layers"],
    num_decoder_layers=shapes["decoder_layers"],
    num_heads=shapes["heads"],
    feed_forward_proj="gated-gelu",
    dropout_rate=dropout,
    tie_word_embeddings=False,
    decoder_start_token_id=0,
    pad_token_id=0,
    eos_token_id=1,
  )
  model = T5ForConditionalGeneration(config)
  if model.lm_head.weight is model.shared.weight:
    model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.shared.weight))
  model.config.tie_word_embeddings = False
  if getattr(model.config, "scale_decoder_outputs", False):
    raise RuntimeError(
      "this transformers version rescales T5 decoder outputs; the "
      "benchmark needs T5 1.1's unscaled, untied output layer"
    )
  return model


def peft_prompt_model(base: Any, prompt_length: int) -> Any:
  """PEFT's documented prompt tuning of `base`. num_transformer_submodules=1: PEFT's
  seq2seq default (2) allocates a second table of prompt vectors that prompt tuning
  never uses; 1 gives the paper's P x d prompt."""
  import peft

  return peft.get_peft_model(
    base,
    peft.PromptTuningConfig(
      task_type=peft.TaskType.SEQ_2_SEQ_LM,
      num_virtual_tokens=prompt_length,
      num_transformer_submodules=1,
      prompt_tuning_init=peft.PromptTuningInit.RANDOM,
    ),
  )


def paper_adafactor(trained: Any) -> Any:
  """transformers' Adafactor at the paper's settings: constant lr 0.3, decay rate 0.8,
  clipping 1.0, no parameter scaling, weight decay 1e-5 (as our optimizers.adafactor)."""
  from transformers.optimization import Adafactor

  return Adafactor(
    trained,
    lr=0.3,
    relative_step=False,
    scale_parameter=False,
    warmup_init=False,
    decay_rate=-0.8,
    clip_threshold=1.0,
    weight_decay=1e-5,
  )


def run_peft(setting: Setting, workload: str, shapes: dict[str, int]) -> dict[str, Any]:
  """PEFT's documented prompt tuning: `get_peft_model` with `PromptTuningConfig`, trained
  with transformers' Adafactor at the paper's settings, decoded with `generate`."""
  import peft
  import torch
  import transformers

  device = _use_torch_device(setting)
  torch.manual_seed(setting.seed)
  if setting.device == "cpu":
    torch.set_num_threads(setting.threads)
  # The frozen model is cast before PEFT wraps it: PEFT then creates the prompt table
  # as a fresh float32 nn.Embedding on the model's device and casts the prompt to the
  # embeddings' dtype in forward, so the prompt stays float32, as on our side.
  base = _hf_model(setting, shapes, _dropout(setting, workload)).to(
    device=device, dtype=getattr(torch, setting.dtype)
  )
  model = peft_prompt_model(base, setting.prompt)
  data = {
    k: torch.from_numpy(v).long().to(device)
    for k, v in random_batch(setting, shapes["vocab_size"]).items()
  }
  input_ids = data["encoder_input_tokens"]
  attention_mask = torch.ones_like(input_ids)
  labels = data["decoder_target_tokens"]

  one_token = None  # Decoding only: a 1-token decode, timed alternately with it.
  if workload in TRAIN_WORKLOADS:
    if workload == "full_train":
      for parameter in model.parameters():
        parameter.requires_grad_(True)
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = paper_adafactor(trained)
    model.train()

    def call() -> None:
      loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
      loss.backward()
      optimizer.step()
      optimizer.zero_grad(set_to_none=True)

    counts = {
      "trainable": sum(p.numel() for p in trained),
      "parameters": sum(p.numel() for p in model.parameters()),
    }
    call = _synchronised(call, device)
  elif workload == "forward":
    model.eval()

    def call() -> None:
      with torch.inference_mode():
        logits = model(
          input_ids=input_ids,
          attention_mask=attention_mask,
          decoder_input_ids=data["decoder_input_tokens"],
        ).logits
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        torch.gather(log_probs, -1, labels[..., None])[..., 0].sum(-1)

    call = _synchronised(call, device)
    counts = {"parameters": sum(p.numel() for p in model.parameters())}
  else:
    model.eval()

    def decode_call(tokens: int) -> Callable[[], Any]:
      # eos_token_id None: `generate` never stops early; it always decodes `tokens`.
      generation = transformers.GenerationConfig(
        max_new_tokens=tokens,
        min_new_tokens=None,
        do_sample=False,
        num_beams=1,
        use_cache=True,
        eos_token_id=None,
        pad_token_id=0,
        decoder_start_token_id=0,
      )

      def generate() -> Any:
        with torch.inference_mode():
          return model.generate(
            input_ids=input_ids, attention_mask=attention_mask, generation_config=generation
          )

      return _synchronised(generate, device)

    call, one_token = decode_call(setting.new_tokens), decode_call(1)
    counts = {"parameters": sum(p.numel() for p in model.parameters())}

  dtypes = {"prompt": [], "model": []}
  for name, parameter in model.named_parameters():
    part = "prompt" if "prompt_encoder" in name else "model"
    dtypes[part].append(str(parameter.dtype).removeprefix("torch."))
  counts["param_dtypes"] = {part: _joined_dtypes(names) for part, names in dtypes.items()}
  rss_before = _current_rss_bytes()
  device_before = torch.cuda.memory_allocated() if device.type == "cuda" else None
  timing, extra = _measure_workload(setting, call, one_token)
  if workload == "decode":
    shape = tuple(call().shape)
    if shape != (setting.batch, setting.new_tokens + 1):  # + the start token
      raise RuntimeError(
        f"PEFT generate gave shape {shape}, expected {(setting.batch, setting.new_tokens + 1)}"
      )
  memory = {"rss_before": rss_before, "peak_rss": _peak_rss_bytes()}
  versions = {
    "torch": torch.__version__,
    "transformers": transformers.__version__,
    "peft": peft.__version__,
  }
  if device.type == "cuda":
    memory.update(
      device_before=device_before,
      peak_device=torch.cuda.max_memory_allocated(device),
      device_name=torch.cuda.get_device_name(device),
    )
    versions["torch CUDA"] = torch.version.cuda
  return {
    "first": timing.first,
    "samples": timing.samples,
    **memory,
    **counts,
    **extra,
    "versions": versions,
    "torch_threads": torch.get_num_threads(),
    "attention": getattr(base.config, "_attn_implementation", None) or "n/a",
  }


def _use_torch_device(setting: Setting) -> Any:
  """The torch device for `setting.device`, with the float32 matmul precision set (on
  the GPU) to the one our side uses."""
  import torch

  if setting.device == "cpu":
    return torch.device("cpu")
  if not torch.cuda.is_available():
    raise RuntimeError(
      "--device gpu, but torch sees no CUDA device: install a CUDA "
      "build of torch, or check CUDA_VISIBLE_DEVICES"
    )
  torch.set_float32_matmul_precision("high" if setting.matmul_precision == "tf32" else "highest")
  return torch.device("cuda", 0)


def _synchronised(fn: Callable[[], Any], device: Any) -> Callable[[], Any]:
  """`fn` that returns only once the GPU has finished its work (CUDA kernels run
  asynchronously, so without this the clock would stop when they were queued)."""
  if device.type != "cuda":
    return fn
  import torch

  def call() -> Any:
    out = fn()
    torch.cuda.synchronize(device)
    return out

  return call


RUNNERS = {"ours": run_ours, "peft": run_peft}

# ------------------------------------------------------------------------ processes


def pin_threads(threads: int) -> list[int]:
  """Restricts this process to `threads` of the CPUs it may use; returns them."""
  allowed = sorted(os.sched_getaffinity(0))
  if threads > len(allowed):
    raise ValueError(
      f"--threads {threads} is more than the {len(allowed)} CPUs this process may use"
    )
  cpus = allowed[:threads]
  os.sched_setaffinity(0, cpus)
  return cpus


def child_environment(threads: int) -> dict[str, str]:
  """The same thread settings for both frameworks; no inherited fake-device count."""
  env = dict(os.environ)
  flags = [
    f
    for f in env.get("XLA_FLAGS", "").split()
    if not f.startswith("--xla_force_host_platform_device_count")
  ]
  flags.append("--xla_cpu_multi_thread_eigen=true")
  env.update(
    XLA_FLAGS=" ".join(flags),
    JAX_PLATFORMS="cpu",
    TF_CPP_MIN_LOG_LEVEL="3",
    OMP_NUM_THREADS=str(threads),
    MKL_NUM_THREADS=str(threads),
    TOKENIZERS_PARALLELISM="false",
    CUDA_VISIBLE_DEVICES="",
  )
  return env


def gpu_child_environment() -> dict[str, str]:
  """The GPU run's children: nothing pinned; JAX picks its GPU backend (an inherited
  JAX_PLATFORMS, such as the tests' `cpu`, is dropped) and allocates device memory on
  demand instead of taking 75% of it up front, so that its peak is what it used and
  nothing of JAX's is held when PEFT's process runs."""
  env = dict(os.environ)
  env.pop("JAX_PLATFORMS", None)
  flags = [
    f
    for f in env.get("XLA_FLAGS", "").split()
    if not f.startswith("--xla_force_host_platform_device_count")
  ]
  env.update(
    XLA_FLAGS=" ".join(flags),
    XLA_PYTHON_CLIENT_PREALLOCATE="false",
    TF_CPP_MIN_LOG_LEVEL="3",
    TOKENIZERS_PARALLELISM="false",
  )
  return env


def side_environment(setting: Setting) -> dict[str, str]:
  return gpu_child_environment() if setting.device == "gpu" else child_environment(setting.threads)


def model_shapes(size: str) -> dict[str, int]:
  """The backbone's shapes, from our config, for PEFT's side to mirror."""
  from prompt_tuning.t5 import T5Config

  c = T5Config.from_size(size)
  if c.mlp_activations != ("gelu", "linear") or c.logits_via_embedding:
    raise ValueError(f"size {size!r} is not a T5 1.1 gated-GELU, untied model")
  return {
    "vocab_size": c.vocab_size,
    "d_model": c.emb_dim,
    "d_kv": c.head_dim,
    "d_ff": c.mlp_dim,
    "layers": c.num_encoder_layers,
    "decoder_layers": c.num_decoder_layers,
    "heads": c.num_heads,
  }


def child_main(spec: str) -> None:
  """Subprocess entry: run the named workloads of one side, print one JSON line."""
  job = json.loads(spec)
  setting = Setting(**job["setting"])
  cpus = pin_threads(setting.threads) if setting.device == "cpu" else None
  results = {}
  for workload in job["workloads"]:
    results[workload] = RUNNERS[job["side"]](setting, workload, job["shapes"])
  print(json.dumps({"cpus": cpus, "results": results}))


def run_side(
  side: str, workloads: Sequence[str], setting: Setting, shapes: dict[str, int]
) -> dict[str, Any]:
  spec = json.dumps(
    {
      "side": side,
      "workloads": list(workloads),
      "setting": dataclasses.asdict(setting),
      "shapes": shapes,
    }
  )
  proc = subprocess.run(
    [sys.executable, os.path.abspath(__file__), "--_child", spec],
    env=side_environment(setting),
    cwd=_ROOT,
    capture_output=True,
    text=True,
  )
  if proc.returncode != 0:
    raise RuntimeError(
      f"{side} {','.join(workloads)} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
    )
  return json.loads(proc.stdout.strip().splitlines()[-1])


def run_all(
  setting: Setting,
  sides: Sequence[str],
  workloads: Sequence[str],
  isolate: str,
  log: Callable[[str], None],
) -> dict[str, dict[str, Any]]:
  """{side: {workload: result}}; one subprocess per workload, or per side.

  Per workload, the sides alternate (ours, PEFT, ours, ...), so that a change in the
  machine's load during the run falls on both sides rather than on one.
  """
  shapes = model_shapes(setting.size)
  if setting.dropout == 0:  # The dropout-0 step is then prompt_train itself.
    workloads = [w for w in workloads if w != "prompt_train_no_dropout"]
  groups = [[w] for w in workloads] if isolate == "workload" else [list(workloads)]
  results: dict[str, dict[str, Any]] = {side: {} for side in sides}
  for group in groups:
    for side in sides:
      log(f"{side}: {', '.join(group)} ...")
      start = time.perf_counter()
      out = run_side(side, group, setting, shapes)
      if isolate == "side":
        for result in out["results"].values():
          result["peak_rss_scope"] = "side"
      results[side].update(out["results"])
      log(f"  done in {time.perf_counter() - start:.0f}s")
  return results


# ------------------------------------------------------------------------ the table


def no_dropout_workload(setting: Setting) -> str:
  return "prompt_train" if setting.dropout == 0 else "prompt_train_no_dropout"


def decode_step_rate(setting: Setting, result: dict[str, Any] | None) -> float | None:
  """Tokens/s of the cached decoding loop alone: the extra tokens of an N-token decode
  over the extra time it takes compared with a 1-token decode (same encoder pass)."""
  if not result or "samples_one_token" not in result or setting.new_tokens < 2:
    return None
  extra = statistics.median(
    n - one for n, one in zip(result["samples"], result["samples_one_token"])
  )
  return None if extra <= 0 else setting.batch * (setting.new_tokens - 1) / extra


def _fmt(value: float | None, digits: int = 2) -> str:
  return "n/a" if value is None else f"{value:,.{digits}f}"


def summarise(
  setting: Setting, results: dict[str, dict[str, Any]]
) -> list[tuple[str, str, str, str, str]]:
  """Rows of (metric, ours, PEFT, ours/PEFT, target and whether it is met)."""

  def median(side: str, workload: str) -> float | None:
    r = results.get(side, {}).get(workload)
    return statistics.median(r["samples"]) if r else None

  def per_second(side: str, workload: str, units: int) -> float | None:
    m = median(side, workload)
    return None if m is None else units / m

  def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b

  def verdict(value: float | None, target: str, ok: Callable[[float], bool]) -> str:
    if value is None:
      return target
    return f"{target}: {'met' if ok(value) else 'MISSED'}"

  rows = []
  tokens = setting.batch * setting.new_tokens
  train = {s: per_second(s, "prompt_train", setting.batch) for s in SIDES}
  train_ratio = ratio(train["ours"], train["peft"])
  rows.append(
    (
      "prompt train step, examples/s",
      _fmt(train["ours"]),
      _fmt(train["peft"]),
      _fmt(train_ratio),
      verdict(train_ratio, ">= 1.5x", lambda v: v >= 1.5),
    )
  )
  no_dropout = no_dropout_workload(setting)
  for workload, label in (
    ("prompt_train", "prompt train step, ms"),
    (no_dropout, "prompt train step, dropout 0, ms"),
    ("full_train", "full fine-tune step, ms"),
    ("forward", "forward scoring, ms"),
    ("decode", f"greedy decode {setting.new_tokens} tokens, ms"),
  ):
    ours, theirs = median("ours", workload), median("peft", workload)
    rows.append(
      (
        label,
        _fmt(ours and ours * 1e3, 1),
        _fmt(theirs and theirs * 1e3, 1),
        _fmt(ratio(ours, theirs)),
        "",
      )
    )
  full = {s: ratio(median(s, "prompt_train"), median(s, "full_train")) for s in SIDES}
  rows.append(
    (
      "prompt step / full step",
      _fmt(full["ours"]),
      _fmt(full["peft"]),
      "",
      verdict(full["ours"], "ours <= 0.55", lambda v: v <= 0.55),
    )
  )
  for workload, label in (
    ("prompt_train", "prompt step / forward"),
    (no_dropout, "prompt step, dropout 0 / forward"),
  ):
    fwd = {s: ratio(median(s, workload), median(s, "forward")) for s in SIDES}
    rows.append(
      (
        label,
        _fmt(fwd["ours"]),
        _fmt(fwd["peft"]),
        "",
        verdict(fwd["ours"], "ours <= 2.1", lambda v: v <= 2.1),
      )
    )
  decode = {s: per_second(s, "decode", tokens) for s in SIDES}
  decode_ratio = ratio(decode["ours"], decode["peft"])
  rows.append(
    (
      "greedy decode, tokens/s",
      _fmt(decode["ours"], 1),
      _fmt(decode["peft"], 1),
      _fmt(decode_ratio),
      verdict(decode_ratio, ">= 3x", lambda v: v >= 3.0),
    )
  )
  steps = {s: decode_step_rate(setting, results.get(s, {}).get("decode")) for s in SIDES}
  rows.append(
    (
      "greedy decode after the 1st token, tokens/s",
      _fmt(steps["ours"], 1),
      _fmt(steps["peft"], 1),
      _fmt(ratio(steps["ours"], steps["peft"])),
      "",
    )
  )
  key, memory = memory_metric(setting)
  scopes = {r.get("peak_rss_scope", "workload") for side in results.values() for r in side.values()}
  if scopes == {"side"}:
    peaks = {s: _peak_of([r.get(key) for r in results.get(s, {}).values()]) for s in SIDES}
    rows.append(
      (
        f"{memory}, all workloads in one process, MiB",
        _fmt(peaks["ours"] and peaks["ours"] / MIB, 0),
        _fmt(peaks["peft"] and peaks["peft"] / MIB, 0),
        _fmt(ratio(peaks["ours"], peaks["peft"])),
        "lower is better",
      )
    )
  else:
    for workload in (w for w in WORKLOADS if w != "prompt_train_no_dropout"):
      peaks = {s: results.get(s, {}).get(workload, {}).get(key) for s in SIDES}
      rows.append(
        (
          f"{memory}, {workload}, MiB",
          _fmt(peaks["ours"] and peaks["ours"] / MIB, 0),
          _fmt(peaks["peft"] and peaks["peft"] / MIB, 0),
          _fmt(ratio(peaks["ours"], peaks["peft"])),
          "lower is better",
        )
      )
  return rows


def memory_metric(setting: Setting) -> tuple[str, str]:
  """(result key, row label) of the memory that matters on the device: host RSS on the
  CPU, the framework allocator's device memory on the GPU."""
  if setting.device == "gpu":
    return "peak_device", "peak device memory"
  return "peak_rss", "peak RSS"


def _peak_of(values: Sequence[int | None]) -> int | None:
  """The largest, or None when there is none or one is unknown (memory_stats None)."""
  return None if not values or None in values else max(values)


def format_table(rows: Sequence[Sequence[str]]) -> str:
  """A Markdown table whose columns also line up in a terminal: numbers right-aligned."""
  header = ("metric", SIDE_NAMES["ours"], SIDE_NAMES["peft"], "ours/PEFT", "target")
  return tables.format_table(header, rows, align="<>>><", markdown=True)


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def describe(
  setting: Setting, results: dict[str, dict[str, Any]], isolate: str, load: tuple[float, float]
) -> str:
  """The context a reader needs to trust or reproduce the table."""
  versions: dict[str, str] = {}
  details = []
  for side, by_workload in results.items():
    for workload, r in by_workload.items():
      versions.update(r["versions"])
      samples = ", ".join(f"{s * 1e3:.1f}" for s in r["samples"])
      trainable = f", trainable {r['trainable']:,}" if "trainable" in r else ""
      if "samples_one_token" in r:
        samples += "; 1-token decode: " + ", ".join(
          f"{s * 1e3:.1f}" for s in r["samples_one_token"]
        )
      dtypes = r.get("param_dtypes")
      dtypes = f"; dtypes: prompt {dtypes['prompt']}, model {dtypes['model']}" if dtypes else ""
      attention = f"; attention {r['attention']}" if "attention" in r else ""
      details.append(
        f"- {side} {workload}: first call {r['first']:.2f} s; timed ms "
        f"[{samples}]; parameters {r['parameters']:,}{trainable}{dtypes}"
        f"{attention}; {_memory_detail(r)}"
      )
  versions["python"] = platform.python_version()
  torch_threads = {r.get("torch_threads") for r in results.get("peft", {}).values()}
  torch_threads_text = ", ".join(str(t) for t in sorted(torch_threads - {None})) or "n/a"
  host = (
    f"{cpu_model()}, {os.cpu_count()} logical CPUs "
    f"({len(os.sched_getaffinity(0))} usable), {platform.system()} "
    f"{platform.release()}; 1-minute load average {load[0]:.2f} at the start, "
    f"{load[1]:.2f} at the end (anything above 0 is other work competing for the "
    f"same cores)"
  )
  if setting.device == "gpu":
    machine = f"- machine: GPU {device_names(results)}; host {host}"
    threads = (
      f"- threads: not pinned (GPU run); XLA and torch size their host thread "
      f"pools themselves (torch reports {torch_threads_text}); "
      f"XLA_PYTHON_CLIENT_PREALLOCATE=false"
    )
  else:
    xla_flags = child_environment(setting.threads)["XLA_FLAGS"]
    machine = f"- machine: {host}"
    threads = (
      f"- threads: {setting.threads} for each side: the process is pinned to "
      f"{setting.threads} CPU(s) with sched_setaffinity (XLA sizes its intra-op "
      f"pool from the affinity mask; XLA_FLAGS={xla_flags}), "
      f"torch.set_num_threads({setting.threads}) (torch reports "
      f"{torch_threads_text}), OMP_NUM_THREADS=MKL_NUM_THREADS={setting.threads}"
    )
  warning = noise_warning(results, load)
  return "\n".join(
    ([f"**{warning}**", ""] if warning else [])
    + [
      f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
      machine,
      "- versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())),
      threads,
      f"- configuration: T5 1.1 {setting.size}, random weights, {numerics(setting)}, "
      f"batch {setting.batch}, inputs {setting.inputs}, prompt {setting.prompt}, targets "
      f"{setting.targets}, dropout {setting.dropout} in training steps (0 in the "
      f"'dropout 0' rows), greedy decode of {setting.new_tokens} new tokens with no EOS "
      f"id on either side; our attention: {setting.attention}",
      "- dropout masks as each side draws them: ours shares hidden-state masks along "
      "the length axis and attention-weight masks across queries (as T5X); "
      "transformers draws one entry per element everywhere",
      "- optimiser: Adafactor on both sides (paper settings: lr 0.3 constant, decay "
      "0.8, update clipping 1.0, no parameter scaling, weight decay 1e-5); ours is "
      "optax-based `optimizers.adafactor`, PEFT's `transformers.optimization.Adafactor`",
      "- full fine-tune: the same prompt model with every parameter trainable",
      f"- timing: first call excluded (JAX compiles there), {setting.warmup - 1} more "
      f"warm-up call(s), median of {setting.repeats} timed calls; each "
      + ("(side, workload)" if isolate == "workload" else "side")
      + " in its own process; "
      + memory_method(setting),
      "",
      "Per workload:",
      *details,
    ]
  )


def _mib(value: int | None) -> str:
  return "n/a" if value is None else f"{value / MIB:,.0f} MiB"


def _memory_detail(r: dict[str, Any]) -> str:
  host = f"RSS before timing {_mib(r['rss_before'])}, peak {_mib(r['peak_rss'])}"
  if "peak_device" not in r:
    return host
  return (
    f"device memory before timing {_mib(r.get('device_before'))}, peak "
    f"{_mib(r['peak_device'])}; host {host}"
  )


def device_names(results: dict[str, dict[str, Any]]) -> str:
  """The GPU as each side named it (JAX's device_kind, torch's get_device_name)."""
  names = {
    SIDE_NAMES[side].split()[0]: r["device_name"]
    for side, by_workload in results.items()
    for r in by_workload.values()
    if "device_name" in r
  }
  if not names:
    return "n/a"
  if len(set(names.values())) == 1:
    return next(iter(names.values()))
  return "; ".join(f"{name} ({side})" for side, name in names.items())


def numerics(setting: Setting) -> str:
  """What --dtype and --matmul-precision mean, side by side."""
  if setting.device == "cpu":
    return "float32"
  matmul = (
    "TF32 tensor cores for float32 matmuls (JAX's GPU default; torch "
    "set_float32_matmul_precision('high'))"
    if setting.matmul_precision == "tf32"
    else "full-float32 matmuls (jax_default_matmul_precision float32; torch "
    "set_float32_matmul_precision('highest'))"
  )
  if setting.dtype == "float32":
    return f"float32, {matmul}"
  return (
    f"{setting.dtype} activations and frozen parameters with the prompt in float32 "
    f"on both sides (ours: T5Config dtype and param_dtype; PEFT: the T5 model "
    f".to(torch.{setting.dtype}) before get_peft_model, which adds a float32 "
    f"prompt); our output layer computes its logits in float32, transformers' in "
    f"{setting.dtype}; {matmul}"
  )


def memory_method(setting: Setting) -> str:
  if setting.device == "gpu":
    return (
      "peak device memory is each allocator's high-water mark since the process "
      "started, first call included: JAX's memory_stats()['peak_bytes_in_use'] "
      "(allocating on demand), torch.cuda.max_memory_allocated(); neither counts "
      "the CUDA context or memory cached but unused"
    )
  return "peak RSS is the kernel's high-water mark (getrusage), RSS before timing from psutil"


def noise_warning(
  results: dict[str, dict[str, Any]],
  load: tuple[float, float],
  max_spread: float = 0.15,
  max_load: float = 0.5,
) -> str | None:
  """A warning when the timings cannot be trusted: repeats that disagree by more than
  `max_spread` of their median, or other work running (load average)."""
  spreads = []
  for side, by_workload in results.items():
    for workload, r in by_workload.items():
      for samples in (r["samples"], r.get("samples_one_token") or [0.0]):
        middle = statistics.median(samples)
        if middle > 0:
          spreads.append(((max(samples) - min(samples)) / middle, f"{side} {workload}"))
  widest, where = max(spreads, default=(0.0, ""))
  if widest <= max_spread and max(load) <= max_load:
    return None
  return (
    f"WARNING: noisy machine: repeats differ by up to {widest:.0%} of their median "
    f"({where}), load average {load[0]:.2f} -> {load[1]:.2f}. Ratios between rows "
    f"measured in different processes are unreliable; rerun on an idle machine."
  )


def title(setting: Setting, results: dict[str, dict[str, Any]]) -> str:
  """The results file's heading: which device and which dtype the numbers are for."""
  where = f"GPU ({device_names(results)})" if setting.device == "gpu" else "CPU"
  return f"Prompt tuning: ours (JAX) vs Hugging Face PEFT (PyTorch), {where}, {setting.dtype}"


def write_results(path: str, heading: str, table: str, context: str) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    f.write(
      f"# {heading}\n\n"
      "Written by `benchmarks/peft_compare.py` (`make bench`).\n\n"
      f"{table}\n\n{context}\n"
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  defaults = Setting()
  parser.add_argument(
    "--quick",
    action="store_true",
    help="tiny model, short inputs, 2 repeats (smoke run); does not "
    "write results.md unless --results is given",
  )
  parser.add_argument(
    "--size", default=None, help=f"model size (default {defaults.size}; tiny with --quick)"
  )
  for name in ("batch", "inputs", "prompt", "targets", "new_tokens", "warmup", "repeats"):
    parser.add_argument(
      "--" + name.replace("_", "-"),
      type=int,
      default=None,
      help=f"default {getattr(defaults, name)}"
      f"{f' ({QUICK[name]} with --quick)' if name in QUICK else ''}",
    )
  parser.add_argument(
    "--dropout", type=float, default=None, help=f"training dropout, default {defaults.dropout}"
  )
  parser.add_argument(
    "--threads",
    type=int,
    default=None,
    help="threads for each side (default: os.cpu_count()); CPU only",
  )
  parser.add_argument(
    "--device",
    default=defaults.device,
    help=f"{' or '.join(DEVICES)} (default {defaults.device}): gpu runs "
    f"JAX's GPU backend and torch on cuda, unpinned",
  )
  parser.add_argument(
    "--dtype",
    default=defaults.dtype,
    help=f"{' or '.join(DTYPES)} (default {defaults.dtype}): "
    f"activations and frozen parameters on both sides, the prompt "
    f"stays float32. On the CPU, bfloat16 measures each framework's own bfloat16 "
    f"kernels (oneDNN for torch, XLA:CPU for JAX): the comparison a CPU user makes",
  )
  parser.add_argument(
    "--matmul-precision",
    default=None,
    help=f"GPU only: {' or '.join(MATMUL_PRECISIONS)} (default tf32) "
    f"for float32 matmuls, the same on both sides",
  )
  parser.add_argument(
    "--attention",
    default=defaults.attention,
    help=f"our attention: {' or '.join(ATTENTION_IMPLEMENTATIONS)} "
    f"(default {defaults.attention}); cudnn is fused flash "
    f"attention on NVIDIA GPUs in bfloat16",
  )
  parser.add_argument(
    "--sides", default=",".join(SIDES), help="comma-separated subset of: ours, peft"
  )
  parser.add_argument(
    "--workloads",
    default=",".join(WORKLOADS),
    help="comma-separated subset of: " + ", ".join(WORKLOADS),
  )
  parser.add_argument(
    "--isolate",
    choices=("workload", "side"),
    default="workload",
    help="one process per (side, workload), so peak memory is per "
    "workload (default), or one per side (faster)",
  )
  parser.add_argument(
    "--results",
    default=None,
    help=f"Markdown output (default "
    f"{os.path.relpath(_DEFAULT_RESULTS['cpu'])}, with --device "
    f"gpu {os.path.relpath(_DEFAULT_RESULTS['gpu'])}; none with "
    f"--quick)",
  )
  parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
  return parser.parse_args(argv)


def setting_from_args(args: argparse.Namespace) -> Setting:
  values: dict[str, Any] = dict(QUICK) if args.quick else {}
  for name in (
    "size",
    "batch",
    "inputs",
    "prompt",
    "targets",
    "new_tokens",
    "warmup",
    "repeats",
    "dropout",
    "threads",
  ):
    if getattr(args, name) is not None:
      values[name] = getattr(args, name)
  values.setdefault("threads", os.cpu_count() or 1)
  values.update(device=args.device, dtype=args.dtype, attention=args.attention)
  if args.device == "gpu":
    if args.threads is not None:
      raise ValueError("--threads pins CPUs for --device cpu; a GPU run is not pinned")
    values["matmul_precision"] = args.matmul_precision or "tf32"
  elif args.matmul_precision is not None:
    values["matmul_precision"] = args.matmul_precision
  setting = Setting(**values)
  setting.check()
  return setting


def _subset(text: str, choices: Sequence[str], flag: str) -> list[str]:
  """The named choices, in the canonical order."""
  names = {n.strip() for n in text.split(",") if n.strip()}
  if not names or names - set(choices):
    raise ValueError(f"{flag} takes a comma-separated subset of {', '.join(choices)}; got {text!r}")
  return [c for c in choices if c in names]


def main(argv: Sequence[str] | None = None) -> None:
  args = parse_args(argv)
  if args._child:
    child_main(args._child)
    return
  try:
    setting = setting_from_args(args)
    sides = _subset(args.sides, SIDES, "--sides")
    workloads = _subset(args.workloads, WORKLOADS, "--workloads")
    model_shapes(setting.size)  # An unknown or non-T5-1.1 size fails here, not later.
  except ValueError as e:
    sys.exit(f"peft_compare.py: error: {e}")

  def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)

  load_before = os.getloadavg()[0]
  results = run_all(setting, sides, workloads, args.isolate, log)
  table = format_table(summarise(setting, results))
  context = describe(setting, results, args.isolate, (load_before, os.getloadavg()[0]))
  print(table)
  print()
  print(context)
  path = args.results or (None if args.quick else _DEFAULT_RESULTS[setting.device])
  if path:
    write_results(path, title(setting, results), table, context)
    log(f"wrote {path}")


if __name__ == "__main__":
  main()
