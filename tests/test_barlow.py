"""Barlow Twins loss against a plain NumPy reference."""

import jax.numpy as jnp
import numpy as np
import pytest

from sedl_jax.losses.barlow import barlow_twins, cross_correlation


def numpy_barlow(z1, z2, lambd):
  z1n = (z1 - z1.mean(0)) / np.sqrt(z1.var(0) + 1e-5)
  z2n = (z2 - z2.mean(0)) / np.sqrt(z2.var(0) + 1e-5)
  c = z1n.T @ z2n / len(z1)
  on = sum((1 - c[i, i]) ** 2 for i in range(c.shape[0]))
  off = sum(c[i, j] ** 2 for i in range(c.shape[0]) for j in range(c.shape[1]) if i != j)
  return on + lambd * off


@pytest.mark.parametrize("lambd", [0.0051, 0.1])
@pytest.mark.parametrize("scale", [0.01, 1.0, 100.0])
def test_barlow_matches_numpy(lambd, scale):
  rng = np.random.default_rng(0)
  z1 = rng.normal(size=(32, 12)) * scale
  z2 = z1 + rng.normal(size=(32, 12)) * scale * 0.5
  got = float(barlow_twins(jnp.asarray(z1, jnp.float32), jnp.asarray(z2, jnp.float32), lambd))
  assert np.isclose(got, numpy_barlow(z1, z2, lambd), rtol=1e-4)


def test_identical_views_have_unit_diagonal():
  z = np.random.default_rng(1).normal(size=(64, 8)).astype(np.float32)
  c = np.asarray(cross_correlation(jnp.asarray(z), jnp.asarray(z)))
  np.testing.assert_allclose(np.diag(c), 1.0, atol=1e-4)
