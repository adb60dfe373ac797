"""Which library runs XLA's CPU convolutions, chosen before JAX starts its backend.

XLA's CPU backend hands convolutions to YNNPACK by default (jaxlib 0.10). On
this project's ResNets (16-128 channels, 3-48 px maps) XLA's older Eigen kernels
run them faster (convolutions and the layout copies around them are nearly all of
the quick contrastive step's op time: issue 16, `bench/profile_step.py`). Taking
convolutions out of YNNPACK's list
(`--xla_cpu_experimental_ynn_fusion_type=-individual_convolution`) sends them to
XLA's Eigen kernels and keeps YNNPACK for the matmuls: on a 2-core AMD EPYC the
quick step ran at 569-585 images/s against 497-512 with XLA's default, in three
alternating rounds.

`auto` asks for that on x86-64 (measured there, with jaxlib 0.10.2) with jaxlib >=
0.8.2, the first whose XLA parses the value: 0.8.1's library has the flag but not
the value `individual_convolution`, and XLA aborts at start-up on a value it cannot
parse (0.8.2 took it, and aborted on a made-up value, in a throwaway venv).
Elsewhere, and when the user's XLA_FLAGS already name the flag, XLA's default stays. Only XLA's CPU backend reads
the flag.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re

from sedl_jax import xla_flags

FLAG = "--xla_cpu_experimental_ynn_fusion_type"
EIGEN_CONVOLUTIONS = f"{FLAG}=-individual_convolution"
FIRST_JAXLIB = (0, 8, 2)
MEASURED_MACHINES = ("x86_64", "amd64")
SETTINGS = ("auto", "xla_default")


def jaxlib_version() -> tuple[int, ...] | None:
  """jaxlib's version from its package metadata (JAX itself is not imported)."""
  try:
    text = importlib.metadata.version("jaxlib")
  except importlib.metadata.PackageNotFoundError:
    return None
  parts = re.match(r"(\d+)\.(\d+)\.(\d+)", text)
  return tuple(int(p) for p in parts.groups()) if parts else None


def choose(setting: str, env=os.environ, version: tuple[int, ...] | None = None,
           machine: str | None = None) -> str | None:
  """The XLA flag to add, or None to leave XLA's choice alone.

  setting: `auto` (Eigen convolutions where they were measured to help and XLA
  knows the flag; not when the user's XLA_FLAGS name it) or `xla_default`.
  """
  if setting not in SETTINGS:
    raise ValueError(f"--cpu_conv_kernels={setting!r}: expected one of {', '.join(SETTINGS)}")
  if setting == "xla_default" or FLAG in env.get("XLA_FLAGS", ""):
    return None
  version = jaxlib_version() if version is None else version
  machine = (machine or platform.machine()).lower()
  if machine not in MEASURED_MACHINES or version is None or version < FIRST_JAXLIB:
    return None
  return EIGEN_CONVOLUTIONS


def in_effect(env=os.environ) -> str:
  """What runs the CPU convolutions of this process, from its XLA_FLAGS."""
  flags = env.get("XLA_FLAGS", "")
  if EIGEN_CONVOLUTIONS in flags:
    return "Eigen convolutions, YNNPACK matmuls"
  if FLAG in flags:
    return f"XLA's CPU kernels as XLA_FLAGS' {FLAG} says"
  return "XLA's default kernels"


def apply(flag: str | None, env=None) -> None:
  """Adds the flag to XLA_FLAGS (of this process unless `env` is given); must run
  before the JAX backend starts."""
  if flag is not None:
    xla_flags.add(flag, env)
