"""`prompt-tuning export-peft` / `import-peft`: a soft prompt as a Hugging Face PEFT adapter.

PEFT's prompt tuning for an encoder-decoder (`PromptTuningConfig`, task SEQ_2_SEQ_LM,
`num_transformer_submodules=1`) prepends `prompt_embeddings` [P, d] to the embedded encoder
input and makes them visible to attention, with ordinary relative positions: exactly what
our input prompt does (docs/design.md, "The prompt contract"), so a prompt moves between the
two unchanged. P-Tuning's prompt encoder is folded first and its output rows travel as a
prompt-tuning adapter (PEFT's P_TUNING re-runs a prompt encoder of its own design).

PEFT's Prefix-Tuning on T5 computes something narrower than Li & Liang's design: a prefix
for the decoder's self-attention only, at the positions before the text (with their
relative position bias), read from its one tensor in a layout of its own. The
`prefix_peft` method (prompts/peft_prefix.py) is exactly that, and its prefix travels both
ways as PEFT's `prompt_embeddings` [P, num_layers * 2 * heads * head_dim], unchanged. Our
Prefix-Tuning (encoder and decoder, no position bias) and P-Tuning v2 (deep prompts through
the frozen key/value kernels) have no PEFT equivalent: both commands refuse them in one
line (docs/interop.md).
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
from prompt_tuning.prompts import initializers, p_tuning, peft_prefix, prefix_tuning
from prompt_tuning.t5.config import SIZES, T5Config
from prompt_tuning.training import checkpoints

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PROMPT_KEY = "prompt_embeddings"
PROMPT_PARAM = "encoder/prompt/prompt"
PROMPT_FILE = "encoder.prompt.prompt.npy"
# The public LM-adapted T5 1.1 checkpoints, by size: the default base of an adapter.
LM_ADAPT_SIZES = ("small", "base", "large", "xl", "xxl")
# PEFT's prefix tensor, as the `prefix_peft` method keeps it (prompts/peft_prefix.py).
PEFT_PREFIX_PARAM = "decoder/layer_prompt/" + peft_prefix.PARAM
PEFT_PREFIX_FILE = PEFT_PREFIX_PARAM.replace("/", ".") + ".npy"
PEFT_PREFIX_METHOD = "prefix_peft"
LAYER_METHODS_REFUSED = (
  "Prefix-Tuning and P-Tuning v2 do not export to PEFT: for T5, PEFT's prefix reaches only "
  "the decoder's self-attention and gives prefix positions a relative position bias, where "
  "ours also prefix the encoder and carry no bias, so the adapter would compute differently "
  "(docs/interop.md); serve it here with LAYER_PROMPT_DIR, or train with "
  "prompts/prefix_tuning_peft.gin (PEFT's layout), which exports"
)


@dataclasses.dataclass(frozen=True)
class Source:
  """The prompt to export and what is known about the model it was trained on."""

  prompt: np.ndarray  # [P, d], or PEFT's prefix tensor [P, layers * 2 * width]; float32
  method: str  # "prompt tuning", "P-Tuning" or PEFT_PREFIX_METHOD
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


def _peft_prefix(flat: Mapping[str, Any], where: str) -> np.ndarray | None:
  """The `prefix_peft` method's tensor (folding its projection MLP), or None when the
  run trained another method."""
  layer_params = {n: a for n, a in flat.items() if "/layer_prompt/" in n}
  if PEFT_PREFIX_PARAM in layer_params and len(layer_params) == 1:
    return np.asarray(layer_params[PEFT_PREFIX_PARAM], np.float32)
  mlp = "decoder/layer_prompt/mlp/"
  if not layer_params or not all(n.startswith(mlp) for n in layer_params):
    return None
  mlp_params = tree.unflatten({n[len(mlp) :]: a for n, a in layer_params.items()})
  if set(mlp_params) != {"embedding", "hidden", "out"}:
    return None
  length, embedding_dim = np.shape(mlp_params["embedding"])
  hidden_dim, features = np.shape(mlp_params["out"]["kernel"])
  module = prefix_tuning.MlpReparameterization(length, features, embedding_dim, hidden_dim)
  return np.asarray(jax.jit(module.apply)({"params": mlp_params}), np.float32)


def prompt_from_params(params: Mapping[str, Any], where: str) -> tuple[np.ndarray, str]:
  flat = tree.flatten(params)
  if any("/layer_prompt/" in name for name in flat):
    prefix = _peft_prefix(flat, where)
    if prefix is None:
      raise ValueError(f"{where}: {LAYER_METHODS_REFUSED}")
    if params.get("encoder", {}).get("prompt"):
      raise ValueError(
        f"{where} holds an input prompt and a PEFT-layout prefix; a PEFT adapter holds one "
        "of them: train them as separate runs"
      )
    return prefix, PEFT_PREFIX_METHOD
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
  if PEFT_PREFIX_FILE in names and step is None:
    path = os.path.join(src, PEFT_PREFIX_FILE)
    return Source(np.load(path).astype(np.float32), PEFT_PREFIX_METHOD, None)
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


def prefix_adapter_config(prefix: np.ndarray, base_model: str, model: T5Config) -> dict[str, Any]:
  """adapter_config.json of a PEFT PrefixTuningConfig for T5 (as PEFT 0.21.2 writes it),
  holding the `prefix_peft` method's tensor as it is."""
  length, features = prefix.shape
  width = model.num_heads * model.head_dim
  expected = model.num_encoder_layers * 2 * width
  if features != expected:
    raise ValueError(
      f"the prefix is {prefix.shape} but the base model needs [P, {expected}] (layers "
      f"{model.num_encoder_layers} x 2 x {width}); pass the --base-model it was trained on"
    )
  return {
    "peft_type": "PREFIX_TUNING",
    "task_type": "SEQ_2_SEQ_LM",
    "base_model_name_or_path": base_model,
    "num_virtual_tokens": int(length),
    # heads * head_dim, which PEFT splits into heads; T5 1.1 small's d_model (512) is not
    # 6 x 64, so d_model here would break PEFT's reshape.
    "token_dim": int(width),
    "num_transformer_submodules": 2,
    "num_attention_heads": model.num_heads,
    "num_layers": model.num_encoder_layers,
    "encoder_hidden_size": int(width),
    "prefix_projection": False,  # The tensor is the projection's output, already folded.
    "inference_mode": True,
    "init_weights": None,
    "revision": None,
    "auto_mapping": None,
    "modules_to_save": None,
  }


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
  prompt: np.ndarray,
  out_dir: str,
  base_model: str,
  model: T5Config | None = None,
  method: str = "prompt tuning",
) -> list[str]:
  """Writes the PEFT adapter directory; returns its two files. `prompt` is PEFT's tensor
  of the adapter `method` makes: [P, d], or the PEFT-layout prefix (which needs `model`)."""
  from safetensors.numpy import save_file

  if os.path.isfile(out_dir):
    raise ValueError(f"{out_dir} is a file; pass a directory for the adapter")
  os.makedirs(out_dir, exist_ok=True)
  config_path = os.path.join(out_dir, ADAPTER_CONFIG)
  weights_path = os.path.join(out_dir, ADAPTER_WEIGHTS)
  if method == PEFT_PREFIX_METHOD:
    if model is None:
      raise ValueError(
        "the prefix's layer count and heads are unknown: pass --base-model "
        "google/t5-SIZE-lm-adapt, or export from the MODEL_DIR whose base checkpoint reads"
      )
    config = prefix_adapter_config(prompt, base_model, model)
  else:
    config = adapter_config(prompt, base_model, model)
  with open(config_path, "w") as f:
    json.dump(config, f, indent=2)
  save_file(
    {PEFT_PROMPT_KEY: np.ascontiguousarray(prompt, np.float32)},
    weights_path,
    metadata={"format": "pt"},
  )
  return [config_path, weights_path]


