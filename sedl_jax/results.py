"""The one path for stage results: a stage returns a `StageResult`; the runner
writes it (process 0, atomically) to `workdir/report/<stage>.json` (+ `.npz` for
arrays) and renders its figures; later stages and reports read it back with
`read`, whether it was produced in this run or an earlier one."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable

import numpy as np

from sedl_jax import atomic_io


@dataclasses.dataclass
class StageResult:
  metrics: dict  # JSON-serialisable; also collected into workdir/results.json
  arrays: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  summary: str = ""  # what the runner prints
  # fn(report folder) that draws the stage's figures and documents from the
  # numbers above; the runner calls it on process 0 only.
  render: Callable[[str], None] | None = None


def report_dir(workdir: str) -> str:
  return os.path.join(workdir, "report")


def write(workdir: str, stage: str, result: StageResult) -> None:
  """Writes one stage's result; call on process 0 only."""
  out = report_dir(workdir)
  atomic_io.write_json(os.path.join(out, f"{stage}.json"), result.metrics)
  if result.arrays:
    atomic_io.savez(os.path.join(out, f"{stage}.npz"), **result.arrays)
  if result.render is not None:
    result.render(out)


def read(workdir: str, stage: str) -> StageResult | None:
  """A stage's result as written by `write`, or None when the stage never ran there."""
  path = os.path.join(report_dir(workdir), f"{stage}.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    metrics = json.load(f)
  arrays = {}
  npz = os.path.join(report_dir(workdir), f"{stage}.npz")
  if os.path.exists(npz):
    with np.load(npz) as z:
      arrays = {k: z[k] for k in z.files}
  return StageResult(metrics, arrays)
