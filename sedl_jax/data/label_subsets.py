"""Fewer training labels on the same splits (label-efficiency studies).

A fraction keeps, in every class, round(fraction x its labelled count) training
labels (at least one), drawn with a fixed seed; every other training label
becomes -1 (unlabelled). Val and test are untouched, so every fraction is
scored on the same items. Static images and sequence frames are drawn
separately, each at the fraction.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sedl_jax.data.types import FaceData, ImageSet, SequenceSet


def stratified_keep(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
  """bool mask over `labels`: the labelled items a fraction keeps (label -1 never)."""
  if not 0 < fraction <= 1:
    raise ValueError(f"label fraction {fraction}: must be in (0, 1]")
  labels = np.asarray(labels).ravel()
  keep = np.zeros(len(labels), bool)
  rng = np.random.default_rng(seed)
  for c in np.unique(labels[labels >= 0]):
    members = np.flatnonzero(labels == c)
    k = max(1, int(round(fraction * len(members))))
    keep[rng.permutation(members)[:k]] = True
  return keep


def with_fraction(data: FaceData, fraction: float, seed: int) -> FaceData:
  """`data` with only `fraction` of its training labels (see the module doc);
  trait labels and extra unlabelled faces are dropped (emotion labels only)."""
  if fraction >= 1:
    return data
  train = data.images["train"]
  keep = stratified_keep(train.labels, fraction, seed)
  images = dict(data.images, train=ImageSet(train.images, np.where(keep, train.labels, -1)
                                            .astype(np.int32), train.subjects))
  sequences = None
  if data.sequences is not None:
    seq = data.sequences["train"]
    frame_keep = stratified_keep(seq.labels, fraction, seed + 1).reshape(seq.labels.shape)
    sequences = {s: dataclasses.replace(v, traits=None) for s, v in data.sequences.items()}
    sequences["train"] = SequenceSet(seq.frames, np.where(frame_keep, seq.labels, -1)
                                     .astype(np.int32), seq.subjects, None, seq.levels)
  return dataclasses.replace(data, images=images, sequences=sequences, trait_names=(),
                             unlabelled=None)


def label_counts(data: FaceData, use_sequence_frames: bool = True) -> int:
  """Labelled training faces (images and frames) a classifier would train on."""
  _, labels = data.faces("train", use_sequence_frames=use_sequence_frames)
  return int((labels >= 0).sum())
