"""Checks that a tiny end-to-end run learned, read from its metrics.jsonl."""

import json
import math

import numpy as np


def logged(workdir, stage: str, key: str = "loss") -> list[float]:
  rows = [json.loads(line) for line in open(f"{workdir}/metrics.jsonl")]
  return [r[key] for r in rows if r["stage"] == stage and key in r]


def assert_loss_fell(workdir, stage: str, windows: int = 2) -> None:
  """The mean of the last `windows` logged losses is below that of the first ones.
  Runs are seeded, so this is the same on every CPU up to float32 summation order,
  far below the drops it checks (the tiny runs' losses fall by 4% to 40%)."""
  losses = logged(workdir, stage)
  assert len(losses) >= 2 * windows, (stage, losses)
  first, last = np.mean(losses[:windows]), np.mean(losses[-windows:])
  assert last < first, (stage, losses)


def above_chance(accuracy: float, n: int, num_classes: int, sds: float = 3.0) -> bool:
  """Accuracy on n balanced test items above chance (1/K) by `sds` binomial SDs:
  a guesser passes with probability < 0.2% at 3 SDs."""
  p = 1.0 / num_classes
  return accuracy >= p + sds * math.sqrt(p * (1 - p) / n)
