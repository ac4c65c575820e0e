"""benchmarks/peft_compare.py: the timing helper, the summary table and its targets, the
argument checks, a quick run of our side end to end, and (when torch and peft are
installed) that PEFT's side builds the same network and decodes the same token count."""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "benchmarks", "peft_compare.py")


def _load_script():
  spec = importlib.util.spec_from_file_location("peft_compare_script", SCRIPT)
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # dataclasses look their module up while loading.
  spec.loader.exec_module(module)
  return module


pc = _load_script()


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

  long, short = pc.measure_alternating([work("a", 2.0), work("b", 0.5)], warmup=2,
                                       repeats=2, clock=lambda: now[0])
  assert calls == ["a", "b"] * 4  # first calls, one warm-up round, two timed rounds
  assert (long.first, long.samples) == (2.0, [2.0, 2.0])
  assert (short.first, short.samples) == (0.5, [0.5, 0.5])


def test_noise_warning_names_the_widest_spread_or_the_load():
  quiet = {"ours": {"forward": {"samples": [1.0, 1.05, 0.98]}}}
  assert pc.noise_warning(quiet, (0.1, 0.2)) is None
  assert "load average 1.20" in pc.noise_warning(quiet, (1.2, 0.2))
  noisy = {"ours": {"forward": {"samples": [1.0, 1.05, 0.98]},
                    "decode": {"samples": [2.0, 2.0, 2.0],
                               "samples_one_token": [1.0, 1.5, 1.0]}}}
  warning = pc.noise_warning(noisy, (0.0, 0.0))
  assert "up to 50%" in warning and "(ours decode)" in warning


def _result(seconds: float, peak_mib: float) -> dict:
  return {"first": 10.0, "samples": [seconds * 1.1, seconds, seconds * 0.9],
          "rss_before": 100 * pc.MIB, "peak_rss": int(peak_mib * pc.MIB),
          "parameters": 1000, "versions": {}}


def _rows(results: dict, **setting) -> dict:
  rows = pc.summarise(pc.Setting(**setting), results)
  assert all(len(row) == 5 for row in rows)
  return {row[0]: row[1:] for row in rows}


def test_summary_computes_throughput_ratios_and_marks_targets():
  results = {
      "ours": {"prompt_train": _result(1.0, 900), "full_train": _result(2.5, 1500),
               "prompt_train_no_dropout": _result(0.8, 900),
               "forward": _result(0.5, 800), "decode": _result(0.4, 700)},
      "peft": {"prompt_train": _result(2.0, 1000), "full_train": _result(4.0, 2000),
               "prompt_train_no_dropout": _result(1.5, 1000),
               "forward": _result(1.0, 900), "decode": _result(1.6, 800)},
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
  assert rows["greedy decode after the 1st token, tokens/s"][:3] == ("400.0", "80.0",
                                                                     "5.00")
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
  table = pc.format_table([("a metric", "1.00", "2.00", "0.50", "ours <= 2.1: met"),
                           ("another, longer metric", "10.0", "n/a", "n/a", "")])
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
  assert pc.model_shapes("small") == {"vocab_size": 32128, "d_model": 512, "d_kv": 64,
                                      "d_ff": 1024, "layers": 8, "decoder_layers": 8,
                                      "heads": 6}


def test_quick_run_of_our_side_prints_and_writes_the_table(tmp_path):
  out = tmp_path / "results.md"
  # Dropout 0 only to keep compilation short; the timed code path is the same.
  proc = subprocess.run(
      [sys.executable, SCRIPT, "--quick", "--sides", "ours", "--isolate", "side",
       "--workloads", "prompt_train,forward,decode", "--dropout", "0", "--repeats", "1",
       "--results", str(out)],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
          for line in proc.stdout.splitlines() if line.startswith("| ")}
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
  ours = abstract_params(T5Config.from_size(setting.size),
                         input_prompt=functools.partial(Prompt, length=setting.prompt))
  assert result["parameters"] == sum(x.size for x in jax.tree.leaves(ours))
  assert len(result["samples"]) == 1 and result["peak_rss"] > 0
