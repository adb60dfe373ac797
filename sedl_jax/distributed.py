"""Multi-process start-up: `jax.distributed` only when the environment asks for it.

Called by `launch.py` before anything touches a JAX backend (nothing in the
package does at import time). Explicit `JAX_COORDINATOR_ADDRESS` /
`JAX_NUM_PROCESSES` / `JAX_PROCESS_ID` always start several processes; SLURM and
Open MPI variables do only when their task count is > 1 and `--distributed`
(auto | on | off) agrees, because a plain `python` inside an allocation sees
`SLURM_NTASKS` too.
"""

from __future__ import annotations

import os

import jax

MODES = ("auto", "on", "off")
_JAX_VARS = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
# Cluster launchers: the task-count variable, and the one saying which task this is.
_CLUSTER_VARS = (("SLURM_NTASKS", "SLURM_PROCID"), ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"))


class DistributedConfigError(ValueError):
  """An environment variable for a multi-process start is malformed; names it."""


def _int_var(env, name: str, minimum: int) -> int:
  raw = env.get(name, "")
  try:
    value = int(raw)
  except ValueError:
    raise DistributedConfigError(f"environment variable {name}={raw!r}: expected an integer") from None
  if value < minimum:
    raise DistributedConfigError(f"environment variable {name}={raw!r}: must be >= {minimum}")
  return value


def plan(mode: str = "auto", env=os.environ) -> dict | None:
  """The `jax.distributed.initialize` arguments this environment asks for, or None
  for a single process. Raises DistributedConfigError naming a malformed variable."""
  if mode not in MODES:
    raise DistributedConfigError(f"--distributed={mode!r}: expected one of {MODES}")
  if mode == "off":
    return None
  if any(env.get(k) for k in _JAX_VARS):
    missing = [k for k in _JAX_VARS if not env.get(k)]
    if missing:
      raise DistributedConfigError(
          f"environment variables {', '.join(missing)} are not set; a multi-process start needs "
          f"all of {', '.join(_JAX_VARS)}")
    address = env["JAX_COORDINATOR_ADDRESS"]
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
      raise DistributedConfigError(
          f"environment variable JAX_COORDINATOR_ADDRESS={address!r}: expected HOST:PORT")
    n = _int_var(env, "JAX_NUM_PROCESSES", 1)
    pid = _int_var(env, "JAX_PROCESS_ID", 0)
    if pid >= n:
      raise DistributedConfigError(
          f"environment variable JAX_PROCESS_ID={pid}: must be < JAX_NUM_PROCESSES={n}")
    if n == 1 and mode == "auto":
      return None
    return {"coordinator_address": address, "num_processes": n, "process_id": pid}
  for size_var, rank_var in _CLUSTER_VARS:
    if env.get(size_var):
      n = _int_var(env, size_var, 1)
      if n > 1 or mode == "on":
        _int_var(env, rank_var, 0)
        return {}  # jax.distributed finds the coordinator through the cluster environment
  if mode == "on":
    raise DistributedConfigError(
        "--distributed=on, but neither JAX_COORDINATOR_ADDRESS/JAX_NUM_PROCESSES/JAX_PROCESS_ID "
        "nor a SLURM / Open MPI task count is set")
  return None


def maybe_initialize(mode: str = "auto", env=os.environ, heartbeat_timeout_s: int = 100) -> bool:
  """Starts jax.distributed when `plan` says so; returns whether it did.

  A process that dies (killed, out of memory, a lost host) stops sending
  heartbeats: after `heartbeat_timeout_s` the coordination service tells every
  other process, which then aborts instead of waiting in a collective forever.
  Each stage resumes from its last checkpoint when the command is started again.
  """
  args = plan(mode, env)
  if args is None:
    return False
  if heartbeat_timeout_s < 1:
    raise DistributedConfigError(f"--distributed_heartbeat_s={heartbeat_timeout_s}: must be >= 1")
  jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU hosts; ignored on GPU
  jax.distributed.initialize(**args, heartbeat_timeout_seconds=int(heartbeat_timeout_s))
  return True
