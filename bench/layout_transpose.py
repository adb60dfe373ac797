"""What the weight-gradient layout copies cost on the CPU, in isolation.

  python bench/layout_transpose.py --out=bench/results [--batch=128] [--size=24]
      [--channels=16] [--repeats=20] [--cpu_conv_kernels=auto|xla_default]

A convolution's weight gradient on XLA's CPU backend reads its input activation
channel-major ([C, H, W, N]), so the backward pass transposes every activation
from the [N, H, W, C] layout the forward pass wrote. XLA fuses the BatchNorm and
ReLU that produced the activation into that transpose (`transpose_copy_fusion`
in bench/profile_step.py), recomputing them there. This times, on one device, at
the quick model's first-stage shape (128 images of 24 x 24 x 16 per device):

  * `elementwise`: relu(x * scale + shift), the activation alone;
  * `transpose`: the plain transpose of a materialised activation;
  * `fused`: relu(x * scale + shift) transposed, as the backward pass runs it.

Writes `layout_transpose.json` in --out: ms and GB/s (bytes read + written) for each.
"""

import os
import sys

from absl import app, flags

import bench_output
import cpu_setup
import timing

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_OUT = flags.DEFINE_string("out", "bench/results", "Output folder for the JSON.")
_BATCH = flags.DEFINE_integer("batch", 128, "Images per device.")
_SIZE = flags.DEFINE_integer("size", 24, "Activation height and width.")
_CHANNELS = flags.DEFINE_integer("channels", 16, "Activation channels.")
_REPEATS = flags.DEFINE_integer("repeats", 20, "Calls per timing; the best of 5 timings is kept.")

CHANNEL_MAJOR = (3, 1, 2, 0)  # [N, H, W, C] -> [C, H, W, N]


def main(argv):
  del argv
  setup = cpu_setup.apply([1], quiet=True)
  import jax
  import jax.numpy as jnp
  import numpy as np

  rng = np.random.default_rng(0)
  shape = (_BATCH.value, _SIZE.value, _SIZE.value, _CHANNELS.value)
  device = jax.devices()[0]
  x = jax.device_put(rng.normal(size=shape).astype(np.float32), device)
  scale = jax.device_put(rng.uniform(0.5, 1.5, _CHANNELS.value).astype(np.float32), device)
  shift = jax.device_put(rng.normal(size=_CHANNELS.value).astype(np.float32), device)
  ops = {
      "elementwise": lambda x, s, b: jnp.maximum(x * s + b, 0.0),
      "transpose": lambda x, s, b: jnp.transpose(x, CHANNEL_MAJOR),
      "fused": lambda x, s, b: jnp.transpose(jnp.maximum(x * s + b, 0.0), CHANNEL_MAJOR),
  }
  moved = 2 * x.nbytes  # each reads the activation once and writes one of its size
  timings = {}
  for name, fn in ops.items():
    jitted = jax.jit(fn)
    ms = 1e3 * timing.best_time(lambda: jitted(x, scale, shift), timings=5, calls=_REPEATS.value)
    timings[name] = {"ms": ms, "gb_per_s": moved / (ms * 1e-3) / 1e9}
  result = {
      "benchmark": "layout_transpose",
      "backend": jax.default_backend(),
      "shape_nhwc": list(shape),
      **setup,
      **bench_output.machine(),
      "timings": timings,
      "fused_over_transpose": timings["fused"]["ms"] / timings["transpose"]["ms"],
  }
  bench_output.write(_OUT.value, "layout_transpose", result)


if __name__ == "__main__":
  app.run(main)
