"""Hyper-parameters of the T5 1.1 / mT5 encoder-decoder.

One frozen dataclass describes a backbone; the named sizes are the public T5 1.1
("LM-adapted" lm100k) and mT5 checkpoints, so a config built by name always matches
the checkpoint of the same name.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

T5_VOCAB_SIZE = 32128  # 32,000 SentencePiece pieces + 100 sentinels, padded to 128.
MT5_VOCAB_SIZE = 250112


@dataclasses.dataclass(frozen=True)
class T5Config:
  """Everything the network needs to know about its shape and numerics."""

  vocab_size: int = T5_VOCAB_SIZE
  emb_dim: int = 512
  num_heads: int = 6
  head_dim: int = 64
  num_encoder_layers: int = 8
  num_decoder_layers: int = 8
  mlp_dim: int = 1024
  mlp_activations: tuple[str, ...] = ("gelu", "linear")
  dropout_rate: float = 0.0
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  logits_via_embedding: bool = False
  layer_norm_epsilon: float = 1e-6
  # Activations (matmul inputs); T5X trains in bfloat16, tests on CPU use float32.
  dtype: str = "float32"
  # Storage dtype of parameters created by `init`.
  param_dtype: str = "float32"
  # Activation rematerialisation: "none", "full" (per layer), or "dots" (save matmuls).
  remat_policy: str = "none"
  # How attention is computed outside cached decoding: "einsum" (explicit, as T5X) or
  # jax.nn.dot_product_attention's "xla" or "cudnn" (fused flash attention on NVIDIA
  # GPUs, bfloat16/float16 only). All give the same values up to rounding.
  attention_implementation: str = "einsum"

  @property
  def activation_dtype(self) -> Any:
    return jnp.dtype(self.dtype)

  @property
  def parameter_dtype(self) -> Any:
    return jnp.dtype(self.param_dtype)

  @classmethod
  def from_size(cls, name: str, **overrides: Any) -> "T5Config":
    """The config of a named size (`tiny`, `small` ... `xxl`, `mt5_small` ... `mt5_xxl`)."""
    key = name.lower().replace("-", "_")
    if key.startswith("t5_1_1_"):
      key = key[len("t5_1_1_") :]
    if key not in SIZES:
      raise ValueError(f"unknown model size {name!r}; choose one of: {', '.join(SIZES)}")
    return dataclasses.replace(SIZES[key], **overrides)

  def replace(self, **overrides: Any) -> "T5Config":
    return dataclasses.replace(self, **overrides)


def _t5(
  emb: int,
  heads: int,
  layers: int,
  mlp: int,
  vocab: int = T5_VOCAB_SIZE,
  dec_layers: int | None = None,
) -> T5Config:
  return T5Config(
    vocab_size=vocab,
    emb_dim=emb,
    num_heads=heads,
    head_dim=64,
    num_encoder_layers=layers,
    num_decoder_layers=layers if dec_layers is None else dec_layers,
    mlp_dim=mlp,
  )


SIZES: dict[str, T5Config] = {
  # Test-sized: shapes small enough to compile in seconds on one CPU core.
  "tiny": T5Config(
    vocab_size=T5_VOCAB_SIZE,
    emb_dim=32,
    num_heads=4,
    head_dim=8,
    num_encoder_layers=2,
    num_decoder_layers=2,
    mlp_dim=64,
  ),
  "small": _t5(512, 6, 8, 1024),
  "base": _t5(768, 12, 12, 2048),
  "large": _t5(1024, 16, 24, 2816),
  "xl": _t5(2048, 32, 24, 5120),
  "xxl": _t5(4096, 64, 24, 10240),
  "mt5_small": _t5(512, 6, 8, 1024, MT5_VOCAB_SIZE),
  "mt5_base": _t5(768, 12, 12, 2048, MT5_VOCAB_SIZE),
  "mt5_large": _t5(1024, 16, 24, 2816, MT5_VOCAB_SIZE),
  "mt5_xl": _t5(2048, 32, 24, 5120, MT5_VOCAB_SIZE),
  "mt5_xxl": _t5(4096, 64, 24, 10240, MT5_VOCAB_SIZE),
}
