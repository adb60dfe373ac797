"""Contrastive train-step benchmark: images/s (both views counted), compile time and
peak memory, for the `quick` and `paper` variants on whatever devices are present.

  python bench/contrastive_step.py --out=bench/results [--variants=quick,paper] [--steps=5]
      [--dtypes=config|float32,bfloat16] [--cpu_devices=auto|N]
      [--cpu_conv_kernels=auto|xla_default] [--cpu_conv_input_copy=auto|off]

Writes `contrastive_step.json` in --out. Peak memory is the device allocator's
peak where the backend reports it (GPU), else the process's peak RSS (CPU).
"""

import os
import resource
import sys
import time

from absl import app, flags

import bench_output
import cpu_setup

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_OUT = flags.DEFINE_string("out", "bench/results", "Output folder for the JSON.")
_VARIANTS = flags.DEFINE_list("variants", ["quick", "paper"], "Config variants to measure.")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps after the compile step.")
_DTYPES = flags.DEFINE_list(
    "dtypes", ["config"], "Compute dtypes to measure each variant in: config (the variant's "
    "config.model.dtype; paper: auto = bfloat16 on a GPU), float32, bfloat16.")
_PAPER_BATCH = flags.DEFINE_integer("paper_batch", 0,
                                    "Override the paper batch (0 = config; CPU uses 32).")


def build(variant: str, dtype: str, devices=None, batch: int | None = None) -> dict:
  """The variant's contrastive train step, jitted over `devices` (every device by
  default), with its replicated state and a sharded batch of random images (also
  bench/profile_step.py, bench/device_coupling.py). `batch`: images a step (default:
  the variant's, a multiple of the device count)."""
  import jax
  import numpy as np
  from configs import sedl
  from sedl_jax.stages import pretrain as contrastive
  from sedl_jax.train import optim, stage as stage_lib, state as train_state
  from sedl_jax.train.mesh import DataParallel

  c = sedl.get_config(variant)
  if dtype != "config":
    c.model.dtype = dtype
  dp = DataParallel.create(devices)
  if batch is None and variant == "paper":
    batch = _PAPER_BATCH.value or (c.contrastive.batch_size if jax.default_backend() != "cpu" else 32)
  elif batch is None:
    batch = c.contrastive.batch_size
  batch = max(dp.num_devices, batch // dp.num_devices * dp.num_devices)
  size, ch = c.data.image_size, c.data.channels
  spec = contrastive.make_model_spec(c, 7, (size, size, ch))
  tx, sched = optim.make_optimizer(c.contrastive.optimizer, 1000, 100)
  st = dp.replicate(stage_lib.initial_state(spec, tx, c.contrastive.seed))
  step = dp.jit_step(train_state.make_train_step(contrastive.make_loss_fn(spec.model, c, size), tx, sched))
  rng = np.random.default_rng(0)
  data = {"image": rng.integers(0, 256, (batch, size, size, ch), dtype=np.uint8),
          "label": rng.integers(0, 7, batch).astype(np.int32)}
  return {"config": c, "step": step, "state": st, "batch": dp.shard_local(data), "batch_size": batch}


def measure(variant: str, dtype: str, steps: int) -> dict:
  import jax
  from sedl_jax.models import registry
  built = build(variant, dtype)
  c, step, st, sharded, batch = (built[k] for k in ("config", "step", "state", "batch", "batch_size"))
  size, ch = c.data.image_size, c.data.channels
  t0 = time.perf_counter()
  st, m = step(st, sharded)
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(steps):
    st, m = step(st, sharded)
  jax.block_until_ready(m)
  dt = (time.perf_counter() - t0) / steps
  stats = jax.local_devices()[0].memory_stats() or {}
  peak = stats.get("peak_bytes_in_use")
  return {
      "variant": variant, "batch": batch, "image_size": size, "channels": ch,
      "encoder": c.model.encoder, "width": c.model.width, "stem": c.model.stem,
      "dtype": jax.numpy.dtype(registry.compute_dtype(c.model)).name,
      "step_s": dt, "images_per_s": 2 * batch / dt, "compile_s": compile_s,
      "peak_device_bytes": peak,
      "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
      "loss": float(m["loss"]),
  }


def main(argv):
  setup = cpu_setup.apply([32, 128])  # as launch.py does, before JAX starts
  import jax
  result = {
      "benchmark": "contrastive_train_step",
      "backend": jax.default_backend(),
      "devices": [str(d) for d in jax.devices()],
      "device_count": jax.device_count(),
      **setup,
      **bench_output.machine(),
      "results": [measure(v, d, _STEPS.value) for v in _VARIANTS.value for d in _DTYPES.value],
  }
  bench_output.write(_OUT.value, "contrastive_step", result)


if __name__ == "__main__":
  app.run(main)
