"""Data parallelism on 4 fake CPU devices equals one device (run in a subprocess,
because the device count is fixed when JAX starts)."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r'''
import sys
import jax, jax.numpy as jnp, numpy as np
assert jax.device_count() == 4, jax.devices()
from configs import card_fer, sedl
from sedl_jax.data import synthetic
from sedl_jax.stages import pretrain as contrastive
from sedl_jax.train import optim, stage as stage_lib, state as train_state
from sedl_jax.train.mesh import DataParallel

stage = sys.argv[1]
c = sedl.get_config("tiny") if stage == "contrastive" else card_fer.get_config("tiny,ablation=proposed")
data = synthetic.load(c.data)
tx, sched = optim.make_optimizer(c[stage].optimizer, 10, 5)
spec = contrastive.make_model_spec(c, 7, data.image_shape, stage)
model = spec.model
st = stage_lib.initial_state(spec, tx, c[stage].seed)
loss_fn = contrastive.make_loss_fn(model, c, data.image_shape[0], stage)
batch = {"image": data.images["train"].images[:16], "label": data.images["train"].labels[:16]}
rng = jax.random.PRNGKey(3)

def grads_on(devices):
  dp = DataParallel.create(devices)
  f = jax.jit(jax.value_and_grad(loss_fn, has_aux=True),
              in_shardings=(dp.replicated, dp.replicated, dp.batch, dp.replicated),
              out_shardings=dp.replicated)
  (loss, (bs, m)), g = f(dp.replicate(st.params), dp.replicate(st.batch_stats),
                         dp.shard_global(batch), rng)
  return jax.device_get((loss, bs, g, m))

one = grads_on(jax.devices()[:1])
four = grads_on(jax.devices())
names = ["loss", "batch_stats", "grads", "metrics"]
for name, a, b in zip(names, one, four):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    # One and four devices differ only in float32 summation order. A sum of N terms
    # taken in another order moves by about sqrt(N) * eps relative to its scale (a
    # random walk of roundings); the longest sums here are the stem's BatchNorm
    # statistics over batch x H x W values. 4 x that (4 sigma), relative to each
    # leaf's scale, holds on any CPU and still catches a batch that is not global.
    n = batch["image"].shape[0] * batch["image"].shape[1] * batch["image"].shape[2]
    tol = 4 * np.sqrt(n) * np.finfo(np.float32).eps
    scale = max(np.abs(x).max(), 1.0)
    assert np.abs(x - y).max() <= tol * scale, (name, np.abs(x - y).max(), scale)

if stage != "contrastive":
  # CARD sampling with the image batch split over the devices draws the same
  # samples as one device (the random numbers do not depend on the sharding).
  # Each of the 20 reverse steps adds float32 rounding of 32-term sums
  # (~sqrt(32) * 1.2e-7 relative); 20 steps stay well under 1e-4.
  from sedl_jax.diffusion import card as diffusion
  from sedl_jax.models.card_net import NoiseNet
  from sedl_jax.stages import card
  net, sched = NoiseNet(7, 32, 20), diffusion.Schedule.linear(20, 1e-4, 0.02)
  r = np.random.default_rng(0)
  h, y_hat = r.normal(size=(8, 16)).astype(np.float32), r.dirichlet(np.ones(7), 8).astype(np.float32)
  v = net.init(jax.random.PRNGKey(0), h[:1], y_hat[:1], y_hat[:1], jnp.zeros((1,), jnp.int32))
  sampler = card.make_sampler(net, sched, 4)
  key = jax.random.PRNGKey(5)
  alone = card.draw_samples(sampler, v, h, y_hat, key, 8, "one device")
  dp4 = DataParallel.create()
  split = card.draw_samples(sampler, dp4.replicate(v), h, y_hat, key, 8, "four devices", dp4)
  assert split.shape == alone.shape == (4, 8, 7)
  assert np.abs(split - alone).max() <= 1e-4 * max(np.abs(alone).max(), 1.0), np.abs(split - alone).max()
  # The train step below is the same code for every stage; one stage checks it.
  print("MULTIDEVICE_OK", float(one[0]))
  sys.exit(0)
# the full jitted train step with donated, replicated state over a sharded batch
dp = DataParallel.create()
step = dp.jit_step(train_state.make_train_step(loss_fn, tx, sched))
s4, m4 = step(dp.replicate(st), dp.shard_local(batch))
dp1 = DataParallel.create(jax.devices()[:1])
st1 = stage_lib.initial_state(spec, tx, c[stage].seed)
s1, m1 = dp1.jit_step(train_state.make_train_step(loss_fn, tx, sched))(dp1.replicate(st1), dp1.shard_local(batch))
# Adam's first update is -lr * g / (|g| + eps) per element, so it lies in [-lr, lr]
# whatever g is: where float32 summation order (compared tightly above) flips or
# shrinks a near-zero gradient, the parameters can differ by up to 2 * lr, and by
# no more. The step counters, rngs and moments are compared with the gradient bound.
lr = float(sched(0))
p1, p4 = jax.device_get((s1.params, s4.params))
for x, y in zip(jax.tree.leaves(p1), jax.tree.leaves(p4)):
  assert np.abs(np.asarray(x) - np.asarray(y)).max() <= 2 * lr * (1 + 1e-6), np.abs(x - y).max()
assert int(s1.step) == int(s4.step) == 1
mu1, mu4 = jax.device_get((s1.opt_state, s4.opt_state))
for x, y in zip(jax.tree.leaves(mu1), jax.tree.leaves(mu4)):
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  assert np.abs(x - y).max() <= 1e-5 * max(np.abs(x).max(), 1.0)
print("MULTIDEVICE_OK", float(one[0]))
'''


@pytest.mark.parametrize("stage", ["contrastive", "barlow"])
def test_four_devices_match_one_device(stage):
  """NT-Xent / Barlow Twins loss, gradients and BatchNorm statistics, one global batch."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  out = subprocess.run([sys.executable, "-c", SCRIPT, stage], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "MULTIDEVICE_OK" in out.stdout
