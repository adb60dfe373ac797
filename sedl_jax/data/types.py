"""Containers for prepared face data: what every source hands to the stages."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from sedl_jax.data import record_images

SPLITS = ("train", "val", "test")


@dataclasses.dataclass
class ImageSet:
  """Static face images of one split.

  images: uint8 [N, H, W, C] (a NumPy array, or a `RecordImages` whose pixels
  stay in the prepared cache); labels: int32 [N] (-1 = unlabelled);
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
  # Extra unlabelled faces uint8 [U, H, W, C] (`config.data.unlabelled`), for the
  # self-supervised stages only.
  unlabelled: np.ndarray | None = None
  # Real sources: split -> hashes of the source bytes of its items.
  raw_hashes: dict | None = None

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.images["train"].images.shape[1:])

  def adds_frames(self, split: str, use_sequence_frames: bool = True) -> bool:
    """Whether a pool of the split's faces gains its sequence frames: they are
    asked for, exist, and are not already among the static images."""
    return bool(use_sequence_frames and self.sequences is not None and not self.frames_in_images
                and len(self.sequences[split]))

  def faces(self, split: str, *, use_sequence_frames: bool = True,
            frame_labels: bool = True, unlabelled: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(images [N, H, W, C], labels [N]): the split's static images plus its
    sequence frames (see `adds_frames`), the frames' labels kept or set to -1
    (self-supervised stages pretrain on them as unlabelled video), plus, for
    the train split when asked, the extra unlabelled faces (label -1)."""
    images, labels = [self.images[split].images], [self.images[split].labels]
    if self.adds_frames(split, use_sequence_frames):
      seq = self.sequences[split]
      images.append(seq.frames.reshape(-1, *seq.frames.shape[2:]))
      labels.append(seq.labels.reshape(-1) if frame_labels else
                    np.full(images[-1].shape[0], -1, np.int32))
    if unlabelled and split == "train" and self.unlabelled is not None and len(self.unlabelled):
      images.append(self.unlabelled)
      labels.append(np.full(len(self.unlabelled), -1, np.int32))
    return record_images.concatenate(images), np.concatenate(labels).astype(np.int32)

  def labelled_faces(self, split: str, use_sequence_frames: bool = True):
    """`faces` without the unlabelled ones (label -1)."""
    images, labels = self.faces(split, use_sequence_frames=use_sequence_frames)
    keep = labels >= 0
    return images[keep], labels[keep]

  def eval_set(self, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images [M, H, W, C], labels [M]) a split is scored on: every frame of its
    sequences, or its static images when the data has no sequences."""
    if self.sequences is None:
      return self.images[split].images, self.images[split].labels
    seq = self.sequences[split]
    return seq.frames.reshape(-1, *seq.frames.shape[2:]), seq.labels.reshape(-1)

  def eval_groups(self, split: str, static: bool = False) -> np.ndarray:
    """int [M]: the group of each `eval_set` item (of `images[split]` when
    `static`) for confidence intervals: its subject; without one, its sequence;
    a static image without a subject is its own group."""
    if self.sequences is not None and not static:
      seq = self.sequences[split]
      s, t = seq.labels.shape
      subjects = np.repeat(seq.subjects.astype(np.int64), t)
      by_sequence = np.repeat(np.arange(s, dtype=np.int64), t)
    else:
      subjects = self.images[split].subjects.astype(np.int64)
      by_sequence = np.arange(len(subjects), dtype=np.int64)
    # Unknown subjects get ids above every known one.
    return np.where(subjects >= 0, subjects, subjects.max(initial=0) + 1 + by_sequence)


def fingerprint_arrays(*arrays: np.ndarray) -> str:
  """A short content hash, stored in checkpoints to catch a changed dataset."""
  h = hashlib.sha256()
  for a in arrays:
    a = np.ascontiguousarray(a)
    h.update(str((a.shape, a.dtype.str)).encode())
    h.update(a.tobytes())
  return h.hexdigest()[:16]
