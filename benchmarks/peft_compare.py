"""Prompt-tuning speed and memory, ours (JAX, CPU) side by side with Hugging Face PEFT.

Both sides build the same network from random weights: T5 1.1 `small` (d_model 512,
d_ff 1024, 8+8 layers, 6 heads of 64, gated GELU, vocabulary 32,128, untied output
layer), a prompt of 100 vectors prepended to the encoder input, batch 8, inputs 256,
targets 8, dropout 0.1 while training. PEFT's side is `PromptTuningConfig` on
`transformers.T5ForConditionalGeneration`, in PyTorch on the CPU. The workloads:

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

Dropout masks are each side's own: ours shares hidden-state masks along the length axis
(as T5X does) and draws attention-weight masks per element (T5X shares those along the
query axis); transformers draws one entry per element everywhere.

Each (side, workload) runs in its own subprocess, pinned to the same `--threads` CPUs
(sched_setaffinity, which sizes XLA's intra-op pool and torch's default alike), with
`torch.set_num_threads` and OMP/MKL thread counts set to the same number, so the peak
resident memory of each is its own. The first call (compilation for JAX) and the
warm-up are excluded; the table shows medians of the timed repeats.

  python benchmarks/peft_compare.py                   # the issue's configuration
  python benchmarks/peft_compare.py --quick           # tiny model, for a smoke run
  python benchmarks/peft_compare.py --quick --sides ours --isolate side
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
from typing import Any, Callable, Sequence

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DEFAULT_RESULTS = os.path.join(_ROOT, "benchmarks", "results.md")

SIDES = ("ours", "peft")
WORKLOADS = ("prompt_train", "prompt_train_no_dropout", "full_train", "forward", "decode")
TRAIN_WORKLOADS = ("prompt_train", "prompt_train_no_dropout", "full_train")
SIDE_NAMES = {"ours": "ours (JAX)", "peft": "PEFT (PyTorch)"}
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

  def check(self) -> None:
    for name in ("batch", "inputs", "prompt", "targets", "new_tokens", "threads",
                 "warmup", "repeats"):
      if getattr(self, name) < 1:
        raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got "
                         f"{getattr(self, name)}")
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"--dropout must be in [0, 1), got {self.dropout}")


QUICK = dict(size="tiny", batch=2, inputs=32, prompt=8, targets=4, new_tokens=4,
             warmup=1, repeats=2)

# ------------------------------------------------------------------------ measuring


@dataclasses.dataclass
class Timing:
  """Seconds of the first call (includes JAX compilation) and of each timed repeat."""

  first: float
  samples: list[float]

  @property
  def median(self) -> float:
    return statistics.median(self.samples)


def measure_alternating(fns: Sequence[Callable[[], Any]], warmup: int, repeats: int,
                        clock: Callable[[], float] = time.perf_counter) -> list[Timing]:
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


def measure(fn: Callable[[], Any], warmup: int, repeats: int,
            clock: Callable[[], float] = time.perf_counter) -> Timing:
  """`measure_alternating` of one function."""
  return measure_alternating([fn], warmup, repeats, clock)[0]


def _peak_rss_bytes() -> int:
  """The kernel's high-water mark of this process's resident memory (exact, unlike
  sampling the current RSS)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB.


def _current_rss_bytes() -> int:
  import psutil

  return psutil.Process().memory_info().rss


def random_batch(setting: Setting, vocab_size: int) -> dict[str, Any]:
  """int32 numpy arrays shared by both sides: no padding, ids >= 2 (not pad or EOS)."""
  import numpy as np

  rng = np.random.default_rng(setting.seed)
  inputs = rng.integers(2, vocab_size, (setting.batch, setting.inputs), dtype=np.int32)
  targets = rng.integers(2, vocab_size, (setting.batch, setting.targets), dtype=np.int32)
  decoder_inputs = np.concatenate(
      [np.zeros((setting.batch, 1), np.int32), targets[:, :-1]], axis=1)
  return {"encoder_input_tokens": inputs, "decoder_input_tokens": decoder_inputs,
          "decoder_target_tokens": targets}


def _measure_workload(setting: Setting, call: Callable[[], Any],
                      one_token: Callable[[], Any] | None) -> tuple[Timing, dict[str, Any]]:
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


