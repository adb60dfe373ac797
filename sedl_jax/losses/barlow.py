"""Barlow Twins loss (diffusion FER paper eq. 3-4; methods.md section 4)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def batch_standardize(z: jax.Array, eps: float = 1e-5) -> jax.Array:
  """Per-dimension (z - mean) / std over the batch: BatchNorm without affine or
  running statistics. Under jit on a sharded batch the moments are global."""
  z = z.astype(jnp.float32)
  mean = z.mean(axis=0)
  var = z.var(axis=0)
  return (z - mean) / jnp.sqrt(var + eps)


def cross_correlation(z1: jax.Array, z2: jax.Array) -> jax.Array:
  """C_ij = sum_b z1n_bi z2n_bj / N for batch-standardised projections [N, D]."""
  n = z1.shape[0]
  return batch_standardize(z1).T @ batch_standardize(z2) / n


def barlow_twins(z1: jax.Array, z2: jax.Array, lambd: float) -> jax.Array:
  """sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2."""
  c = cross_correlation(z1, z2)
  diag = jnp.diagonal(c)
  on = jnp.sum((1.0 - diag) ** 2)
  off = jnp.sum(c ** 2) - jnp.sum(diag ** 2)
  return on + lambd * off
