"""`prompt-tuning export-peft` / `import-peft`: a soft prompt as a Hugging Face PEFT adapter.

PEFT's prompt tuning for an encoder-decoder (`PromptTuningConfig`, task SEQ_2_SEQ_LM,
`num_transformer_submodules=1`) prepends `prompt_embeddings` [P, d] to the embedded encoder
input and makes them visible to attention, with ordinary relative positions: exactly what
our input prompt does (docs/design.md, "The prompt contract"), so a prompt moves between the
two unchanged. P-Tuning's prompt encoder is folded first and its output rows travel as a
prompt-tuning adapter (PEFT's P_TUNING re-runs a prompt encoder of its own design).

Layer methods do not travel: for T5, PEFT's prefix reaches only the decoder's
self-attention and gives prefix positions a relative position bias, where ours prefix the
encoder too and the prefix positions carry none, so an exported prefix would compute
something else. Both commands refuse them in one line (docs/interop.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from prompt_tuning import convert, tree
from prompt_tuning.convert import hf, runs, validation
from prompt_tuning.prompts import initializers, p_tuning
from prompt_tuning.t5.config import SIZES, T5Config
from prompt_tuning.training import checkpoints

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PROMPT_KEY = "prompt_embeddings"
PROMPT_PARAM = "encoder/prompt/prompt"
PROMPT_FILE = "encoder.prompt.prompt.npy"
# The public LM-adapted T5 1.1 checkpoints, by size: the default base of an adapter.
LM_ADAPT_SIZES = ("small", "base", "large", "xl", "xxl")
LAYER_METHODS_REFUSED = (
  "Prefix-Tuning and P-Tuning v2 do not export to PEFT: for T5, PEFT's prefix reaches only "
  "the decoder's self-attention and gives prefix positions a relative position bias, where "
  "ours also prefix the encoder and carry no bias, so the adapter would compute differently "
  "(docs/interop.md); serve it here with LAYER_PROMPT_DIR"
)


@dataclasses.dataclass(frozen=True)
class Source:
  """The prompt to export and what is known about the model it was trained on."""

  prompt: np.ndarray  # [P, d], float32
  method: str  # "prompt tuning" or "P-Tuning"
  base: T5Config | None  # the frozen model, when its checkpoint could be read


# --- reading what a run trained --------------------------------------------------------


def _base_config(checkpoint: str, params: Mapping[str, Any] | None = None) -> T5Config | None:
  """The frozen model of a run: from a full checkpoint's own arrays, else from the base
  checkpoint its metadata names (None when that cannot be read, e.g. offline gs://)."""
  if params is not None:
    config = convert.infer_config({n: np.shape(a) for n, a in tree.flatten(params).items()})
    if config is not None:
      return config
  found = checkpoints.run_metadata(checkpoint)
  base = (found[1] if found else {}).get("base_checkpoint")
  if not base:
    return None
  try:
    with convert.open_checkpoint(base) as reader:
      return convert.checkpoint_config(reader)
  except (ValueError, OSError, convert.CheckpointReadError):
    return None


def _fold_p_tuning(prompt_params: Mapping[str, Any]) -> np.ndarray:
  """P-Tuning's prompt encoder output [P, d], its module rebuilt from the parameter
  shapes (embedding [P, h], `lstm_{i}_*` cells, `mlp_out` [h, d])."""
  names = set(prompt_params)
  lstm_layers = sum(1 for n in names if n.startswith("lstm_") and n.endswith("_forward"))
  length, hidden = np.shape(prompt_params["embedding"])
  width = np.shape(prompt_params["mlp_out"]["kernel"])[1]
  module = p_tuning.PTuningPrompt(
    length=length,
    prompt_encoder="lstm" if lstm_layers else "mlp",
    hidden_dim=hidden,
    lstm_layers=max(lstm_layers, 1),
  )
  fold = jax.jit(lambda p: module.apply({"params": p}, width, method="folded_params"))
  return np.asarray(fold(dict(prompt_params))["prompt"], np.float32)


def prompt_from_params(params: Mapping[str, Any], where: str) -> tuple[np.ndarray, str]:
  flat = tree.flatten(params)
  if any("/layer_prompt/" in name for name in flat):
    raise ValueError(f"{where}: {LAYER_METHODS_REFUSED}")
  prompt = params.get("encoder", {}).get("prompt")
  if not prompt:
    raise ValueError(
      f"{where} holds no input prompt (no encoder/prompt/... parameter); pass a prompt "
      "tuning or P-Tuning run"
    )
  if set(prompt) == {"prompt"}:
    return _single_prompt(np.asarray(prompt["prompt"]), where), "prompt tuning"
  if "embedding" in prompt and "mlp_out" in prompt:
    return _fold_p_tuning(prompt), "P-Tuning"
  raise ValueError(
    f"{where}: unknown input prompt parameters {sorted(prompt)}; pass a prompt tuning "
    "or P-Tuning run, or its exported encoder.prompt.prompt.npy"
  )


def _single_prompt(prompt: np.ndarray, where: str) -> np.ndarray:
  if prompt.ndim == 3:
    raise ValueError(
      f"{where} holds {prompt.shape[0]} prompts (a multi-prompt table); save the one to "
      "export as a [P, d] .npy (np.save(path, table[i])) and pass that"
    )
  if prompt.ndim != 2 or prompt.shape[0] == 0:
    raise ValueError(f"{where}: a prompt must be [P, d] with P >= 1, got {prompt.shape}")
  return np.asarray(prompt, np.float32)


def read_source(src: str, step: int | None = None) -> Source:
  """The prompt of SRC: a prompt `.npy`, a directory `export-prompt` wrote, a run
  checkpoint `MODEL_DIR/checkpoint_N`, or a MODEL_DIR (newest checkpoint, or `step`)."""
  if os.path.isfile(src):
    if step is not None:
      raise ValueError("--step applies to a MODEL_DIR, not to a prompt file; drop it")
    prompt = _single_prompt(initializers.load_prompt_file(src), src)
    return Source(prompt, "prompt tuning", _base_config(src))
  if not os.path.isdir(src):
    raise ValueError(f"{src} does not exist; pass a MODEL_DIR, a checkpoint or a prompt .npy")
  names = os.listdir(src)
  if any(".layer_prompt." in name for name in names):
    raise ValueError(f"{src}: {LAYER_METHODS_REFUSED}")
  if PROMPT_FILE in names and step is None:
    path = os.path.join(src, PROMPT_FILE)
    return Source(_single_prompt(initializers.load_prompt_file(path), path), "prompt tuning", None)
  if step is not None:
    checkpoint = os.path.join(src, runs.step_name(step))
    if not convert.is_run_checkpoint(checkpoint):
      available = ", ".join(str(s) for s in runs.steps(src)) or "none"
      raise ValueError(f"{src} has no checkpoint at step {step} (steps: {available})")
  else:
    checkpoint = convert.newest_run_checkpoint(src)
  params = convert.load_params(checkpoint)
  prompt, method = prompt_from_params(params, checkpoint)
  return Source(prompt, method, _base_config(checkpoint, params))


# --- the adapter -----------------------------------------------------------------------


def default_base_model(width: int, base: T5Config | None) -> str:
  """`google/t5-{size}-lm-adapt` for the size the run's frozen model has (by its config
  when known, else by the prompt width d); an error naming --base-model otherwise."""
  if base is not None:
    size = validation.size_name(base)  # the named size with the same parameter shapes
  else:
    size = next((size for size in LM_ADAPT_SIZES if SIZES[size].emb_dim == width), None)
  if size in LM_ADAPT_SIZES:
    return f"google/t5-{size}-lm-adapt"
  what = f"d_model {width}" if base is None else f"a {base.emb_dim}-wide custom-shaped model"
  raise ValueError(
    f"the prompt was trained on {what}, not a public T5 1.1 LM-adapted size; pass "
    "--base-model with the Hugging Face name or directory of its model"
  )


def adapter_config(prompt: np.ndarray, base_model: str, model: T5Config | None) -> dict[str, Any]:
  """adapter_config.json of a PEFT PromptTuningConfig with an encoder-only prompt."""
  length, width = prompt.shape
  return {
    "peft_type": "PROMPT_TUNING",
    "task_type": "SEQ_2_SEQ_LM",
    "base_model_name_or_path": base_model,
    "num_virtual_tokens": int(length),
    "token_dim": int(width),
    # 1: the prompt goes in front of the encoder input only, as ours; PEFT's default for
    # SEQ_2_SEQ_LM (2) would also prepend rows to the decoder input.
    "num_transformer_submodules": 1,
    # PEFT fills these from the base model when null.
    "num_attention_heads": model.num_heads if model else None,
    "num_layers": model.num_encoder_layers if model else None,
    "prompt_tuning_init": "RANDOM",
    "prompt_tuning_init_text": None,
    "tokenizer_name_or_path": None,
    "tokenizer_kwargs": None,
    "inference_mode": True,
    "revision": None,
    "auto_mapping": None,
    "modules_to_save": None,
  }


def write_adapter(
  prompt: np.ndarray, out_dir: str, base_model: str, model: T5Config | None = None
) -> list[str]:
  """Writes the PEFT adapter directory; returns its two files."""
  from safetensors.numpy import save_file

  if os.path.isfile(out_dir):
    raise ValueError(f"{out_dir} is a file; pass a directory for the adapter")
  os.makedirs(out_dir, exist_ok=True)
  config_path = os.path.join(out_dir, ADAPTER_CONFIG)
  weights_path = os.path.join(out_dir, ADAPTER_WEIGHTS)
  with open(config_path, "w") as f:
    json.dump(adapter_config(prompt, base_model, model), f, indent=2)
  save_file(
    {PEFT_PROMPT_KEY: np.ascontiguousarray(prompt, np.float32)},
    weights_path,
    metadata={"format": "pt"},
  )
  return [config_path, weights_path]


def read_adapter(adapter_dir: str) -> np.ndarray:
  """The encoder prompt [P, d] of a PEFT prompt-tuning adapter; one line for anything
  this project cannot evaluate as PEFT would."""
  config_path = os.path.join(adapter_dir, ADAPTER_CONFIG)
  if not os.path.isfile(config_path):
    raise ValueError(f"{adapter_dir} has no {ADAPTER_CONFIG}; pass a PEFT adapter directory")
  with open(config_path) as f:
    config = json.load(f)
  kind, task = config.get("peft_type"), config.get("task_type")
  if kind == "PREFIX_TUNING":
    raise ValueError(
      f"{adapter_dir} is a PEFT prefix adapter, which for T5 prefixes the decoder's "
      "self-attention with relative position bias: no method here computes that "
      "(docs/interop.md); only PROMPT_TUNING adapters import"
    )
  if kind != "PROMPT_TUNING" or task != "SEQ_2_SEQ_LM":
    raise ValueError(
      f"{adapter_dir} is a {kind} adapter for {task}; only PEFT PROMPT_TUNING adapters for "
      "SEQ_2_SEQ_LM (T5) import"
    )
  submodules = config.get("num_transformer_submodules") or 2
  if submodules != 1:
    raise ValueError(
      f"{adapter_dir} also prompts the decoder input (num_transformer_submodules="
      f"{submodules}), which no method here does; train it with num_transformer_submodules=1"
    )
  weights_path = os.path.join(adapter_dir, ADAPTER_WEIGHTS)
  if not os.path.isfile(weights_path):
    raise ValueError(
      f"{adapter_dir} has no {ADAPTER_WEIGHTS}; save the adapter with safetensors "
      "(PEFT's default, save_pretrained(..., safe_serialization=True))"
    )
  from safetensors.numpy import load_file

  weights = load_file(weights_path)
  if PEFT_PROMPT_KEY not in weights:
    raise ValueError(f"{weights_path} has no {PEFT_PROMPT_KEY}; is it a prompt-tuning adapter?")
  prompt = np.asarray(weights[PEFT_PROMPT_KEY], np.float32)
  expected = (config.get("num_virtual_tokens"), config.get("token_dim"))
  if prompt.shape != expected:
    raise ValueError(
      f"{weights_path} holds a {prompt.shape} prompt but its config says {expected} "
      "(num_virtual_tokens, token_dim); the adapter directory is inconsistent"
    )
  if not np.all(np.isfinite(prompt)):
    raise ValueError(f"{weights_path} holds NaN or inf; the adapter's training diverged")
  return prompt


# --- the commands ----------------------------------------------------------------------


def export_main(argv: Sequence[str]) -> int:
  """`prompt-tuning export-peft SRC OUT_DIR [--step N] [--base-model NAME]`."""
  parser = argparse.ArgumentParser(
    prog="prompt-tuning export-peft",
    description="Write a trained prompt as a Hugging Face PEFT prompt-tuning adapter "
    "(adapter_config.json + adapter_model.safetensors) that "
    "peft.PeftModel.from_pretrained(t5, OUT_DIR) loads. P-Tuning is folded to its prompt "
    "rows; Prefix-Tuning and P-Tuning v2 are refused (docs/interop.md).",
  )
  parser.add_argument(
    "src",
    help="MODEL_DIR (newest checkpoint), MODEL_DIR/checkpoint_N, a prompt .npy, or the "
    "directory export-prompt wrote",
  )
  parser.add_argument("out_dir", help="directory for the adapter (its two files are replaced)")
  parser.add_argument("--step", type=int, default=None, help="checkpoint step of a MODEL_DIR")
  parser.add_argument(
    "--base-model",
    default=None,
    help="base_model_name_or_path of the adapter (default: google/t5-SIZE-lm-adapt of the "
    "run's model size)",
  )
  args = parser.parse_args(list(argv))
  source = read_source(args.src, args.step)
  length, width = source.prompt.shape
  base_model = args.base_model or default_base_model(width, source.base)
  model = source.base
  if model is None and base_model.startswith("google/t5-") and base_model.endswith("-lm-adapt"):
    model = SIZES.get(base_model[len("google/t5-") : -len("-lm-adapt")])
  for path in write_adapter(source.prompt, args.out_dir, base_model, model):
    print(path)
  if source.method == "P-Tuning":
    print(
      "note: P-Tuning's prompt encoder was folded: its output rows are exported as a PEFT "
      "prompt-tuning adapter (PEFT's P_TUNING runs a different encoder network)"
    )
  print(f"a PEFT prompt-tuning adapter (P={length}, d={width}) for {base_model}")
  print(hf.loading_advice(base_model))
  print(
    "load it with: peft.PeftModel.from_pretrained("
    f"T5ForConditionalGeneration.from_pretrained({base_model!r}), {args.out_dir!r})"
  )
  return 0


def import_main(argv: Sequence[str]) -> int:
  """`prompt-tuning import-peft ADAPTER_DIR OUT`: a PEFT prompt to a PROMPT_FILE `.npy`."""
  parser = argparse.ArgumentParser(
    prog="prompt-tuning import-peft",
    description="Turn a Hugging Face PEFT prompt-tuning adapter for T5 into a prompt .npy "
    "[P, d] that PROMPT_FILE (prompts/from_file.gin) loads. Prefix and other adapters "
    "are refused (docs/interop.md).",
  )
  parser.add_argument("adapter_dir", help="the PEFT adapter directory")
  parser.add_argument("out", help=f"the .npy to write (a directory gets {PROMPT_FILE} inside it)")
  args = parser.parse_args(list(argv))
  prompt = read_adapter(args.adapter_dir)
  out = os.path.join(args.out, PROMPT_FILE) if os.path.isdir(args.out) else args.out
  if not out.endswith(".npy"):
    raise ValueError(f"{out} does not end in .npy; pass the prompt file to write")
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  np.save(out, prompt)
  with open(os.path.join(args.adapter_dir, ADAPTER_CONFIG)) as f:
    base_model = json.load(f).get("base_model_name_or_path")
  print(out)
  print(
    f"a [{prompt.shape[0]}, {prompt.shape[1]}] prompt; evaluate it with prompt-tuning eval, "
    "the model file, --gin_file=prompt_tuning/configs/runs/prompt_eval.gin, "
    f"--gin.PROMPT_FILE=\"'{out}'\" --gin.PROMPT_LENGTH={prompt.shape[0]} and "
    "INITIAL_CHECKPOINT_PATH the adapter's base model "
    f"({base_model or 'not recorded'}: a Hugging Face directory loads as it is)"
  )
  return 0