def run_ours(setting: Setting, workload: str, shapes: dict[str, int]) -> dict[str, Any]:
  """Our code as the trainer and evaluator run it: `make_train_step` jitted with the
  state donated, `score_batch` and `predict_batch` jitted. `shapes` is unused: our
  side builds the network from the size name, which `shapes` was derived from."""
  import flax
  import jax
  import jax.numpy as jnp
  import jaxlib
  import optax

  from prompt_tuning import decoding, models
  from prompt_tuning.prompts import Prompt
  from prompt_tuning.t5 import T5Config, Transformer, abstract_params
  from prompt_tuning.training import optimizers, train_step, trainable

  config = T5Config.from_size(setting.size, dropout_rate=_dropout(setting, workload))
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

    counts = {"trainable": trainable.count(trained),
              "parameters": trainable.count(trained) + trainable.count(frozen)}
  elif workload == "forward":
    model = models.EncoderDecoderModel(module)
    score = jax.jit(model.score_batch)
    counts = {"parameters": trainable.count(params)}

    def call() -> None:
      jax.block_until_ready(score(params, batch))
  else:
    # eos_id -1 is no token: decoding never stops early, as PEFT's side with no EOS.
    model = models.EncoderDecoderModel(module, decode_fn=decoding.temperature_sample,
                                       decode_kwargs={"temperature": 0.0}, eos_id=-1)
    predict = jax.jit(model.predict_batch)
    counts = {"parameters": trainable.count(params)}

    def decode_call(tokens: int) -> Callable[[], Any]:
      decode_batch = {"encoder_input_tokens": batch["encoder_input_tokens"],
                      "decoder_target_tokens": jnp.zeros((setting.batch, tokens),
                                                         jnp.int32)}
      return lambda: jax.block_until_ready(predict(params, decode_batch))

    call, one_token = decode_call(setting.new_tokens), decode_call(1)

  rss_before = _current_rss_bytes()
  timing, extra = _measure_workload(setting, call, one_token)
  if workload == "decode":
    shape = call().shape
    if shape != (setting.batch, setting.new_tokens):
      raise RuntimeError(f"our decode gave shape {shape}, expected "
                         f"{(setting.batch, setting.new_tokens)}")
  return {"first": timing.first, "samples": timing.samples, "rss_before": rss_before,
          "peak_rss": _peak_rss_bytes(), **counts, **extra,
          "versions": {"jax": jax.__version__, "jaxlib": jaxlib.__version__,
                       "flax": flax.__version__, "optax": optax.__version__}}


# ------------------------------------------------------------------------ PEFT's side


def _hf_model(setting: Setting, shapes: dict[str, int], dropout: float) -> Any:
  """T5ForConditionalGeneration with our shapes and an untied, unscaled output layer
  (T5 1.1). Recent transformers tie `lm_head` to the embedding whatever the config
  says, so the head gets its own weight here, as a T5 1.1 checkpoint would load."""
  import torch
  from transformers import T5Config, T5ForConditionalGeneration

  config = T5Config(vocab_size=shapes["vocab_size"], d_model=shapes["d_model"],
                    d_kv=shapes["d_kv"], d_ff=shapes["d_ff"], num_layers=shapes["layers"],
                    num_decoder_layers=shapes["decoder_layers"], num_heads=shapes["heads"],
                    feed_forward_proj="gated-gelu", dropout_rate=dropout,
                    tie_word_embeddings=False, decoder_start_token_id=0, pad_token_id=0,
                    eos_token_id=1)
  model = T5ForConditionalGeneration(config)
  if model.lm_head.weight is model.shared.weight:
    model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.shared.weight))
  model.config.tie_word_embeddings = False
  if getattr(model.config, "scale_decoder_outputs", False):
    raise RuntimeError("this transformers version rescales T5 decoder outputs; the "
                       "benchmark needs T5 1.1's unscaled, untied output layer")
  return model


