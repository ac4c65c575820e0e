"""The T5 1.1 encoder-decoder, laid out so that T5X checkpoints load into it unchanged.

The parameter tree is T5X's (`token_embedder/embedding`, `encoder/layers_0/attention/
query/kernel`, `decoder/logits_dense/kernel`, ...). The backbone knows two hooks for
trainable additions and nothing else about them (docs/design.md, "The prompt contract"):

1. `input_prompt`: a module factory; its module is called as
   `prompt(embedded, prompt_inputs)` after the token embedding and returns only the prompt
   rows, [batch, P, d] or [P, d] for every row alike. `prompt_inputs` is the one mapping
   of per-example prompt inputs (e.g. `prompt_ids`), or None. `prepend_prompt` puts the
   rows in front of the embedded tokens and builds the encoder mask: prompt positions
   always visible, then the tokens that are not padding. `encode` returns that mask with
   the encoded sequence (`Encoded`), and the decoder's cross-attention uses it as given.
2. `layer_prefix`: a module factory called once per stack as
   `layer_prefix(config=..., stack="encoder"|"decoder", name="layer_prompt")`; its
   module takes no arguments and returns one `layers.LayerPrefix` (or None) per layer:
   extra keys/values for the layer's attention (Prefix-Tuning) or extra hidden positions
   (P-Tuning v2 deep prompts), scalings of the layer's keys, values and MLP state (IA3),
   or a rewrite of the input prompt's positions before the layer (per-layer prompts).
   Its parameters live under `{stack}/layer_prompt/...`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Optional

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp

from prompt_tuning.t5 import layers
from prompt_tuning.t5.config import T5Config

Array = jax.Array
PromptFactory = Callable[..., nn.Module]
PromptInputs = Optional[Mapping[str, Array]]


def _remat(
  module_class: type[nn.Module], policy_name: str, static_argnums: tuple[int, ...]
) -> type[nn.Module]:
  """Wraps a layer class in activation rematerialisation, as chosen by the config."""
  if policy_name == "none":
    return module_class
  policies = {
    "full": None,  # Save nothing inside the layer; recompute everything.
    "dots": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
  }
  if policy_name not in policies:
    raise ValueError(
      f"unknown remat_policy {policy_name!r}; choose 'none' or one of {sorted(policies)}"
    )
  # Argument 0 is the module itself; the boolean mode flags are static.
  return nn.remat(module_class, policy=policies[policy_name], static_argnums=static_argnums)


class Encoded(NamedTuple):
  """The encoder's output and which of its positions are real: what `decode` needs.

  The mask is built once, where the prompt rows meet the tokens (`prepend_prompt`), so
  nothing downstream has to know how long the prompt was or where it went.
  """

  sequence: Array  # [batch, P + L, embed]
  mask: Array  # [batch, P + L], bool


def prepend_prompt(prompt: Array | None, embedded: Array, tokens: Array) -> tuple[Array, Array]:
  """(prompt rows ++ embedded tokens, their mask): the one place prompts meet the input.

  `prompt` is [batch, P, d], [P, d] (the same rows for every example) or None. Prompt
  positions are always visible; token positions are visible where `tokens > 0`.
  """
  token_mask = tokens > 0
  if prompt is None or prompt.shape[-2] == 0:
    return embedded, token_mask
  batch, _, width = embedded.shape
  if prompt.ndim == 2:
    prompt = jnp.broadcast_to(prompt[None], (batch,) + prompt.shape)
  if prompt.ndim != 3 or prompt.shape[0] != batch or prompt.shape[2] != width:
    raise ValueError(
      f"the input prompt gave rows of shape {tuple(prompt.shape)}; expected "
      f"[{batch}, P, {width}] or [P, {width}]"
    )
  length = prompt.shape[1]
  mask = jnp.concatenate([jnp.ones((batch, length), bool), token_mask], axis=1)
  return jnp.concatenate([prompt.astype(embedded.dtype), embedded], axis=1), mask


# Which attention between the input prompt and the input tokens the encoder allows
# (the upstream's `extended/masks.py` names). Inputs always see inputs and the prompt;
# without "prompt->prompt" (or its causal form) a prompt position sees only itself.
INPUT_INPUT, INPUT_PROMPT = "input->input", "input->prompt"
PROMPT_INPUT, PROMPT_PROMPT, PROMPT_PROMPT_CAUSAL = (
  "prompt->input",
  "prompt->prompt",
  "prompt->prompt;causal",
)
VISIBILITIES = (INPUT_INPUT, INPUT_PROMPT, PROMPT_INPUT, PROMPT_PROMPT, PROMPT_PROMPT_CAUSAL)
# The encoder-decoder default: everything sees everything real.
ALL_VISIBLE = (INPUT_INPUT, INPUT_PROMPT, PROMPT_INPUT, PROMPT_PROMPT)


def check_visibility(visibility: tuple[str, ...]) -> frozenset[str]:
  """The visibility set, with the always-on pairs added and the causal form winning
  over plain prompt->prompt (as the upstream does)."""
  unknown = [v for v in visibility if v not in VISIBILITIES]
  if unknown:
    raise ValueError(f"unknown prompt visibility {unknown}; choose from {', '.join(VISIBILITIES)}")
  chosen = set(visibility) | {INPUT_INPUT, INPUT_PROMPT}
  if PROMPT_PROMPT_CAUSAL in chosen:
    chosen.discard(PROMPT_PROMPT)
  return frozenset(chosen)


def prompt_attention_mask(mask: Array, prompt_length: int, visibility: frozenset[str]) -> Array:
  """[batch, 1, P + L, P + L] encoder self-attention mask with the prompt's visibility;
  `mask` [batch, P + L] says which positions are real (`prepend_prompt`)."""
  full = layers.attention_mask(mask, mask)
  if visibility >= set(ALL_VISIBLE) or prompt_length == 0:
    return full
  length = mask.shape[1]
  query_is_prompt = (jnp.arange(length) < prompt_length)[:, None]
  key_is_prompt = (jnp.arange(length) < prompt_length)[None, :]
  if PROMPT_PROMPT in visibility:
    prompt_sees_prompt = key_is_prompt
  elif PROMPT_PROMPT_CAUSAL in visibility:
    prompt_sees_prompt = key_is_prompt & jnp.tril(jnp.ones((length, length), bool))
  else:
    prompt_sees_prompt = key_is_prompt & jnp.eye(length, dtype=bool)
  prompt_sees = prompt_sees_prompt | (~key_is_prompt & (PROMPT_INPUT in visibility))
  return full & jnp.where(query_is_prompt, prompt_sees, True)[None, None]


def layer_prefixes(
  factory: Optional[PromptFactory], config: T5Config, stack: str, num_layers: int
) -> list[Optional[layers.LayerPrefix]]:
  """One prefix (or None) per layer of a stack, from the `layer_prefix` hook."""
  if factory is None:
    return [None] * num_layers
  prefixes = list(factory(config=config, stack=stack, name="layer_prompt")())
  if len(prefixes) != num_layers:
    raise ValueError(
      f"the layer prefix module gave {len(prefixes)} prefixes for the "
      f"{num_layers} {stack} layers; it must give one (or None) per layer"
    )
  return prefixes


def _self_prefix_kwargs(prefix: Optional[layers.LayerPrefix], norm: nn.Module) -> dict[str, Any]:
  """Attention keyword arguments of a layer's self-attention prefix; deep-prompt hidden
  positions go through the layer's own pre-attention norm, as its inputs do."""
  if prefix is None:
    return {}
  return {
    "prefix_key_value": layers.self_attention_prefix(prefix),
    "prefix_inputs": None if prefix.hidden is None else norm(prefix.hidden),
    "prefix_bias": prefix.key_bias,
    "key_scale": prefix.key_scale,
    "value_scale": prefix.value_scale,
  }


