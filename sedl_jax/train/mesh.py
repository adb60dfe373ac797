"""A 1-D `data` mesh over all devices: batches sharded, parameters replicated."""

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


def to_host(x) -> np.ndarray:
  """A (possibly multi-host) global array -> the full NumPy array on every host."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))


def barrier(name: str) -> None:
  """Every process waits here (a no-op with one): files process 0 wrote are then there."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)
