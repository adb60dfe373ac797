"""Data parallelism on 4 fake CPU devices equals one device (run in a subprocess,
because the device count is fixed when JAX starts)."""

import os
import subprocess
import sys

import pytest

import conftest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r'''
import sys
import jax, jax.numpy as jnp, numpy as np, optax
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
loss_fn = contrastive.make_loss_fn(spec.model, c, data.image_shape[0], stage)
batch = {"image": data.images["train"].images[:16], "label": data.images["train"].labels[:16]}
def one_step(devices):
  """The jitted train step (donated, replicated state; sharded batch) on `devices`."""
  dp = DataParallel.create(devices)
  st = stage_lib.initial_state(spec, tx, c[stage].seed)
  step = dp.jit_step(train_state.make_train_step(loss_fn, tx, sched))
  return jax.device_get(step(dp.replicate(st), dp.shard_local(batch)))

(s1, m1), (s4, m4) = one_step(jax.devices()[:1]), one_step(jax.devices())
# After Adam's first step its first moment is (1 - b1) * g: the gradients, read back.
b1 = 0.9
grads = [optax.tree_utils.tree_get(s.opt_state, "mu") for s in (s1, s4)]
grads = [jax.tree.map(lambda m: m / (1 - b1), g) for g in grads]
# update_norm is left out: it is bounded through the parameters below.
metrics = [{k: v for k, v in m.items() if k != "update_norm"} for m in (m1, m4)]
pairs = {"metrics (loss, grad norm)": metrics, "BatchNorm statistics": (s1.batch_stats, s4.batch_stats),
         "gradients": grads}
n = batch["image"].shape[0] * batch["image"].shape[1] * batch["image"].shape[2]
for name, (a, b) in pairs.items():
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    # One and four devices differ only in float32 summation order. A sum of N terms
    # taken in another order moves by about sqrt(N) * eps relative to its scale (a
    # random walk of roundings); the longest sums here are the stem's BatchNorm
    # statistics over batch x H x W values. 4 x that (4 sigma), relative to each
    # leaf's scale, holds on any CPU and still catches a batch that is not global.
    tol = 4 * np.sqrt(n) * np.finfo(np.float32).eps
    scale = max(np.abs(x).max(), 1.0)
    assert np.abs(x - y).max() <= tol * scale, (name, np.abs(x - y).max(), scale)
# Adam's first update is -lr * g / (|g| + eps) per element, so it lies in [-lr, lr]
# whatever g is: where float32 summation order (compared tightly above) flips or
# shrinks a near-zero gradient, the parameters can differ by up to 2 * lr, and by
# no more.
lr = float(sched(0))
for x, y in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s4.params), strict=True):
  assert np.abs(np.asarray(x) - np.asarray(y)).max() <= 2 * lr * (1 + 1e-6), np.abs(x - y).max()
assert int(s1.step) == int(s4.step) == 1

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
  # The CARD stage trains on one device per process (card.devices_per_process) and
  # hands its variables, through each process's own copy, to every device to sample.
  from sedl_jax.train.mesh import local_copy
  dp1 = dp4.per_process(1)
  assert dp1.num_devices == 1 and dp4.per_process(0) is dp4 and dp4.per_process(4) is dp4
  v4 = dp4.replicate(local_copy(dp1.replicate(v)))
  assert all(len(x.sharding.device_set) == 4 for x in jax.tree.leaves(v4))
  split = card.draw_samples(sampler, v4, h, y_hat, key, 8, "four devices", dp4)
  assert split.shape == alone.shape == (4, 8, 7)
  assert np.abs(split - alone).max() <= 1e-4 * max(np.abs(alone).max(), 1.0), np.abs(split - alone).max()
print("MULTIDEVICE_OK", float(m1["loss"]))
'''


@pytest.mark.parametrize("stage", ["contrastive", "barlow"])
def test_four_devices_match_one_device(stage):
  """One NT-Xent / Barlow Twins train step on one global batch: loss, gradients and
  BatchNorm statistics agree tightly, parameters within Adam's first-step bound."""
  env = dict(conftest.child_env(cpu_devices=4), JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  out = subprocess.run([sys.executable, "-c", SCRIPT, stage], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "MULTIDEVICE_OK" in out.stdout