def run_peft(setting: Setting, workload: str, shapes: dict[str, int]) -> dict[str, Any]:
  """PEFT's documented prompt tuning: `get_peft_model` with `PromptTuningConfig`, trained
  with transformers' Adafactor at the paper's settings, decoded with `generate`."""
  import peft
  import torch
  import transformers
  from transformers.optimization import Adafactor

  torch.manual_seed(setting.seed)
  torch.set_num_threads(setting.threads)
  # num_transformer_submodules=1: PEFT's seq2seq default (2) allocates a second table of
  # `prompt` vectors that prompt tuning never uses; 1 gives the paper's P x d prompt.
  model = peft.get_peft_model(
      _hf_model(setting, shapes, _dropout(setting, workload)),
      peft.PromptTuningConfig(task_type=peft.TaskType.SEQ_2_SEQ_LM,
                              num_virtual_tokens=setting.prompt,
                              num_transformer_submodules=1,
                              prompt_tuning_init=peft.PromptTuningInit.RANDOM))
  data = {k: torch.from_numpy(v).long()
          for k, v in random_batch(setting, shapes["vocab_size"]).items()}
  input_ids = data["encoder_input_tokens"]
  attention_mask = torch.ones_like(input_ids)
  labels = data["decoder_target_tokens"]

  one_token = None  # Decoding only: a 1-token decode, timed alternately with it.
  if workload in TRAIN_WORKLOADS:
    if workload == "full_train":
      for parameter in model.parameters():
        parameter.requires_grad_(True)
    trained = [p for p in model.parameters() if p.requires_grad]
    # The paper's Adafactor: constant lr 0.3, decay rate 0.8, clipping 1.0, no parameter
    # scaling, weight decay 1e-5 (as in our optimizers.adafactor).
    optimizer = Adafactor(trained, lr=0.3, relative_step=False, scale_parameter=False,
                          warmup_init=False, decay_rate=-0.8, clip_threshold=1.0,
                          weight_decay=1e-5)
    model.train()

    def call() -> None:
      loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
      loss.backward()
      optimizer.step()
      optimizer.zero_grad(set_to_none=True)

    counts = {"trainable": sum(p.numel() for p in trained),
              "parameters": sum(p.numel() for p in model.parameters())}
  elif workload == "forward":
    model.eval()

    def call() -> None:
      with torch.inference_mode():
        logits = model(input_ids=input_ids, attention_mask=attention_mask,
                       decoder_input_ids=data["decoder_input_tokens"]).logits
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        torch.gather(log_probs, -1, labels[..., None])[..., 0].sum(-1)

    counts = {"parameters": sum(p.numel() for p in model.parameters())}
  else:
    model.eval()

    def decode_call(tokens: int) -> Callable[[], Any]:
      # eos_token_id None: `generate` never stops early; it always decodes `tokens`.
      generation = transformers.GenerationConfig(
          max_new_tokens=tokens, min_new_tokens=None, do_sample=False, num_beams=1,
          use_cache=True, eos_token_id=None, pad_token_id=0, decoder_start_token_id=0)

      def generate() -> Any:
        with torch.inference_mode():
          return model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                generation_config=generation)

      return generate

    call, one_token = decode_call(setting.new_tokens), decode_call(1)
    counts = {"parameters": sum(p.numel() for p in model.parameters())}

  rss_before = _current_rss_bytes()
  timing, extra = _measure_workload(setting, call, one_token)
  if workload == "decode":
    shape = tuple(call().shape)
    if shape != (setting.batch, setting.new_tokens + 1):  # + the start token
      raise RuntimeError(f"PEFT generate gave shape {shape}, expected "
                         f"{(setting.batch, setting.new_tokens + 1)}")
  return {"first": timing.first, "samples": timing.samples, "rss_before": rss_before,
          "peak_rss": _peak_rss_bytes(), **counts, **extra,
          "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                       "peft": peft.__version__},
          "torch_threads": torch.get_num_threads()}


RUNNERS = {"ours": run_ours, "peft": run_peft}

# ------------------------------------------------------------------------ processes


def pin_threads(threads: int) -> list[int]:
  """Restricts this process to `threads` of the CPUs it may use; returns them."""
  allowed = sorted(os.sched_getaffinity(0))
  if threads > len(allowed):
    raise ValueError(f"--threads {threads} is more than the {len(allowed)} CPUs this "
                     f"process may use")
  cpus = allowed[:threads]
  os.sched_setaffinity(0, cpus)
  return cpus


def child_environment(threads: int) -> dict[str, str]:
  """The same thread settings for both frameworks; no inherited fake-device count."""
  env = dict(os.environ)
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  flags.append("--xla_cpu_multi_thread_eigen=true")
  env.update(XLA_FLAGS=" ".join(flags), JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
             OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
             TOKENIZERS_PARALLELISM="false", CUDA_VISIBLE_DEVICES="")
  return env


