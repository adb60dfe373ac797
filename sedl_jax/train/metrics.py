"""Metric sinks: workdir/metrics.jsonl, TensorBoard (tensorboardX, no TF), stdout."""

from __future__ import annotations

import json
import math
import os

import jax
import numpy as np


def _scalar(v) -> float:
  return float(np.asarray(v))


def truncate(workdir: str, stage: str, step: int) -> int:
  """Drops the stage's rows logged after `step` (a resumed run logs those steps
  again); process 0 rewrites the file atomically. Returns the rows dropped."""
  path = os.path.join(workdir, "metrics.jsonl")
  if jax.process_index() != 0 or not os.path.exists(path):
    return 0
  with open(path) as f:
    lines = f.readlines()
  keep = []
  for line in lines:
    try:
      row = json.loads(line)
    except ValueError:  # a line cut short by a kill
      continue
    if not (row.get("stage") == stage and int(row.get("step", 0)) > step):
      keep.append(line if line.endswith("\n") else line + "\n")
  if len(keep) != len(lines):
    from sedl_jax import atomic_io
    atomic_io.write_text(path, "".join(keep))
  return len(lines) - len(keep)


class MetricWriter:
  """Writes on process 0 only; every line carries the stage and the step."""

  def __init__(self, workdir: str):
    self.enabled = jax.process_index() == 0
    self._tb = None
    if self.enabled:
      os.makedirs(workdir, exist_ok=True)
      self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(os.path.join(workdir, "tb"))

  def write(self, stage: str, step: int, scalars: dict) -> None:
    if not self.enabled:
      return
    row = {"stage": stage, "step": int(step)}
    for k, v in scalars.items():
      x = _scalar(v)
      row[k] = x if math.isfinite(x) else str(x)
      self._tb.add_scalar(f"{stage}/{k}", x, int(step))
    self._jsonl.write(json.dumps(row) + "\n")
    self._jsonl.flush()

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._tb.close()
