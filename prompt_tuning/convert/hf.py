"""Hugging Face T5 / mT5 weights (`google/t5-*-lm-adapt`) <-> our T5X-named tree.

HF stores the same tensors under other names: Linear weights transposed ([out, in]
where T5X kernels are [in, out]), the relative position table as [buckets, heads] in
block 0 only, and the embedding as `shared.weight` (with tied copies
`encoder/decoder.embed_tokens.weight` in `.bin` files). Neither side scales attention
logits by 1/sqrt(d), so values map unchanged. The name map is a fixed rule table, so
it needs no config: layer counts come from the names themselves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import re
import tempfile
import warnings
from typing import Any, Iterable, Mapping

import ml_dtypes
import numpy as np

from prompt_tuning import tree
from prompt_tuning.convert import placement, validation
from prompt_tuning.convert.errors import CheckpointReadError
from prompt_tuning.convert.reader import ArrayInfo, CheckpointReader
from prompt_tuning.t5.config import T5Config

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_FILE = "pytorch_model.bin"
TORCH_INDEX = "pytorch_model.bin.index.json"

# HF keys that carry no information of their own: tied copies of `shared.weight`, and a
# cross-attention bias table that HF creates but never uses (it ignores it on load).
_IGNORED = re.compile(
  r"^((encoder|decoder)\.embed_tokens\.weight|"
  r"decoder\.block\.0\.layer\.1\.EncDecAttention\."
  r"relative_attention_bias\.weight)$"
)
_TIED_EMBEDDINGS = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")


def _rules() -> list[tuple[str, str, bool]]:
  """(HF template, our template, transposed); `{i}` stands for a layer index."""
  rules = [
    ("shared.weight", "token_embedder/embedding", False),
    ("lm_head.weight", "decoder/logits_dense/kernel", True),
    ("encoder.final_layer_norm.weight", "encoder/encoder_norm/scale", False),
    ("decoder.final_layer_norm.weight", "decoder/decoder_norm/scale", False),
    (
      "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
      "encoder/relpos_bias/rel_embedding",
      True,
    ),
    (
      "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
      "decoder/relpos_bias/rel_embedding",
      True,
    ),
    (
      "encoder.block.{i}.layer.0.layer_norm.weight",
      "encoder/layers_{i}/pre_attention_layer_norm/scale",
      False,
    ),
    (
      "encoder.block.{i}.layer.1.layer_norm.weight",
      "encoder/layers_{i}/pre_mlp_layer_norm/scale",
      False,
    ),
    (
      "decoder.block.{i}.layer.0.layer_norm.weight",
      "decoder/layers_{i}/pre_self_attention_layer_norm/scale",
      False,
    ),
    (
      "decoder.block.{i}.layer.1.layer_norm.weight",
      "decoder/layers_{i}/pre_cross_attention_layer_norm/scale",
      False,
    ),
    (
      "decoder.block.{i}.layer.2.layer_norm.weight",
      "decoder/layers_{i}/pre_mlp_layer_norm/scale",
      False,
    ),
  ]
  for hf, ours in (("q", "query"), ("k", "key"), ("v", "value"), ("o", "out")):
    rules += [
      (
        f"encoder.block.{{i}}.layer.0.SelfAttention.{hf}.weight",
        f"encoder/layers_{{i}}/attention/{ours}/kernel",
        True,
      ),
      (
        f"decoder.block.{{i}}.layer.0.SelfAttention.{hf}.weight",
        f"decoder/layers_{{i}}/self_attention/{ours}/kernel",
        True,
      ),
      (
        f"decoder.block.{{i}}.layer.1.EncDecAttention.{hf}.weight",
        f"decoder/layers_{{i}}/encoder_decoder_attention/{ours}/kernel",
        True,
      ),
    ]
  for w in ("wi", "wi_0", "wi_1", "wo"):
    rules += [
      (
        f"encoder.block.{{i}}.layer.1.DenseReluDense.{w}.weight",
        f"encoder/layers_{{i}}/mlp/{w}/kernel",
        True,
      ),
      (
        f"decoder.block.{{i}}.layer.2.DenseReluDense.{w}.weight",
        f"decoder/layers_{{i}}/mlp/{w}/kernel",
        True,
      ),
    ]
  return rules


def _compile(template: str) -> re.Pattern:
  return re.compile("^" + re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)") + "$")


_RULES = [(_compile(hf), hf, _compile(ours), ours, t) for hf, ours, t in _rules()]


def hf_name_to_param(key: str) -> tuple[str, bool] | None:
  """(our name, transposed) for an HF key; None for keys outside the map."""
  for pattern, _, _, ours, transposed in _RULES:
    match = pattern.match(key)
    if match:
      return ours.replace("{i}", match.groupdict().get("i") or ""), transposed
  return None


def param_name_to_hf(name: str) -> tuple[str, bool] | None:
  """(HF key, transposed) for one of our names; None for names HF has no place for."""
  for _, hf, pattern, _, transposed in _RULES:
    match = pattern.match(name)
    if match:
      return hf.replace("{i}", match.groupdict().get("i") or ""), transposed
  return None


def _to_numpy(value: Any) -> np.ndarray:
  """numpy from numpy or torch (bfloat16 included, which torch cannot export)."""
  if isinstance(value, np.ndarray):
    return value
  if type(value).__module__.startswith("torch"):
    import torch  # Only reached when the caller already uses torch.

    value = value.detach().cpu()
    if value.dtype == torch.bfloat16:
      return value.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return value.numpy()
  return np.asarray(value)


def _translate(keys: Iterable[str]) -> tuple[dict[str, tuple[str, bool]], list[str]]:
  """Our name -> (HF key, transposed) for every mapped key, and the unmapped HF keys.
  A checkpoint without `shared.weight` takes the embedding from a tied copy."""
  keys = list(keys)
  mapping: dict[str, tuple[str, bool]] = {}
  unmapped: list[str] = []
  for key in keys:
    found = hf_name_to_param(key)
    if found is not None:
      mapping[found[0]] = (key, found[1])
    elif not _IGNORED.match(key):
      unmapped.append(key)
  if "token_embedder/embedding" not in mapping:
    for key in _TIED_EMBEDDINGS:
      if key in keys:
        mapping["token_embedder/embedding"] = (key, False)
        break
  return mapping, unmapped


def hf_to_params(
  state_dict: Mapping[str, Any], config: T5Config | None = None, *, allow_missing: str | None = None
) -> dict[str, Any]:
  """An HF T5 state dict (numpy or torch tensors) -> our nested parameter tree.

  With a config, the result is checked against the model (CheckpointMismatchError);
  HF keys outside the map are reported as unexpected rather than dropped silently.
  """
  mapping, unmapped = _translate(state_dict)
  flat = {}
  for name, (key, transposed) in mapping.items():
    array = _to_numpy(state_dict[key])
    flat[name] = np.ascontiguousarray(array.T) if transposed else array
  if config is not None:
    shapes = {name: a.shape for name, a in flat.items()}
    shapes.update({key: tuple(np.shape(state_dict[key])) for key in unmapped})
    validation.check(
      shapes,
      config,
      source="Hugging Face state dict",
      allow_missing=allow_missing,
      allow_unexpected=None,
    )
  elif unmapped:
    raise ValueError(
      f"Hugging Face keys with no T5X counterpart: {unmapped[:5]}; this "
      "converter handles T5 1.1 / mT5 (T5ForConditionalGeneration)"
    )
  return tree.unflatten(flat)


def params_to_hf(
  params: Mapping[str, Any],
  config: T5Config | None = None,
  *,
  skip: str | None = validation.PROMPT_PARAMS,
) -> dict[str, np.ndarray]:
  """Our parameter tree -> an HF T5ForConditionalGeneration state dict (numpy).

  Parameters matching `skip` (a soft prompt: HF T5 has no place for it) are left out;
  any other parameter without an HF name is an error. Tied embedding copies are not
  emitted, as in HF's own safetensors files.
  """
  flat = {n: v for n, v in tree.flatten(params).items() if not (skip and re.search(skip, n))}
  if config is not None:
    validation.check(
      {n: np.shape(v) for n, v in flat.items()},
      config,
      source="parameter tree",
      allow_unexpected=None,
    )
  out = {}
  for name, value in flat.items():
    found = param_name_to_hf(name)
    if found is None:
      raise ValueError(
        f"parameter {name!r} has no Hugging Face T5 counterpart; convert the T5 backbone "
        "only, and export prompts with export-peft"
      )
    array = np.asarray(value)
    out[found[0]] = np.ascontiguousarray(array.T) if found[1] else array
  return out


# --- configs -----------------------------------------------------------------------------


def hf_config_dict(config: T5Config) -> dict[str, Any]:
  """config.json for `T5ForConditionalGeneration.from_pretrained`."""
  gated = len(config.mlp_activations) == 2
  act = {"gelu": "gelu", "relu": "relu"}.get(config.mlp_activations[0], config.mlp_activations[0])
  return {
    "architectures": ["T5ForConditionalGeneration"],
    "model_type": "t5",
    "vocab_size": config.vocab_size,
    "d_model": config.emb_dim,
    "d_kv": config.head_dim,
    "d_ff": config.mlp_dim,
    "num_layers": config.num_encoder_layers,
    "num_decoder_layers": config.num_decoder_layers,
    "num_heads": config.num_heads,
    "relative_attention_num_buckets": config.relative_attention_num_buckets,
    "relative_attention_max_distance": config.relative_attention_max_distance,
    "dropout_rate": config.dropout_rate,
    "layer_norm_epsilon": config.layer_norm_epsilon,
    "feed_forward_proj": f"gated-{act}" if gated else act,
    "tie_word_embeddings": config.logits_via_embedding,
    "is_encoder_decoder": True,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "decoder_start_token_id": 0,
  }


def config_from_hf_dict(hf: Mapping[str, Any]) -> T5Config:
  proj = hf.get("feed_forward_proj", "relu")
  gated = proj.startswith("gated-")
  act = proj.split("-")[-1]
  act = "gelu" if act in ("gelu", "gelu_new") else act
  return T5Config(
    vocab_size=int(hf["vocab_size"]),
    emb_dim=int(hf["d_model"]),
    num_heads=int(hf["num_heads"]),
    head_dim=int(hf["d_kv"]),
    num_encoder_layers=int(hf["num_layers"]),
    num_decoder_layers=int(hf.get("num_decoder_layers") or hf["num_layers"]),
    mlp_dim=int(hf["d_ff"]),
    mlp_activations=(act, "linear") if gated else (act,),
    relative_attention_num_buckets=int(hf.get("relative_attention_num_buckets", 32)),
    relative_attention_max_distance=int(hf.get("relative_attention_max_distance", 128)),
    layer_norm_epsilon=float(hf.get("layer_norm_epsilon", 1e-6)),
    # HF T5 1.1 configs say tie_word_embeddings=false; original T5 ties (and scales).
    logits_via_embedding=bool(hf.get("tie_word_embeddings", True)),
  )


# --- reading files -----------------------------------------------------------------------

_SAFETENSORS_DTYPES = {
  "F64": np.float64,
  "F32": np.float32,
  "F16": np.float16,
  "BF16": ml_dtypes.bfloat16,
  "I64": np.int64,
  "I32": np.int32,
  "I16": np.int16,
  "I8": np.int8,
  "U8": np.uint8,
  "BOOL": np.bool_,
}


def weight_files(path: str) -> list[str]:
  """The weight files of an HF checkpoint given its directory, one weight file or an
  index json (safetensors preferred over pytorch .bin when both exist)."""
  if os.path.isfile(path):
    if path.endswith(".json"):
      with open(path) as f:
        index = json.load(f)
      base = os.path.dirname(os.path.abspath(path))
      return [os.path.join(base, f) for f in sorted(set(index["weight_map"].values()))]
    return [path]
  if not os.path.isdir(path):
    raise CheckpointReadError(f"{path} does not exist")
  for name in (SAFETENSORS_INDEX, SAFETENSORS_FILE, TORCH_INDEX, TORCH_FILE):
    if os.path.isfile(os.path.join(path, name)):
      return weight_files(os.path.join(path, name))
  found = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
  if found:
    return [os.path.join(path, f) for f in found]
  raise CheckpointReadError(
    f"no Hugging Face weights in {path}: expected {SAFETENSORS_FILE}, "
    f"{SAFETENSORS_INDEX}, {TORCH_FILE} or {TORCH_INDEX}"
  )


def is_hf_checkpoint(path: str) -> bool:
  if os.path.isfile(path):
    return path.endswith((".safetensors", ".bin", ".index.json"))
  if not os.path.isdir(path):
    return False
  names = set(os.listdir(path))
  return bool(names & {SAFETENSORS_FILE, SAFETENSORS_INDEX, TORCH_FILE, TORCH_INDEX}) or (
    CONFIG_FILE in names and any(n.endswith(".safetensors") for n in names)
  )


def read_hf_config(path: str) -> T5Config | None:
  directory = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
  config_path = os.path.join(directory, CONFIG_FILE)
  if not os.path.isfile(config_path):
    return None
  with open(config_path) as f:
    return config_from_hf_dict(json.load(f))


class _Tensor:
  """One stored tensor: where it is and how to read a slice of it lazily."""

  def __init__(self, file: str, shape: tuple[int, ...], dtype: np.dtype, get: Any):
    self.file, self.shape, self.dtype, self._get = file, shape, dtype, get

  def read(self, index: placement.Index | None) -> np.ndarray:
    return self._get(index)


class HFReader(CheckpointReader):
  """Reads HF T5 weights tensor by tensor (safetensors slices, or memory-mapped .bin)
  and presents them under our names and layout."""

  format = "hf"

  def __init__(self, path: str):
    super().__init__(path)
    self._handles: list[Any] = []
    self._tensors: dict[str, _Tensor] = {}
    for file in weight_files(path):
      if not os.path.isfile(file):
        raise CheckpointReadError(f"weight file {file} named by the index is missing")
      if file.endswith(".safetensors"):
        self._open_safetensors(file)
      else:
        self._open_torch(file)
    self._mapping, self.unmapped = _translate(self._tensors)
    # Keys outside the map are listed under their HF names, so validation reports them
    # as unexpected instead of their silently vanishing.
    self._mapping.update({key: (key, False) for key in self.unmapped})
    self.config = read_hf_config(path)

  def _open_safetensors(self, file: str) -> None:
    from safetensors import safe_open

    try:
      handle = safe_open(file, framework="numpy")
    except Exception as e:
      raise CheckpointReadError(f"cannot open {file} (truncated or damaged?): {e}") from e
    self._handles.append(handle)
    for key in handle.keys():
      sliced = handle.get_slice(key)
      dtype = _SAFETENSORS_DTYPES.get(sliced.get_dtype())
      if dtype is None:
        raise CheckpointReadError(
          f"{file}: tensor {key} has unsupported dtype {sliced.get_dtype()}"
        )

      def get(index, sliced=sliced, key=key, file=file, handle=handle):
        try:
          return handle.get_tensor(key) if index is None else sliced[index]
        except Exception as e:
          raise CheckpointReadError(f"cannot read {key} from {file}: {e}") from e

      self._tensors[key] = _Tensor(file, tuple(sliced.get_shape()), np.dtype(dtype), get)

  def _open_torch(self, file: str) -> None:
    try:
      import torch
    except ImportError as e:
      raise CheckpointReadError(
        f"{file} is a PyTorch file and torch is not installed; install torch or "
        "convert the checkpoint to safetensors"
      ) from e
    try:
      # mmap: tensors stay on disk until sliced, so a large .bin is not read twice.
      state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:
      state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:
      raise CheckpointReadError(f"cannot read {file} (truncated or damaged?): {e}") from e
    self._handles.append(state)
    for key, value in state.items():

      def get(index, value=value):
        array = _to_numpy(value)
        return array if index is None else array[index]

      dtype = _to_numpy(value.flatten()[:0]).dtype
      self._tensors[key] = _Tensor(file, tuple(value.shape), dtype, get)

  def arrays(self) -> dict[str, ArrayInfo]:
    out = {}
    for name, (key, transposed) in self._mapping.items():
      tensor = self._tensors[key]
      shape = tensor.shape[::-1] if transposed else tensor.shape
      out[name] = ArrayInfo(tuple(shape), tensor.dtype)
    return out

  def read(self, name: str, index: placement.Index | None = None) -> np.ndarray:
    key, transposed = self._mapping[name]
    tensor = self._tensors[key]
    if not transposed:
      return tensor.read(index)
    hf_index = tuple(index[::-1]) if index is not None else None
    return np.asarray(tensor.read(hf_index)).T

  def close(self) -> None:
    self._handles.clear()


# --- writing -----------------------------------------------------------------------------


def write_hf_checkpoint(
  params: Mapping[str, Any],
  config: T5Config,
  directory: str,
  *,
  max_shard_bytes: int = 2 * 1024**3,
  skip: str | None = validation.PROMPT_PARAMS,
) -> list[str]:
  """Writes config.json and safetensors weights (sharded with an index json above
  `max_shard_bytes`) that `T5ForConditionalGeneration.from_pretrained` loads.

  HF tensors are built one shard at a time, so memory holds the parameters plus one
  shard, never two full copies.
  """
  from safetensors.numpy import save_file

  flat = {n: v for n, v in tree.flatten(params).items() if not (skip and re.search(skip, n))}
  validation.check(
    {n: np.shape(v) for n, v in flat.items()},
    config,
    source="parameter tree",
    allow_unexpected=None,
  )
  os.makedirs(directory, exist_ok=True)
  if os.listdir(directory):
    raise ValueError(f"{directory} is not empty; choose a new directory")
  shards: list[list[str]] = [[]]
  size = 0
  for name in flat:
    nbytes = np.asarray(flat[name]).nbytes
    if shards[-1] and size + nbytes > max_shard_bytes:
      shards.append([])
      size = 0
    shards[-1].append(name)
    size += nbytes
  files = []
  weight_map = {}
  total = 0
  for i, names in enumerate(shards):
    file = (
      SAFETENSORS_FILE
      if len(shards) == 1
      else (f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors")
    )
    tensors = params_to_hf({n: flat[n] for n in names}, skip=None)
    save_file(tensors, os.path.join(directory, file), metadata={"format": "pt"})
    weight_map.update({key: file for key in tensors})
    total += sum(t.nbytes for t in tensors.values())
    files.append(os.path.join(directory, file))
    del tensors
  if len(shards) > 1:
    with open(os.path.join(directory, SAFETENSORS_INDEX), "w") as f:
      json.dump(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2, sort_keys=True
      )
  with open(os.path.join(directory, CONFIG_FILE), "w") as f:
    json.dump(hf_config_dict(config), f, indent=2)
  return files


# --- loading on the PyTorch side ---------------------------------------------------------

LM_HEAD_KEY = "lm_head.weight"


@dataclasses.dataclass(frozen=True)
class LmHeadCheck:
  """How the installed transformers treats T5 1.1's own output matrix (docs/interop.md).

  T5 1.1 / lm-adapt models have an `lm_head` separate from the input embedding and do not
  scale the decoder output; transformers 5 declares T5's lm_head tied to `shared`
  whatever config.json says, so what a load returns depends on the version.
  """

  transformers_version: str
  # `from_pretrained` of a directory holding distinct lm_head / shared weights keeps both
  # and computes lm_head(decoder output) unscaled: the T5 1.1 logits.
  from_pretrained_untied: bool
  # The model built from a config (as `T5ForConditionalGeneration(config)` before
  # `load_state_dict`) shares one tensor between lm_head and shared.
  constructor_ties: bool
  # `model.tie_weights()` (also run by `resize_token_embeddings`) on a correctly loaded
  # model makes lm_head the input embedding again.
  tie_weights_reties: bool
  # `from_pretrained(..., tie_word_embeddings=False)`, the obvious fix, leaves
  # `encoder/decoder.embed_tokens` newly initialised instead of the stored embedding.
  untie_flag_breaks_embeddings: bool


def _quiet_transformers() -> contextlib.AbstractContextManager:
  """Silences transformers' load reports and progress bars for the tiny check."""
  from transformers.utils import logging as hf_logging

  @contextlib.contextmanager
  def quiet():
    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
    finally:
      hf_logging.set_verbosity(level)
      if bars:
        hf_logging.enable_progress_bar()

  return quiet()


