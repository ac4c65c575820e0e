"""benchmarks/peft_compare.py: the timing helper, the summary table and its targets, the
argument checks, a quick run of our side end to end, and (when torch and peft are
installed) that PEFT's side builds the same network and decodes the same token count."""

from __future__ import annotations

import functools
import os
import subprocess
import sys

import pytest

from tests.benchmarks.scripts import REPO, load_script, script_path

SCRIPT = script_path("peft_compare.py")
pc = load_script("peft_compare.py")


def test_measure_times_the_first_call_apart_and_keeps_each_repeat():
  durations = iter([5.0, 1.0, 0.3, 0.1, 0.2])  # first (compile), warm-up, 3 repeats
  now = [0.0]

  def work():
    now[0] += next(durations)

  timing = pc.measure(work, warmup=2, repeats=3, clock=lambda: now[0])
  assert timing.first == pytest.approx(5.0)
  assert timing.samples == pytest.approx([0.3, 0.1, 0.2])
  assert timing.median == pytest.approx(0.2)
  with pytest.raises(StopIteration):  # Exactly warm-up + repeats calls were made.
    next(durations)
  with pytest.raises(ValueError, match="at least 1"):
    pc.measure(work, warmup=0, repeats=3)


def test_measure_alternating_pairs_the_samples_of_each_round():
  calls = []
  now = [0.0]

  def work(name, seconds):
    def run():
      calls.append(name)
      now[0] += seconds

    return run

  long, short = pc.measure_alternating(
    [work("a", 2.0), work("b", 0.5)], warmup=2, repeats=2, clock=lambda: now[0]
  )
  assert calls == ["a", "b"] * 4  # first calls, one warm-up round, two timed rounds
  assert (long.first, long.samples) == (2.0, [2.0, 2.0])
  assert (short.first, short.samples) == (0.5, [0.5, 0.5])


def test_noise_warning_names_the_widest_spread_or_the_load():
  quiet = {"ours": {"forward": {"samples": [1.0, 1.05, 0.98]}}}
  assert pc.noise_warning(quiet, (0.1, 0.2)) is None
  assert "load average 1.20" in pc.noise_warning(quiet, (1.2, 0.2))
  noisy = {
    "ours": {
      "forward": {"samples": [1.0, 1.05, 0.98]},
      "decode": {"samples": [2.0, 2.0, 2.0], "samples_one_token": [1.0, 1.5, 1.0]},
    }
  }
  warning = pc.noise_warning(noisy, (0.0, 0.0))
  assert "up to 50%" in warning and "(ours decode)" in warning


def _result(seconds: float, peak_mib: float) -> dict:
  return {
    "first": 10.0,
    "samples": [seconds * 1.1, seconds, seconds * 0.9],
    "rss_before": 100 * pc.MIB,
    "peak_rss": int(peak_mib * pc.MIB),
    "parameters": 1000,
    "versions": {},
  }


def _rows(results: dict, **setting) -> dict:
  rows = pc.summarise(pc.Setting(**setting), results)
  assert all(len(row) == 5 for row in rows)
  return {row[0]: row[1:] for row in rows}


