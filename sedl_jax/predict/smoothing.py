"""Temporal smoothing of per-frame emotions: the most likely label path of an
HMM (Viterbi), with the per-frame class probabilities as emissions and a
transition matrix from the run's training sequences.

Raw per-frame argmax labels change whenever two classes trade places by a
hair, so they overstate how often a face changes emotion; the HMM keeps a
label until the evidence against it outweighs the cost of a transition.
"""

from __future__ import annotations

import numpy as np

MODES = ("none", "hmm")


def transition_matrix(counts, num_classes: int, stay: float) -> np.ndarray:
  """Row-stochastic [K, K]: the training counts (add-one smoothed) when the run
  has them, else `stay` on the diagonal and the rest spread evenly."""
  k = num_classes
  if counts is not None and np.asarray(counts).sum() > 0:
    m = np.asarray(counts, np.float64) + 1.0
  else:
    m = np.full((k, k), (1.0 - stay) / max(k - 1, 1))
    np.fill_diagonal(m, stay)
  return m / m.sum(axis=1, keepdims=True)


def viterbi(probs: np.ndarray, transitions: np.ndarray) -> np.ndarray:
  """The most likely label path [T] for per-frame probabilities [T, K]
  (uniform start)."""
  probs = np.asarray(probs, np.float64)
  t, k = probs.shape
  if t == 0:
    return np.zeros(0, np.int64)
  log_e = np.log(np.maximum(probs, 1e-12))
  log_a = np.log(np.maximum(transitions, 1e-300))
  score = log_e[0].copy()
  back = np.zeros((t, k), np.int64)
  for i in range(1, t):
    cand = score[:, None] + log_a  # [from, to]
    back[i] = cand.argmax(0)
    score = cand.max(0) + log_e[i]
  path = np.zeros(t, np.int64)
  path[-1] = score.argmax()
  for i in range(t - 1, 0, -1):
    path[i - 1] = back[i, path[i]]
  return path