def _cross_prefix_kwargs(prefix: Optional[layers.LayerPrefix]) -> dict[str, Any]:
  """Attention keyword arguments of a decoder layer's cross-attention prefix."""
  if prefix is None:
    return {}
  return {
    "prefix_key_value": layers.cross_attention_prefix(prefix),
    "key_scale": prefix.cross_key_scale,
    "value_scale": prefix.cross_value_scale,
  }


def rewrite_prompt_positions(x: Array, prefix: Optional[layers.LayerPrefix]) -> Array:
  """A layer's input with its first P positions replaced by (or added to) the per-layer
  prompt `prefix.layer_input` [P, d]; unchanged without one."""
  if prefix is None or prefix.layer_input is None:
    return x
  prompt = jnp.broadcast_to(
    prefix.layer_input.astype(x.dtype)[None], (x.shape[0],) + prefix.layer_input.shape
  )
  length = prompt.shape[1]
  if prefix.combine == "add":
    prompt = prompt + x[:, :length]
  elif prefix.combine != "replace":
    raise ValueError(f"unknown per-layer prompt combine {prefix.combine!r}; use 'replace' or 'add'")
  return jnp.concatenate([prompt, x[:, length:]], axis=1)


def _with_position_bias(
  prefix: Optional[layers.LayerPrefix], relpos: nn.Module, length: int
) -> Optional[layers.LayerPrefix]:
  """A positioned prefix (PEFT's T5 layout, `LayerPrefix.positioned`) with its bias
  columns: the prefix keys are the P positions before the `length` text positions."""
  if prefix is None or not prefix.positioned:
    return prefix
  if prefix.key is None or prefix.hidden is not None or prefix.cross_key is not None:
    raise ValueError("a positioned layer prefix has self-attention keys and values only")
  size = prefix.key.shape[0]
  return prefix.replace(key_bias=relpos(length, size, query_offset=size))


