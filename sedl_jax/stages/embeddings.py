"""Frozen-encoder embeddings of every static image and every sequence frame,
computed once per (contrastive checkpoint step, dataset, encoder config) and cached in
`workdir/cache/` so the temporal, behaviour and report stages and reruns share
them."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import jax
import numpy as np

from sedl_jax.data.types import SPLITS
from sedl_jax.stages import pretrain
from sedl_jax.train.checkpoint import StageCheckpoints


@dataclasses.dataclass
class Embeddings:
  """Encoder features (not normalised): images[split] [N, D], frames[split]
  [S, T, D] (empty when the data has no sequences)."""

  step: int
  images: dict[str, np.ndarray]
  frames: dict[str, np.ndarray]

  def eval_features(self, split: str) -> np.ndarray:
    """[M, D] features of the split's evaluation set (see `eval_set`)."""
    if self.frames:
      return self.frames[split].reshape(-1, self.frames[split].shape[-1])
    return self.images[split]

  def unit_frames(self, split: str) -> np.ndarray:
    """L2-normalised frame embeddings, the temporal model's inputs and targets."""
    return unit_norm(self.frames[split])


def unit_norm(x: np.ndarray) -> np.ndarray:
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-8)


def eval_set(data, split: str) -> tuple[np.ndarray, np.ndarray]:
  """(images [M, H, W, C], labels [M]) a split is scored on: every frame of its
  sequences, or its static images when the data has no sequences."""
  if data.sequences is None:
    return data.images[split].images, data.images[split].labels
  seq = data.sequences[split]
  return seq.frames.reshape(-1, *seq.frames.shape[2:]), seq.labels.reshape(-1)


def load(ctx) -> Embeddings:
  """Cached embeddings for the latest contrastive checkpoint (computed when absent)."""
  if "embeddings" in ctx.shared:
    return ctx.shared["embeddings"]
  data = ctx.data
  ckpt = StageCheckpoints(ctx.workdir, "contrastive")
  step = ckpt.latest_step()
  ckpt.close()
  # The key names the checkpoint step, the data and the encoder's config.
  model_key = hashlib.sha256(json.dumps(ctx.config.model.to_dict(), sort_keys=True).encode())
  cache_file = lambda step: os.path.join(
      ctx.workdir, "cache", f"embeddings_step{step}_{data.fingerprint}_{model_key.hexdigest()[:8]}.npz")
  path = cache_file(step)
  if step is not None and os.path.exists(path):
    with np.load(path) as z:
      emb = Embeddings(step, {s: z[f"images_{s}"] for s in SPLITS},
                       {s: z[f"frames_{s}"] for s in SPLITS if f"frames_{s}" in z})
  else:
    embed, step = pretrain.restore_encoder(ctx, "contrastive")
    path = cache_file(step)
    images = {s: embed(data.images[s].images) if len(data.images[s]) else np.zeros((0, 0))
              for s in SPLITS}
    frames = {}
    for s in SPLITS if data.sequences is not None else ():
      f = data.sequences[s].frames
      out = embed(f.reshape(-1, *f.shape[2:]))
      frames[s] = out.reshape(f.shape[0], f.shape[1], -1)
    emb = Embeddings(step, images, frames)
    if jax.process_index() == 0:
      os.makedirs(os.path.dirname(path), exist_ok=True)
      tmp = path + ".tmp.npz"
      np.savez(tmp, **{f"images_{s}": images[s] for s in SPLITS},
               **{f"frames_{s}": frames[s] for s in frames})
      os.replace(tmp, path)
  ctx.shared["embeddings"] = emb
  return emb
