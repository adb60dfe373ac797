"""NT-Xent (SimCLR), as methods.md section 3."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def nt_xent(z1: jax.Array, z2: jax.Array, temperature: float) -> jax.Array:
  """Mean over the 2N anchors of the cross-entropy of finding each view's twin.

  z1, z2: [N, D], row i of z1 and row i of z2 are two views of one image. Every
  other view in the (global) batch is a negative. The self-similarity is masked
  with -inf (not a large negative constant, which overflows in half precision)
  and the loss is computed in log-sum-exp form in float32.
  """
  z = jnp.concatenate([z1, z2], axis=0).astype(jnp.float32)
  z = z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
  n = z1.shape[0]
  sim = (z @ z.T) / temperature
  sim = jnp.where(jnp.eye(2 * n, dtype=bool), -jnp.inf, sim)
  twin = jnp.concatenate([jnp.arange(n) + n, jnp.arange(n)])
  pos = jnp.take_along_axis(sim, twin[:, None], axis=1)[:, 0]
  return jnp.mean(jax.nn.logsumexp(sim, axis=1) - pos)
