"""Adding to XLA_FLAGS before JAX starts its backend (XLA reads them once, when it starts)."""

from __future__ import annotations

import os


def add(flag: str, env=None) -> None:
  """Appends `flag` to XLA_FLAGS of this process (child processes inherit it), or of
  `env` when given. Raises when this process's JAX backend has already started."""
  if env is None:
    env = os.environ
    from jax._src import xla_bridge  # the only way to tell whether the backend started
    if xla_bridge.backends_are_initialized():
      raise RuntimeError(f"cannot set {flag}: the JAX backend has already started")
  env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flag}".strip()
