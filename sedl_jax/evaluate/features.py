"""Batched, jitted inference over whole arrays (static shapes, padded last batch)."""

from __future__ import annotations

from typing import Callable

import jax
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


def image_model(model, dp: DataParallel, batch_size: int,
                select: Callable = lambda out: out) -> Callable:
  """fn(variables, uint8 images [N, H, W, C]) -> select(model outputs) as NumPy,
  for every image model (encoders, classifiers): the one inference path that
  training-time evaluation, reports and prediction share. Build it once: it is
  jitted once per batch shape."""

  @jax.jit
  def infer(variables, batch):
    x = augment.normalize(augment.to_float(batch["image"]))
    return select(model.apply(variables, x, train=False))

  bs = eval_batch_size(batch_size, dp)

  def predict(variables: dict, images: np.ndarray):
    return map_batches(lambda b: infer(variables, b), {"image": images}, batch_size=bs, dp=dp)

  return predict
