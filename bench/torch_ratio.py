"""The project's quick contrastive step against the PyTorch reference step, on this
machine, in paired bursts: both steps are built once, then take turns, a few steps
each, `--rounds` times; each round's ratio compares bursts seconds apart.

  python3 -m venv /tmp/torchref && /tmp/torchref/bin/pip install torch numpy
  python bench/torch_ratio.py --torch_python=/tmp/torchref/bin/python \\
      --reference=../shared/bench/torch_reference_step.py --out=bench/results \\
      [--rounds=15] [--burst_steps=4] [--dtypes=config|float32,bfloat16] \\
      [--with_copy_off] [--with_torch_huge_pages] [--cpu_devices=auto|N]
      [--cpu_conv_kernels=auto|xla_default] [--host_huge_pages=auto|off]

Why bursts: this project's machines are shared, and their speed drifts by 20-40%
within minutes. Whole runs one after the other (the previous version of this
benchmark) measured the drift as much as the steps; a burst pair seconds apart
sees nearly the same machine, so the median of the per-round ratios is steady.

PyTorch is never a dependency of the project: the reference runs in its own
process with the interpreter of a throwaway virtual environment
(bench/burst_worker.py). Same work as the reference: ResNet18 (base width 16,
stride-2 stem) + projection MLP + NT-Xent + Adam on two views of 128 48x48 images.
Differences that favour the reference: the project's step also runs its
on-device augmentation; the project's images have 1 channel (quick config) and
the reference's 3 (only the stem sees the difference).

The project's step runs as the launcher runs it, with huge pages for host memory
where the launcher would use them (--host_huge_pages, sedl_jax/huge_pages.py); the
reference runs as its user would start it, without the project's tunable.
`--with_torch_huge_pages` also times a second reference process with the same
tunable, in the same rounds, to show what it does for PyTorch.
`--with_copy_off` also times the project's step with --cpu_conv_input_copy=off
in the same rounds. Writes `torch_ratio.json` in --out.
"""

import os
import statistics
import subprocess
import sys
import time

from absl import app, flags

import bench_output
import contrastive_step
import cpu_setup

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_OUT, _DTYPES = contrastive_step._OUT, contrastive_step._DTYPES
_TORCH = flags.DEFINE_string("torch_python", None, "Python of a venv with torch installed.")
_REFERENCE = flags.DEFINE_string("reference", "../shared/bench/torch_reference_step.py",
                                 "The reference step script.")
_ROUNDS = flags.DEFINE_integer("rounds", 15, "Rounds of bursts (each step once per round).")
_BURST = flags.DEFINE_integer("burst_steps", 4, "Steps per burst.")
_WITH_OFF = flags.DEFINE_bool("with_copy_off", False,
                              "Also time the project's step with --cpu_conv_input_copy=off.")
_WITH_TORCH_HP = flags.DEFINE_bool(
    "with_torch_huge_pages", False,
    "Also time the reference with GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (name: torch+hugetlb).")
_SETTLE_S = 0.3  # between bursts: spinning OpenMP / Eigen threads go back to sleep
flags.mark_flags_as_required(["torch_python"])


class _Reference:
  """The reference step in its own process (bench/burst_worker.py)."""

  def __init__(self, env: dict):
    self.proc = subprocess.Popen(
        [_TORCH.value, os.path.join(ROOT, "bench", "burst_worker.py"), _REFERENCE.value,
         "48", "128", "16", "2"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env=env)
    for line in self.proc.stdout:
      if line.strip() == "ready":
        return
    raise RuntimeError(f"{_REFERENCE.value} exited before it was ready "
                       f"(status {self.proc.wait()})")

  def burst(self, steps: int) -> float:
    """images/s over `steps` steps (two views of 128 images each)."""
    self.proc.stdin.write(f"{steps}\n")
    self.proc.stdin.flush()
    return steps * 2 * 128 / float(self.proc.stdout.readline())

  def close(self):
    self.proc.stdin.close()
    self.proc.wait()


class _Project:
  """One built and compiled project step (bench/contrastive_step.py's)."""

  def __init__(self, dtype: str, copy: str):
    import jax
    from sedl_jax.models import conv_input_copy
    conv_input_copy.set_setting(copy)  # read when the model is built
    built = contrastive_step.build("quick", dtype)
    conv_input_copy.set_setting(cpu_setup.CONV_INPUT_COPY.value)
    self.step, self.state, self.batch = built["step"], built["state"], built["batch"]
    self.images = 2 * built["batch_size"]
    self.state, m = self.step(self.state, self.batch)
    jax.block_until_ready(m)

  def burst(self, steps: int) -> float:
    import jax
    t0 = time.perf_counter()
    for _ in range(steps):
      self.state, m = self.step(self.state, self.batch)
    jax.block_until_ready(m)
    return steps * self.images / (time.perf_counter() - t0)


def main(argv):
  setup = cpu_setup.apply([128])
  import jax
  from sedl_jax import huge_pages
  copies = [cpu_setup.CONV_INPUT_COPY.value] + (["off"] if _WITH_OFF.value else [])
  project = {f"{d} copy={c}": _Project(d, c) for d in _DTYPES.value for c in copies}
  names = list(project)
  as_user = huge_pages.without_ours(os.environ)
  references = {"torch": _Reference(as_user)}
  if _WITH_TORCH_HP.value:
    references["torch+hugetlb"] = _Reference(huge_pages.with_tunable(as_user))
  timed = {**references, **project}
  runs = {n: [] for n in timed}
  try:
    for r in range(_ROUNDS.value):
      order = list(timed)
      for name in (order if r % 2 == 0 else order[::-1]):
        runs[name].append(timed[name].burst(_BURST.value))
        time.sleep(_SETTLE_S)
  finally:
    for reference in references.values():
      reference.close()
  ratios = {n: [p / t for p, t in zip(runs[n], runs["torch"])] for n in runs if n != "torch"}
  bench_output.write(_OUT.value, "torch_ratio", {
      "benchmark": "quick contrastive step vs PyTorch eager reference, paired bursts",
      **bench_output.machine(), **setup, "backend": jax.default_backend(),
      "device_count": jax.device_count(), "rounds": _ROUNDS.value, "burst_steps": _BURST.value,
      "images_per_s": runs,
      "median_images_per_s": {n: round(statistics.median(v), 1) for n, v in runs.items()},
      "ratio_per_round": {n: [round(x, 3) for x in v] for n, v in ratios.items()},
      "ratio_project_to_torch": {n: round(statistics.median(v), 3) for n, v in ratios.items()},
      "torch_dtype": "float32",
      "project_devices": "one XLA CPU device per usable core (the launcher's default)"})


if __name__ == "__main__":
  app.run(main)
