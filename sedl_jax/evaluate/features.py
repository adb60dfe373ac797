"""Batched, jitted inference over whole arrays (static shapes, padded last batch)."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from sedl_jax.data import augment, pipeline
from sedl_jax.train.mesh import DataParallel, to_host


def eval_batch_size(requested: int, dp: DataParallel) -> int:
  return max(dp.num_devices, (requested // dp.num_devices) * dp.num_devices)


def map_batches(fn: Callable, arrays: dict, *, batch_size: int, dp: DataParallel):
  """Applies a jitted fn(batch dict) -> array [B, ...] (or a tuple of them) to
  every example, in order; returns NumPy arrays of the same structure."""
  src = pipeline.ArraySource(arrays)
  if len(src) == 0:
    raise ValueError("map_batches: no examples")
  outs = []
  for batch in pipeline.epoch_batches(src, batch_size=batch_size):
    mask = batch.pop("mask")
    outs.append(jax.tree.map(lambda a: to_host(a)[mask], fn(dp.shard_global(batch))))
  return jax.tree.map(lambda *parts: np.concatenate(parts), *outs)


TTA_MODES = ("none", "flip", "flip_crops")
# flip_crops: the four corner crops of this fraction of the side, resized back.
TTA_CROP_FRACTION = 0.9


def tta_boxes(mode: str, size: int) -> list[tuple[tuple[float, float, float, float], bool]]:
  """(box (y0, x0, h, w) in pixels, mirrored) of each test-time view."""
  if mode not in TTA_MODES:
    raise ValueError(f"tta={mode!r}: expected one of {TTA_MODES}")
  full = (0.0, 0.0, float(size), float(size))
  boxes = [full]
  if mode == "flip_crops":
    side = TTA_CROP_FRACTION * size
    far = size - side
    boxes += [(y, x, side, side) for y in (0.0, far) for x in (0.0, far)]
  if mode == "none":
    return [(full, False)]
  return [(b, m) for b in boxes for m in (False, True)]


def tta_views(images: jax.Array, mode: str) -> list[jax.Array]:
  """float images [B, H, W, C] in [0, 1] -> one array per test-time view."""
  size = images.shape[1]
  views = []
  for box, mirrored in tta_boxes(mode, size):
    if box == (0.0, 0.0, float(size), float(size)):
      views.append(images[:, :, ::-1] if mirrored else images)
    else:
      crop = lambda img, b=jnp.asarray(box, jnp.float32), m=mirrored: augment.resized_crop(
          img, b, size, mirrored=m)
      views.append(jax.vmap(crop)(images))
  return views


def image_model(model, dp: DataParallel, batch_size: int,
                select: Callable = lambda out: out, tta: str = "none") -> Callable:
  """fn(variables, uint8 images [N, H, W, C]) -> select(model outputs) as NumPy,
  for every image model (encoders, classifiers): the one inference path that
  training-time evaluation, reports and prediction share. Build it once: it is
  jitted once per batch shape.

  tta: test-time views (TTA_MODES) whose outputs are averaged (features and
  logits alike); "none" is the plain image."""
  tta_boxes(tta, 8)  # a clear error for an unknown mode before anything compiles

  @jax.jit
  def infer(variables, batch):
    images = augment.to_float(batch["image"])
    views = tta_views(images, tta)
    if len(views) == 1:
      return select(model.apply(variables, augment.normalize(images), train=False))
    # One model call over every view (inference-mode BatchNorm: a view's output
    # does not depend on the others in the batch), then the mean over views.
    out = select(model.apply(variables, augment.normalize(jnp.concatenate(views)), train=False))
    return jax.tree.map(lambda o: o.reshape(len(views), -1, *o.shape[1:]).mean(0), out)

  bs = eval_batch_size(batch_size, dp)

  def predict(variables: dict, images: np.ndarray):
    return map_batches(lambda b: infer(variables, b), {"image": images}, batch_size=bs, dp=dp)

  return predict
