"""CARD's noise network eps_theta(x features, y_t, y_hat, t) (methods.md section 8)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sedl_jax.models.softplus import softplus


class GatedLinear(nn.Module):
  """Linear map gated elementwise by a learned per-timestep vector Embedding(T, H)[t]."""

  features: int
  timesteps: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, t):
    h = nn.Dense(self.features, dtype=self.dtype, name="linear")(x)
    # CARD initialises the gates uniform in [0, 1).
    gate = nn.Embed(self.timesteps, self.features, embedding_init=nn.initializers.uniform(1.0),
                    dtype=self.dtype, name="gate")(t)
    return gate * h


class XBranch(nn.Module):
  """Frozen-encoder features -> width H; independent of t and y_t, so sampling
  computes it once per image."""

  hidden: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h, train: bool = False):
    x = nn.Dense(self.hidden, dtype=self.dtype, name="proj")(h)
    # Flax computes BN statistics in float32 whatever the compute dtype.
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype,
                        name="norm")(x)


class YBranch(nn.Module):
  """concat[y_t, y_hat] -> gated layers with BN + softplus, times the x feature -> eps."""

  num_classes: int
  hidden: int
  timesteps: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_feat, y_t, y_hat, t, train: bool = False):
    norm = lambda name: nn.BatchNorm(use_running_average=not train, momentum=0.9,
                                     dtype=self.dtype, name=name)
    gated = lambda name: GatedLinear(self.hidden, self.timesteps, self.dtype, name=name)
    y = jnp.concatenate([y_t, y_hat], axis=-1)
    y = softplus(norm("norm1")(gated("lin1")(y, t)))
    y = x_feat * y
    y = softplus(norm("norm2")(gated("lin2")(y, t)))
    y = softplus(norm("norm3")(gated("lin3")(y, t)))
    # eps in float32: the loss and the reverse chain's y_t stay float32.
    return nn.Dense(self.num_classes, dtype=self.dtype, name="out")(y).astype(jnp.float32)


class NoiseNet(nn.Module):
  num_classes: int
  hidden: int
  timesteps: int
  dtype: Any = jnp.float32  # compute; parameters and BN statistics stay float32

  def setup(self):
    self.x_branch = XBranch(self.hidden, self.dtype)
    self.y_branch = YBranch(self.num_classes, self.hidden, self.timesteps, self.dtype)

  def __call__(self, h, y_t, y_hat, t, train: bool = False):
    return self.y_branch(self.x_branch(h, train), y_t, y_hat, t, train)

  def embed_x(self, h):
    return self.x_branch(h, False)

  def eps_from_x(self, x_feat, y_t, y_hat, t):
    return self.y_branch(x_feat, y_t, y_hat, t, False)
