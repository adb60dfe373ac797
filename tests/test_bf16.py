"""bfloat16 compute (`config.model.dtype=bfloat16`): float32 parameters, optimiser
state, losses and BatchNorm statistics; a contrastive and a CARD step agree with
float32 within a bound derived from bfloat16's precision, and the loss falls.

The bound: bfloat16 keeps 8 significant bits, a relative rounding error of at
most u = 2^-8 per value. A layer computing in bf16 rounds its float32 weights
once and its output once, so to first order it adds at most 2u to the relative
error of what passes through it, and L layers at most 2Lu (BatchNorm, ReLU and
softplus do not amplify relative error to first order; the losses are float32).
The backward pass goes through the same L layers again: gradients within 4Lu.
L is counted from the parameters (every kernel, BN scale and embedding).
Each check also asserts the error is not zero: bf16 was really used.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import sedl
from sedl_jax.data import synthetic
from sedl_jax.diffusion import card as diffusion
from sedl_jax.models.card_net import NoiseNet
from sedl_jax.stages import card
from sedl_jax.stages import pretrain
from sedl_jax.train import optim, stage as stage_lib

U = 2.0 ** -8


def _layers(params) -> int:
  names = [str(path[-1].key) for path, _ in jax.tree_util.tree_leaves_with_path(params)]
  return sum(n in ("kernel", "scale", "embedding") for n in names)


def _flat(tree) -> np.ndarray:
  return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(tree)])


def _relative(a, b) -> float:
  a, b = _flat(a), _flat(b)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _assert_all_float32(tree, what):
  for x in jax.tree.leaves(tree):
    assert jnp.asarray(x).dtype in (jnp.float32, jnp.int32, jnp.uint32), (what, x.dtype)


@pytest.fixture(scope="module")
def faces():
  c = sedl.get_config("tiny")
  data = synthetic.load(c.data)
  return data.images["train"].images[:16], data.image_shape


def _contrastive(dtype, image_shape):
  c = sedl.get_config("tiny")
  c.model.dtype = dtype
  spec = pretrain.make_model_spec(c, 7, image_shape, "contrastive")
  loss_fn = pretrain.make_loss_fn(spec.model, c, image_shape[0], "contrastive")
  tx, _ = optim.make_optimizer(c.contrastive.optimizer, 10, 5)
  return spec, loss_fn, stage_lib.initial_state(spec, tx, c.contrastive.seed), tx


def _falls(grad, params, batch_stats, batch, rng, tx, steps):
  """The loss on fixed views before and after `steps` Adam steps on them
  (`grad`: the jitted value_and_grad of the loss, already compiled; the small
  Adam update runs eagerly rather than compiling a third program)."""
  opt = tx.init(params)
  (before, _), _ = grad(params, batch_stats, batch, rng)
  for _ in range(steps):
    (_, (batch_stats, _)), g = grad(params, batch_stats, batch, rng)
    updates, opt = tx.update(g, opt, params)
    params = optax.apply_updates(params, updates)
  _assert_all_float32((params, opt, batch_stats), "state after bf16 steps")
  (after, _), _ = grad(params, batch_stats, batch, rng)
  return float(before), float(after)


def test_contrastive_step_in_bf16_agrees_with_float32_and_learns(faces):
  images, shape = faces
  batch = {"image": images, "label": np.zeros(len(images), np.int32)}
  rng = jax.random.PRNGKey(3)
  out = {}
  for dtype in ("float32", "bfloat16"):
    spec, loss_fn, st, tx = _contrastive(dtype, shape)
    grad = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
    (loss, (bs, _)), g = grad(st.params, st.batch_stats, batch, rng)
    h = spec.model.apply({"params": st.params, "batch_stats": st.batch_stats},
                         images.astype(np.float32) / 255.0)[0]
    out[dtype] = (st, loss, bs, g, h, grad)
  (st32, _, bs32, g32, h32, _), (st16, loss16, bs16, g16, h16, grad16) = out["float32"], \
      out["bfloat16"]
  # Same float32 parameters and optimiser state whatever the compute dtype.
  for a, b in zip(jax.tree.leaves(st32.params), jax.tree.leaves(st16.params), strict=True):
    assert a.dtype == b.dtype == jnp.float32
    np.testing.assert_array_equal(a, b)
  _assert_all_float32((st16.opt_state, bs16, g16), "bf16 optimiser state, BN statistics, grads")
  assert loss16.dtype == jnp.float32 and h16.dtype == jnp.float32
  L = _layers(st32.params["encoder"])
  assert 0 < _relative(h16, h32) <= 2 * L * U, (_relative(h16, h32), L)
  assert 0 < _relative(g16, g32) <= 4 * L * U, (_relative(g16, g32), L)
  assert 0 < _relative(bs16, bs32) <= 2 * L * U
  print("contrastive: layers", L, "relative error: features", _relative(h16, h32),
        "grads", _relative(g16, g32), "BN statistics", _relative(bs16, bs32))
  before, after = _falls(grad16, st16.params, st16.batch_stats, batch, rng, tx, steps=10)
  assert after < before, (before, after)


def test_card_step_in_bf16_agrees_with_float32_and_learns():
  sched = diffusion.Schedule.linear(20, 1e-4, 0.02)
  r = np.random.default_rng(0)
  n, d, nc = 64, 16, 7
  labels = r.integers(0, nc, n)
  h = (r.normal(size=(n, d)) + 2 * np.eye(nc, d)[labels]).astype(np.float32)
  y_hat = r.dirichlet(np.ones(nc), n).astype(np.float32)
  batch = {"h": h, "y_hat": y_hat, "y0": np.eye(nc, dtype=np.float32)[labels]}
  rng, t = jax.random.PRNGKey(4), jnp.asarray(r.integers(0, 20, n), jnp.int32)
  out = {}
  for dtype in (jnp.float32, jnp.bfloat16):
    net = NoiseNet(nc, 32, 20, dtype)
    v = net.init(jax.random.PRNGKey(0), h[:1], y_hat[:1], y_hat[:1], jnp.zeros((1,), jnp.int32))
    grad = jax.jit(jax.value_and_grad(card.make_loss_fn(net, sched), has_aux=True))
    (loss, (bs, _)), g = grad(v["params"], v["batch_stats"], batch, rng)
    eps = net.apply(v, h, batch["y0"], y_hat, t)
    out[dtype] = (v, loss, bs, g, eps, grad)
  (v32, _, bs32, g32, eps32, _) = out[jnp.float32]
  (v16, loss16, bs16, g16, eps16, grad16) = out[jnp.bfloat16]
  for a, b in zip(jax.tree.leaves(v32), jax.tree.leaves(v16), strict=True):
    assert a.dtype == b.dtype == jnp.float32
    np.testing.assert_array_equal(a, b)
  assert loss16.dtype == eps16.dtype == jnp.float32
  _assert_all_float32((bs16, g16), "bf16 BN statistics and grads")
  L = _layers(v32["params"])
  assert 0 < _relative(eps16, eps32) <= 2 * L * U, (_relative(eps16, eps32), L)
  assert 0 < _relative(g16, g32) <= 4 * L * U, (_relative(g16, g32), L)
  assert 0 < _relative(bs16, bs32) <= 2 * L * U
  print("card: layers", L, "relative error: eps", _relative(eps16, eps32),
        "grads", _relative(g16, g32), "BN statistics", _relative(bs16, bs32))
  tx = optax.adam(1e-3)
  before, after = _falls(grad16, v16["params"], v16["batch_stats"], batch, rng, tx, steps=20)
  assert after < before, (before, after)
