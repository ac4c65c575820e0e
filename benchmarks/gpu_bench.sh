#!/usr/bin/env bash
# Ours (JAX) vs Hugging Face PEFT (PyTorch) on one NVIDIA GPU: the commands run on a lent
# GPU machine, from the repository root.
#
#   bash benchmarks/gpu_bench.sh [small|base|all]      (default: all)
#
#   small  the issue's configuration in float32: T5 1.1 small, batch 8, inputs 256,
#          prompt 100, targets 8; one process per (side, workload)
#          -> benchmarks/results_gpu.md
#   base   a bigger one: T5 1.1 base in bfloat16 at the paper's batch 32 and inputs 512;
#          one process per side and no dropout-0 step (fewer compilations)
#          -> benchmarks/results_gpu_base_bf16.md
#
# Each configuration takes a few minutes, mostly JAX compiling (one process and one
# compilation per workload); run them as two commands where one command's time is
# limited to 10 minutes.
#
# The machine has jax with its CUDA plugin, flax, optax, torch (CUDA), transformers, peft
# and psutil, but not gin-config, which our modules import: its wheel travels in .whl/
# (see the comment at the end) and is installed into /tmp/site. Results and logs are
# copied into $OUT (the folder that comes back), or /tmp/gpu_bench when OUT is unset.
set -euo pipefail

which="${1:-all}"
case "$which" in
  small|base|all) ;;
  *) echo "usage: bash benchmarks/gpu_bench.sh [small|base|all]" >&2; exit 2 ;;
esac
out="${OUT:-/tmp/gpu_bench}"
mkdir -p "$out"

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD
# Also for the version check below: without it, JAX would take 75% of the GPU on start.
export XLA_PYTHON_CLIENT_PREALLOCATE=false

nvidia-smi | tee "$out/nvidia-smi.txt"
python3 - <<'EOF' 2>&1 | tee "$out/versions.txt"
import platform

import flax
import gin
import jax
import jaxlib
import optax
import peft
import torch
import transformers

print("python", platform.python_version())
for module in (jax, jaxlib, flax, optax, torch, transformers, peft):
  print(module.__name__, module.__version__)
print("gin-config from", gin.__file__)
print("jax devices:", jax.devices(), "kind:", jax.devices()[0].device_kind)
print("torch CUDA", torch.version.cuda, "available:", torch.cuda.is_available(),
      "device:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
EOF

# One configuration: run it, then copy its results and log into $out at once, so that
# whatever finished comes back even if a later configuration fails or runs out of time.
failed=0
bench() {
  local name="$1" results="$2"
  shift 2
  local start=$SECONDS
  echo "== $name: peft_compare.py $*" | tee "$out/$name.log"
  if python3 benchmarks/peft_compare.py --device gpu --results "$results" "$@" \
      2>&1 | tee -a "$out/$name.log"; then
    cp "$results" "$out/"
    echo "== $name done in $((SECONDS - start)) s" | tee -a "$out/$name.log"
  else
    echo "== $name FAILED after $((SECONDS - start)) s" | tee -a "$out/$name.log"
    failed=1
  fi
}

if [[ "$which" == small || "$which" == all ]]; then
  bench small_float32 benchmarks/results_gpu.md \
    --size small --dtype float32 --batch 8 --inputs 256 --prompt 100 --targets 8
fi
if [[ "$which" == base || "$which" == all ]]; then
  bench base_bfloat16 benchmarks/results_gpu_base_bf16.md \
    --size base --dtype bfloat16 --batch 32 --inputs 512 --prompt 100 --targets 8 \
    --isolate side --workloads prompt_train,full_train,forward,decode
fi
exit "$failed"

# The gin-config wheel in .whl/ is fetched on a machine with network access by:
#   python -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux2014_x86_64 -d .whl gin-config==0.5.0
