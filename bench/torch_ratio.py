"""The project's quick contrastive step against the PyTorch reference step, on this
machine: both run `--rounds` times, alternating (the machine's load drifts), each in
its own process; the JSON gives every run, the medians and their ratio.

  python3 -m venv /tmp/torchref && /tmp/torchref/bin/pip install torch numpy
  python bench/torch_ratio.py --torch_python=/tmp/torchref/bin/python \\
      --reference=../shared/bench/torch_reference_step.py --out=bench/results

PyTorch is never a dependency of the project: the reference runs with the
interpreter of a throwaway virtual environment. Same work as the reference:
ResNet18 (base width 16, stride-2 stem) + projection MLP + NT-Xent + Adam on two
views of 128 48x48 images. Differences that favour the reference: the project's
step also runs its on-device augmentation; the project's images have 1 channel
(quick config) and the reference's 3 (only the stem sees the difference).
"""

import json
import os
import re
import statistics
import subprocess
import sys

from absl import app, flags

import bench_output

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_TORCH = flags.DEFINE_string("torch_python", None, "Python of a venv with torch installed.")
_REFERENCE = flags.DEFINE_string("reference", "../shared/bench/torch_reference_step.py",
                                 "The reference step script.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Runs of each, alternating.")
_OUT = flags.DEFINE_string("out", "bench/results", "Output folder for the JSON.")
_DTYPES = flags.DEFINE_list("dtypes", ["float32", "bfloat16"],
                            "The project's compute dtypes to measure (config.model.dtype).")
_KERNELS = flags.DEFINE_list(
    "cpu_conv_kernels", ["auto"], "The project's CPU convolution kernels to measure "
    "(launch.py --cpu_conv_kernels): auto, xla_default or both.")
flags.mark_flags_as_required(["torch_python"])


def _torch() -> float:
  out = subprocess.run([_TORCH.value, _REFERENCE.value, "48", "128", "16", "2"], capture_output=True,
                       text=True, check=True).stdout
  return float(re.search(r"([\d.]+) img/s", out).group(1))


def _project(tmp: str) -> dict:
  """{"dtype kernels": images/s}: every dtype in one process per kernel setting."""
  out = {}
  for kernels in _KERNELS.value:
    subprocess.run([sys.executable, os.path.join(ROOT, "bench", "contrastive_step.py"),
                    "--variants=quick", "--steps=10", f"--dtypes={','.join(_DTYPES.value)}",
                    f"--cpu_conv_kernels={kernels}", f"--out={tmp}"], capture_output=True,
                   check=True)
    with open(os.path.join(tmp, "contrastive_step.json")) as f:
      out.update({f"{r['dtype']} {kernels}": float(r["images_per_s"])
                  for r in json.load(f)["results"]})
  return out


def main(argv):
  import tempfile
  torch_runs, project_runs = [], []
  with tempfile.TemporaryDirectory() as tmp:
    for _ in range(_ROUNDS.value):
      torch_runs.append(_torch())
      project_runs.append(_project(tmp))
  t = statistics.median(torch_runs)
  project = {d: [run[d] for run in project_runs] for d in project_runs[0]}
  medians = {d: statistics.median(v) for d, v in project.items()}
  bench_output.write(_OUT.value, "torch_ratio", {
      "benchmark": "quick contrastive step vs PyTorch eager reference", **bench_output.machine(),
      "torch_images_per_s": torch_runs, "torch_median": t,
      "project_images_per_s": project, "project_median": medians,
      "ratio_project_to_torch": {d: round(m / t, 3) for d, m in medians.items()},
      "torch_dtype": "float32",
      "project_devices": "one XLA CPU device per usable core (the launcher's default)"})


if __name__ == "__main__":
  app.run(main)
