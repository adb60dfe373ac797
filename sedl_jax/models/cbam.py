"""CBAM (Woo et al. 2018): channel gate then spatial gate, as the official code."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp


class ChannelGate(nn.Module):
  """Shared MLP C -> C/r -> C on avg- and max-pooled features; sum; sigmoid."""

  reduction: int = 16
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    hidden = max(1, c // self.reduction)
    mlp = nn.Sequential([nn.Dense(hidden, dtype=self.dtype, name="fc1"), nn.relu,
                         nn.Dense(c, dtype=self.dtype, name="fc2")])
    att = mlp(jnp.mean(x, axis=(1, 2))) + mlp(jnp.max(x, axis=(1, 2)))
    return x * nn.sigmoid(att)[:, None, None, :]


class SpatialGate(nn.Module):
  """concat[max, mean over channels] -> 7x7 conv (no bias) -> BN -> sigmoid.

  The BN scale starts at 0 (official init), so the gate starts at exactly 0.5.
  """

  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    pooled = jnp.concatenate([jnp.max(x, axis=-1, keepdims=True),
                              jnp.mean(x, axis=-1, keepdims=True)], axis=-1)
    y = nn.Conv(1, (7, 7), padding=3, use_bias=False, dtype=self.dtype, name="conv")(pooled)
    y = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                     scale_init=nn.initializers.zeros, dtype=self.dtype, name="bn")(y)
    return x * nn.sigmoid(y)


class CBAM(nn.Module):
  reduction: int = 16
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    x = ChannelGate(self.reduction, self.dtype, name="channel")(x)
    return SpatialGate(self.dtype, name="spatial")(x, train)
