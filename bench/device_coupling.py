"""What the contrastive step loses to the coupling of its devices, on the CPU.

  python bench/device_coupling.py --out=DIR [--variant=quick] [--rounds=8]
      [--burst_steps=4] [--cpu_devices=auto|N] [--cpu_conv_kernels=auto|xla_default]
      [--host_huge_pages=auto|off]

Three ways to spend the machine on the same images, built once each and timed in
alternating bursts (this machine's speed drifts, see bench/torch_ratio.py):

- `coupled`: the step as the stages train it, one batch over every device. Its
  BatchNorm statistics are over the whole batch, so every BatchNorm layer is an
  all-reduce forward and another backward: the devices wait for each other some
  35 times a step.
- `independent`: every device runs its own share of the batch through its own
  copy of the step, with no collective at all. Not a training mode (its
  statistics are per device); it is the speed the step would have if the
  devices never waited for each other, at the same work per device.
- `one_device`: the whole batch on the first device alone, XLA's threads
  spread over every core.

The gap between `coupled` and `independent` is the cost of the waits; `one_device`
against `coupled` is what one device per core gains (issue 16). Writes
`device_coupling.json` in --out.
"""

import statistics
import time

from absl import app, flags

import bench_output
import contrastive_step
import cpu_setup

_OUT = contrastive_step._OUT
_VARIANT = flags.DEFINE_string("variant", "quick", "Config variant.")
_ROUNDS = flags.DEFINE_integer("rounds", 8, "Rounds of bursts (every way once per round).")
_BURST = flags.DEFINE_integer("burst_steps", 4, "Steps per burst.")
_SETTLE_S = 0.2  # between bursts: spinning Eigen threads go back to sleep


def ways(variant: str) -> dict[str, list[dict]]:
  """Each way's steps (one per device for `independent`), built and compiled."""
  import jax
  devices = jax.devices()
  n = len(devices)
  if n < 2:
    raise app.UsageError(f"{n} device: the three ways are the same step; give the CPU "
                         "two or more devices (--cpu_devices=N, N >= 2)")
  build = contrastive_step.build
  coupled = build(variant, "config")
  batch = coupled["batch_size"]
  out = {"coupled": [coupled],
         "independent": [build(variant, "config", devices=[d], batch=batch // n) for d in devices],
         "one_device": [build(variant, "config", devices=devices[:1], batch=batch)]}
  for steps in out.values():
    for b in steps:
      b["state"], m = b["step"](b["state"], b["batch"])
      jax.block_until_ready(m)
  return out


def burst(steps: list[dict], k: int) -> float:
  """Images a second over `k` steps of every built step, all dispatched before
  any is waited for, so the devices of `independent` run side by side."""
  import jax
  t0 = time.perf_counter()
  last = []
  for _ in range(k):
    last = []
    for b in steps:
      b["state"], m = b["step"](b["state"], b["batch"])
      last.append(m)
  jax.block_until_ready(last)
  dt = time.perf_counter() - t0
  return k * sum(2 * b["batch_size"] for b in steps) / dt


def main(argv):
  setup = cpu_setup.apply([32, 128])  # as launch.py does, before JAX starts
  import jax
  built = ways(_VARIANT.value)
  names = list(built)
  bursts = {n: [] for n in names}
  for r in range(_ROUNDS.value):
    for n in (names if r % 2 == 0 else names[::-1]):
      bursts[n].append(burst(built[n], _BURST.value))
      time.sleep(_SETTLE_S)
  coupled = bursts["coupled"]
  result = {
      "benchmark": "device_coupling",
      "backend": jax.default_backend(),
      "device_count": jax.device_count(),
      "variant": _VARIANT.value,
      "batch": built["coupled"][0]["batch_size"],
      "rounds": _ROUNDS.value,
      "burst_steps": _BURST.value,
      **setup,
      **bench_output.machine(),
      "images_per_s_bursts": bursts,
      "images_per_s_median": {n: statistics.median(v) for n, v in bursts.items()},
      "median_ratio_to_coupled": {
          n: statistics.median(a / c for a, c in zip(v, coupled)) for n, v in bursts.items()},
  }
  bench_output.write(_OUT.value, "device_coupling", result)


if __name__ == "__main__":
  app.run(main)
