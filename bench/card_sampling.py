"""CARD evaluation benchmark: test images/s for the full reverse chain (T steps under
lax.scan) with n samples per image (vmap), the `quick` noise network, features given.

  python bench/card_sampling.py --out=bench/results [--samples=100] [--timesteps=1000]
      [--dtype=float32|bfloat16|auto]

Writes `card_sampling.json` in --out. The encoder pass is not included: CARD's x
features are computed once per image, before sampling, at the encoder's speed.
"""

import os
import sys
import time

from absl import app, flags

import bench_output

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_OUT = flags.DEFINE_string("out", "bench/results", "Output folder for the JSON.")
_SAMPLES = flags.DEFINE_integer("samples", 100, "Samples per image (n).")
_TIMESTEPS = flags.DEFINE_integer("timesteps", 1000, "Diffusion steps (T).")
_BATCH = flags.DEFINE_integer("batch", 0, "Images per jitted call (0 = config.card.eval_batch_size).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls after the compile call.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16", "auto"],
                           "The noise network's compute dtype (config.model.dtype).")


def main(argv):
  import jax
  import jax.numpy as jnp
  import numpy as np
  from configs import card_fer
  from sedl_jax.diffusion import card as diffusion
  from sedl_jax.models.card_net import NoiseNet
  from sedl_jax.models import registry
  from sedl_jax.evaluate import features
  from sedl_jax.stages import card
  from sedl_jax.train.mesh import DataParallel

  c = card_fer.get_config("quick")
  nc = 7
  feat_dim = registry.build_encoder(c.model).feature_dim
  batch = _BATCH.value or c.card.eval_batch_size
  sched = diffusion.Schedule.linear(_TIMESTEPS.value, c.card.beta_start, c.card.beta_end)
  c.model.dtype = _DTYPE.value
  net = NoiseNet(nc, c.card.hidden, sched.timesteps, registry.compute_dtype(c.model))
  variables = net.init(jax.random.PRNGKey(0), jnp.zeros((1, feat_dim)), jnp.zeros((1, nc)),
                       jnp.zeros((1, nc)), jnp.zeros((1,), jnp.int32))
  sampler = card.make_sampler(net, sched, _SAMPLES.value)
  rng = np.random.default_rng(0)
  # As evaluation and prediction run it: the image batch split across the devices.
  dp = DataParallel.create()
  batch = features.eval_batch_size(batch, dp)
  h = rng.normal(size=(batch, feat_dim)).astype(np.float32)
  y_hat = np.asarray(jax.nn.softmax(rng.normal(size=(batch, nc)).astype(np.float32)))
  sharded = dp.shard_global({"h": h, "y_hat": y_hat})
  h, y_hat, variables = sharded["h"], sharded["y_hat"], dp.replicate(variables)
  t0 = time.perf_counter()
  jax.block_until_ready(sampler(variables, h, y_hat, jax.random.PRNGKey(1)))
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for i in range(_REPEATS.value):
    jax.block_until_ready(sampler(variables, h, y_hat, jax.random.PRNGKey(2 + i)))
  dt = (time.perf_counter() - t0) / _REPEATS.value
  result = {
      "benchmark": "card_sampling", "backend": jax.default_backend(),
      "devices": [str(d) for d in jax.devices()], **bench_output.machine(),
      "num_samples": _SAMPLES.value, "timesteps": sched.timesteps,
      "hidden": c.card.hidden, "feature_dim": feat_dim, "batch_images": batch,
      "dtype": jnp.dtype(registry.compute_dtype(c.model)).name,
      "seconds_per_batch": dt, "images_per_s": batch / dt,
      "network_evaluations_per_s": batch * _SAMPLES.value * sched.timesteps / dt,
      "compile_s": compile_s,
  }
  bench_output.write(_OUT.value, "card_sampling", result)


if __name__ == "__main__":
  app.run(main)
