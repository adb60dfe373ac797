"""A 1-D `data` mesh (every device, or the first few of each process for steps too
small to split): batches sharded, parameters replicated."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


@dataclasses.dataclass(frozen=True)
class DataParallel:
  mesh: Mesh

  @classmethod
  def create(cls, devices=None) -> "DataParallel":
    devices = devices if devices is not None else jax.devices()
    return cls(Mesh(np.asarray(devices), ("data",)))

  @property
  def num_devices(self) -> int:
    return self.mesh.size

  def per_process(self, k: int) -> "DataParallel":
    """The first `k` of every process's devices in this mesh (this mesh itself when
    k <= 0 or no process has more): a stage whose steps are too small to gain from
    more devices trains there, still across every process, so each process keeps
    feeding its block of every batch."""
    devices = list(self.mesh.devices.flat)
    keep = first_per_process(devices, k)
    return self if len(keep) == len(devices) else DataParallel.create(keep)

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  @property
  def batch(self) -> NamedSharding:
    return NamedSharding(self.mesh, P("data"))

  def replicate(self, tree):
    return jax.device_put(tree, self.replicated)

  def shard_local(self, batch):
    """This process's part of the global batch -> one global array per leaf."""
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(self.batch, x), batch)

  def shard_global(self, batch):
    """A batch every process holds in full (evaluation) -> sharded global arrays."""
    def put(x):
      x = np.asarray(x)
      return jax.make_array_from_callback(x.shape, self.batch, lambda idx: x[idx])
    return jax.tree.map(put, batch)

  def jit_step(self, step_fn, donate: bool = True):
    """jit with the state replicated, the batch sharded and the metrics replicated."""
    return jax.jit(step_fn, in_shardings=(self.replicated, self.batch),
                   out_shardings=(self.replicated, self.replicated),
                   donate_argnums=(0,) if donate else ())


def first_per_process(devices, k: int) -> list:
  """The first `k` devices of each process, in the given order (all when k <= 0)."""
  seen: dict[int, int] = {}
  keep = []
  for d in devices:
    seen[d.process_index] = seen.get(d.process_index, 0) + 1
    if k <= 0 or seen[d.process_index] <= k:
      keep.append(d)
  return keep


def to_host(x) -> np.ndarray:
  """A (possibly multi-host) global array -> the full NumPy array on every host."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))


def local_copy(tree):
  """Replicated arrays -> this process's own copy of each, as NumPy; `replicate`
  puts them on another mesh without a transfer between processes (which
  multi-process JAX does not do between different device sets)."""
  return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)


def lead_then_all(what: str, lead_fn, error_type=RuntimeError, max_bytes: int = 4096):
  """Runs `lead_fn` on process 0 while the others wait, and returns its result
  there. Every process then learns whether it failed (process 0's message,
  broadcast): process 0 re-raises its error and the others raise `error_type`
  with the same message, so a failure never leaves the other processes waiting."""
  if jax.process_count() == 1:
    return lead_fn()
  from jax.experimental import multihost_utils
  result, error, message = None, None, b""
  if jax.process_index() == 0:
    try:
      result = lead_fn()
    except Exception as e:  # noqa: BLE001 - re-raised below, on every process
      error, message = e, f"{type(e).__name__}: {e}".encode()[:max_bytes]
  # The broadcast is also the barrier: nobody goes on before process 0 is done.
  shared = multihost_utils.broadcast_one_to_all(
      np.frombuffer(message.ljust(max_bytes, b"\0"), np.uint8))
  text = bytes(np.asarray(shared, np.uint8)).rstrip(b"\0").decode(errors="replace")
  if error is not None:
    raise error
  if text:
    raise error_type(f"process 0 failed while {what}: {text}")
  return result


def barrier(name: str) -> None:
  """Every process waits here (a no-op with one): files process 0 wrote are then there."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)
