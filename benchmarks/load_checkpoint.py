"""Peak host memory and time of loading a T5 checkpoint, per format.

Writes one random `large`-shaped (783M parameters, 3.1 GB float32) checkpoint in each
format to a temporary directory, then loads each in a fresh subprocess with
`prompt_tuning.convert.load_params` and reports the process's peak resident memory.
On CPU the loaded arrays themselves live in host memory, so the ideal is
"imports + one copy of the parameters"; holding a second full copy while loading
would show up as peak - imports ~ 2x the parameter bytes.

  python benchmarks/load_checkpoint.py                      # large, all formats
  python benchmarks/load_checkpoint.py --size small --formats t5x
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORMATS = ("t5x", "orbax", "hf")


def _peak_rss_bytes() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB.


def _current_rss_bytes() -> int:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _anon_rss_bytes() -> int:
  """Anonymous resident memory: process-owned buffers, without file pages mapped from
  the checkpoint (mmap'd safetensors pages count in RSS but are reclaimable cache)."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("RssAnon:"):
        return int(line.split()[1]) * 1024
  return 0


class _AnonPeak:
  """Samples anonymous RSS every few milliseconds (the kernel keeps no peak of it)."""

  def __init__(self):
    self.peak = _anon_rss_bytes()
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)

  def _run(self) -> None:
    while not self._stop.is_set():
      self.peak = max(self.peak, _anon_rss_bytes())
      time.sleep(0.005)

  def __enter__(self) -> "_AnonPeak":
    self._thread.start()
    return self

  def __exit__(self, *exc) -> None:
    self._stop.set()
    self._thread.join()
    self.peak = max(self.peak, _anon_rss_bytes())


def write_checkpoints(size: str, workdir: str, formats: list[str]) -> None:
  """Child process: random parameters, written in every requested format."""
  import numpy as np

  from prompt_tuning import tree
  from prompt_tuning.convert import save_params_orbax, validation
  from prompt_tuning.convert import write_hf_checkpoint, write_t5x_checkpoint
  from prompt_tuning.t5 import T5Config

  config = T5Config.from_size(size)
  rng = np.random.default_rng(0)
  flat = {}
  for name, shape in validation.expected_shapes(config).items():
    flat[name] = rng.standard_normal(shape, dtype=np.float32)
  params = tree.unflatten(flat)
  for fmt in formats:
    start = time.perf_counter()
    path = os.path.join(workdir, fmt)
    if fmt == "t5x":
      write_t5x_checkpoint(params, path)
    elif fmt == "orbax":
      save_params_orbax(params, path)
    else:
      write_hf_checkpoint(params, config, path)
    print(f"wrote {fmt} in {time.perf_counter() - start:.1f}s", file=sys.stderr)


def load_one(size: str, path: str, dtype: str | None) -> None:
  """Child process: load once, print one JSON line of measurements."""
  import jax
  import jax.numpy as jnp

  from prompt_tuning import tree
  from prompt_tuning.convert import load_params
  from prompt_tuning.t5 import T5Config

  config = T5Config.from_size(size)
  jax.devices()  # Start the runtime before taking the baseline.
  baseline = _current_rss_bytes()
  baseline_anon = _anon_rss_bytes()
  start = time.perf_counter()
  with _AnonPeak() as anon:
    params = load_params(path, config, dtype=jnp.dtype(dtype) if dtype else None)
    jax.block_until_ready(params)
  seconds = time.perf_counter() - start
  leaves = list(tree.flatten(params).values())
  print(
    json.dumps(
      {
        "params": sum(int(a.size) for a in leaves),
        "bytes": sum(int(a.size) * a.dtype.itemsize for a in leaves),
        "baseline_rss": baseline,
        "peak_rss": _peak_rss_bytes(),
        "baseline_anon": baseline_anon,
        "peak_anon": anon.peak,
        "seconds": seconds,
      }
    )
  )


def _gib(n: float) -> str:
  return f"{n / 1024**3:.2f} GiB"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", default="large")
  parser.add_argument("--formats", default=",".join(FORMATS))
  parser.add_argument("--workdir", default=None, help="default: a temporary directory")
  parser.add_argument("--keep", action="store_true", help="keep the written checkpoints")
  parser.add_argument("--_write", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--_load", default=None, help=argparse.SUPPRESS)
  parser.add_argument("--_dtype", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  formats = [f for f in args.formats.split(",") if f]

  if args._write:
    write_checkpoints(args.size, args.workdir, formats)
    return
  if args._load:
    load_one(args.size, args._load, args._dtype)
    return

  workdir = args.workdir or tempfile.mkdtemp(prefix="load_ckpt_bench_")
  os.makedirs(workdir, exist_ok=True)
  env = dict(
    os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"), TF_CPP_MIN_LOG_LEVEL="3"
  )
  me = [sys.executable, os.path.abspath(__file__), "--size", args.size]
  try:
    missing = [f for f in formats if not os.path.exists(os.path.join(workdir, f))]
    if missing:
      print(
        f"writing random {args.size} checkpoints ({', '.join(missing)}) to {workdir} ...",
        file=sys.stderr,
      )
      subprocess.run(
        me + ["--_write", "--workdir", workdir, "--formats", ",".join(missing)],
        env=env,
        check=True,
        cwd=_ROOT,
      )
    runs = [(f, None) for f in formats] + [(f, "bfloat16") for f in formats[:1]]
    rows = []
    for fmt, dtype in runs:
      command = me + ["--_load", os.path.join(workdir, fmt)]
      if dtype:
        command += ["--_dtype", dtype]
      out = subprocess.run(
        command, env=env, check=True, cwd=_ROOT, capture_output=True, text=True
      ).stdout
      result = json.loads(out.strip().splitlines()[-1])
      rows.append((fmt + (f" -> {dtype}" if dtype else ""), result))
  finally:
    if not args.keep and not args.workdir:
      shutil.rmtree(workdir, ignore_errors=True)

  header = (
    f"{'format':<18}{'params':>14}{'bytes':>11}{'imports RSS':>13}"
    f"{'peak RSS':>11}{'x bytes':>9}{'peak anon':>11}{'x bytes':>9}"
    f"{'seconds':>9}"
  )
  print(f"load_params, T5 1.1 {args.size}, random weights, CPU, {os.cpu_count()} cores")
  print(header)
  print("-" * len(header))
  for name, r in rows:
    over = r["peak_rss"] - r["baseline_rss"]
    over_anon = r["peak_anon"] - r["baseline_anon"]
    print(
      f"{name:<18}{r['params']:>14,}{_gib(r['bytes']):>11}"
      f"{_gib(r['baseline_rss']):>13}{_gib(r['peak_rss']):>11}"
      f"{over / r['bytes']:>9.2f}{_gib(r['peak_anon']):>11}"
      f"{over_anon / r['bytes']:>9.2f}{r['seconds']:>9.1f}"
    )
  print(
    "x bytes: (peak - after imports) / parameter bytes; 1.0 = exactly one copy. "
    "RSS includes checkpoint pages mapped by mmap (safetensors), which are "
    "reclaimable page cache; 'anon' counts only process-owned memory."
  )


if __name__ == "__main__":
  main()