def _norm(cfg: T5Config, name: str) -> layers.RMSNorm:
  return layers.RMSNorm(
    cfg.layer_norm_epsilon, cfg.activation_dtype, cfg.parameter_dtype, name=name
  )


def _attention(cfg: T5Config, name: str) -> layers.MultiHeadAttention:
  return layers.MultiHeadAttention(
    cfg.num_heads,
    cfg.head_dim,
    cfg.dropout_rate,
    cfg.activation_dtype,
    cfg.parameter_dtype,
    cfg.attention_implementation,
    name=name,
  )


def _residual(cfg: T5Config, x: Array, h: Array, deterministic: bool) -> Array:
  """`x + dropout(h)`, dropout shared across positions as in T5X."""
  x = x + nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(h, deterministic)
  return layers.constrain(x, ("batch", "length", "embed"))


def _mlp_block(
  cfg: T5Config, x: Array, deterministic: bool, prefix: Optional[layers.LayerPrefix] = None
) -> Array:
  """The gated-GELU MLP sublayer that closes every encoder and decoder layer."""
  h = _norm(cfg, "pre_mlp_layer_norm")(x)
  h = layers.GatedMlp(
    cfg.mlp_dim,
    cfg.mlp_activations,
    cfg.dropout_rate,
    cfg.activation_dtype,
    cfg.parameter_dtype,
    name="mlp",
  )(h, deterministic, hidden_scale=None if prefix is None else prefix.mlp_scale)
  return _residual(cfg, x, h, deterministic)


class EncoderLayer(nn.Module):
  config: T5Config
  relative_embedding: nn.Module

  @nn.compact
  def __call__(
    self, x: Array, bias: Array, deterministic: bool, prefix: Optional[layers.LayerPrefix] = None
  ) -> Array:
    cfg = self.config
    x = rewrite_prompt_positions(x, prefix)
    norm = _norm(cfg, "pre_attention_layer_norm")
    h = norm(x)
    h = _attention(cfg, "attention")(
      h, h, bias, deterministic=deterministic, **_self_prefix_kwargs(prefix, norm)
    )
    x = _residual(cfg, x, h, deterministic)
    return _mlp_block(cfg, x, deterministic, prefix)