@functools.lru_cache(maxsize=1)
def check_lm_head_loading() -> LmHeadCheck | None:
  """Loads a tiny untied T5 1.1 written by `write_hf_checkpoint` with the installed
  transformers and reports what it did (cached: the answer is the version's). None when
  torch or transformers is not installed."""
  try:
    import torch
    import transformers
  except ImportError:
    return None
  config = T5Config(
    vocab_size=16,
    emb_dim=8,
    num_heads=2,
    head_dim=4,
    num_encoder_layers=1,
    num_decoder_layers=1,
    mlp_dim=16,
  )
  rng = np.random.default_rng(0)
  params = tree.unflatten(
    {
      name: (0.5 * rng.standard_normal(shape)).astype(np.float32)
      for name, shape in validation.expected_shapes(config).items()
    }
  )
  flat = tree.flatten(params)
  lm_head = flat["decoder/logits_dense/kernel"].T
  with tempfile.TemporaryDirectory() as directory, _quiet_transformers(), torch.no_grad():
    write_hf_checkpoint(params, config, directory)
    model = transformers.T5ForConditionalGeneration.from_pretrained(directory).eval()
    out = model(
      input_ids=torch.tensor([[3, 5, 1]]),
      decoder_input_ids=torch.tensor([[0, 7]]),
      output_hidden_states=True,
    )
    hidden = out.decoder_hidden_states[-1].numpy()
    untied = (
      model.lm_head.weight.data_ptr() != model.shared.weight.data_ptr()
      and np.array_equal(model.lm_head.weight.numpy(), lm_head)
      and np.array_equal(model.shared.weight.numpy(), flat["token_embedder/embedding"])
      and np.allclose(out.logits.numpy(), hidden @ lm_head.T, atol=1e-5)
    )
    model.tie_weights()
    reties = model.lm_head.weight.data_ptr() == model.shared.weight.data_ptr()
    built = transformers.T5ForConditionalGeneration(model.config)
    constructor_ties = built.lm_head.weight.data_ptr() == built.shared.weight.data_ptr()
    flagged = transformers.T5ForConditionalGeneration.from_pretrained(
      directory, tie_word_embeddings=False
    )
    embedding = flat["token_embedder/embedding"]
    breaks = not all(
      np.array_equal(stack.embed_tokens.weight.numpy(), embedding)
      for stack in (flagged.encoder, flagged.decoder)
    )
  return LmHeadCheck(transformers.__version__, bool(untied), constructor_ties, reties, breaks)


