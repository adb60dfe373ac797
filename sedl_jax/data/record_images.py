"""Images that stay on disk: a uint8 array [..., H, W, C] whose pixels are read
from the prepared ArrayRecord cache only when an item is asked for.

A `RecordImages` holds an integer array of record ids (which reader, which
record), never pixels, so selecting a split, building sequence windows
(`images[windows]`, shape [S, T]), flattening them (`reshape(-1, H, W, C)`) and
pooling splits (`concatenate`) cost a few bytes per image. Pixels are read:

  * one image for an integer index (`images[i]`);
  * a batch, as a NumPy array, for a slice (`images[a:b]`) or through
    `np.asarray(images[index_array])`: the training pipeline reads each process's
    block of every global batch this way (`pipeline.ArraySource.batch`), in one
    batched read, and evaluation passes batch by batch;
  * everything, for `np.asarray(images)` and any other NumPy use (the fallback
    of code that needs the whole array, e.g. pixel baselines).

So host memory during training does not grow with the dataset
(`data.in_memory_max_mb` decides which path a run takes).
"""

from __future__ import annotations

import numpy as np

_SHIFT = 40  # record ids: reader << 40 | position (2^40 records per entry)


class RecordReader:
  """One prepared cache entry, read by position (a TFDS ArrayRecord data source)."""

  def __init__(self, source, image_shape):
    self.source = source
    self.image_shape = tuple(image_shape)

  def read(self, positions: np.ndarray) -> np.ndarray:
    out = np.empty((len(positions), *self.image_shape), np.uint8)
    if len(positions):
      for i, record in enumerate(self.source.__getitems__([int(p) for p in positions])):
        if record is None or record.get("image") is None:
          raise RuntimeError(f"the prepared-data cache {self.source} changed or was deleted "
                             "while this run read it; run again (it will be rebuilt)")
        out[i] = record["image"]
    return out


class RecordImages:
  def __init__(self, readers: tuple, ids: np.ndarray, image_shape):
    self.readers = tuple(readers)
    self.ids = np.asarray(ids, np.int64)
    self.image_shape = tuple(image_shape)

  @classmethod
  def of(cls, reader: RecordReader, positions) -> "RecordImages":
    return cls((reader,), np.asarray(positions, np.int64), reader.image_shape)

  # The ndarray surface the package uses.
  @property
  def shape(self) -> tuple:
    return self.ids.shape + self.image_shape

  @property
  def ndim(self) -> int:
    return len(self.shape)

  @property
  def dtype(self):
    return np.dtype(np.uint8)

  @property
  def nbytes(self) -> int:
    return int(np.prod(self.shape))

  def __len__(self) -> int:
    return int(self.ids.shape[0])

  def __getitem__(self, index):
    if isinstance(index, tuple):
      if len(index) > self.ids.ndim or any(not isinstance(i, (int, np.integer, slice, np.ndarray))
                                           for i in index):
        return np.asarray(self)[index]
    picked = self.ids[index]
    if np.ndim(picked) == 0:
      return self._read(picked.reshape(1))[0]
    if isinstance(index, slice) or (isinstance(index, tuple) and
                                    all(isinstance(i, slice) for i in index)):
      return self._read(picked)  # a batch: pixels
    return RecordImages(self.readers, picked, self.image_shape)  # a selection: ids

  def __iter__(self):
    for start in range(0, len(self), 256):
      yield from self[start:start + 256]

  def reshape(self, *shape):
    shape = shape[0] if len(shape) == 1 and isinstance(shape[0], tuple) else shape
    if tuple(shape[-len(self.image_shape):]) != self.image_shape:
      return np.asarray(self).reshape(shape)
    return RecordImages(self.readers, self.ids.reshape(shape[:-len(self.image_shape)]),
                        self.image_shape)

  def astype(self, dtype, copy=True):
    return np.asarray(self).astype(dtype)

  def __array__(self, dtype=None, copy=None):
    out = self._read(self.ids)
    return out if dtype is None else out.astype(dtype)

  def _read(self, ids: np.ndarray) -> np.ndarray:
    flat = ids.reshape(-1)
    out = np.empty((len(flat), *self.image_shape), np.uint8)
    which, pos = flat >> _SHIFT, flat & ((1 << _SHIFT) - 1)
    for r in np.unique(which):
      sel = np.flatnonzero(which == r)
      out[sel] = self.readers[int(r)].read(pos[sel])
    return out.reshape(*ids.shape, *self.image_shape)


def concatenate(parts):
  """np.concatenate along axis 0, lazily when every part is a `RecordImages`."""
  parts = [p for p in parts]
  if not parts or not all(isinstance(p, RecordImages) for p in parts):
    return np.concatenate([np.asarray(p) for p in parts])
  readers, ids = [], []
  for p in parts:
    remap = []
    for r in p.readers:
      if r not in readers:
        readers.append(r)
      remap.append(readers.index(r))
    which = np.asarray(remap, np.int64)[p.ids >> _SHIFT]
    ids.append((which << _SHIFT) | (p.ids & ((1 << _SHIFT) - 1)))
  return RecordImages(tuple(readers), np.concatenate(ids), parts[0].image_shape)


def is_lazy(x) -> bool:
  return isinstance(x, RecordImages)
