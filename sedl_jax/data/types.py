"""Containers for prepared face data: what every source hands to the stages."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

SPLITS = ("train", "val", "test")


@dataclasses.dataclass
class ImageSet:
  """Static face images of one split.

  images: uint8 [N, H, W, C]; labels: int32 [N] (-1 = unlabelled);
  subjects: int32 [N] (-1 = unknown subject).
  """

  images: np.ndarray
  labels: np.ndarray
  subjects: np.ndarray

  def __len__(self) -> int:
    return int(self.images.shape[0])


@dataclasses.dataclass
class SequenceSet:
  """Face sequences (clips) of one split.

  frames: uint8 [S, T, H, W, C]; labels: int32 [S, T] per-frame emotion;
  traits: float32 [S, K] multi-label behaviour traits or None when unlabelled;
  subjects: int32 [S]; levels: int32 [S, T] expression intensity level or None.
  """

  frames: np.ndarray
  labels: np.ndarray
  subjects: np.ndarray
  traits: np.ndarray | None = None
  levels: np.ndarray | None = None

  def __len__(self) -> int:
    return int(self.frames.shape[0])


@dataclasses.dataclass
class FaceData:
  """Everything a pipeline needs from a data source."""

  source: str
  class_names: tuple[str, ...]
  images: dict[str, ImageSet]
  sequences: dict[str, SequenceSet] | None = None
  trait_names: tuple[str, ...] = ()
  fingerprint: str = ""
  # True when every sequence frame is also among `images` (real sequence data),
  # so stages that pool images and frames must not count frames twice.
  frames_in_images: bool = False
  # Real sources: how raw label names were mapped to `class_names`.
  label_map: dict | None = None

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.images["train"].images.shape[1:])


def fingerprint_arrays(*arrays: np.ndarray) -> str:
  """A short content hash, stored in checkpoints to catch a changed dataset."""
  h = hashlib.sha256()
  for a in arrays:
    a = np.ascontiguousarray(a)
    h.update(str((a.shape, a.dtype.str)).encode())
    h.update(a.tobytes())
  return h.hexdigest()[:16]