def test_summary_computes_throughput_ratios_and_marks_targets():
  results = {
    "ours": {
      "prompt_train": _result(1.0, 900),
      "full_train": _result(2.5, 1500),
      "prompt_train_no_dropout": _result(0.8, 900),
      "forward": _result(0.5, 800),
      "decode": _result(0.4, 700),
    },
    "peft": {
      "prompt_train": _result(2.0, 1000),
      "full_train": _result(4.0, 2000),
      "prompt_train_no_dropout": _result(1.5, 1000),
      "forward": _result(1.0, 900),
      "decode": _result(1.6, 800),
    },
  }
  results["ours"]["decode"]["samples_one_token"] = [0.1, 0.1, 0.1]
  results["peft"]["decode"]["samples_one_token"] = [0.1, 0.1, 0.1]
  rows = _rows(results, batch=8, new_tokens=16)
  assert rows["prompt train step, examples/s"] == ("8.00", "4.00", "2.00", ">= 1.5x: met")
  assert rows["prompt train step, ms"][:3] == ("1,000.0", "2,000.0", "0.50")
  assert rows["prompt step / full step"] == ("0.40", "0.50", "", "ours <= 0.55: met")
  assert rows["prompt step / forward"] == ("2.00", "2.00", "", "ours <= 2.1: met")
  assert rows["prompt step, dropout 0 / forward"] == ("1.60", "1.50", "", "ours <= 2.1: met")
  assert rows["prompt train step, dropout 0, ms"][:3] == ("800.0", "1,500.0", "0.53")
  # 8 rows x 16 tokens per call.
  assert rows["greedy decode, tokens/s"] == ("320.0", "80.0", "4.00", ">= 3x: met")
  assert rows["greedy decode 16 tokens, ms"][:2] == ("400.0", "1,600.0")
  # The loop alone: 8 x 15 tokens over (N-token - 1-token) time.
  assert rows["greedy decode after the 1st token, tokens/s"][:3] == ("400.0", "80.0", "5.00")
  assert rows["peak RSS, full_train, MiB"][:3] == ("1,500", "2,000", "0.75")
  assert not any("prompt_train_no_dropout" in name for name in rows)

  results["ours"]["prompt_train"] = _result(1.5, 900)
  results["ours"]["decode"] = _result(0.8, 700)
  rows = _rows(results, batch=8, new_tokens=16)
  assert rows["prompt train step, examples/s"][3] == ">= 1.5x: MISSED"  # 1.33x
  assert rows["prompt step / full step"][3] == "ours <= 0.55: MISSED"  # 0.60
  assert rows["prompt step / forward"][3] == "ours <= 2.1: MISSED"  # 3.00
  assert rows["greedy decode, tokens/s"][3] == ">= 3x: MISSED"  # 2.00


def test_summary_without_peft_shows_na_and_one_rss_row_per_process():
  ours = {w: _result(1.0, 500) for w in pc.WORKLOADS}
  for result in ours.values():
    result["peak_rss_scope"] = "side"
  ours["full_train"]["peak_rss"] = 700 * pc.MIB
  rows = _rows({"ours": ours}, batch=2)
  assert rows["prompt train step, examples/s"] == ("2.00", "n/a", "n/a", ">= 1.5x")
  # With dropout 0 the dropout-0 rows reuse the prompt step itself.
  del ours["prompt_train_no_dropout"]
  assert _rows({"ours": ours}, batch=2)["prompt step, dropout 0 / forward"][0] == "n/a"
  rows_no_dropout = _rows({"ours": ours}, batch=2, dropout=0.0)
  assert rows_no_dropout["prompt step, dropout 0 / forward"][0] == "1.00"
  assert rows["prompt step / forward"] == ("1.00", "n/a", "", "ours <= 2.1: met")
  assert rows["peak RSS, all workloads in one process, MiB"][:2] == ("700", "n/a")
  assert not any(name.startswith("peak RSS, forward") for name in rows)


def test_table_is_markdown_with_aligned_columns():
  table = pc.format_table(
    [
      ("a metric", "1.00", "2.00", "0.50", "ours <= 2.1: met"),
      ("another, longer metric", "10.0", "n/a", "n/a", ""),
    ]
  )
  lines = table.splitlines()
  assert len(lines) == 4
  assert len({len(line) for line in lines}) == 1
  assert lines[0].startswith("| metric ") and "ours (JAX)" in lines[0]
  assert lines[1].startswith("|---") and lines[1].count(":|") == 3  # numbers right-aligned
  assert lines[3].split("|")[1].strip() == "another, longer metric"


def test_bad_arguments_are_one_line_errors(capsys):
  with pytest.raises(SystemExit, match="--sides takes a comma-separated subset"):
    pc.main(["--sides", "ours,torch"])
  with pytest.raises(SystemExit, match="--workloads takes"):
    pc.main(["--workloads", "train"])
  with pytest.raises(SystemExit, match="--repeats must be at least 1"):
    pc.main(["--quick", "--repeats", "0"])
  with pytest.raises(SystemExit, match="--dropout must be in"):
    pc.main(["--dropout", "1.5"])


