"""One XLA CPU device per usable core, chosen before JAX starts its backend.

XLA's CPU convolutions use little more than one core per device: on a 2-core
machine the quick contrastive step ran at 168-188 images/s on one device and
293 images/s on two, the batch split over the `data` mesh (issue 16). So on
the CPU the launcher asks XLA for one device per core unless the user chose
(`XLA_FLAGS=--xla_force_host_platform_device_count=N` or `--cpu_devices=N`).
On a GPU host the setting only shapes the unused CPU client.
"""

from __future__ import annotations

import math
import os

from sedl_jax import xla_flags

_FLAG = "--xla_force_host_platform_device_count"


def usable_cores() -> int:
  """Cores this process may run on (its CPU affinity), not the machine's count."""
  if hasattr(os, "sched_getaffinity"):
    return max(1, len(os.sched_getaffinity(0)))
  return max(1, os.cpu_count() or 1)


def user_chose(env=os.environ) -> bool:
  return _FLAG in env.get("XLA_FLAGS", "")


def largest_fitting(cores: int, batch_sizes) -> int:
  """The largest device count <= cores that divides every global batch size."""
  g = 0
  for b in batch_sizes:
    g = math.gcd(g, int(b))
  if g == 0:
    return cores
  return max(d for d in range(1, cores + 1) if g % d == 0)


def choose(flag: str, batch_sizes=(), env=os.environ) -> tuple[int | None, str]:
  """(device count to request or None to leave XLA alone, a note for the user or '').

  flag: `auto` (one per usable core, lowered to the largest count that divides
  every batch size) or a positive integer (exactly that; the config check then
  names a batch size that does not divide it).
  """
  if user_chose(env):
    return None, ""
  if flag == "auto":
    cores = usable_cores()
    n = largest_fitting(cores, batch_sizes)
    note = ""
    if n < cores:
      note = (f"[devices] {cores} usable cores, but the batch sizes {sorted(set(batch_sizes))} "
              f"divide {n} devices at most: using {n} XLA CPU devices")
    return n, note
  try:
    n = int(flag)
  except ValueError:
    n = 0
  if n < 1:
    raise ValueError(f"--cpu_devices={flag!r}: expected 'auto' or a positive integer")
  return n, ""


def apply(n: int | None, env=None) -> None:
  """Adds the device count to XLA_FLAGS (of this process unless `env` is given);
  must run before the JAX backend starts. Child processes inherit it."""
  if n is not None:
    xla_flags.add(f"{_FLAG}={n}", env)
