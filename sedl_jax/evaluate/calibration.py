"""Probabilistic quality of predicted class probabilities: NLL and ECE."""

from __future__ import annotations

import numpy as np


def nll(probs: np.ndarray, labels: np.ndarray, eps: float = 1e-12) -> float:
  """Mean negative log-likelihood of the true class."""
  p = np.asarray(probs, np.float64)[np.arange(len(labels)), np.asarray(labels)]
  return float(-np.mean(np.log(np.maximum(p, eps))))


def reliability_bins(probs: np.ndarray, labels: np.ndarray, bins: int = 10):
  """Per equal-width confidence bin: (mean confidence, accuracy, count)."""
  probs = np.asarray(probs, np.float64)
  conf = probs.max(-1)
  correct = (probs.argmax(-1) == np.asarray(labels)).astype(np.float64)
  # Bin k holds confidences in (k/bins, (k+1)/bins]; confidence 0 joins bin 0.
  idx = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
  count = np.bincount(idx, minlength=bins)
  mean_conf = np.bincount(idx, conf, minlength=bins) / np.maximum(count, 1)
  acc = np.bincount(idx, correct, minlength=bins) / np.maximum(count, 1)
  return mean_conf, acc, count


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
  """sum_k |B_k| / n * |acc(B_k) - conf(B_k)| over equal-width confidence bins."""
  conf, acc, count = reliability_bins(probs, labels, bins)
  return float(np.sum(count / max(count.sum(), 1) * np.abs(acc - conf)))
