"""ResNet with BasicBlocks (ResNet18/34), width multiplier, two stems, optional CBAM."""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from sedl_jax.models.cbam import CBAM

BASE_WIDTHS = (64, 128, 256, 512)


class BasicBlock(nn.Module):
  filters: int
  strides: int = 1
  cbam: bool = False
  cbam_reduction: int = 16
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                             epsilon=1e-5, dtype=self.dtype)
    residual = x
    y = conv(self.filters, (3, 3), (self.strides, self.strides), padding=1, name="conv1")(x)
    y = nn.relu(norm(name="bn1")(y))
    y = conv(self.filters, (3, 3), padding=1, name="conv2")(y)
    y = norm(name="bn2")(y)
    if self.cbam:  # after the second conv+BN, before the residual add
      y = CBAM(self.cbam_reduction, self.dtype, name="cbam")(y, train)
    if residual.shape != y.shape:
      residual = conv(self.filters, (1, 1), (self.strides, self.strides), name="proj_conv")(x)
      residual = norm(name="proj_bn")(residual)
    return nn.relu(y + residual)


class ResNet(nn.Module):
  """Returns globally pooled features h [B, 512 * width] in float32.

  stem: "imagenet" (7x7/2 conv + 3x3/2 max-pool, 32x total downsampling),
  "small" (CIFAR: 3x3/1 conv, no pool, 8x) or "strided" (3x3/2 conv, no pool,
  16x: about 4x cheaper than "small" for 48-64 px faces, keeps more detail
  than "imagenet"). num_classes > 0 adds a linear head and
  returns logits instead (used to pin the parameter count).
  """

  stage_sizes: Sequence[int]
  width: float = 1.0
  stem: str = "small"
  cbam: bool = False
  cbam_reduction: int = 16
  dtype: Any = jnp.float32
  num_classes: int = 0

  @property
  def feature_dim(self) -> int:
    return max(1, int(round(BASE_WIDTHS[-1] * self.width)))

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.astype(self.dtype)
    w0 = max(1, int(round(BASE_WIDTHS[0] * self.width)))
    if self.stem == "imagenet":
      x = nn.Conv(w0, (7, 7), (2, 2), padding=3, use_bias=False, dtype=self.dtype, name="stem_conv")(x)
    elif self.stem in ("small", "strided"):
      s = 2 if self.stem == "strided" else 1
      x = nn.Conv(w0, (3, 3), (s, s), padding=1, use_bias=False, dtype=self.dtype, name="stem_conv")(x)
    else:
      raise ValueError(f"config.model.stem={self.stem!r}: expected 'imagenet', 'strided' or 'small'")
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                     dtype=self.dtype, name="stem_bn")(x)
    x = nn.relu(x)
    if self.stem == "imagenet":
      x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    for i, n_blocks in enumerate(self.stage_sizes):
      filters = max(1, int(round(BASE_WIDTHS[i] * self.width)))
      for j in range(n_blocks):
        strides = 2 if (i > 0 and j == 0) else 1
        x = BasicBlock(filters, strides, self.cbam, self.cbam_reduction, self.dtype,
                       name=f"stage{i + 1}_block{j + 1}")(x, train)
    h = jnp.mean(x, axis=(1, 2)).astype(jnp.float32)
    if self.num_classes:
      return nn.Dense(self.num_classes, name="head")(h)
    return h
