import jax.numpy as jnp
import numpy as np
import pytest

from sedl_jax.losses.ntxent import nt_xent


def reference(z1, z2, tau):
  z = np.concatenate([z1, z2]).astype(np.float64)
  z /= np.linalg.norm(z, axis=1, keepdims=True)
  n = len(z1)
  sim = z @ z.T / tau
  losses = []
  for i in range(2 * n):
    j = (i + n) % (2 * n)
    others = [sim[i, k] for k in range(2 * n) if k != i]
    m = max(others)
    losses.append(-(sim[i, j] - m - np.log(np.sum(np.exp(np.array(others) - m)))))
  return np.mean(losses)


@pytest.mark.parametrize("tau", [0.05, 0.1, 0.5, 0.7, 1.0])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_matches_numpy(tau, scale):
  rng = np.random.default_rng(int(tau * 100))
  z1 = rng.normal(size=(6, 5)) * scale
  z2 = z1 + 0.3 * rng.normal(size=(6, 5)) * scale
  got = float(nt_xent(jnp.asarray(z1, jnp.float32), jnp.asarray(z2, jnp.float32), tau))
  np.testing.assert_allclose(got, reference(z1, z2, tau), rtol=2e-5, atol=1e-5)


def test_identical_views_small_temperature_goes_to_zero_and_random_to_log():
  z = np.eye(4, 8)
  assert float(nt_xent(jnp.asarray(z), jnp.asarray(z), 0.05)) < 1e-6
  # all views identical: every candidate ties -> log(2N - 1)
  same = np.ones((4, 8))
  np.testing.assert_allclose(float(nt_xent(jnp.asarray(same), jnp.asarray(same), 0.7)),
                             np.log(7), rtol=1e-6)


def test_bfloat16_has_no_nan():
  rng = np.random.default_rng(0)
  z1 = jnp.asarray(rng.normal(size=(32, 16)) * 100, jnp.bfloat16)
  z2 = jnp.asarray(rng.normal(size=(32, 16)) * 100, jnp.bfloat16)
  for tau in (0.01, 0.7):
    out = nt_xent(z1, z2, tau)
    assert np.isfinite(float(out))
    np.testing.assert_allclose(float(out), reference(np.asarray(z1, np.float32),
                                                     np.asarray(z2, np.float32), tau), rtol=2e-2)
