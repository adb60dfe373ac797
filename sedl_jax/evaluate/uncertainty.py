"""Votes and PAvPU from per-sample class probabilities (CARD; methods.md section 8).

PAvPU = (accurate & certain + inaccurate & uncertain) / N. Two ways to call a
prediction certain:
  * `ttest` (CARD's definition): the two most voted classes (ties, and the
    second class when every sample votes alike, broken by mean probability);
    a two-sided paired t-test across the n samples of their probabilities;
    certain when p < alpha. When the paired differences have zero variance the
    p-value is undefined; such a case is counted as CERTAIN (every sample agrees
    exactly, so the model could not be surer) and counted in `zero_variance`.
  * `threshold`: certain when the mean probability of the predicted class >= tau.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def top_two(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(votes [N, C], first [N], second [N]) from probabilities [n, N, C]."""
  n, num, c = probs.shape
  votes = np.zeros((num, c), np.int64)
  np.add.at(votes, (np.repeat(np.arange(num)[None], n, 0), probs.argmax(-1)), 1)
  # Sort by votes, then by mean probability, both descending.
  key = votes + probs.mean(0) * 0.5  # mean prob < 1 never outranks one more vote
  order = np.argsort(-key, axis=1, kind="stable")
  return votes, order[:, 0], order[:, 1]


def summarise_samples(probs: np.ndarray, alpha: float = 0.05) -> dict:
  """Majority vote, paired t-test p-values and certainty for probabilities [n, N, C]."""
  probs = np.asarray(probs, np.float64)
  votes, first, second = top_two(probs)
  idx = np.arange(probs.shape[1])
  diff = probs[:, idx, first] - probs[:, idx, second]  # [n, N]
  zero_var = np.isclose(diff.std(axis=0), 0.0, atol=1e-12)
  p = np.ones(len(idx))
  ok = ~zero_var
  if ok.any():
    p[ok] = stats.ttest_rel(probs[:, idx[ok], first[ok]], probs[:, idx[ok], second[ok]], axis=0).pvalue
  p[zero_var] = 0.0  # undefined; treated as certain (module docstring)
  return {"vote": first, "votes": votes, "second": second, "p_value": p,
          "certain_ttest": p < alpha, "zero_variance": zero_var}


def threshold_certain(mean_probs: np.ndarray, tau: float) -> np.ndarray:
  return np.asarray(mean_probs).max(-1) >= tau


def pavpu(accurate: np.ndarray, certain: np.ndarray) -> float:
  accurate, certain = np.asarray(accurate, bool), np.asarray(certain, bool)
  return float(((accurate & certain) | (~accurate & ~certain)).mean())
