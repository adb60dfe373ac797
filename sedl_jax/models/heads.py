"""Projection heads and classifier heads."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn


class MLPHead(nn.Module):
  """SEDL's projection: h -> hidden -> ReLU -> z (two layers)."""

  hidden: int
  out: int

  @nn.compact
  def __call__(self, h, train: bool = False):
    h = nn.relu(nn.Dense(self.hidden, name="fc1")(h))
    return nn.Dense(self.out, name="fc2")(h)


class MLPBNHead(nn.Module):
  """SimCLR v2 style: three linear layers without bias, BN after each, ReLU between."""

  hidden: int
  out: int

  @nn.compact
  def __call__(self, h, train: bool = False):
    norm = lambda name, **kw: nn.BatchNorm(use_running_average=not train, momentum=0.9, name=name, **kw)
    for i in range(2):
      h = nn.relu(norm(f"bn{i + 1}")(nn.Dense(self.hidden, use_bias=False, name=f"fc{i + 1}")(h)))
    return norm("bn3", use_scale=False)(nn.Dense(self.out, use_bias=False, name="fc3")(h))


class BarlowProjector(nn.Module):
  """Barlow Twins: (Linear no bias -> BN -> ReLU) x (len-1), then Linear no bias."""

  sizes: Sequence[int]

  @nn.compact
  def __call__(self, h, train: bool = False):
    for i, d in enumerate(self.sizes[:-1]):
      h = nn.Dense(d, use_bias=False, name=f"fc{i + 1}")(h)
      h = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, name=f"bn{i + 1}")(h))
    return nn.Dense(self.sizes[-1], use_bias=False, name=f"fc{len(self.sizes)}")(h)