class DecoderLayer(nn.Module):
  config: T5Config

  @nn.compact
  def __call__(
    self,
    x: Array,
    encoded: Array | None,
    self_bias: Array,
    deterministic: bool,
    decode: bool,
    cross_bias: Array | None = None,
    prefix: Optional[layers.LayerPrefix] = None,
  ) -> Array:
    cfg = self.config
    norm = _norm(cfg, "pre_self_attention_layer_norm")
    h = norm(x)
    h = _attention(cfg, "self_attention")(
      h,
      h,
      self_bias,
      decode=decode,
      deterministic=deterministic,
      **_self_prefix_kwargs(prefix, norm),
    )
    x = _residual(cfg, x, h, deterministic)
    h = _norm(cfg, "pre_cross_attention_layer_norm")(x)
    h = _attention(cfg, "encoder_decoder_attention")(
      h,
      encoded,
      cross_bias,
      cross_attention=True,
      decode=decode,
      deterministic=deterministic,
      **_cross_prefix_kwargs(prefix),
    )
    x = _residual(cfg, x, h, deterministic)
    return _mlp_block(cfg, x, deterministic, prefix)


class Encoder(nn.Module):
  config: T5Config
  shared_embedding: nn.Module
  input_prompt: Optional[PromptFactory] = None
  layer_prefix: Optional[PromptFactory] = None
  prompt_visibility: tuple[str, ...] = ALL_VISIBLE

  @nn.compact
  def __call__(
    self,
    encoder_input_tokens: Array,
    deterministic: bool = True,
    prompt_inputs: PromptInputs = None,
  ) -> Encoded:
    cfg = self.config
    x = self.shared_embedding(encoder_input_tokens.astype(jnp.int32))
    prompt = None
    if self.input_prompt is not None:
      prompt = self.input_prompt(name="prompt")(x, prompt_inputs)
    elif prompt_inputs:
      raise ValueError(
        f"prompt inputs {sorted(prompt_inputs)} were given but the model "
        "has no input prompt; drop them or configure a multi-prompt module "
        "(prompts.MultiPrompt)"
      )
    x, mask = prepend_prompt(prompt, x, encoder_input_tokens)
    x = layers.constrain(x, ("batch", "length", "embed"))
    x = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(x, deterministic)
    length = x.shape[1]
    relpos = layers.RelativePositionBias(
      cfg.num_heads,
      cfg.relative_attention_num_buckets,
      cfg.relative_attention_max_distance,
      bidirectional=True,
      dtype=cfg.activation_dtype,
      param_dtype=cfg.parameter_dtype,
      name="relpos_bias",
    )
    prompt_length = 0 if prompt is None else prompt.shape[-2]
    visible = prompt_attention_mask(mask, prompt_length, check_visibility(self.prompt_visibility))
    bias = relpos(length, length) + layers.mask_to_bias(visible, cfg.activation_dtype)
    prefixes = layer_prefixes(self.layer_prefix, cfg, "encoder", cfg.num_encoder_layers)
    if any(prefix is not None and prefix.positioned for prefix in prefixes):
      raise ValueError("positioned layer prefixes (PEFT's T5 layout) prefix the decoder only")
    for prefix in prefixes:
      if prefix is not None and prefix.layer_input is not None:
        if prefix.layer_input.shape[0] != prompt_length:
          raise ValueError(
            f"per-layer prompts of length {prefix.layer_input.shape[0]} rewrite the input "
            f"prompt's positions, but the input prompt has {prompt_length}; set the input "
            "prompt's length (PROMPT_LENGTH) to the per-layer prompts' length"
          )
    layer_class = _remat(EncoderLayer, cfg.remat_policy, static_argnums=(3,))
    for i in range(cfg.num_encoder_layers):
      x = layer_class(cfg, relpos, name=f"layers_{i}")(x, bias, deterministic, prefixes[i])
    x = layers.RMSNorm(
      cfg.layer_norm_epsilon, cfg.activation_dtype, cfg.parameter_dtype, name="encoder_norm"
    )(x)
    return Encoded(nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(x, deterministic), mask)


