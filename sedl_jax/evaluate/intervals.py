"""How sure the reports' accuracies are: 95% intervals and paired comparisons.

Test items of one subject (the frames of a sequence, a person's photos) are not
independent: resampling them one by one makes intervals too narrow. So the
bootstrap resamples whole groups (subjects where the data has them; every item
its own group otherwise), `BOOTSTRAP` times with a fixed seed, and the interval
is the percentile interval of the resampled accuracies.

Two methods on the same test items are compared pairwise:
  * with groups: the same group bootstrap of the accuracy difference; the
    two-sided p-value is twice the smaller share of resampled differences on
    either side of 0, counted as (count + 1) / (B + 1) (capped at 1);
  * every item its own group: McNemar's exact test on the discordant items
    (scipy's binomial test), the standard paired test for two classifiers.
A comparison is called significant when p < `ALPHA`; the reports then say
which method is better, and "not significant" otherwise.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

BOOTSTRAP = 2000
ALPHA = 0.05
LEVEL = 0.95


def _group_index(groups, n: int) -> tuple[np.ndarray, int]:
  """Item -> dense group index; None or all-distinct groups: one group per item."""
  if groups is None:
    return np.arange(n), n
  _, index = np.unique(np.asarray(groups), return_inverse=True)
  return index.ravel(), int(index.max()) + 1 if n else 0


def _resampled_sums(values: np.ndarray, groups, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(sum of values, item count) of `BOOTSTRAP` group resamples: [B] each."""
  index, g = _group_index(groups, len(values))
  per_group = np.bincount(index, weights=values, minlength=g)
  size = np.bincount(index, minlength=g).astype(np.float64)
  # How often each group is drawn in each of the resamples of g groups.
  counts = np.random.default_rng(seed).multinomial(g, np.full(g, 1.0 / g), size=BOOTSTRAP)
  counts = counts.astype(np.float64)
  return counts @ per_group, counts @ size


def accuracy_interval(correct, groups=None, seed: int = 0) -> list[float]:
  """[low, high]: the 95% group-bootstrap interval of the mean of `correct`."""
  correct = np.asarray(correct, np.float64).ravel()
  if not len(correct):
    return [float("nan"), float("nan")]
  sums, counts = _resampled_sums(correct, groups, seed)
  acc = sums / np.maximum(counts, 1)
  tail = 100 * (1 - LEVEL) / 2
  return [float(np.percentile(acc, tail)), float(np.percentile(acc, 100 - tail))]


def with_interval(metrics: dict, y_true, groups=None) -> dict:
  """`metrics` (from `classification_metrics`, which keeps `predicted`) with
  `accuracy_ci95` added."""
  correct = np.asarray(metrics["predicted"]) == np.asarray(y_true).ravel()
  metrics["accuracy_ci95"] = accuracy_interval(correct, groups)
  return metrics


def compare(correct_a, correct_b, groups=None, seed: int = 0) -> dict:
  """Paired comparison of two methods' per-item correctness on the same items."""
  a = np.asarray(correct_a, np.float64).ravel()
  b = np.asarray(correct_b, np.float64).ravel()
  if a.shape != b.shape:
    raise ValueError(f"paired comparison needs the same test items: {a.shape} vs {b.shape}")
  diff = a - b
  index, g = _group_index(groups, len(diff))
  sums, counts = _resampled_sums(diff, groups, seed)
  resampled = sums / np.maximum(counts, 1)
  tail = 100 * (1 - LEVEL) / 2
  out = {"difference": float(diff.mean()) if len(diff) else float("nan"),
         "difference_ci95": [float(np.percentile(resampled, tail)),
                             float(np.percentile(resampled, 100 - tail))],
         "items": int(len(diff)), "groups": int(g)}
  if g == len(diff):  # independent items: McNemar's exact test
    wins, losses = int((diff > 0).sum()), int((diff < 0).sum())
    p = (stats.binomtest(wins, wins + losses, 0.5).pvalue if wins + losses else 1.0)
    out.update(test="McNemar exact", discordant=[wins, losses])
  else:
    # (count + 1) / (B + 1): a resampled p-value is never 0, at least 2 / (B + 1).
    beyond = min((resampled <= 0).sum(), (resampled >= 0).sum())
    p = min(1.0, 2 * (beyond + 1) / (BOOTSTRAP + 1))
    out.update(test=f"group bootstrap over {g} subjects")
  out["p_value"] = float(p)
  out["significant"] = bool(p < ALPHA)
  return out


def paired(name_a: str, name_b: str, correct_a, correct_b, groups=None) -> dict:
  """`compare` with its one-line `verdict` under "verdict" (what the reports show)."""
  result = compare(correct_a, correct_b, groups)
  result["verdict"] = verdict(name_a, name_b, result)
  return result


def percent(value: float, ci) -> str:
  """'42.0 (38.1-45.9)': an accuracy and its interval, in percent."""
  if ci is None:
    return f"{100 * value:.1f}"
  return f"{100 * value:.1f} ({100 * ci[0]:.1f}-{100 * ci[1]:.1f})"


def verdict(name_a: str, name_b: str, result: dict) -> str:
  """One line for a report: which is better, or not significant."""
  d, (lo, hi) = 100 * result["difference"], result["difference_ci95"]
  text = (f"{name_a} vs {name_b}: {d:+.1f} points (95% CI {100 * lo:+.1f} to {100 * hi:+.1f}), "
          f"p={result['p_value']:.3g} ({result['test']})")
  if not result["significant"]:
    return text + ": not significant"
  return text + f": {name_a if d > 0 else name_b} is better"
