"""Prompt-tuning throughput on inputs of real lengths: our fixed padding, our length
buckets, and Hugging Face PEFT with dynamic padding, side by side in one run.

Every side trains the prompt (Adafactor at the paper's settings, dropout 0.1) for two
epochs over the same N examples in the same order, in batches of `--batch`. Each
example's input length is drawn from a distribution (below) or read from `--lengths
FILE` (one integer per line); its tokens are random ids, its target 2-8 tokens. Each
side pads the batches itself inside the timed loop, which is its whole input pipeline:

  ours, fixed     every batch padded to `--inputs` (512, the paper's), as the original
  ours, buckets   every batch cut to the smallest power of two from 64 (or `--inputs`)
                  holding its longest input: training/buckets.py, TRAIN_LENGTH_BUCKETS
  ours, grouped   buckets, and the examples grouped by length first: windows of
                  `--group-window` batches sorted by length, cut into batches, shown in
                  a seeded order (training/data.py, TRAIN_LENGTH_GROUPING)
  PEFT, dynamic   every batch padded to its longest input and target, as transformers'
                  DataCollatorForSeq2Seq does (labels padded with -100)
  PEFT, grouped   dynamic padding over the grouped side's batches, what transformers'
                  `group_by_length` (LengthGroupedSampler) gives a PEFT user

The grouped sides train on the same examples in other batches (that is what grouping
is); the other three share batches and order.

The first epoch includes compilation (one program per shape for JAX) and warm-up; the
table's throughput is the second epoch's, and "compile" is the first epoch's excess over
it. Throughput counts examples and real (unpadded) tokens, inputs plus targets, per
second; the prompt's positions are not counted. Peak memory is each side's process's
peak resident set. Sides run one after another in their own processes, pinned to the
same `--threads` CPUs, as in peft_compare.py.

The default lengths are a synthetic mix shaped like the paper's SuperGLUE tasks (in T5
tokens of the taskless format): a log-normal per task around its typical length, the
tasks mixed by share, clipped to [8, --inputs]:

  WiC 35 (15%), COPA 25 (10%), WSC 45 (10%), RTE 90 (15%), CB 95 (5%),
  BoolQ 160 (20%), MultiRC 330 (15%), ReCoRD 280 (10%)   (median tokens, share)

  python benchmarks/real_lengths.py                    # small, 128 examples, CPU
  python benchmarks/real_lengths.py --quick            # tiny model, a smoke run
  python benchmarks/real_lengths.py --task rte          # one task's lengths
  python benchmarks/real_lengths.py --lengths my_task_lengths.txt
  python benchmarks/real_lengths.py --device gpu --size base --examples 1024
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from typing import Any, Sequence

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peft_compare as pc  # noqa: E402  (the same models, threads and memory probes)

from prompt_tuning import tables  # noqa: E402

SIDES = ("fixed", "buckets", "grouped", "peft", "peft_grouped")
SIDE_NAMES = {
  "fixed": "ours, fixed padding",
  "buckets": "ours, length buckets",
  "grouped": "ours, buckets + length grouping",
  "peft": "PEFT, dynamic padding",
  "peft_grouped": "PEFT, dynamic padding + length grouping",
}
GROUPED = ("grouped", "peft_grouped")
# (task, median input tokens, log-normal sigma, share of the examples)
TASK_MIX = (
  ("wic", 35, 0.25, 0.15),
  ("copa", 25, 0.2, 0.10),
  ("wsc", 45, 0.25, 0.10),
  ("rte", 90, 0.4, 0.15),
  ("cb", 95, 0.4, 0.05),
  ("boolq", 160, 0.4, 0.20),
  ("multirc", 330, 0.3, 0.15),
  ("record", 280, 0.3, 0.10),
)
MIN_LENGTH = 8
TARGET_LENGTHS = (2, 8)  # Inclusive range of target tokens (EOS included).


def synthetic_lengths(count: int, max_length: int, seed: int, task: str = "mix") -> list[int]:
  """`count` input lengths from TASK_MIX (or from one of its tasks: a prompt-tuning run
  trains one task), clipped to [MIN_LENGTH, max_length]."""
  rng = np.random.default_rng(seed)
  names = [name for name, *_ in TASK_MIX]
  if task != "mix" and task not in names:
    raise ValueError(f"--task {task!r}: use 'mix' or one of {', '.join(names)}")
  shares = np.array([share if task in ("mix", name) else 0.0 for name, *_, share in TASK_MIX])
  tasks = rng.choice(len(TASK_MIX), size=count, p=shares / shares.sum())
  lengths = []
  for task in tasks:
    _, median, sigma, _ = TASK_MIX[task]
    lengths.append(int(round(median * math.exp(sigma * rng.standard_normal()))))
  return [min(max(length, MIN_LENGTH), max_length) for length in lengths]


def read_lengths(path: str, max_length: int) -> list[int]:
  """One positive integer per line (blank lines skipped), clipped to max_length."""
  with open(path) as f:
    values = [line.strip() for line in f if line.strip()]
  try:
    lengths = [int(v) for v in values]
  except ValueError as e:
    raise ValueError(f"{path}: every line must be an integer input length ({e})") from None
  if not lengths or min(lengths) < 1:
    raise ValueError(f"{path}: give at least one length, all >= 1")
  return [min(length, max_length) for length in lengths]


def make_examples(
  lengths: Sequence[int], vocab_size: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
  """(input ids, target ids) per length: random ids in [2, vocab), EOS (1) last."""
  rng = np.random.default_rng(seed + 1)
  examples = []
  for length in lengths:
    target_length = int(rng.integers(TARGET_LENGTHS[0], TARGET_LENGTHS[1] + 1))
    inputs = rng.integers(2, vocab_size, length).astype(np.int32)
    targets = rng.integers(2, vocab_size, target_length).astype(np.int32)
    inputs[-1] = targets[-1] = 1
    examples.append((inputs, targets))
  return examples


def pad(rows: Sequence[np.ndarray], length: int, value: int = 0) -> np.ndarray:
  out = np.full((len(rows), length), value, np.int32)
  for i, row in enumerate(rows):
    out[i, : len(row)] = row
  return out


def batch_lengths(
  batch: Sequence[tuple[np.ndarray, np.ndarray]], side: str, args: Any
) -> tuple[int, int]:
  """The (input, target) lengths a side pads this batch to."""
  from prompt_tuning.training import buckets

  longest = max(len(x) for x, _ in batch)
  longest_target = max(len(y) for _, y in batch)
  if side == "fixed":
    return args.inputs, TARGET_LENGTHS[1]
  if side in ("buckets", "grouped"):
    encoder = buckets.bucket_of(longest, buckets.powers_of_two(args.inputs))
    return encoder, buckets.bucket_of(longest_target, buckets.powers_of_two(TARGET_LENGTHS[1]))
  return longest, longest_target


def _ours(args: Any, examples: list, batches: list[list[int]]) -> dict[str, Any]:
  import functools

  import jax
  import jax.numpy as jnp

  from prompt_tuning import models
  from prompt_tuning.prompts import Prompt
  from prompt_tuning.t5 import T5Config, Transformer, abstract_params
  from prompt_tuning.training import optimizers, train_step, trainable

  if args.device == "gpu":
    pc._use_jax_gpu(pc.Setting(device="gpu", matmul_precision="tf32"))
  config = T5Config.from_size(args.size, dropout_rate=0.1, dtype=args.dtype, param_dtype=args.dtype)
  prompt = functools.partial(Prompt, length=args.prompt)
  model = models.EncoderDecoderModel(Transformer(config, input_prompt=prompt))
  params = pc.random_params(abstract_params(config, input_prompt=prompt), args.seed)
  trained, frozen = trainable.split(params)
  optimizer = optimizers.adafactor()
  state = train_step.TrainState.create(trained, optimizer)
  step = jax.jit(train_step.make_train_step(model, optimizer), donate_argnums=(0,))
  rng = jax.random.PRNGKey(1)
  shapes = set()

  def epoch() -> float:
    nonlocal state
    started = time.perf_counter()
    for rows in batches:
      batch = [examples[i] for i in rows]
      length, target_length = batch_lengths(batch, args.side, args)
      shapes.add((length, target_length))
      targets = pad([y for _, y in batch], target_length)
      decoder_inputs = np.zeros_like(targets)
      decoder_inputs[:, 1:] = targets[:, :-1]
      arrays = {
        "encoder_input_tokens": pad([x for x, _ in batch], length),
        "decoder_input_tokens": decoder_inputs,
        "decoder_target_tokens": targets,
        "decoder_loss_weights": (targets > 0).astype(np.float32),
      }
      state, metrics = step(state, frozen, {k: jnp.asarray(v) for k, v in arrays.items()}, rng)
    jax.block_until_ready((state, metrics))
    return time.perf_counter() - started

  first, second = epoch(), epoch()
  return {"first": first, "second": second, "shapes": len(shapes), "peak_rss": pc._peak_rss_bytes()}


def _peft(args: Any, examples: list, batches: list[list[int]]) -> dict[str, Any]:
  import torch

  setting = pc.Setting(size=args.size, device=args.device, dtype=args.dtype, threads=args.threads)
  device = pc._use_torch_device(
    pc.Setting(device=args.device, matmul_precision="tf32" if args.device == "gpu" else None)
  )
  torch.manual_seed(args.seed)
  if args.device == "cpu":
    torch.set_num_threads(args.threads)
  base = pc._hf_model(setting, pc.model_shapes(args.size), 0.1).to(
    device=device, dtype=getattr(torch, args.dtype)
  )
  model = pc.peft_prompt_model(base, args.prompt)
  optimizer = pc.paper_adafactor([p for p in model.parameters() if p.requires_grad])
  model.train()
  shapes = set()

  def epoch() -> float:
    started = time.perf_counter()
    for rows in batches:
      batch = [examples[i] for i in rows]
      length, target_length = batch_lengths(batch, args.side, args)
      shapes.add((length, target_length))
      input_ids = torch.from_numpy(pad([x for x, _ in batch], length)).long().to(device)
      labels = torch.from_numpy(pad([y for _, y in batch], target_length, -100)).long().to(device)
      loss = model(input_ids=input_ids, attention_mask=(input_ids > 0).long(), labels=labels).loss
      loss.backward()
      optimizer.step()
      optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
      torch.cuda.synchronize(device)
    return time.perf_counter() - started

  first, second = epoch(), epoch()
  return {"first": first, "second": second, "shapes": len(shapes), "peak_rss": pc._peak_rss_bytes()}


def grouped_batches(
  examples: list, batch_size: int, window_batches: int, seed: int
) -> list[list[int]]:
  """The example indices of each batch as training/data.py groups them by length
  (`group_by_length_windows` over the examples in their order)."""
  import tensorflow as tf

  from prompt_tuning.training import data

  inputs = pad([x for x, _ in examples], max(len(x) for x, _ in examples))
  targets = pad([y for _, y in examples], TARGET_LENGTHS[1])
  stream = tf.data.Dataset.from_tensor_slices(
    {
      "encoder_input_tokens": inputs,
      "decoder_target_tokens": targets,
      "index": np.arange(len(examples), dtype=np.int32),
    }
  )
  grouped = data.group_by_length_windows(stream, batch_size, window_batches, seed)
  return [batch["index"].tolist() for batch in grouped.as_numpy_iterator()]


def child_main(spec: str) -> None:
  job = json.loads(spec)
  args = argparse.Namespace(**job["args"])
  if args.device == "cpu":
    pc.pin_threads(args.threads)
  lengths = job["lengths"]
  vocab = pc.model_shapes(args.size)["vocab_size"]
  examples = make_examples(lengths, vocab, args.seed)
  order = list(range(len(examples)))
  batches = [order[i : i + args.batch] for i in range(0, len(order) - args.batch + 1, args.batch)]
  if args.side in GROUPED:
    window = min(args.group_window, len(batches))
    batches = grouped_batches(examples, args.batch, window, args.seed)
  run = _peft if args.side.startswith("peft") else _ours
  result = run(args, examples, batches)
  # The tokens an epoch trains on, unpadded: inputs plus targets of the batched examples.
  result["real_tokens"] = sum(len(examples[i][0]) + len(examples[i][1]) for b in batches for i in b)
  print(json.dumps(result))


def run_side(side: str, args: argparse.Namespace, lengths: list[int]) -> dict[str, Any]:
  spec = json.dumps({"args": {**vars(args), "side": side}, "lengths": lengths})
  env = pc.gpu_child_environment() if args.device == "gpu" else pc.child_environment(args.threads)
  proc = subprocess.run(
    [sys.executable, os.path.abspath(__file__), "--_child", spec],
    env=env,
    cwd=pc._ROOT,
    capture_output=True,
    text=True,
  )
  if proc.returncode != 0:
    raise RuntimeError(f"{side} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def summarise(results: dict[str, dict[str, Any]], lengths: list[int], args: Any) -> str:
  used = len(lengths) // args.batch * args.batch
  window = min(args.group_window, len(lengths) // args.batch) * args.batch
  used_grouped = len(lengths) // window * window
  header = ("side", "examples/s", "real tokens/s", "compile (s)", "shapes", "peak memory (MiB)")
  rows = []
  rates = {}
  for side in SIDES:
    if side not in results:
      continue
    r = results[side]
    rates[side] = (used_grouped if side in GROUPED else used) / r["second"]
    rows.append(
      [
        SIDE_NAMES[side],
        f"{rates[side]:.2f}",
        f"{r['real_tokens'] / r['second']:.0f}",
        f"{max(r['first'] - r['second'], 0.0):.1f}",
        str(r["shapes"]),
        f"{r['peak_rss'] / pc.MIB:.0f}",
      ]
    )
  table = tables.format_table(header, rows, align="<>>>>>", markdown=True)
  lines = [table, ""]
  ratio = lambda a, b: f"{rates[a] / rates[b]:.2f}x" if a in rates and b in rates else "n/a"  # noqa: E731
  lines.append(
    f"buckets without grouping: buckets/fixed {ratio('buckets', 'fixed')}, "
    f"buckets/peft {ratio('buckets', 'peft')}; grouped PEFT: grouped/peft_grouped "
    f"{ratio('grouped', 'peft_grouped')}"
  )
  lines.append(
    f"real-length throughput: bucketed/fixed {ratio('grouped', 'fixed')}, "
    f"bucketed/peft {ratio('grouped', 'peft')}"
  )
  return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", default="small")
  parser.add_argument("--examples", type=int, default=128)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--inputs", type=int, default=512, help="the fixed padding length")
  parser.add_argument("--prompt", type=int, default=100)
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--device", choices=pc.DEVICES, default="cpu")
  parser.add_argument("--dtype", choices=pc.DTYPES, default="float32")
  parser.add_argument("--lengths", default=None, help="a file of input lengths, one per line")
  parser.add_argument(
    "--group-window",
    type=int,
    default=16,
    help="batches per length-grouping window of the grouped sides (TRAIN_LENGTH_GROUPING)",
  )
  parser.add_argument(
    "--task",
    default="mix",
    help="the synthetic lengths of one task of the mix (wic, copa, wsc, rte, cb, boolq, "
    "multirc, record), or 'mix' (default)",
  )
  parser.add_argument("--sides", default=",".join(SIDES), help=f"subset of {','.join(SIDES)}")
  parser.add_argument("--quick", action="store_true", help="tiny model, 32 examples, inputs 128")
  parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.quick:
    args.size, args.examples, args.inputs, args.prompt, args.batch = "tiny", 32, 128, 8, 4
  for name in ("examples", "batch", "inputs", "prompt", "threads", "group_window"):
    if getattr(args, name) < 1:
      parser.error(f"--{name} must be at least 1")
  if args.examples < args.batch:
    parser.error("--examples must be at least --batch (one full batch)")
  return args


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  if args._child is not None:
    child_main(args._child)
    return 0
  sides = [s.strip() for s in args.sides.split(",") if s.strip()]
  unknown = [s for s in sides if s not in SIDES]
  if unknown:
    print(
      f"real_lengths: unknown --sides {', '.join(unknown)}; use {', '.join(SIDES)}", file=sys.stderr
    )
    return 2
  if args.lengths:
    lengths = read_lengths(args.lengths, args.inputs)[: args.examples]
    source = f"{args.lengths} ({len(lengths)} examples)"
  else:
    lengths = synthetic_lengths(args.examples, args.inputs, args.seed, args.task)
    source = (
      "the synthetic SuperGLUE-shaped mix (see the file's docstring)"
      if args.task == "mix"
      else f"the synthetic {args.task} lengths (see the file's docstring)"
    )
  del args._child
  print(
    f"T5 1.1 {args.size}, {args.dtype} on {args.device}, prompt {args.prompt}, batch "
    f"{args.batch}, fixed padding {args.inputs}, {len(lengths)} examples from {source}: "
    f"median input {int(np.median(lengths))}, mean {np.mean(lengths):.0f}, max {max(lengths)}",
    flush=True,
  )
  results = {}
  for side in sides:
    started = time.perf_counter()
    results[side] = run_side(side, args, lengths)
    print(f"  {SIDE_NAMES[side]}: {time.perf_counter() - started:.0f}s", flush=True)
  print(summarise(results, lengths, args))
  return 0


if __name__ == "__main__":
  sys.exit(main())