def restore_lm_head(model: Any, directory: str) -> Any:
  """Gives a loaded HF T5 its own `lm_head` again, read from `directory`'s weights, and
  turns off the tied-model output scaling: the remedy where `from_pretrained` ties
  (docs/interop.md). `directory` may also be a Hub name, read through the Hugging Face
  cache that `from_pretrained` filled. Returns `model`, changed in place."""
  import torch

  if not os.path.exists(directory):
    from huggingface_hub import snapshot_download

    directory = snapshot_download(directory, allow_patterns=["*.json", "*.safetensors", "*.bin"])
  weight = np.asarray(_read_hf_tensor(directory, LM_HEAD_KEY), np.float32)
  head = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
  head.weight = torch.nn.Parameter(
    torch.from_numpy(weight).to(model.shared.weight.dtype),
    requires_grad=model.shared.weight.requires_grad,
  )
  model.lm_head = head.to(model.shared.weight.device)
  model.config.tie_word_embeddings = False
  if hasattr(model.config, "scale_decoder_outputs"):
    model.config.scale_decoder_outputs = False
  return model


def _read_hf_tensor(directory: str, key: str) -> np.ndarray:
  """One tensor of an HF checkpoint (directory, file or index) under its HF name."""
  reader = HFReader(directory)
  try:
    if key not in reader._tensors:
      raise CheckpointReadError(f"{directory} has no {key}; pass a T5 1.1 checkpoint directory")
    return np.asarray(reader._tensors[key].read(None))
  finally:
    reader.close()


