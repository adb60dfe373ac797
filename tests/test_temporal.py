"""Temporal predictor: causality, roll-out, baselines and learning known dynamics."""

import jax
import jax.numpy as jnp
import numpy as np

from configs import sedl
from sedl_jax.models import temporal as temporal_model
from sedl_jax.stages import temporal
from sedl_jax.stages.context import Context


def small_cfg(**kw):
  c = sedl.get_config("tiny").temporal
  c.update(kw)
  return c


def fit(cfg, train, workdir):
  """The temporal stage's own fit, through the stage machinery, on given sequences."""
  config = sedl.get_config("tiny")
  config.temporal = cfg
  trained = temporal.fit(Context(config, workdir), train)
  return trained.model, trained.variables["params"]


def test_sinusoidal_table_matches_formula():
  t = temporal_model.sinusoidal_positions(5, 6)
  assert np.isclose(t[3, 2], np.sin(3 / 10000 ** (2 / 6)))
  assert np.isclose(t[3, 3], np.cos(3 / 10000 ** (2 / 6)))


def test_prediction_at_t_ignores_later_frames():
  model = temporal_model.build(small_cfg())
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 8))
  params = model.init(jax.random.PRNGKey(1), x)["params"]
  y = x.at[:, 4:].set(10.0)
  p1, c1 = model.apply({"params": params}, x)
  p2, c2 = model.apply({"params": params}, y)
  np.testing.assert_allclose(p1[:, :4], p2[:, :4], atol=1e-5)
  np.testing.assert_allclose(c1[:, :4], c2[:, :4], atol=1e-5)
  assert not np.allclose(p1[:, 4:], p2[:, 4:])
  np.testing.assert_allclose(np.linalg.norm(p1, axis=-1), 1.0, atol=1e-5)


def test_rollout_h1_is_the_direct_prediction_and_h2_feeds_it_back():
  model = temporal_model.build(small_cfg())
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 7, 8))
  params = model.init(jax.random.PRNGKey(1), x)["params"]
  direct, _ = model.apply({"params": params}, x)
  r1 = temporal.make_rollout(model, 1)(params, x)
  np.testing.assert_allclose(r1, direct[:, :-1], atol=1e-5)
  r2 = np.asarray(temporal.make_rollout(model, 2)(params, x))
  origin = 2  # context x[:, :3], then the model's own guess for frame 3
  ctx = jnp.concatenate([x[:, :origin + 1], direct[:, origin:origin + 1]], axis=1)
  step2, _ = model.apply({"params": params}, ctx)
  np.testing.assert_allclose(r2[:, origin], step2[:, -1], atol=1e-5)


def test_baselines_against_numpy():
  e = np.random.default_rng(0).normal(size=(2, 5, 3))
  p, t = temporal.persistence_forecast(e, 2)
  np.testing.assert_array_equal(p, e[:, :3])
  np.testing.assert_array_equal(t, e[:, 2:])
  m, _ = temporal.mean_forecast(e, 1)
  np.testing.assert_allclose(m[:, 2], e[:, :3].mean(1))
  assert np.isclose(temporal.sequence_mse(e[:, :1], e[:, 1:2]),
                    np.mean(np.sum((e[:, 0] - e[:, 1]) ** 2, -1)))


def rotating_sequences(n, length, dim, rng):
  """Unit vectors turning at a fixed rate in a random plane per sequence: persistence
  is wrong by a constant angle every step, a learned predictor need not be."""
  phase = rng.uniform(0, 2 * np.pi, n)
  t = np.arange(length)
  angle = phase[:, None] + 0.5 * t[None]
  e = np.zeros((n, length, dim), np.float32)
  e[..., 0], e[..., 1] = np.cos(angle), np.sin(angle)
  return e


def test_predictor_beats_persistence_on_known_dynamics(tmp_path):
  rng = np.random.default_rng(0)
  train = rotating_sequences(256, 8, 4, rng)
  test = rotating_sequences(32, 8, 4, rng)
  cfg = small_cfg(steps=300, batch_size=32, width=32, dropout=0.0, log_every_steps=100,
                  checkpoint_every_steps=300)
  cfg.optimizer.lr = 3e-3
  model, params = fit(cfg, train, str(tmp_path))
  report = temporal.forecast_report(model, params, test, (1, 2))
  for h in ("1", "2"):
    assert report[h]["model"] < 0.2 * report[h]["persistence"], report
    assert report[h]["model"] < report[h]["sequence_mean"]


def test_mixture_output_starts_as_an_exponential_average():
  """At init (zero update, zero query) the prediction is sum_s e^-(t-s) E(s),
  normalised: a NumPy reference."""
  model = temporal_model.build(small_cfg(output="mixture"))
  x = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (2, 5, 8)))
  params = model.init(jax.random.PRNGKey(1), jnp.asarray(x))["params"]
  pred, _ = model.apply({"params": params}, jnp.asarray(x))
  ref = np.zeros_like(x)
  for t in range(5):
    w = np.exp(-(t - np.arange(t + 1)))
    ref[:, t] = (w[None, :, None] * x[:, : t + 1]).sum(1) / w.sum()
  ref /= np.linalg.norm(ref, axis=-1, keepdims=True)
  np.testing.assert_allclose(np.asarray(pred), ref, atol=1e-5)


def test_predictor_averages_out_per_frame_noise(tmp_path):
  """Each sequence holds one unit vector plus fresh noise per frame: persistence
  pays the noise twice, the best predictor (the running mean) about once."""
  rng = np.random.default_rng(0)

  def noisy(n):
    base = rng.normal(size=(n, 1, 16))
    e = base / np.linalg.norm(base, axis=-1, keepdims=True) + rng.normal(0, 0.15, (n, 8, 16))
    return (e / np.linalg.norm(e, axis=-1, keepdims=True)).astype(np.float32)

  train, test = noisy(256), noisy(64)
  cfg = small_cfg(steps=150, batch_size=32, width=32, log_every_steps=150,
                  checkpoint_every_steps=150)
  cfg.optimizer.lr = 3e-3
  model, params = fit(cfg, train, str(tmp_path))
  report = temporal.forecast_report(model, params, test, (1,))
  # The oracle (the sequence mean) is at ~0.68 of persistence here.
  assert report["1"]["model"] < 0.8 * report["1"]["persistence"], report