def read_adapter_config(adapter_dir: str) -> dict[str, Any]:
  """adapter_config.json of a PEFT adapter for T5 that this project can evaluate as PEFT
  does: PROMPT_TUNING with an encoder-only prompt, or PREFIX_TUNING in PEFT's own layout."""
  config_path = os.path.join(adapter_dir, ADAPTER_CONFIG)
  if not os.path.isfile(config_path):
    raise ValueError(f"{adapter_dir} has no {ADAPTER_CONFIG}; pass a PEFT adapter directory")
  with open(config_path) as f:
    config = json.load(f)
  kind, task = config.get("peft_type"), config.get("task_type")
  if kind not in ("PROMPT_TUNING", "PREFIX_TUNING") or task != "SEQ_2_SEQ_LM":
    raise ValueError(
      f"{adapter_dir} is a {kind} adapter for {task}; only PEFT PROMPT_TUNING and "
      "PREFIX_TUNING adapters for SEQ_2_SEQ_LM (T5) import"
    )
  submodules = config.get("num_transformer_submodules") or 2
  if kind == "PROMPT_TUNING" and submodules != 1:
    raise ValueError(
      f"{adapter_dir} also prompts the decoder input (num_transformer_submodules="
      f"{submodules}), which no method here does; train it with num_transformer_submodules=1"
    )
  if kind == "PREFIX_TUNING" and submodules != 2:
    raise ValueError(
      f"{adapter_dir} is a prefix adapter with num_transformer_submodules={submodules}; "
      "only PEFT's T5 default (2) is reproduced here (docs/interop.md)"
    )
  return config


