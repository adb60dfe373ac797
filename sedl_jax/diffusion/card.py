"""CARD classification diffusion (Han, Zheng & Zhou 2022; methods.md section 8).

The label y0 (one-hot) is diffused towards the classifier's prediction y_hat:
  y_t = sqrt(abar_t) y0 + (1 - sqrt(abar_t)) y_hat + sqrt(1 - abar_t) eps.
The reverse process starts at y_T = y_hat + N(0, I) and runs the posterior
q(y_{t-1} | y_t, y0_hat, y_hat) with y0_hat recovered from the predicted noise;
the last step returns y0_hat itself. Timesteps are 0-based: t = 0 .. T-1.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Schedule:
  """Linear betas and every derived coefficient, as float32 arrays of length T."""

  betas: np.ndarray
  alphas: np.ndarray
  abar: np.ndarray
  abar_prev: np.ndarray
  # Posterior q(y_{t-1} | y_t, y0, y_hat): mean = g0 y0 + g1 y_t + g2 y_hat, variance.
  # Computed in float64: 1 - abar_t at t = 0 is 1e-4, which float32 gets wrong by 0.02%.
  g0: np.ndarray
  g1: np.ndarray
  g2: np.ndarray
  post_var: np.ndarray

  @classmethod
  def linear(cls, timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> "Schedule":
    if timesteps < 2:
      raise ValueError(f"card.timesteps={timesteps}: need at least 2")
    betas = np.linspace(beta_start, beta_end, timesteps, dtype=np.float64)
    alphas = 1.0 - betas
    abar = np.cumprod(alphas)
    abar_prev = np.r_[1.0, abar[:-1]]
    g0 = betas * np.sqrt(abar_prev) / (1.0 - abar)
    g1 = (1.0 - abar_prev) * np.sqrt(alphas) / (1.0 - abar)
    g2 = 1.0 + (np.sqrt(abar) - 1.0) * (np.sqrt(alphas) + np.sqrt(abar_prev)) / (1.0 - abar)
    var = (1.0 - abar_prev) / (1.0 - abar) * betas
    f = lambda a: a.astype(np.float32)
    return cls(f(betas), f(alphas), f(abar), f(abar_prev), f(g0), f(g1), f(g2), f(var))

  @property
  def timesteps(self) -> int:
    return len(self.betas)

  def posterior_coefficients(self, t):
    """(g0, g1, g2, variance) at t: mean = g0 y0_hat + g1 y_t + g2 y_hat."""
    return tuple(jnp.asarray(v)[t] for v in (self.g0, self.g1, self.g2, self.post_var))


def q_sample(sched: Schedule, y0, y_hat, t, eps):
  """y_t for per-example timesteps t [B] (0-based)."""
  ab = jnp.asarray(sched.abar)[t][:, None]
  return jnp.sqrt(ab) * y0 + (1.0 - jnp.sqrt(ab)) * y_hat + jnp.sqrt(1.0 - ab) * eps


def antithetic_timesteps(key, batch: int, timesteps: int):
  """Half the batch draws t, the other half T-1-t (lower-variance loss estimate)."""
  half = jax.random.randint(key, ((batch + 1) // 2,), 0, timesteps)
  return jnp.concatenate([half, timesteps - 1 - half])[:batch]


def predict_y0(sched: Schedule, y_t, y_hat, eps_pred, t):
  ab = jnp.asarray(sched.abar)[t]
  return (y_t - (1.0 - jnp.sqrt(ab)) * y_hat - jnp.sqrt(1.0 - ab) * eps_pred) / jnp.sqrt(ab)


def reverse_step(sched: Schedule, y_t, y_hat, eps_pred, t, noise):
  """One reverse step from t (scalar, >= 1) to t-1."""
  y0_hat = predict_y0(sched, y_t, y_hat, eps_pred, t)
  g0, g1, g2, var = sched.posterior_coefficients(t)
  return g0 * y0_hat + g1 * y_t + g2 * y_hat + jnp.sqrt(var) * noise


def sample(eps_fn, sched: Schedule, y_hat, key):
  """Full reverse chain for one batch of y_hat [B, C]; eps_fn(y_t, t) -> eps [B, C].

  Steps T-1 .. 1 run in one lax.scan; step 0 returns y0_hat without noise.
  """
  k0, key = jax.random.split(key)
  y = y_hat + jax.random.normal(k0, y_hat.shape)
  steps = jnp.arange(sched.timesteps - 1, 0, -1)
  keys = jax.random.split(key, sched.timesteps - 1)

  def body(y, inp):
    t, k = inp
    eps = eps_fn(y, t)
    return reverse_step(sched, y, y_hat, eps, t, jax.random.normal(k, y.shape)), None

  y, _ = jax.lax.scan(body, y, (steps, keys))
  return predict_y0(sched, y, y_hat, eps_fn(y, jnp.int32(0)), 0)


def sample_probabilities(y0, temperature: float):
  """Per-sample class probabilities softmax(-(y0 - 1)^2 / T_s)."""
  return jax.nn.softmax(-((y0 - 1.0) ** 2) / temperature, axis=-1)