def loading_advice(directory: str) -> str:
  """What to tell a user about loading `directory` (T5 1.1 weights) in transformers,
  from what the installed version was seen to do (`check_lm_head_loading`)."""
  check = check_lm_head_loading()
  if check is None:
    return (
      f"note: load {directory} in transformers and check model.lm_head.weight is not "
      "model.shared.weight: transformers 5 may tie T5's lm_head to the input embedding, "
      "which gives T5 1.1 wrong logits (docs/interop.md)"
    )
  version = check.transformers_version
  if check.from_pretrained_untied:
    advice = (
      f"note: transformers {version} loads {directory} correctly with "
      f"T5ForConditionalGeneration.from_pretrained({directory!r}) (its own lm_head is kept: "
      "checked here on a tiny T5 1.1)"
    )
    traps = []
    if check.untie_flag_breaks_embeddings:
      traps.append("pass tie_word_embeddings=False (it leaves embed_tokens random)")
    if check.constructor_ties:
      traps.append("build the model from its config and load_state_dict (lm_head is shared)")
    if check.tie_weights_reties:
      traps.append("call tie_weights() or resize_token_embeddings() (they re-tie lm_head)")
    if traps:
      advice += "; do not " + ", nor ".join(traps)
    return advice + " (docs/interop.md)"
  return (
    f"warning: transformers {version} ties T5's lm_head to the input embedding when "
    f"loading {directory}, which gives T5 1.1 wrong logits; load it with "
    f"model = T5ForConditionalGeneration.from_pretrained({directory!r}), then "
    f"prompt_tuning.convert.hf.restore_lm_head(model, {directory!r}) (docs/interop.md)"
  )