def read_adapter(adapter_dir: str) -> np.ndarray:
  """PEFT's tensor of an adapter `read_adapter_config` accepts: the encoder prompt
  [P, d], or the prefix [P, num_layers * 2 * token_dim]; one line for anything else."""
  config = read_adapter_config(adapter_dir)
  weights_path = os.path.join(adapter_dir, ADAPTER_WEIGHTS)
  if not os.path.isfile(weights_path):
    raise ValueError(
      f"{adapter_dir} has no {ADAPTER_WEIGHTS}; save the adapter with safetensors "
      "(PEFT's default, save_pretrained(..., safe_serialization=True))"
    )
  from safetensors.numpy import load_file

  weights = load_file(weights_path)
  if PEFT_PROMPT_KEY not in weights:
    raise ValueError(f"{weights_path} has no {PEFT_PROMPT_KEY}; is it a prompt-learning adapter?")
  prompt = np.asarray(weights[PEFT_PROMPT_KEY], np.float32)
  length, width = config.get("num_virtual_tokens"), config.get("token_dim")
  expected, fields = (length, width), "num_virtual_tokens, token_dim"
  if config["peft_type"] == "PREFIX_TUNING":
    expected = (length, (config.get("num_layers") or 0) * 2 * (width or 0))
    fields = "num_virtual_tokens, num_layers x 2 x token_dim"
  if prompt.shape != expected:
    raise ValueError(
      f"{weights_path} holds a {prompt.shape} tensor but its config says {expected} "
      f"({fields}); the adapter directory is inconsistent"
    )
  if not np.all(np.isfinite(prompt)):
    raise ValueError(f"{weights_path} holds NaN or inf; the adapter's training diverged")
  return prompt


# --- the commands ----------------------------------------------------------------------


