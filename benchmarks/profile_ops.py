"""Where one of our benchmark workloads spends its time, op by op, on this machine.

    python benchmarks/profile_ops.py --workload decode [--size small --batch 8 ...]

Builds the workload exactly as `peft_compare.py` times it, runs it twice to compile and
warm up, then records one call with `jax.profiler` and prints the XLA ops that took
longest, grouped by what they compute: the op's kind (a fusion, a dot, a library
call such as YNNPACK on CPU), its output shape, and the model code it came from with
layer numbers folded (`encoder/layers_*/attention/...`), summed over layers and
decoding steps. The shapes and sources come from the optimised HLO that XLA dumps while
compiling (`--xla_dump_to`), matched to the trace's op names.

This is how the session-4 decode slowdown was found: a `transpose_copy_fusion` of every
layer's cached encoder keys at every step. Op times from several threads overlap, so
the column can add up to more than the wall time of the call.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time
from typing import Any, Iterable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import peft_compare  # noqa: E402  (sits next to this file)

# `%name = shape kind(...)`, `ROOT %name = ...`: one optimised HLO instruction.
_INSTRUCTION = re.compile(
  r"^\s*(?:ROOT )?%?([\w.\-]+) = (\S+(?: \S+)*?) "
  r"(fusion|custom-call|dot|convolution|[a-z\-]+)\("
)
_OP_NAME = re.compile(r'op_name="([^"]*)"')
# Ops whose trace events span the ops they run, which have events of their own.
_CONTROL_FLOW = ("while", "conditional", "call")


@dataclasses.dataclass(frozen=True)
class Instruction:
  shape: str
  kind: str
  source: str


def source_of(op_name: str) -> str:
  """`jit(step)/jvp(Transformer)/.../layers_6/attention/dot_general` ->
  `.../layers_*/attention/dot_general`: the code path, equal for every layer."""
  wrappers = ("jit(", "jvp(", "transpose(")  # Tracing contexts, not model code.
  parts = [p for p in op_name.split("/") if not p.startswith(wrappers)]
  return re.sub(r"layers_\d+", "layers_*", "/".join(parts))


def read_instructions(hlo_texts: Iterable[str]) -> dict[str, Instruction]:
  """Instruction name -> shape, kind and source, from optimised HLO modules. Names are
  unique within a module only, so the largest module (the workload's own program, not
  a helper jitted on the side) is read first and wins."""
  found: dict[str, Instruction] = {}
  for text in sorted(hlo_texts, key=len, reverse=True):
    for line in text.splitlines():
      match = _INSTRUCTION.match(line)
      if not match:
        continue
      name, shape, kind = match.groups()
      op_name = _OP_NAME.search(line)
      found.setdefault(
        name,
        Instruction(
          re.sub(r"\{[^}]*\}", "", shape), kind, source_of(op_name.group(1)) if op_name else ""
        ),
      )
  return found


@dataclasses.dataclass
class OpTimes:
  """Per event name over a trace's complete ('X') events: summed microseconds, calls."""

  micros: collections.Counter[str]
  calls: collections.Counter[str]


def op_times(trace: dict[str, Any] | list[Any]) -> OpTimes:
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  times = OpTimes(collections.Counter(), collections.Counter())
  for event in events:
    if event.get("ph") == "X" and "dur" in event:
      times.micros[event["name"]] += float(event["dur"])
      times.calls[event["name"]] += 1
  return times


def group(
  times: OpTimes, instructions: dict[str, Instruction], by: str
) -> list[tuple[str, float, int]]:
  """(group, milliseconds, calls) for the events that are XLA ops, longest first; `by`
  is "op" (kind and shape) or "source" (kind, shape and model code)."""
  ms: collections.Counter[str] = collections.Counter()
  count: collections.Counter[str] = collections.Counter()
  for name, micros in times.micros.items():
    instruction = instructions.get(name)
    if instruction is None or instruction.kind in _CONTROL_FLOW:
      continue  # Python frames, runtime bookkeeping; loops time their bodies' ops again.
    kind = instruction.kind
    if kind == "fusion":  # Its name says what it fuses: `transpose_copy_fusion.12`.
      kind = re.sub(r"[.\d]+$", "", name)
    key = f"{kind} {instruction.shape}"
    if by == "source":
      key += f"  {instruction.source}"
    ms[key] += micros / 1e3
    count[key] += times.calls[name]
  return [(key, value, count[key]) for key, value in ms.most_common()]


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  defaults = peft_compare.Setting()
  parser.add_argument("--workload", default="prompt_train", choices=peft_compare.WORKLOADS)
  parser.add_argument("--size", default=defaults.size)
  for name in ("batch", "inputs", "prompt", "targets", "new_tokens"):
    parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
  parser.add_argument("--dropout", type=float, default=defaults.dropout)
  parser.add_argument(
    "--attention", default=defaults.attention, choices=peft_compare.ATTENTION_IMPLEMENTATIONS
  )
  parser.add_argument(
    "--by",
    default="source",
    choices=("op", "source"),
    help="group by op kind and shape, or also by the model code",
  )
  parser.add_argument("--top", type=int, default=25, help="rows to print")
  parser.add_argument(
    "--out", default=None, help="keep the trace and HLO dump here (default: a temporary folder)"
  )
  return parser


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  out = args.out or tempfile.mkdtemp(prefix="profile_ops_")
  dump = os.path.join(out, "hlo")
  # Before jax starts: dump optimised HLO, and have XLA:CPU name each op in the trace.
  os.environ["XLA_FLAGS"] = " ".join(
    [
      os.environ.get("XLA_FLAGS", ""),
      f"--xla_dump_to={dump}",
      "--xla_dump_hlo_pass_re=^$",
      "--xla_cpu_enable_xprof_traceme=true",
    ]
  ).strip()
  import jax

  setting = peft_compare.Setting(
    size=args.size,
    batch=args.batch,
    inputs=args.inputs,
    prompt=args.prompt,
    targets=args.targets,
    new_tokens=args.new_tokens,
    dropout=args.dropout,
    attention=args.attention,
  )
  built = peft_compare.build_ours(setting, args.workload)
  built.call()
  built.call()
  trace_dir = os.path.join(out, "trace")
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    start = time.perf_counter()
    built.call()
    wall_ms = (time.perf_counter() - start) * 1e3
  traces = glob.glob(os.path.join(trace_dir, "**", "*perfetto_trace.json.gz"), recursive=True)
  if not traces:
    raise RuntimeError(f"jax.profiler wrote no perfetto trace under {trace_dir}")
  with gzip.open(traces[0], "rt") as f:
    times = op_times(json.load(f))
  texts = []
  for path in glob.glob(os.path.join(dump, "*after_optimizations.txt")):
    with open(path) as f:
      texts.append(f.read())
  rows = group(times, read_instructions(texts), args.by)
  if not rows:
    raise RuntimeError(
      "no trace event matched an XLA op of the dumped HLO; this jax "
      "backend may not name its ops in profiles"
    )

  print(
    f"{args.workload}, T5 1.1 {args.size}, batch {args.batch}, inputs {args.inputs}, "
    f"prompt {args.prompt}, targets {args.targets}, attention {args.attention}, "
    f"{jax.devices()[0].platform}: one call {wall_ms:,.1f} ms; ops summed "
    f"{sum(ms for _, ms, _ in rows):,.1f} ms (threads overlap)"
  )
  print(f"{'ms':>10}  {'calls':>5}  group")
  for key, ms, count in rows[: args.top]:
    print(f"{ms:>10,.1f}  {count:>5}  {key}")
  print(f"trace and HLO: {out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
