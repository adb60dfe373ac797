"""Offline probes on frozen features: logistic regression and cosine kNN (scikit-learn)."""

from __future__ import annotations

import copy
import functools

import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from sedl_jax import cpu_devices
from sedl_jax.evaluate.classification import classification_metrics

PROBE_CS = (0.01, 0.1, 1.0, 10.0)


def probe_blas_threads(cores: int | None = None) -> int:
  """BLAS threads for a probe: a quarter of the usable cores, 1 to 4.

  A probe's products are thin (n x d times d x classes): split over many threads
  they spend their time waiting. The quick raw-pixel probe (4,370 x 2,304 pixels,
  8 L-BFGS fits) took, with 1 / 2 threads, 5.3-6.1 / 16-21 s on a 2-core EPYC, and
  with 1 / 4 / 16 threads 5.7 / 3.1 / 85 s on a 16-core H100 host, where OpenBLAS
  uses every core by default."""
  cores = cpu_devices.usable_cores() if cores is None else cores
  return max(1, min(4, int(cores) // 4))


def _limited_blas(fn):
  @functools.wraps(fn)
  def wrapped(*args, **kwargs):
    with threadpool_limits(probe_blas_threads(), user_api="blas"):
      return fn(*args, **kwargs)
  return wrapped


@_limited_blas
def linear_probe(train_x, train_y, test_x, test_y, num_classes: int, val_x=None, val_y=None,
                 seed: int = 0) -> dict:
  """L-BFGS logistic regression on standardised features; C picked on val when given.

  The C values are fitted along the regularisation path (ascending C, each fit
  starting from the previous solution): the problem is strictly convex, so each
  fit reaches the same optimum as a cold start, in far fewer iterations (on the
  quick raw-pixel probe 19 s instead of 30 s), and the chosen C's model is kept
  instead of being fitted again.
  """
  scaler = StandardScaler().fit(train_x)
  tr, te = scaler.transform(train_x), scaler.transform(test_x)
  clf = LogisticRegression(C=PROBE_CS[1], max_iter=2000, random_state=seed)
  if val_x is not None and len(val_x):
    va = scaler.transform(val_x)
    path = LogisticRegression(max_iter=2000, random_state=seed, warm_start=True)
    best_acc = -1.0
    for c in PROBE_CS:
      path.set_params(C=c).fit(tr, train_y)
      acc = path.score(va, val_y)
      if acc > best_acc:
        best_acc, clf = acc, copy.deepcopy(path)
  else:
    clf.fit(tr, train_y)
  out = classification_metrics(test_y, clf.predict(te), num_classes)
  out["C"] = float(clf.C)
  return out


@_limited_blas
def knn_probe(train_x, train_y, test_x, test_y, num_classes: int, k: int = 20,
              temperature: float = 0.07) -> dict:
  """Cosine kNN with temperature-weighted votes exp(sim / T) (InstDisc / DINO style)."""
  k = min(k, len(train_x))
  weight = lambda dist: np.exp((1.0 - dist) / temperature)
  clf = KNeighborsClassifier(n_neighbors=k, metric="cosine", weights=weight, algorithm="brute")
  clf.fit(train_x, train_y)
  # The test x train distances are computed in chunks of this many MB (sklearn's
  # default, 1024, made a 50k-image run's peak memory grow by a GB).
  with sklearn.config_context(working_memory=64):
    predicted = clf.predict(test_x)
  return classification_metrics(test_y, predicted, num_classes)