def test_quick_settings_and_thread_environment():
  args = pc.parse_args(["--quick", "--inputs", "16"])
  setting = pc.setting_from_args(args)
  assert (setting.size, setting.inputs, setting.repeats) == ("tiny", 16, 2)
  assert setting.threads == os.cpu_count()
  env = pc.child_environment(3)
  assert env["OMP_NUM_THREADS"] == "3" and env["JAX_PLATFORMS"] == "cpu"
  assert "xla_force_host_platform_device_count" not in env["XLA_FLAGS"]
  assert pc.model_shapes("small") == {
    "vocab_size": 32128,
    "d_model": 512,
    "d_kv": 64,
    "d_ff": 1024,
    "layers": 8,
    "decoder_layers": 8,
    "heads": 6,
  }


def test_quick_run_of_our_side_prints_and_writes_the_table(tmp_path):
  out = tmp_path / "results.md"
  # Dropout 0 only to keep compilation short; the timed code path is the same.
  proc = subprocess.run(
    [
      sys.executable,
      SCRIPT,
      "--quick",
      "--sides",
      "ours",
      "--isolate",
      "side",
      "--workloads",
      "prompt_train,forward,decode",
      "--dropout",
      "0",
      "--repeats",
      "1",
      "--results",
      str(out),
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = {
    line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
    for line in proc.stdout.splitlines()
    if line.startswith("| ")
  }
  ours, peft = rows["prompt train step, examples/s"][:2]
  assert float(ours) > 0 and peft == "n/a"
  assert float(rows["prompt step / forward"][0]) > 0
  assert float(rows["greedy decode, tokens/s"][0].replace(",", "")) > 0
  assert rows["full fine-tune step, ms"][0] == "n/a"  # Not requested.
  assert "greedy decode after the 1st token, tokens/s" in rows
  written = out.read_text()
  assert "| prompt train step, examples/s" in written
  assert "- machine: " in written and "- threads: " in written
  assert "ours decode: first call" in written and "1-token decode: " in written


def test_peft_side_mirrors_our_network_and_decodes_every_token():
  pytest.importorskip("torch")
  pytest.importorskip("transformers")
  pytest.importorskip("peft")
  import jax
  import torch

  from prompt_tuning.prompts import Prompt
  from prompt_tuning.t5 import T5Config, abstract_params

  setting = pc.Setting(**{**pc.QUICK, "warmup": 1, "repeats": 1, "threads": 1})
  threads = torch.get_num_threads()
  try:
    result = pc.run_peft(setting, "decode", pc.model_shapes(setting.size))
  finally:
    torch.set_num_threads(threads)
  ours = abstract_params(
    T5Config.from_size(setting.size), input_prompt=functools.partial(Prompt, length=setting.prompt)
  )
  assert result["parameters"] == sum(x.size for x in jax.tree.leaves(ours))
  assert len(result["samples"]) == 1 and result["peak_rss"] > 0


# ------------------------------------------------------------------------ GPU mode


def test_device_and_dtype_flags_are_checked(capsys):
  assert pc.setting_from_args(pc.parse_args(["--dtype", "bfloat16"])).dtype == "bfloat16"
  with pytest.raises(SystemExit, match="--device must be one of cpu, gpu, got 'tpu'"):
    pc.main(["--device", "tpu"])
  with pytest.raises(SystemExit, match="--dtype must be one of float32, bfloat16"):
    pc.main(["--device", "gpu", "--dtype", "float16"])
  with pytest.raises(SystemExit, match="--threads pins CPUs"):
    pc.main(["--device", "gpu", "--threads", "2"])
  with pytest.raises(SystemExit, match="--matmul-precision applies to --device gpu"):
    pc.main(["--matmul-precision", "tf32"])
  with pytest.raises(SystemExit, match="--matmul-precision must be one of tf32, highest"):
    pc.main(["--device", "gpu", "--matmul-precision", "fp8"])
  with pytest.raises(SystemExit, match="unknown model size 'huge'"):
    pc.main(["--device", "gpu", "--size", "huge"])

  gpu = pc.setting_from_args(
    pc.parse_args(["--device", "gpu", "--dtype", "bfloat16", "--size", "base"])
  )
  assert (gpu.device, gpu.dtype, gpu.size, gpu.matmul_precision) == (
    "gpu",
    "bfloat16",
    "base",
    "tf32",
  )
  cpu = pc.setting_from_args(pc.parse_args([]))
  assert (cpu.device, cpu.dtype, cpu.matmul_precision) == ("cpu", "float32", None)


def test_every_t5_size_has_shapes_for_the_peft_side():
  from prompt_tuning.t5 import SIZES

  for name, config in SIZES.items():
    shapes = pc.model_shapes(name)
    assert (
      shapes["d_model"],
      shapes["d_ff"],
      shapes["heads"],
      shapes["layers"],
      shapes["vocab_size"],
    ) == (
      config.emb_dim,
      config.mlp_dim,
      config.num_heads,
      config.num_encoder_layers,
      config.vocab_size,
    ), name
  # T5 1.1 base, large and XL as published (d_kv 64 throughout).
  assert pc.model_shapes("base") == {
    "vocab_size": 32128,
    "d_model": 768,
    "d_kv": 64,
    "d_ff": 2048,
    "layers": 12,
    "decoder_layers": 12,
    "heads": 12,
  }
  assert pc.model_shapes("large")["d_ff"] == 2816
  assert pc.model_shapes("xl") == {
    "vocab_size": 32128,
    "d_model": 2048,
    "d_kv": 64,
    "d_ff": 5120,
    "layers": 24,
    "decoder_layers": 24,
    "heads": 32,
  }


def test_gpu_children_are_unpinned_and_allocate_on_demand(monkeypatch):
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8 --other=1")
  monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
  monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
  env = pc.side_environment(pc.Setting(device="gpu", matmul_precision="tf32"))
  assert "JAX_PLATFORMS" not in env
  assert env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
  assert env["XLA_FLAGS"] == "--other=1"
  assert "OMP_NUM_THREADS" not in env and "CUDA_VISIBLE_DEVICES" not in env
  cpu = pc.side_environment(pc.Setting(threads=2))
  assert (cpu["JAX_PLATFORMS"], cpu["OMP_NUM_THREADS"], cpu["CUDA_VISIBLE_DEVICES"]) == (
    "cpu",
    "2",
    "",
  )
  assert "XLA_PYTHON_CLIENT_PREALLOCATE" not in cpu


def _gpu_result(seconds: float, peak_mib: float | None, side: str) -> dict:
  result = _result(seconds, 3000)
  result.update(
    device_before=200 * pc.MIB,
    peak_device=None if peak_mib is None else int(peak_mib * pc.MIB),
    device_name="NVIDIA H100 80GB HBM3",
    param_dtypes={"prompt": "float32", "model": "bfloat16"},
  )
  if side == "peft":
    result["attention"] = "sdpa"
  return result


def test_gpu_table_reports_peak_device_memory():
  results = {
    side: {w: _gpu_result(0.1, 1000 if side == "ours" else 1600, side) for w in pc.WORKLOADS}
    for side in pc.SIDES
  }
  results["peft"]["forward"]["peak_device"] = None  # memory_stats() gave nothing.
  rows = _rows(results, device="gpu", dtype="bfloat16", matmul_precision="tf32")
  assert rows["peak device memory, full_train, MiB"][:3] == ("1,000", "1,600", "0.62")
  assert rows["peak device memory, forward, MiB"][:3] == ("1,000", "n/a", "n/a")
  assert not any(name.startswith("peak RSS") for name in rows)

  for by_workload in results.values():
    for result in by_workload.values():
      result["peak_rss_scope"] = "side"
  rows = _rows(results, device="gpu", dtype="bfloat16", matmul_precision="tf32")
  assert rows["peak device memory, all workloads in one process, MiB"][:3] == (
    "1,000",
    "n/a",
    "n/a",
  )  # One unknown peak makes the process's peak unknown.


def test_gpu_results_name_the_device_and_the_dtype(tmp_path):
  results = {side: {"forward": _gpu_result(0.1, 900, side)} for side in pc.SIDES}
  setting = pc.Setting(device="gpu", dtype="bfloat16", matmul_precision="tf32")
  context = pc.describe(setting, results, "workload", (0.0, 0.0))
  assert "- machine: GPU NVIDIA H100 80GB HBM3; host " in context
  assert "- threads: not pinned (GPU run)" in context
  assert "bfloat16 activations and frozen parameters with the prompt in float32" in context
  assert "TF32 tensor cores" in context and "max_memory_allocated" in context
  assert (
    "peft forward: first call 10.00 s" in context
    and "dtypes: prompt float32, model bfloat16; attention sdpa; device memory "
    "before timing 200 MiB, peak 900 MiB; host RSS before timing"
    in context
  )
  heading = pc.title(setting, results)
  assert heading.endswith("GPU (NVIDIA H100 80GB HBM3), bfloat16")
  out = tmp_path / "results_gpu.md"
  pc.write_results(str(out), heading, "| table |", context)
  assert out.read_text().startswith(f"# {heading}\n")

  results["peft"]["forward"]["device_name"] = "NVIDIA H100 PCIe"
  assert "NVIDIA H100 80GB HBM3 (ours); NVIDIA H100 PCIe (PEFT)" in pc.title(setting, results)
  cpu = {"ours": {"forward": _result(1.0, 500)}}
  assert pc.title(pc.Setting(), cpu).endswith(", CPU, float32")
  assert "- machine: GPU" not in pc.describe(pc.Setting(), cpu, "workload", (0.0, 0.0))
  assert pc._DEFAULT_RESULTS["gpu"].endswith(os.path.join("benchmarks", "results_gpu.md"))


def test_gpu_mode_refuses_to_run_on_the_cpu():
  setting = pc.Setting(**{**pc.QUICK, "device": "gpu", "matmul_precision": "tf32"})
  with pytest.raises(RuntimeError, match="JAX's default device is 'cpu'"):
    pc.run_ours(setting, "forward", {})
  torch = pytest.importorskip("torch")
  if torch.cuda.is_available():
    pytest.skip("this machine has a CUDA device")
  with pytest.raises(RuntimeError, match="torch sees no CUDA device"):
    pc._use_torch_device(setting)


def test_torch_timing_waits_for_the_gpu(monkeypatch):
  torch = pytest.importorskip("torch")
  events = []
  monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: events.append("sync"))

  def work():
    events.append("work")
    return 7

  synced = pc._synchronised(work, torch.device("cuda", 0))
  assert synced() == 7 and events == ["work", "sync"]
  assert pc._synchronised(work, torch.device("cpu")) is work


def test_bfloat16_keeps_the_prompt_in_float32_on_both_sides():
  """The dtype path itself runs on the CPU too (only the CLI confines it to the GPU)."""
  setting = pc.Setting(**{**pc.QUICK, "warmup": 1, "repeats": 1, "threads": 1, "dtype": "bfloat16"})
  shapes = pc.model_shapes(setting.size)
  ours = pc.run_ours(setting, "forward", shapes)
  assert ours["param_dtypes"] == {"prompt": "float32", "model": "bfloat16"}
  assert "peak_device" not in ours  # CPU results keep to host memory.
  pytest.importorskip("torch")
  pytest.importorskip("peft")
  import torch

  threads = torch.get_num_threads()
  try:
    theirs = pc.run_peft(setting, "forward", shapes)
  finally:
    torch.set_num_threads(threads)
  assert theirs["param_dtypes"] == {"prompt": "float32", "model": "bfloat16"}
  assert theirs["parameters"] == ours["parameters"]


def test_attention_choices_are_the_networks_and_unknown_ones_fail():
  from prompt_tuning.t5 import layers

  assert pc.ATTENTION_IMPLEMENTATIONS == layers.ATTENTION_IMPLEMENTATIONS
  assert pc.setting_from_args(pc.parse_args(["--attention", "xla"])).attention == "xla"
  with pytest.raises(ValueError, match="--attention must be one of"):
    pc.setting_from_args(pc.parse_args(["--attention", "flash"]))
