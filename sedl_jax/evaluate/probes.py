"""Offline probes on frozen features: logistic regression and cosine kNN (scikit-learn)."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler

from sedl_jax.evaluate.classification import classification_metrics

PROBE_CS = (0.01, 0.1, 1.0, 10.0)


def linear_probe(train_x, train_y, test_x, test_y, num_classes: int, val_x=None, val_y=None,
                 seed: int = 0) -> dict:
  """L-BFGS logistic regression on standardised features; C picked on val when given."""
  scaler = StandardScaler().fit(train_x)
  tr, te = scaler.transform(train_x), scaler.transform(test_x)
  best_c, best_acc = PROBE_CS[1], -1.0
  if val_x is not None and len(val_x):
    va = scaler.transform(val_x)
    for c in PROBE_CS:
      clf = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(tr, train_y)
      acc = clf.score(va, val_y)
      if acc > best_acc:
        best_c, best_acc = c, acc
  clf = LogisticRegression(C=best_c, max_iter=2000, random_state=seed).fit(tr, train_y)
  out = classification_metrics(test_y, clf.predict(te), num_classes)
  out["C"] = best_c
  return out


def knn_probe(train_x, train_y, test_x, test_y, num_classes: int, k: int = 20,
              temperature: float = 0.07) -> dict:
  """Cosine kNN with temperature-weighted votes exp(sim / T) (InstDisc / DINO style)."""
  k = min(k, len(train_x))
  weight = lambda dist: np.exp((1.0 - dist) / temperature)
  clf = KNeighborsClassifier(n_neighbors=k, metric="cosine", weights=weight, algorithm="brute")
  clf.fit(train_x, train_y)
  return classification_metrics(test_y, clf.predict(test_x), num_classes)