class Decoder(nn.Module):
  config: T5Config
  shared_embedding: nn.Module
  layer_prefix: Optional[PromptFactory] = None

  @nn.compact
  def __call__(
    self,
    encoded: Array | None,
    encoder_mask: Array | None,
    decoder_input_tokens: Array,
    decoder_target_tokens: Array | None,
    deterministic: bool = True,
    decode: bool = False,
    max_decode_length: int | None = None,
  ) -> Array:
    cfg = self.config
    dtype = cfg.activation_dtype
    x = self.shared_embedding(decoder_input_tokens.astype(jnp.int32))
    x = layers.constrain(x, ("batch", "length", "embed"))
    x = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(x, deterministic)

    relpos = layers.RelativePositionBias(
      cfg.num_heads,
      cfg.relative_attention_num_buckets,
      cfg.relative_attention_max_distance,
      bidirectional=False,
      dtype=dtype,
      param_dtype=cfg.parameter_dtype,
      name="relpos_bias",
    )
    if decode:
      # The full-length causal bias; a cached step slices out its own row.
      length = max_decode_length or decoder_input_tokens.shape[1]
      self_bias = relpos(length, length) + layers.mask_to_bias(layers.causal_mask(length), dtype)
    else:
      length = decoder_input_tokens.shape[1]
      if decoder_target_tokens is None:
        valid = jnp.ones(decoder_input_tokens.shape, dtype=bool)
      else:
        valid = decoder_target_tokens > 0
      mask = jnp.logical_and(layers.attention_mask(valid, valid), layers.causal_mask(length))
      self_bias = relpos(length, length) + layers.mask_to_bias(mask, dtype)

    cross_bias = None
    if encoder_mask is not None:
      query_valid = jnp.ones(decoder_input_tokens.shape, dtype=bool)
      if not decode and decoder_target_tokens is not None:
        query_valid = decoder_target_tokens > 0
      cross_bias = layers.mask_to_bias(layers.attention_mask(query_valid, encoder_mask), dtype)

    prefixes = layer_prefixes(self.layer_prefix, cfg, "decoder", cfg.num_decoder_layers)
    if any(prefix is not None and prefix.layer_input is not None for prefix in prefixes):
      raise ValueError("per-layer prompts rewrite encoder positions; the decoder has none")
    prefixes = [_with_position_bias(prefix, relpos, length) for prefix in prefixes]
    layer_class = _remat(DecoderLayer, cfg.remat_policy, static_argnums=(4, 5))
    for i in range(cfg.num_decoder_layers):
      x = layer_class(cfg, name=f"layers_{i}")(
        x, encoded, self_bias, deterministic, decode, cross_bias, prefixes[i]
      )
    x = layers.RMSNorm(cfg.layer_norm_epsilon, dtype, cfg.parameter_dtype, name="decoder_norm")(x)
    x = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(x, deterministic)
    if cfg.logits_via_embedding:
      logits = self.shared_embedding.attend(x) / jnp.sqrt(x.shape[-1]).astype(x.dtype)
    else:
      logits = layers.Dense(
        cfg.vocab_size,
        ("embed", "vocab"),
        dtype=jnp.float32,
        param_dtype=cfg.parameter_dtype,
        name="logits_dense",
      )(x)
    logits = jnp.asarray(logits, jnp.float32)
    return layers.constrain(logits, ("batch", "length", "vocab"))