def model_shapes(size: str) -> dict[str, int]:
  """The backbone's shapes, from our config, for PEFT's side to mirror."""
  from prompt_tuning.t5 import T5Config

  c = T5Config.from_size(size)
  if c.mlp_activations != ("gelu", "linear") or c.logits_via_embedding:
    raise ValueError(f"size {size!r} is not a T5 1.1 gated-GELU, untied model")
  return {"vocab_size": c.vocab_size, "d_model": c.emb_dim, "d_kv": c.head_dim,
          "d_ff": c.mlp_dim, "layers": c.num_encoder_layers,
          "decoder_layers": c.num_decoder_layers, "heads": c.num_heads}


def child_main(spec: str) -> None:
  """Subprocess entry: run the named workloads of one side, print one JSON line."""
  job = json.loads(spec)
  setting = Setting(**job["setting"])
  cpus = pin_threads(setting.threads)
  results = {}
  for workload in job["workloads"]:
    results[workload] = RUNNERS[job["side"]](setting, workload, job["shapes"])
  print(json.dumps({"cpus": cpus, "results": results}))


def run_side(side: str, workloads: Sequence[str], setting: Setting,
             shapes: dict[str, int]) -> dict[str, Any]:
  spec = json.dumps({"side": side, "workloads": list(workloads),
                     "setting": dataclasses.asdict(setting), "shapes": shapes})
  proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--_child", spec],
                        env=child_environment(setting.threads), cwd=_ROOT,
                        capture_output=True, text=True)
  if proc.returncode != 0:
    raise RuntimeError(f"{side} {','.join(workloads)} failed (exit {proc.returncode}):\n"
                       f"{proc.stderr[-4000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def run_all(setting: Setting, sides: Sequence[str], workloads: Sequence[str],
            isolate: str, log: Callable[[str], None]) -> dict[str, dict[str, Any]]:
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
      n - one for n, one in zip(result["samples"], result["samples_one_token"]))
  return None if extra <= 0 else setting.batch * (setting.new_tokens - 1) / extra


def _fmt(value: float | None, digits: int = 2) -> str:
  return "n/a" if value is None else f"{value:,.{digits}f}"


