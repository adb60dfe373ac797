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
from sedl_jax.train import optim, state as train_state
from sedl_jax.train.mesh import DataParallel

stage = sys.argv[1]
c = sedl.get_config("tiny") if stage == "contrastive" else card_fer.get_config("tiny,ablation=proposed")
data = synthetic.load(c.data)
model = contrastive.build_model(c, 7, stage)
tx, sched = optim.make_optimizer(c[stage].optimizer, 10, 5)
st = contrastive.init_state(model, c, data.image_shape, tx, stage)
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
    # Relative to the leaf's scale: Barlow Twins' gradients pass through 1/std of the
    # batch standardisation, which magnifies float32 summation-order noise elementwise.
    # Its loss sums D^2 correlation terms, so it gets 5e-5 (measured noise ~1e-5).
    scale = max(np.abs(x).max(), 1.0)
    tol = 1e-5 if stage == "contrastive" else 5e-5
    assert np.abs(x - y).max() <= tol * scale, (name, np.abs(x - y).max(), scale)

if stage != "contrastive":
  # The train step below is the same code for every stage; one stage checks it.
  print("MULTIDEVICE_OK", float(one[0]))
  sys.exit(0)
# the full jitted train step with donated, replicated state over a sharded batch
dp = DataParallel.create()
step = dp.jit_step(train_state.make_train_step(loss_fn, tx, sched))
s4, m4 = step(dp.replicate(st), dp.shard_local(batch))
dp1 = DataParallel.create(jax.devices()[:1])
st1 = contrastive.init_state(model, c, data.image_shape, tx, stage)
s1, m1 = dp1.jit_step(train_state.make_train_step(loss_fn, tx, sched))(dp1.replicate(st1), dp1.shard_local(batch))
# Adam's first step is lr * g / (|g| + eps): for gradients near zero, float32 summation
# order (1e-7) moves the update noticeably, so the parameters get a looser bound.
for x, y in zip(jax.tree.leaves(jax.device_get(s1)), jax.tree.leaves(jax.device_get(s4))):
  np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-4)
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
