"""CARD's noise network eps_theta(x features, y_t, y_hat, t) (methods.md section 8)."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


class GatedLinear(nn.Module):
  """Linear map gated elementwise by a learned per-timestep vector Embedding(T, H)[t]."""

  features: int
  timesteps: int

  @nn.compact
  def __call__(self, x, t):
    h = nn.Dense(self.features, name="linear")(x)
    # CARD initialises the gates uniform in [0, 1).
    gate = nn.Embed(self.timesteps, self.features, embedding_init=nn.initializers.uniform(1.0),
                    name="gate")(t)
    return gate * h


class XBranch(nn.Module):
  """Frozen-encoder features -> width H; independent of t and y_t, so sampling
  computes it once per image."""

  hidden: int

  @nn.compact
  def __call__(self, h, train: bool = False):
    x = nn.Dense(self.hidden, name="proj")(h)
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, name="norm")(x)


class YBranch(nn.Module):
  """concat[y_t, y_hat] -> gated layers with BN + softplus, times the x feature -> eps."""

  num_classes: int
  hidden: int
  timesteps: int

  @nn.compact
  def __call__(self, x_feat, y_t, y_hat, t, train: bool = False):
    norm = lambda name: nn.BatchNorm(use_running_average=not train, momentum=0.9, name=name)
    y = jnp.concatenate([y_t, y_hat], axis=-1)
    y = nn.softplus(norm("norm1")(GatedLinear(self.hidden, self.timesteps, name="lin1")(y, t)))
    y = x_feat * y
    y = nn.softplus(norm("norm2")(GatedLinear(self.hidden, self.timesteps, name="lin2")(y, t)))
    y = nn.softplus(norm("norm3")(GatedLinear(self.hidden, self.timesteps, name="lin3")(y, t)))
    return nn.Dense(self.num_classes, name="out")(y)


class NoiseNet(nn.Module):
  num_classes: int
  hidden: int
  timesteps: int

  def setup(self):
    self.x_branch = XBranch(self.hidden)
    self.y_branch = YBranch(self.num_classes, self.hidden, self.timesteps)

  def __call__(self, h, y_t, y_hat, t, train: bool = False):
    return self.y_branch(self.x_branch(h, train), y_t, y_hat, t, train)

  def embed_x(self, h):
    return self.x_branch(h, False)

  def eps_from_x(self, x_feat, y_t, y_hat, t):
    return self.y_branch(x_feat, y_t, y_hat, t, False)