def summarise(setting: Setting, results: dict[str, dict[str, Any]]
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
  rows.append(("prompt train step, examples/s", _fmt(train["ours"]), _fmt(train["peft"]),
               _fmt(train_ratio), verdict(train_ratio, ">= 1.5x", lambda v: v >= 1.5)))
  no_dropout = no_dropout_workload(setting)
  for workload, label in (("prompt_train", "prompt train step, ms"),
                          (no_dropout, "prompt train step, dropout 0, ms"),
                          ("full_train", "full fine-tune step, ms"),
                          ("forward", "forward scoring, ms"),
                          ("decode", f"greedy decode {setting.new_tokens} tokens, ms")):
    ours, theirs = median("ours", workload), median("peft", workload)
    rows.append((label, _fmt(ours and ours * 1e3, 1), _fmt(theirs and theirs * 1e3, 1),
                 _fmt(ratio(ours, theirs)), ""))
  full = {s: ratio(median(s, "prompt_train"), median(s, "full_train")) for s in SIDES}
  rows.append(("prompt step / full step", _fmt(full["ours"]), _fmt(full["peft"]), "",
               verdict(full["ours"], "ours <= 0.55", lambda v: v <= 0.55)))
  for workload, label in (("prompt_train", "prompt step / forward"),
                          (no_dropout, "prompt step, dropout 0 / forward")):
    fwd = {s: ratio(median(s, workload), median(s, "forward")) for s in SIDES}
    rows.append((label, _fmt(fwd["ours"]), _fmt(fwd["peft"]), "",
                 verdict(fwd["ours"], "ours <= 2.1", lambda v: v <= 2.1)))
  decode = {s: per_second(s, "decode", tokens) for s in SIDES}
  decode_ratio = ratio(decode["ours"], decode["peft"])
  rows.append(("greedy decode, tokens/s", _fmt(decode["ours"], 1), _fmt(decode["peft"], 1),
               _fmt(decode_ratio), verdict(decode_ratio, ">= 3x", lambda v: v >= 3.0)))
  steps = {s: decode_step_rate(setting, results.get(s, {}).get("decode")) for s in SIDES}
  rows.append(("greedy decode after the 1st token, tokens/s", _fmt(steps["ours"], 1),
               _fmt(steps["peft"], 1), _fmt(ratio(steps["ours"], steps["peft"])), ""))
  scopes = {r.get("peak_rss_scope", "workload")
            for side in results.values() for r in side.values()}
  if scopes == {"side"}:
    peaks = {s: max((r["peak_rss"] for r in results.get(s, {}).values()), default=None)
             for s in SIDES}
    rows.append(("peak RSS, all workloads in one process, MiB",
                 _fmt(peaks["ours"] and peaks["ours"] / MIB, 0),
                 _fmt(peaks["peft"] and peaks["peft"] / MIB, 0),
                 _fmt(ratio(peaks["ours"], peaks["peft"])), "lower is better"))
  else:
    for workload in (w for w in WORKLOADS if w != "prompt_train_no_dropout"):
      peaks = {s: results.get(s, {}).get(workload, {}).get("peak_rss") for s in SIDES}
      rows.append((f"peak RSS, {workload}, MiB",
                   _fmt(peaks["ours"] and peaks["ours"] / MIB, 0),
                   _fmt(peaks["peft"] and peaks["peft"] / MIB, 0),
                   _fmt(ratio(peaks["ours"], peaks["peft"])), "lower is better"))
  return rows


def format_table(rows: Sequence[Sequence[str]]) -> str:
  """A Markdown table whose columns also line up in a terminal."""
  header = ("metric", SIDE_NAMES["ours"], SIDE_NAMES["peft"], "ours/PEFT", "target")
  table = [header] + [tuple(r) for r in rows]
  widths = [max(len(r[i]) for r in table) for i in range(len(header))]

  def line(cells: Sequence[str]) -> str:
    padded = [c.ljust(w) if i == 0 else c.rjust(w) if i < 4 else c.ljust(w)
              for i, (c, w) in enumerate(zip(cells, widths))]
    return "| " + " | ".join(padded) + " |"

  rule = "|" + "|".join("-" * (w + 1) + (":" if 0 < i < 4 else "-")
                        for i, w in enumerate(widths)) + "|"
  return "\n".join([line(header), rule] + [line(r) for r in table[1:]])


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def describe(setting: Setting, results: dict[str, dict[str, Any]], isolate: str,
             load: tuple[float, float]) -> str:
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
            f"{s * 1e3:.1f}" for s in r["samples_one_token"])
      details.append(f"- {side} {workload}: first call {r['first']:.2f} s; timed ms "
                     f"[{samples}]; parameters {r['parameters']:,}{trainable}; RSS before "
                     f"timing {r['rss_before'] / MIB:,.0f} MiB, peak "
                     f"{r['peak_rss'] / MIB:,.0f} MiB")
  versions["python"] = platform.python_version()
  torch_threads = {r.get("torch_threads") for r in results.get("peft", {}).values()}
  xla_flags = child_environment(setting.threads)["XLA_FLAGS"]
  warning = noise_warning(results, load)
  return "\n".join(([f"**{warning}**", ""] if warning else []) + [
      f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
      f"- machine: {cpu_model()}, {os.cpu_count()} logical CPUs "
      f"({len(os.sched_getaffinity(0))} usable), {platform.system()} "
      f"{platform.release()}; 1-minute load average {load[0]:.2f} at the start, "
      f"{load[1]:.2f} at the end (anything above 0 is other work competing for the "
      f"same cores)",
      "- versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())),
      f"- threads: {setting.threads} for each side: the process is pinned to "
      f"{setting.threads} CPU(s) with sched_setaffinity (XLA sizes its intra-op pool "
      f"from the affinity mask; XLA_FLAGS={xla_flags}), "
      f"torch.set_num_threads({setting.threads}) (torch reports "
      f"{', '.join(str(t) for t in sorted(torch_threads - {None})) or 'n/a'}), "
      f"OMP_NUM_THREADS=MKL_NUM_THREADS={setting.threads}",
      f"- configuration: T5 1.1 {setting.size}, random weights, float32, batch "
      f"{setting.batch}, inputs {setting.inputs}, prompt {setting.prompt}, targets "
      f"{setting.targets}, dropout {setting.dropout} in training steps (0 in the "
      f"'dropout 0' rows), greedy decode of {setting.new_tokens} new tokens with no EOS "
      f"id on either side",
      "- dropout masks as each side draws them: ours shares hidden-state masks along "
      "the length axis (as T5X) and draws attention-weight masks per element; "
      "transformers draws one entry per element everywhere",
      "- optimiser: Adafactor on both sides (paper settings: lr 0.3 constant, decay "
      "0.8, update clipping 1.0, no parameter scaling, weight decay 1e-5); ours is "
      "optax-based `optimizers.adafactor`, PEFT's `transformers.optimization.Adafactor`",
      "- full fine-tune: the same prompt model with every parameter trainable",
      f"- timing: first call excluded (JAX compiles there), {setting.warmup - 1} more "
      f"warm-up call(s), median of {setting.repeats} timed calls; each "
      + ("(side, workload)" if isolate == "workload" else "side")
      + " in its own process; peak RSS is the kernel's high-water mark "
      "(getrusage), RSS before timing from psutil",
      "", "Per workload:", *details])


