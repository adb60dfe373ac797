"""Multi-host start-up: jax.distributed only when the environment asks for it."""

from __future__ import annotations

import os

import jax

_MULTI_PROCESS_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES")


def wants_multiprocess(env=os.environ) -> bool:
  """True when a launcher set up several processes (explicit JAX, SLURM, MPI)."""
  if any(env.get(k) for k in _MULTI_PROCESS_ENV):
    return int(env.get("JAX_NUM_PROCESSES", "2")) > 1
  for key in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE"):
    if int(env.get(key, "1") or 1) > 1:
      return True
  return False


def maybe_initialize() -> None:
  if wants_multiprocess():
    jax.distributed.initialize()
