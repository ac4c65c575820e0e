"""Adafactor as T5X and the paper use it, built from optax transformations.

Paper settings (Lester et al. 2021, following T5X): learning rate 0.3 constant, decay rate 0.8
(beta2_t = 1 - (t+1)^-0.8), update clipping at RMS 1.0, epsilon 1e-30, no momentum, no
parameter scaling, weight decay 1e-5 applied as `p <- (1 - wd) p - lr u` (decoupled from
the learning rate, unlike optax.adafactor's `weight_decay_rate`), and second moments
factored only for parameters whose two largest dimensions are both >= 128 (so a
[100, d] prompt keeps an unfactored second moment).
"""

from __future__ import annotations

from typing import Callable

import gin
import optax

Schedule = Callable[[int], float]


@gin.configurable
def constant_schedule(value: float = 0.3) -> Schedule:
  return optax.constant_schedule(value)


@gin.configurable
def warmup_constant_schedule(value: float = 1e-3, warmup_steps: int = 100) -> Schedule:
  """Linear warm-up from zero to `value`, then constant: keeps Adam's first steps, whose
  second-moment estimates are poor, from throwing a fresh model off."""
  return optax.join_schedules(
    [optax.linear_schedule(0.0, value, warmup_steps), optax.constant_schedule(value)],
    [warmup_steps],
  )


@gin.configurable
def adafactor(
  learning_rate: float | Schedule = 0.3,
  decay_rate: float = 0.8,
  clipping_threshold: float | None = 1.0,
  weight_decay: float = 1e-5,
  epsilon: float = 1e-30,
  min_dim_size_to_factor: int = 128,
  momentum: float | None = None,
) -> optax.GradientTransformation:
  """T5X-style Adafactor; `learning_rate` may be a number or a step -> rate schedule."""
  steps: list[optax.GradientTransformation] = [
    optax.scale_by_factored_rms(
      factored=True,
      decay_rate=decay_rate,
      step_offset=0,
      min_dim_size_to_factor=min_dim_size_to_factor,
      epsilon=epsilon,
    )
  ]
  if clipping_threshold is not None:
    steps.append(optax.clip_by_block_rms(clipping_threshold))
  if momentum is not None:
    steps.append(optax.ema(momentum, debias=False))
  steps.append(optax.scale_by_learning_rate(learning_rate))
  if weight_decay:
    # Added after the learning rate, so it is not scaled by it: p <- p - lr*u - wd*p.
    steps.append(optax.add_decayed_weights(-weight_decay))
  return optax.chain(*steps)


@gin.configurable
def adamw(
  learning_rate: float | Schedule = 1e-3,
  b1: float = 0.9,
  b2: float = 0.999,
  eps: float = 1e-8,
  weight_decay: float = 0.0,
  clip_global_norm: float | None = 1.0,
) -> optax.GradientTransformation:
  """AdamW, the usual choice for P-Tuning / Prefix-Tuning and for training small models
  from scratch (the demo's LM stage), where Adafactor without parameter scaling needs
  far more steps."""
  steps: list[optax.GradientTransformation] = []
  if clip_global_norm is not None:
    steps.append(optax.clip_by_global_norm(clip_global_norm))
  steps.append(optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay))
  return optax.chain(*steps)