def export_main(argv: Sequence[str]) -> int:
  """`prompt-tuning export-peft SRC OUT_DIR [--step N] [--base-model NAME]`."""
  parser = argparse.ArgumentParser(
    prog="prompt-tuning export-peft",
    description="Write a trained prompt as a Hugging Face PEFT adapter "
    "(adapter_config.json + adapter_model.safetensors) that "
    "peft.PeftModel.from_pretrained(t5, OUT_DIR) loads. P-Tuning is folded to its prompt "
    "rows; the prefix_peft method (prompts/prefix_tuning_peft.gin) becomes a "
    "PrefixTuningConfig adapter; Prefix-Tuning and P-Tuning v2 are refused "
    "(docs/interop.md).",
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
  prefix = source.method == PEFT_PREFIX_METHOD
  if args.base_model:
    base_model = args.base_model
  elif prefix and source.base is None:
    raise ValueError(
      f"{args.src} does not say which model the prefix was trained on; pass --base-model "
      "(google/t5-SIZE-lm-adapt or the Hugging Face directory of its model)"
    )
  else:
    base_model = default_base_model(width, source.base)
  model = source.base
  if model is None and base_model.startswith("google/t5-") and base_model.endswith("-lm-adapt"):
    model = SIZES.get(base_model[len("google/t5-") : -len("-lm-adapt")])
  if model is None and prefix and os.path.isdir(base_model):
    model = hf.read_hf_config(base_model)
  for path in write_adapter(source.prompt, args.out_dir, base_model, model, source.method):
    print(path)
  if source.method == "P-Tuning":
    print(
      "note: P-Tuning's prompt encoder was folded: its output rows are exported as a PEFT "
      "prompt-tuning adapter (PEFT's P_TUNING runs a different encoder network)"
    )
  if prefix:
    print(f"a PEFT prefix-tuning adapter (P={length}, PEFT's T5 layout) for {base_model}")
  else:
    print(f"a PEFT prompt-tuning adapter (P={length}, d={width}) for {base_model}")
  print(hf.loading_advice(base_model))
  print(
    "load it with: peft.PeftModel.from_pretrained("
    f"T5ForConditionalGeneration.from_pretrained({base_model!r}), {args.out_dir!r})"
  )
  return 0


def import_main(argv: Sequence[str]) -> int:
  """`prompt-tuning import-peft ADAPTER_DIR OUT`: a PEFT prompt to a PROMPT_FILE `.npy`,
  a PEFT prefix to a LAYER_PROMPT_DIR."""
  parser = argparse.ArgumentParser(
    prog="prompt-tuning import-peft",
    description="Turn a Hugging Face PEFT adapter for T5 into what this project loads: a "
    "prompt-tuning adapter into a prompt .npy [P, d] for PROMPT_FILE "
    "(prompts/from_file.gin), a prefix-tuning adapter into a LAYER_PROMPT_DIR for "
    "prompts/prefix_tuning_peft.gin. Other adapters are refused (docs/interop.md).",
  )
  parser.add_argument("adapter_dir", help="the PEFT adapter directory")
  parser.add_argument(
    "out",
    help=f"prompt adapters: the .npy to write (a directory gets {PROMPT_FILE} inside it); "
    f"prefix adapters: the directory to write {PEFT_PREFIX_FILE} in",
  )
  args = parser.parse_args(list(argv))
  config = read_adapter_config(args.adapter_dir)
  prompt = read_adapter(args.adapter_dir)
  if config["peft_type"] == "PREFIX_TUNING":
    return _import_prefix(prompt, config, args.out)
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


def _import_prefix(prefix: np.ndarray, config: Mapping[str, Any], out_dir: str) -> int:
  if os.path.isfile(out_dir) or out_dir.endswith(".npy"):
    raise ValueError(
      f"{out_dir}: a prefix adapter imports to a directory (LAYER_PROMPT_DIR); pass one"
    )
  os.makedirs(out_dir, exist_ok=True)
  out = os.path.join(out_dir, PEFT_PREFIX_FILE)
  np.save(out, prefix)
  print(out)
  print(
    f"a PEFT-layout prefix (P={prefix.shape[0]}, {config.get('num_layers')} layers); "
    "evaluate it with prompt-tuning eval, the model file, "
    "--gin_file=prompt_tuning/configs/prompts/prefix_tuning_peft.gin, "
    "--gin_file=prompt_tuning/configs/runs/layer_prompt_eval.gin, "
    f"--gin.LAYER_PROMPT_DIR=\"'{out_dir}'\" --gin.PROMPT_LENGTH={prefix.shape[0]} and "
    "INITIAL_CHECKPOINT_PATH the adapter's base model "
    f"({config.get('base_model_name_or_path') or 'not recorded'})"
  )
  return 0