def noise_warning(results: dict[str, dict[str, Any]], load: tuple[float, float],
                  max_spread: float = 0.15, max_load: float = 0.5) -> str | None:
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
  return (f"WARNING: noisy machine: repeats differ by up to {widest:.0%} of their median "
          f"({where}), load average {load[0]:.2f} -> {load[1]:.2f}. Ratios between rows "
          f"measured in different processes are unreliable; rerun on an idle machine.")


def write_results(path: str, table: str, context: str) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    f.write("# Prompt tuning: ours (JAX) vs Hugging Face PEFT (PyTorch), CPU\n\n"
            "Written by `benchmarks/peft_compare.py` (`make bench`).\n\n"
            f"{table}\n\n{context}\n")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  defaults = Setting()
  parser.add_argument("--quick", action="store_true",
                      help="tiny model, short inputs, 2 repeats (smoke run); does not "
                           "write results.md unless --results is given")
  parser.add_argument("--size", default=None, help=f"model size (default "
                      f"{defaults.size}; tiny with --quick)")
  for name in ("batch", "inputs", "prompt", "targets", "new_tokens", "warmup",
               "repeats"):
    parser.add_argument("--" + name.replace("_", "-"), type=int, default=None,
                        help=f"default {getattr(defaults, name)}"
                             f"{f' ({QUICK[name]} with --quick)' if name in QUICK else ''}")
  parser.add_argument("--dropout", type=float, default=None,
                      help=f"training dropout, default {defaults.dropout}")
  parser.add_argument("--threads", type=int, default=None,
                      help="threads for each side (default: os.cpu_count())")
  parser.add_argument("--sides", default=",".join(SIDES),
                      help="comma-separated subset of: ours, peft")
  parser.add_argument("--workloads", default=",".join(WORKLOADS),
                      help="comma-separated subset of: " + ", ".join(WORKLOADS))
  parser.add_argument("--isolate", choices=("workload", "side"), default="workload",
                      help="one process per (side, workload), so peak RSS is per "
                           "workload (default), or one per side (faster)")
  parser.add_argument("--results", default=None,
                      help=f"Markdown output (default {os.path.relpath(_DEFAULT_RESULTS)}"
                           f"; none with --quick)")
  parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
  return parser.parse_args(argv)


def setting_from_args(args: argparse.Namespace) -> Setting:
  values: dict[str, Any] = dict(QUICK) if args.quick else {}
  for name in ("size", "batch", "inputs", "prompt", "targets", "new_tokens", "warmup",
               "repeats", "dropout", "threads"):
    if getattr(args, name) is not None:
      values[name] = getattr(args, name)
  values.setdefault("threads", os.cpu_count() or 1)
  setting = Setting(**values)
  setting.check()
  return setting


def _subset(text: str, choices: Sequence[str], flag: str) -> list[str]:
  """The named choices, in the canonical order."""
  names = {n.strip() for n in text.split(",") if n.strip()}
  if not names or names - set(choices):
    raise ValueError(f"{flag} takes a comma-separated subset of {', '.join(choices)}; "
                     f"got {text!r}")
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
  path = args.results or (None if args.quick else _DEFAULT_RESULTS)
  if path:
    write_results(path, table, context)
    log(f"wrote {path}")


if __name__ == "__main__":
  main()
