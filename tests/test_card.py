"""CARD diffusion: schedule and posterior against hand computation, sampling, PAvPU."""

import jax
import jax.numpy as jnp
import numpy as np

from sedl_jax.diffusion import card as diffusion
from sedl_jax.evaluate import uncertainty


def test_schedule_and_posterior_coefficients_by_hand():
  s = diffusion.Schedule.linear(1000)
  assert np.isclose(s.betas[0], 1e-4) and np.isclose(s.betas[-1], 0.02)
  assert np.isclose(s.abar[2], (1 - s.betas[0]) * (1 - s.betas[1]) * (1 - s.betas[2]), rtol=1e-6)
  # At the first step (t = 1 in the paper, index 0 here) the posterior mean is y0_hat.
  g0, g1, g2, var = (float(v) for v in s.posterior_coefficients(0))
  assert np.isclose(g0, 1.0, atol=1e-5) and abs(g1) < 1e-6 and abs(g2) < 1e-5 and var == 0.0
  t = 500
  b, a, ab, abp = s.betas[t], s.alphas[t], s.abar[t], s.abar[t - 1]
  g0, g1, g2, var = (float(v) for v in s.posterior_coefficients(t))
  assert np.isclose(g0, b * np.sqrt(abp) / (1 - ab), rtol=1e-5)
  assert np.isclose(g1, (1 - abp) * np.sqrt(a) / (1 - ab), rtol=1e-5)
  assert np.isclose(g2, 1 + (np.sqrt(ab) - 1) * (np.sqrt(a) + np.sqrt(abp)) / (1 - ab), rtol=1e-4)
  assert np.isclose(var, (1 - abp) / (1 - ab) * b, rtol=1e-5)


def test_q_sample_at_t0_is_close_to_y0_and_at_T_to_y_hat_plus_noise():
  s = diffusion.Schedule.linear(1000)
  y0 = jnp.eye(4)[jnp.array([0, 1, 2])]
  y_hat = jnp.full((3, 4), 0.25)
  eps = jax.random.normal(jax.random.PRNGKey(0), (3, 4))
  near = diffusion.q_sample(s, y0, y_hat, jnp.zeros(3, jnp.int32), eps)
  np.testing.assert_allclose(near, y0, atol=0.05)
  far = diffusion.q_sample(s, y0, y_hat, jnp.full(3, 999), eps)
  np.testing.assert_allclose(far, y_hat + eps, atol=0.02)


def test_antithetic_timesteps_pair_up():
  t = np.asarray(diffusion.antithetic_timesteps(jax.random.PRNGKey(0), 8, 100))
  np.testing.assert_array_equal(t[:4] + t[4:], 99)


def test_sampling_with_a_perfect_noise_network_recovers_the_label():
  """eps_theta that knows y0 returns exactly the noise in y_t; the chain then lands on y0."""
  s = diffusion.Schedule.linear(200)
  labels = jnp.array([0, 2, 1, 3])
  y0 = jnp.eye(4)[labels]
  y_hat = jax.nn.softmax(jax.random.normal(jax.random.PRNGKey(1), (4, 4)))  # uninformative

  def eps_fn(y_t, t):
    ab = jnp.asarray(s.abar)[t]
    return (y_t - jnp.sqrt(ab) * y0 - (1 - jnp.sqrt(ab)) * y_hat) / jnp.sqrt(1 - ab)

  out = jax.jit(lambda k: diffusion.sample(eps_fn, s, y_hat, k))(jax.random.PRNGKey(2))
  np.testing.assert_allclose(out, y0, atol=1e-3)
  probs = diffusion.sample_probabilities(out, 1.0)
  np.testing.assert_array_equal(np.asarray(probs).argmax(-1), labels)


def _probs(rows):
  return np.asarray(rows, np.float64)


def test_pavpu_all_certain_all_uncertain_mixed_and_zero_variance():
  rng = np.random.default_rng(0)
  n = 50
  # image 0: class 0 clearly ahead in every sample (certain, correct)
  a = np.stack([np.r_[0.8, 0.1, 0.1] + rng.normal(0, 0.01, 3) for _ in range(n)])
  # image 1: classes 0 and 1 trade places at random (uncertain)
  b = np.stack([np.r_[0.45, 0.45, 0.1] + np.r_[1, -1, 0] * rng.normal(0, 0.1) for _ in range(n)])
  # image 2: every sample identical (zero variance -> certain by definition)
  c = np.tile([0.1, 0.2, 0.7], (n, 1))
  probs = np.stack([a, b, c], axis=1)  # [n, 3 images, 3 classes]
  s = uncertainty.summarise_samples(probs, alpha=0.05)
  np.testing.assert_array_equal(s["certain_ttest"], [True, False, True])
  np.testing.assert_array_equal(s["zero_variance"], [False, False, True])
  assert s["vote"][0] == 0 and s["vote"][2] == 2
  labels = np.array([0, 1, 2])
  acc = s["vote"] == labels
  # certain&right (0), uncertain (1: right or wrong), certain&right (2)
  expected = (int(acc[0]) + int(not acc[1]) + int(acc[2])) / 3
  assert np.isclose(uncertainty.pavpu(acc, s["certain_ttest"]), expected)
  assert uncertainty.pavpu(np.ones(4, bool), np.ones(4, bool)) == 1.0
  assert uncertainty.pavpu(np.zeros(4, bool), np.zeros(4, bool)) == 1.0
  assert uncertainty.pavpu(np.ones(4, bool), np.zeros(4, bool)) == 0.0
  np.testing.assert_array_equal(uncertainty.threshold_certain(probs.mean(0), 0.6), [True, False, True])


def test_top_two_breaks_unanimous_votes_by_mean_probability():
  probs = np.tile([0.6, 0.1, 0.3], (5, 1, 1))
  votes, first, second = uncertainty.top_two(probs)
  assert votes[0].tolist() == [5, 0, 0] and first[0] == 0 and second[0] == 2