class Transformer(nn.Module):
  """T5 1.1 encoder-decoder with T5X's call signature.

  `input_prompt` is the factory of the module that gives the soft prompt's rows (None
  for the plain backbone; module docstring, point 1). It is called with `name="prompt"`
  inside the encoder, so its parameters live under `encoder/prompt/...`. `layer_prefix`
  is the per-layer hook (module docstring, point 2); its parameters live under
  `{encoder,decoder}/layer_prompt/`. `prompt_visibility` says which attention between
  the input prompt and the input tokens the encoder allows (`VISIBILITIES`; default all,
  the encoder-decoder setting); the decoder's cross-attention always sees the prompt.
  `head_factory` makes a linear head on the encoder (t5/heads.py; parameters under
  `head/`), which `classify` runs instead of the decoder.
  """

  config: T5Config
  input_prompt: Optional[PromptFactory] = None
  layer_prefix: Optional[PromptFactory] = None
  prompt_visibility: tuple[str, ...] = ALL_VISIBLE
  head_factory: Optional[PromptFactory] = None

  def setup(self) -> None:
    cfg = self.config
    if self.head_factory is not None:
      self.head = self.head_factory()
    self.token_embedder = layers.Embed(
      cfg.vocab_size, cfg.emb_dim, cfg.activation_dtype, cfg.parameter_dtype
    )
    self.encoder = Encoder(
      cfg,
      self.token_embedder,
      self.input_prompt,
      layer_prefix=self.layer_prefix,
      prompt_visibility=tuple(self.prompt_visibility),
    )
    self.decoder = Decoder(cfg, self.token_embedder, layer_prefix=self.layer_prefix)

  def encode(
    self,
    encoder_input_tokens: Array,
    enable_dropout: bool = False,
    prompt_inputs: PromptInputs = None,
  ) -> Encoded:
    """The encoder output [batch, prompt + input length, embed] and its mask.

    `prompt_inputs` (e.g. {"prompt_ids": [batch]}, which row uses which prompt of a
    table) go to the input prompt and nowhere else.
    """
    return self.encoder(
      encoder_input_tokens, deterministic=not enable_dropout, prompt_inputs=prompt_inputs
    )

  def decode(
    self,
    encoded: Array | None,
    encoder_mask: Array | None,
    decoder_input_tokens: Array,
    decoder_target_tokens: Array | None = None,
    enable_dropout: bool = False,
    decode: bool = False,
    max_decode_length: int | None = None,
  ) -> Array:
    """Logits [batch, target length, vocab] given the encoder output and its mask
    (`Encoded.sequence`, `Encoded.mask`; a None mask lets every position be seen).

    With `decode=True` the first call (full target length) creates the key/value cache,
    which keeps the cross-attention mask too, and later calls advance it by one token.
    Steps after the first pass `encoded=None, encoder_mask=None`: cross-attention reuses
    what it cached.
    """
    if encoded is None and not decode:
      raise ValueError("decode() needs the encoder output unless decoding from a cache")
    if encoder_mask is not None and encoder_mask.dtype != jnp.bool_:
      raise ValueError(
        f"encoder_mask must be boolean (Encoded.mask), got dtype "
        f"{encoder_mask.dtype}; pass the mask `encode` returned, not tokens"
      )
    return self.decoder(
      encoded,
      encoder_mask,
      decoder_input_tokens,
      decoder_target_tokens,
      deterministic=not enable_dropout,
      decode=decode,
      max_decode_length=max_decode_length,
    )

  def classify(
    self,
    encoder_input_tokens: Array,
    enable_dropout: bool = False,
    prompt_inputs: PromptInputs = None,
    task_ids: Array | None = None,
  ) -> Array:
    """The head's logits on the encoder states of the input tokens; the decoder and
    the vocabulary projection are not run.

    The input prompt's positions (in front, `prepend_prompt`) are cut off before the
    head, so position i of the logits is token i of `encoder_input_tokens`. `task_ids`
    [batch] pick each row's head of a multi-task head.
    """
    if self.head_factory is None:
      raise ValueError(
        "classify() needs a head: bind network.transformer.head (configs/heads/*.gin)"
      )
    encoded = self.encode(
      encoder_input_tokens, enable_dropout=enable_dropout, prompt_inputs=prompt_inputs
    )
    return self._head_on_inputs(encoded, encoder_input_tokens.shape[1], task_ids)

  def _head_on_inputs(self, encoded: Encoded, input_length: int, task_ids: Array | None) -> Array:
    """The head on the last `input_length` encoder positions (the input prompt's rows
    come first, `prepend_prompt`), with their mask."""
    prompt_length = encoded.sequence.shape[1] - input_length
    return self.head(encoded.sequence[:, prompt_length:], encoded.mask[:, prompt_length:], task_ids)

  def __call__(
    self,
    encoder_input_tokens: Array,
    decoder_input_tokens: Array,
    decoder_target_tokens: Array,
    enable_dropout: bool = False,
    decode: bool = False,
    max_decode_length: int | None = None,
    prompt_inputs: PromptInputs = None,
  ) -> Array:
    encoded = self.encode(
      encoder_input_tokens, enable_dropout=enable_dropout, prompt_inputs=prompt_inputs
    )
    if self.head_factory is not None and self.is_initializing():
      # `init` goes through here: the head's parameters are made with everyone else's.
      task_ids = jnp.zeros(encoder_input_tokens.shape[:1], jnp.int32)
      self._head_on_inputs(encoded, encoder_input_tokens.shape[1], task_ids)
    return self.decode(
      encoded.sequence,
      encoded.mask,
      decoder_input_tokens,
      decoder_target_tokens,
      enable_dropout=enable_dropout,
      decode=decode,
      max_decode_length=max_decode_length,
    )


