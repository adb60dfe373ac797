"""ResNet with BasicBlocks (ResNet18/34), width multiplier, two stems, optional CBAM."""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from sedl_jax.models import conv_input_copy
from sedl_jax.models.cbam import CBAM

BASE_WIDTHS = (64, 128, 256, 512)


class StemConv(nn.Conv):
  """nn.Conv (the same parameters) that can store its input first, for the CPU
  weight gradient (`conv_input_copy`), with its own kernel as the token: the
  stem's input exists before any parameter does. Stored only once the kernel
  exists: `init` needs no backward pass."""

  copy_input: bool = False

  @nn.compact
  def __call__(self, inputs):
    if self.copy_input and self.has_variable("params", "kernel"):
      inputs = conv_input_copy.stored(inputs, self.get_variable("params", "kernel"))
    return super().__call__(inputs)


class BasicBlock(nn.Module):
  filters: int
  strides: int = 1
  cbam: bool = False
  cbam_reduction: int = 16
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool, store_token=None):
    """store_token: when given, each convolution's input is stored first
    (`conv_input_copy.stored` with this token)."""
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                             epsilon=1e-5, dtype=self.dtype)

    def keep(v):
      return v if store_token is None else conv_input_copy.stored(v, store_token)

    # One stored copy of x for conv1 and the projection: XLA merges two identical
    # transposes of x, but not two conditionals.
    residual = x = keep(x)
    y = conv(self.filters, (3, 3), (self.strides, self.strides), padding=1, name="conv1")(x)
    y = nn.relu(norm(name="bn1")(y))
    y = conv(self.filters, (3, 3), padding=1, name="conv2")(keep(y))
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
  copy_conv_inputs: store every convolution's input in training
  (`conv_input_copy`; the registry sets it on the CPU).
  """

  stage_sizes: Sequence[int]
  width: float = 1.0
  stem: str = "small"
  cbam: bool = False
  cbam_reduction: int = 16
  dtype: Any = jnp.float32
  num_classes: int = 0
  copy_conv_inputs: bool = False

  @property
  def feature_dim(self) -> int:
    return max(1, int(round(BASE_WIDTHS[-1] * self.width)))

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.astype(self.dtype)
    w0 = max(1, int(round(BASE_WIDTHS[0] * self.width)))
    store = self.copy_conv_inputs and train and not self.is_initializing()
    stem_conv = functools.partial(StemConv, w0, use_bias=False, dtype=self.dtype,
                                  name="stem_conv", copy_input=store)
    if self.stem == "imagenet":
      x = stem_conv((7, 7), (2, 2), padding=3)(x)
    elif self.stem in ("small", "strided"):
      s = 2 if self.stem == "strided" else 1
      x = stem_conv((3, 3), (s, s), padding=1)(x)
    else:
      raise ValueError(f"config.model.stem={self.stem!r}: expected 'imagenet', 'strided' or 'small'")
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                     dtype=self.dtype, name="stem_bn")(x)
    x = nn.relu(x)
    if self.stem == "imagenet":
      x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    # Every block's stored copies share one token, the stem kernel.
    token = self.variables["params"]["stem_conv"]["kernel"] if store else None
    for i, n_blocks in enumerate(self.stage_sizes):
      filters = max(1, int(round(BASE_WIDTHS[i] * self.width)))
      for j in range(n_blocks):
        strides = 2 if (i > 0 and j == 0) else 1
        x = BasicBlock(filters, strides, self.cbam, self.cbam_reduction, self.dtype,
                       name=f"stage{i + 1}_block{j + 1}")(x, train, token)
    h = jnp.mean(x, axis=(1, 2)).astype(jnp.float32)
    if self.num_classes:
      return nn.Dense(self.num_classes, name="head")(h)
    return h
