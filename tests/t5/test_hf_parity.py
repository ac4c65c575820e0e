"""Our Transformer with converted weights computes what Hugging Face's T5 computes.

This is the end-to-end check of both the network (T5 1.1 numerics: RMS norm, gated
GELU, unscaled attention, relative position buckets, untied logits) and the HF name
and layout map. HF's model is built with random (seeded) weights, including an lm_head
different from the embedding, so a swapped or untransposed tensor cannot pass.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from prompt_tuning.convert import hf_to_params, params_to_hf  # noqa: E402
from prompt_tuning.t5 import T5Config, Transformer  # noqa: E402


def _no_init_weights():
  """transformers' context that skips weight init (moved between major versions)."""
  for module in ("transformers.initialization", "transformers.modeling_utils"):
    try:
      return getattr(__import__(module, fromlist=["no_init_weights"]), "no_init_weights")()
    except (ImportError, AttributeError):
      continue
  return contextlib.nullcontext()


def _hf_model(config: T5Config, seed: int):
  hf_config = transformers.T5Config(
    vocab_size=config.vocab_size,
    d_model=config.emb_dim,
    d_kv=config.head_dim,
    d_ff=config.mlp_dim,
    num_layers=config.num_encoder_layers,
    num_decoder_layers=config.num_decoder_layers,
    num_heads=config.num_heads,
    relative_attention_num_buckets=config.relative_attention_num_buckets,
    relative_attention_max_distance=config.relative_attention_max_distance,
    feed_forward_proj="gated-gelu",
    tie_word_embeddings=False,
    dropout_rate=0.0,
    layer_norm_epsilon=config.layer_norm_epsilon,
    decoder_start_token_id=0,
  )
  # Every weight is overwritten below, so HF's own (slow) random init is skipped.
  with _no_init_weights():
    model = transformers.T5ForConditionalGeneration(hf_config).eval()
  # The encoder and decoder embed with `shared`; tie them explicitly (skipping init may
  # skip tying). Recent transformers also tie lm_head to the embedding whatever the
  # config says; T5 1.1 has a separate output projection, so give it its own tensor.
  model.set_input_embeddings(model.shared)
  model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "layer_norm" in name:
        p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
      elif "relative_attention_bias" in name:
        p.copy_(0.5 * torch.randn(p.shape, generator=gen))
      elif name == "shared.weight":
        p.copy_(torch.randn(p.shape, generator=gen))
      elif name.endswith((".q.weight")):  # T5's own query init, [out, in].
        p.copy_(torch.randn(p.shape, generator=gen) * (p.shape[1] * config.head_dim) ** -0.5)
      else:  # Linear [out, in]: keep activations O(1) through the stack.
        p.copy_(torch.randn(p.shape, generator=gen) * p.shape[1] ** -0.5)
  assert model.lm_head.weight.data_ptr() != model.shared.weight.data_ptr()
  assert model.encoder.embed_tokens.weight.data_ptr() == model.shared.weight.data_ptr()
  assert model.decoder.embed_tokens.weight.data_ptr() == model.shared.weight.data_ptr()
  return model


def _batch(vocab: int, seed: int):
  """Right-padded inputs and targets of different lengths per row (ids >= 2)."""
  rng = np.random.default_rng(seed)
  enc_lens, dec_lens = [12, 7, 3], [6, 4, 1]
  inputs = np.zeros((3, 12), np.int32)
  targets = np.zeros((3, 6), np.int32)
  for row, (n, m) in enumerate(zip(enc_lens, dec_lens)):
    inputs[row, :n] = rng.integers(2, vocab, n)
    targets[row, :m] = rng.integers(2, vocab, m)
    targets[row, m - 1] = 1  # EOS.
  decoder_inputs = np.zeros_like(targets)
  decoder_inputs[:, 1:] = targets[:, :-1]  # Shifted right; start token 0 = pad.
  return inputs, decoder_inputs, targets


def _compare(config: T5Config, seed: int) -> None:
  model = _hf_model(config, seed)
  params = hf_to_params(model.state_dict(), config)
  inputs, decoder_inputs, targets = _batch(config.vocab_size, seed)

  # One compiled program is much faster on CPU than op-by-op dispatch of 16 layers.
  forward = jax.jit(
    lambda p, x, y, z: Transformer(config).apply({"params": p}, x, y, z, enable_dropout=False)
  )
  ours = forward(
    jax.tree.map(jnp.asarray, params),
    jnp.asarray(inputs),
    jnp.asarray(decoder_inputs),
    jnp.asarray(targets),
  )
  ours = np.asarray(ours, np.float64)

  labels = torch.tensor(np.where(targets > 0, targets, -100), dtype=torch.long)
  with torch.no_grad():
    out = model(
      input_ids=torch.tensor(inputs, dtype=torch.long),
      attention_mask=torch.tensor(inputs > 0, dtype=torch.long),
      decoder_input_ids=torch.tensor(decoder_inputs, dtype=torch.long),
      labels=labels,
    )
  theirs = out.logits.numpy().astype(np.float64)

  real = targets > 0
  assert ours.shape == theirs.shape == (*targets.shape, config.vocab_size)
  # Positions past a row's end attend to nothing in T5X's masking and are never used.
  np.testing.assert_allclose(ours[real], theirs[real], atol=1e-4, rtol=0)

  log_probs = jax.nn.log_softmax(ours, axis=-1)
  token_nll = -np.take_along_axis(np.asarray(log_probs), targets[..., None], -1)[..., 0]
  our_loss = float(np.sum(token_nll * real))
  hf_loss = float(out.loss) * int(real.sum())  # HF averages over non-ignored tokens.
  assert our_loss == pytest.approx(hf_loss, rel=1e-5)

  # And back: our tree maps onto exactly HF's tensors.
  back = params_to_hf(params, config)
  state = model.state_dict()
  for key, value in back.items():
    np.testing.assert_array_equal(value, state[key].numpy(), err_msg=key)


def test_tiny_logits_and_loss_match_hugging_face():
  _compare(T5Config.from_size("tiny"), seed=0)


def test_small_shape_logits_match_hugging_face():
  """The real `small` layout (6 heads x 64, 8 + 8 layers): one short batch."""
  _compare(T5Config.from_size("small"), seed=1)
