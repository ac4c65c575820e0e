"""benchmarks/profile_ops.py: reading optimised HLO, grouping trace events by what the
ops compute, and a profile of the tiny model's decoding end to end."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.benchmarks.scripts import REPO, load_script, script_path

SCRIPT = script_path("profile_ops.py")

_HLO = """
%fused_computation.1 (param_0: f32[8,6,64,356]) -> f32[8,6,64,356] {
  ROOT %inner.1 = f32[8,6,64,356]{3,2,1,0} copy(%param_0)
}

ENTRY %main.9 (p: f32[8,356,384]) -> f32[8,6,64,356] {
  %transpose_copy_fusion.3 = f32[8,6,64,356]{3,2,1,0} fusion(%p), kind=kLoop, calls=%fused_computation.1, metadata={op_name="jit(predict_batch)/while/body/Transformer.decode/decoder/layers_5/encoder_decoder_attention/transpose" stack_frame_id=3}
  %transpose_copy_fusion.4 = f32[8,6,64,356]{3,2,1,0} fusion(%p), kind=kLoop, calls=%fused_computation.1, metadata={op_name="jit(predict_batch)/while/body/Transformer.decode/decoder/layers_6/encoder_decoder_attention/transpose"}
  %dot.7 = f32[8,6]{1,0} dot(%a, %b), lhs_contracting_dims={1}, metadata={op_name="jit(predict_batch)/jvp(Transformer)/decoder/logits_dense/dot_general"}
  %iota_reduce_fusion = (f32[8]{0}, s32[8]{0}) fusion(%dot.7), kind=kLoop, calls=%fused_computation.1
  ROOT %while.2 = (s32[], f32[8,6]{1,0}) while(%t), condition=%cond, body=%body
}
"""


@pytest.fixture(scope="module")
def profile_ops():
  return load_script("profile_ops.py")


def test_instructions_carry_shape_kind_and_layer_free_source(profile_ops):
  found = profile_ops.read_instructions([_HLO])
  fusion = found["transpose_copy_fusion.3"]
  assert fusion.shape == "f32[8,6,64,356]" and fusion.kind == "fusion"
  assert fusion.source == (
    "while/body/Transformer.decode/decoder/layers_*/encoder_decoder_attention/transpose"
  )
  assert found["dot.7"].kind == "dot"
  assert found["dot.7"].source == "decoder/logits_dense/dot_general"
  assert found["iota_reduce_fusion"].shape == "(f32[8], s32[8])"
  assert found["while.2"].kind == "while"


def test_events_of_every_layer_and_step_sum_into_one_group(profile_ops):
  trace = {
    "traceEvents": [
      {"ph": "X", "name": "transpose_copy_fusion.3", "dur": 1000.0},
      {"ph": "X", "name": "transpose_copy_fusion.3", "dur": 1000.0},
      {"ph": "X", "name": "transpose_copy_fusion.4", "dur": 3000.0},
      {"ph": "X", "name": "dot.7", "dur": 500.0},
      {"ph": "X", "name": "while.2", "dur": 6000.0},  # Spans the ops above: not counted.
      {"ph": "X", "name": "$profiler.py:307 trace", "dur": 9e9},  # Not an XLA op.
      {"ph": "i", "name": "dot.7"},  # An instant event has no duration.
    ]
  }
  rows = profile_ops.group(
    profile_ops.op_times(trace), profile_ops.read_instructions([_HLO]), by="source"
  )
  assert rows[0] == (
    "transpose_copy_fusion f32[8,6,64,356]  while/body/Transformer.decode/"
    "decoder/layers_*/encoder_decoder_attention/transpose",
    5.0,
    3,
  )
  assert rows[1] == ("dot f32[8,6]  decoder/logits_dense/dot_general", 0.5, 1)
  assert len(rows) == 2
  by_op = profile_ops.group(
    profile_ops.op_times(trace), profile_ops.read_instructions([_HLO]), by="op"
  )
  assert by_op[0] == ("transpose_copy_fusion f32[8,6,64,356]", 5.0, 3)


def test_profile_of_a_tiny_decode_names_the_decoding_loop(tmp_path):
  proc = subprocess.run(
    [
      sys.executable,
      SCRIPT,
      "--workload",
      "decode",
      "--size",
      "tiny",
      "--batch",
      "2",
      "--inputs",
      "16",
      "--prompt",
      "4",
      "--targets",
      "4",
      "--new-tokens",
      "4",
      "--top",
      "200",
      "--out",
      str(tmp_path),
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.splitlines()
  assert lines[0].startswith("decode, T5 1.1 tiny") and "one call" in lines[0]
  rows = [line.split(None, 2) for line in lines[2:-1]]
  assert rows and all(float(ms.replace(",", "")) >= 0 for ms, _, _ in rows)
  # Each decoding step's output projection runs once per new token.
  logits = [row for row in rows if "while/body" in row[2] and "logits_dense" in row[2]]
  assert logits and int(logits[0][1]) == 4
