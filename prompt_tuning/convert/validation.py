"""Does a checkpoint fit the configured model, and if not, what model is it?

The expected tree comes from the network itself (`prompt_tuning.t5.abstract_params`),
so validation can never drift from what `Transformer` creates.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Mapping

from prompt_tuning import tree
from prompt_tuning.convert.errors import CheckpointMismatchError
from prompt_tuning.t5 import abstract_params
from prompt_tuning.t5.config import SIZES, T5Config

# Trainable additions (a soft prompt under `encoder/prompt/...`) are not part of the
# frozen backbone; a backbone load tolerates them in checkpoints by default.
PROMPT_PARAMS = r"(^|/)prompt(/|$)"

# The fields that decide parameter shapes; dtype, dropout, remat do not.
_SHAPE_FIELDS = (
  "vocab_size",
  "emb_dim",
  "num_heads",
  "head_dim",
  "num_encoder_layers",
  "num_decoder_layers",
  "mlp_dim",
  "relative_attention_num_buckets",
  "logits_via_embedding",
  "mlp_activations",
)


@functools.lru_cache(maxsize=16)
def _expected(config: T5Config) -> tuple[tuple[str, tuple[int, ...]], ...]:
  flat = tree.flatten(abstract_params(config))
  return tuple((name, tuple(leaf.shape)) for name, leaf in sorted(flat.items()))


def expected_shapes(config: T5Config) -> dict[str, tuple[int, ...]]:
  """Every backbone parameter of `config` with its shape."""
  return dict(_expected(config))


def size_name(config: T5Config) -> str | None:
  """The named size (`small`, `mt5_base`, ...) with the same shapes, if any."""
  key = tuple(getattr(config, f) for f in _SHAPE_FIELDS)
  for name, sized in SIZES.items():
    if tuple(getattr(sized, f) for f in _SHAPE_FIELDS) == key:
      return name
  return None


def _layer_count(shapes: Mapping[str, Any], stack: str) -> int:
  pattern = re.compile(rf"^{stack}/layers_(\d+)/")
  indices = {int(m.group(1)) for name in shapes if (m := pattern.match(name))}
  return max(indices) + 1 if indices else 0


def infer_config(shapes: Mapping[str, tuple[int, ...]]) -> T5Config | None:
  """The T5 1.1 config whose parameters have these shapes (None if the names are not a
  T5X encoder-decoder). Works from a handful of tensors: embedding, relative position
  table, first encoder layer."""
  try:
    vocab, emb = shapes["token_embedder/embedding"]
    heads, buckets = shapes["encoder/relpos_bias/rel_embedding"]
    joined = shapes["encoder/layers_0/attention/query/kernel"][1]
  except (KeyError, ValueError):
    return None
  gated = "encoder/layers_0/mlp/wi_0/kernel" in shapes
  mlp_name = "encoder/layers_0/mlp/wi_0/kernel" if gated else "encoder/layers_0/mlp/wi/kernel"
  if mlp_name not in shapes or heads == 0:
    return None
  return T5Config(
    vocab_size=int(vocab),
    emb_dim=int(emb),
    num_heads=int(heads),
    head_dim=int(joined) // int(heads),
    num_encoder_layers=_layer_count(shapes, "encoder"),
    num_decoder_layers=_layer_count(shapes, "decoder"),
    mlp_dim=int(shapes[mlp_name][1]),
    mlp_activations=("gelu", "linear") if gated else ("relu",),
    relative_attention_num_buckets=int(buckets),
    logits_via_embedding="decoder/logits_dense/kernel" not in shapes,
  )


def describe_config(config: T5Config) -> str:
  name = size_name(config)
  if name:
    return f"'{name}'"
  return (
    f"an unnamed size (d_model={config.emb_dim}, heads={config.num_heads}x"
    f"{config.head_dim}, layers={config.num_encoder_layers}/"
    f"{config.num_decoder_layers}, d_ff={config.mlp_dim}, "
    f"vocab={config.vocab_size})"
  )


def model_phrase(config: T5Config) -> str:
  """`describe_config` with its article, for sentences ("a 'tiny' model", "a model of
  an unnamed size (...)")."""
  name = size_name(config)
  return f"a '{name}' model" if name else f"a model of {describe_config(config)}"


def position_table_shape(shapes: Mapping[str, tuple[int, ...]]) -> tuple[int, int] | None:
  """(heads, buckets) of the encoder's relative position table: the one place a T5X
  tree records the number of heads (its attention kernels are stored joined, [d_model,
  heads * head_dim]) and the number of buckets. None when the table is absent."""
  shape = shapes.get("encoder/relpos_bias/rel_embedding")
  if shape is None or len(shape) != 2:
    return None
  return int(shape[0]), int(shape[1])


def looks_like(shapes: Mapping[str, tuple[int, ...]]) -> str | None:
  """A phrase naming what size these parameters are, for messages."""
  config = infer_config(shapes)
  return describe_config(config) if config is not None else None


def check(
  shapes: Mapping[str, tuple[int, ...]],
  config: T5Config,
  *,
  source: str,
  allow_missing: str | None = None,
  allow_unexpected: str | None = PROMPT_PARAMS,
) -> None:
  """Raises one CheckpointMismatchError listing every difference between the
  checkpoint's `shapes` and the model of `config`.

  allow_missing: regex (re.search) of model parameters the checkpoint may lack, e.g.
    a prompt that is initialised fresh.
  allow_unexpected: regex of checkpoint parameters the model does not have that are
    tolerated (default: a prompt from a prompt-tuned checkpoint).
  """
  expected = expected_shapes(config)
  shapes = {name: tuple(int(d) for d in shape) for name, shape in shapes.items()}
  missing = [
    n for n in expected if n not in shapes and not (allow_missing and re.search(allow_missing, n))
  ]
  unexpected = [
    n
    for n in sorted(shapes)
    if n not in expected and not (allow_unexpected and re.search(allow_unexpected, n))
  ]
  wrong = [
    (n, shapes[n], expected[n]) for n in expected if n in shapes and shapes[n] != expected[n]
  ]
  if missing or unexpected or wrong:
    raise CheckpointMismatchError.listing(
      source,
      f"configured as {describe_config(config)}",
      missing,
      unexpected,
      wrong,
      looks_like(shapes),
    )