def _dummy_inputs(batch: int = 1, length: int = 1) -> tuple[Array, Array, Array]:
  tokens = jnp.ones((batch, length), jnp.int32)
  return tokens, tokens, tokens


def abstract_variables(
  config: T5Config,
  input_prompt: Optional[PromptFactory] = None,
  layer_prefix: Optional[PromptFactory] = None,
  head: Optional[PromptFactory] = None,
) -> Any:
  """The boxed (logically partitioned) variable tree as shapes only: no allocation."""
  model = Transformer(
    config, input_prompt=input_prompt, layer_prefix=layer_prefix, head_factory=head
  )
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *_dummy_inputs()))


def abstract_params(
  config: T5Config,
  input_prompt: Optional[PromptFactory] = None,
  layer_prefix: Optional[PromptFactory] = None,
  head: Optional[PromptFactory] = None,
) -> dict[str, Any]:
  """Nested dict of `jax.ShapeDtypeStruct` with T5X's parameter names."""
  return nn.unbox(abstract_variables(config, input_prompt, layer_prefix, head)["params"])


def logical_axes(
  config: T5Config,
  input_prompt: Optional[PromptFactory] = None,
  layer_prefix: Optional[PromptFactory] = None,
  head: Optional[PromptFactory] = None,
) -> dict[str, Any]:
  """Nested dict of `PartitionSpec`s of logical axis names, one per parameter."""
  variables = abstract_variables(config, input_prompt, layer_prefix, head)
  return nn.get_partition_spec(variables)["params"]


def init_params(
  config: T5Config,
  rng: Array,
  input_prompt: Optional[PromptFactory] = None,
  layer_prefix: Optional[PromptFactory] = None,
  head: Optional[PromptFactory] = None,
) -> dict[str, Any]:
  """Randomly initialised parameters (plain arrays, not boxed)."""
  model = Transformer(
    config, input_prompt=input_prompt, layer_prefix=layer_prefix, head_factory=head
  )
  variables = jax.jit(lambda r: model.init(r, *_dummy_inputs()))(rng)
  return nn.unbox(variables["params"])


@gin.configurable(module="network")
def t5_config(size: str = "base", **overrides: Any) -> T5Config:
  """Gin entry point: a named size with field overrides (`network.t5_config.dtype = ...`)."""
  return T5Config.from_size(size, **overrides)


@gin.configurable(module="network")
def transformer(
  config: T5Config = gin.REQUIRED,
  input_prompt: Optional[PromptFactory] = None,
  layer_prefix: Optional[PromptFactory] = None,
  prompt_visibility: tuple[str, ...] = ALL_VISIBLE,
  head: Optional[PromptFactory] = None,
) -> Transformer:
  """Gin entry point for the backbone; `input_prompt` and `layer_prefix` are module
  factories or None (prompts/prefix_tuning.gin and p_tuning_v2.gin bind the second);
  `prompt_visibility` the prompt's encoder attention (configs/prompts/visibility/);
  `head` a linear head's factory (configs/heads/*.gin) or None."""
  check_visibility(tuple(prompt_visibility))
  return Transformer(
    config,
    input_prompt=input_prompt,
    layer_prefix=layer_prefix,
    prompt_visibility=tuple(prompt_visibility),
    head_factory=head,
  )
