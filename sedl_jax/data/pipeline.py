"""grain input pipelines: source -> seeded shuffle -> repeat -> per-process shard
-> batch -> prefetch, resumable at any step.

The stream is a `grain.MapDataset`, so batch k is a pure function of (seed, k):
resuming at step k slices the stream at k and yields exactly the batches an
unbroken run would have. Batches arrive as dicts of NumPy arrays, images uint8.
"""

from __future__ import annotations

from typing import Iterator, Mapping, Sequence

import grain
import numpy as np


class ArraySource:
  """A random-access grain source over equal-length NumPy arrays."""

  def __init__(self, arrays: Mapping[str, np.ndarray]):
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) != 1:
      raise ValueError(f"ArraySource: arrays differ in length: {lengths}")
    self._arrays = dict(arrays)
    self._len = next(iter(lengths.values()))

  def __len__(self) -> int:
    return self._len

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return {k: v[index] for k, v in self._arrays.items()}

  def batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    """Many records at once (one read of the cache for streamed images)."""
    return {k: np.asarray(v[indices]) for k, v in self._arrays.items()}


def _stack(records: Sequence[dict]) -> dict[str, np.ndarray]:
  return {k: np.stack([r[k] for r in records]) for k in records[0]}


def batch_stream(source, *, global_batch: int, seed: int, start_step: int = 0,
                 shuffle: bool = True, process_index: int = 0,
                 process_count: int = 1) -> grain.MapDataset:
  """The endless stream of this process's batches, starting at `start_step`.

  Each global batch holds `global_batch` consecutive records of the shuffled,
  repeated stream; process p takes the p-th contiguous block of it, so the
  processes' batches, concatenated in process order (as
  `jax.make_array_from_process_local_data` does), are exactly the batch one
  process would see: the same examples at the same positions, hence the same
  per-position augmentation keys, whatever the process count.
  """
  if global_batch % process_count:
    raise ValueError(f"global batch {global_batch} is not divisible by {process_count} processes")
  if len(source) == 0:
    raise ValueError("batch_stream: the source is empty")
  # A stream of example indices: batch k's indices are a pure function of (seed, k),
  # and each process reads only its own block of them, in one batched read (a
  # streamed source reads those records from the cache, nothing else).
  ds = grain.MapDataset.range(len(source))
  if shuffle:
    ds = ds.seed(seed).shuffle()
  ds = ds.repeat(None)
  local = global_batch // process_count
  lo = process_index * local
  ds = ds.batch(global_batch, drop_remainder=True)
  read = source.batch if hasattr(source, "batch") else \
      (lambda idx: _stack([source[int(i)] for i in idx]))
  return ds[start_step:].map(lambda idx: read(np.asarray(idx)[lo:lo + local]))


def iterate(stream: grain.MapDataset, *, num_threads: int = 2,
            prefetch: int = 2) -> Iterator[dict[str, np.ndarray]]:
  """Reads the stream with background threads and a prefetch buffer."""
  opts = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
  return iter(stream.to_iter_dataset(opts))


def epoch_batches(source, *, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
  """One ordered pass for evaluation; the last batch is padded and carries a
  `mask` (1 = real example), so shapes stay static for jit."""
  n = len(source)
  for start in range(0, n, batch_size):
    idx = np.arange(start, start + batch_size)
    mask = idx < n
    idx = np.where(mask, idx, n - 1)
    batch = source.batch(idx) if hasattr(source, "batch") else _stack([source[int(i)] for i in idx])
    batch["mask"] = mask
    yield batch
