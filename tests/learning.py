"""Checks that a tiny end-to-end run learned (read from its metrics.jsonl), and
the bounds two runs that differ only in float32 summation order stay within."""

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


def reordered_sum_tolerance(n: int) -> float:
  """Relative tolerance of a float32 value whose longest sum has `n` terms, taken in
  another order (other device or process count): about sqrt(n) * eps (a random
  walk of roundings); 4 x that (4 sigma) holds on any CPU."""
  return 4 * math.sqrt(n) * float(np.finfo(np.float32).eps)


def adam_drift_bound(lr: float, steps: int, b1: float = 0.9, b2: float = 0.999) -> float:
  """How far apart, per element, two Adam(W) runs from the same parameters can be
  after `steps` steps at learning rates <= lr, whatever their gradients.

  One update is lr * m_hat / (sqrt(v_hat) + eps). By Cauchy-Schwarz on the
  moving averages, |m_hat / sqrt(v_hat)| <= B_t =
  (1 - b1) / (1 - b1^t) * sqrt((1 - b2^t) / (1 - b2)) * sqrt(sum_{k<t} (b1^2 / b2)^k)
  (B_1 = 1, B_4 = 1.0066). Decoupled weight decay scales both runs by the same
  (1 - lr * wd), which cannot widen their gap, so the gap grows by at most
  2 * lr * B_t a step."""
  total = 0.0
  for t in range(1, steps + 1):
    geometric = sum((b1 * b1 / b2) ** k for k in range(t))
    total += (1 - b1) / (1 - b1 ** t) * math.sqrt((1 - b2 ** t) / (1 - b2)) * math.sqrt(geometric)
  return 2 * lr * total
