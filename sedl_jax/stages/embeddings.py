"""Frozen-encoder embeddings of every static image and every sequence frame,
computed once per contrastive checkpoint (its save id), dataset and encoder config,
cached in `workdir/cache/` so the temporal, behaviour and report stages and
reruns share them (`Context.embeddings` holds them within a run)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import jax
import numpy as np

from sedl_jax import atomic_io
from sedl_jax.data.types import SPLITS
from sedl_jax.stages import pretrain
from sedl_jax.train.checkpoint import StageCheckpoints
from sedl_jax.train.mesh import barrier


@dataclasses.dataclass
class Embeddings:
  """Encoder features (not normalised): images[split] [N, D], frames[split]
  [S, T, D] (empty when the data has no sequences)."""

  step: int
  images: dict[str, np.ndarray]
  frames: dict[str, np.ndarray]

  def eval_features(self, split: str) -> np.ndarray:
    """[M, D] features of `FaceData.eval_set(split)`, in the same order."""
    if self.frames:
      return self.frames[split].reshape(-1, self.frames[split].shape[-1])
    return self.images[split]

  def unit_frames(self, split: str) -> np.ndarray:
    """L2-normalised frame embeddings, the temporal model's inputs and targets."""
    return unit_norm(self.frames[split])

  def pooled(self, data, split: str, use_sequence_frames: bool = True) -> np.ndarray:
    """Features of `data.faces(split, ...)`, in the same order."""
    parts = [self.images[split]]
    if data.adds_frames(split, use_sequence_frames):
      parts.append(self.frames[split].reshape(-1, self.frames[split].shape[-1]))
    return np.concatenate(parts)


def unit_norm(x: np.ndarray) -> np.ndarray:
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-8)


def _cache_path(ctx, meta: dict) -> str:
  # The checkpoint's save id names exactly those weights: retraining to the same
  # step with another seed or learning rate gives another id, hence another file.
  key = hashlib.sha256(json.dumps({"save_id": meta.get("save_id"), "step": meta["step"],
                                   "model": ctx.config.model.to_dict()},
                                  sort_keys=True).encode()).hexdigest()[:12]
  return os.path.join(ctx.workdir, "cache",
                      f"embeddings_step{meta['step']}_{ctx.data.fingerprint}_{key}.npz")


def _read(path: str, step: int) -> Embeddings:
  with np.load(path) as z:
    return Embeddings(step, {s: z[f"images_{s}"] for s in SPLITS},
                      {s: z[f"frames_{s}"] for s in SPLITS if f"frames_{s}" in z})


def _compute(ctx, embed) -> dict:
  data = ctx.data
  images = {s: embed(data.images[s].images) if len(data.images[s]) else np.zeros((0, 0))
            for s in SPLITS}
  frames = {}
  for s in SPLITS if data.sequences is not None else ():
    f = data.sequences[s].frames
    frames[s] = embed(f.reshape(-1, *f.shape[2:])).reshape(f.shape[0], f.shape[1], -1)
  return images, frames


def load(ctx, embed=None) -> Embeddings:
  """Embeddings by the latest contrastive checkpoint: read from the cache, or
  computed with `embed` (uint8 images -> features; by default the restored
  encoder) and cached. Process 0 writes; the others wait, then go on."""
  with StageCheckpoints(ctx.workdir, "contrastive") as ckpt:
    meta = ckpt.read_meta()
  path = _cache_path(ctx, meta)
  if os.path.exists(path):
    return _read(path, int(meta["step"]))
  if embed is None:
    predict = pretrain.predictor(ctx, pretrain.restore(ctx, "contrastive"), "contrastive")
    embed = lambda images: predict(images)[0]
  images, frames = _compute(ctx, embed)
  if jax.process_index() == 0:
    atomic_io.savez(path, **{f"images_{s}": images[s] for s in SPLITS},
                    **{f"frames_{s}": frames[s] for s in frames})
  barrier("sedl_jax embeddings cached")
  return Embeddings(int(meta["step"]), images, frames)
