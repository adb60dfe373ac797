"""Classification metrics and plots shared by every report."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def classification_metrics(y_true, y_pred, num_classes: int) -> dict:
  """accuracy, macro precision / recall / F1 over all classes, confusion matrix,
  and the predictions themselves (reports compare methods item by item)."""
  labels = np.arange(num_classes)
  return {
      "accuracy": float(skm.accuracy_score(y_true, y_pred)),
      "precision_macro": float(skm.precision_score(y_true, y_pred, labels=labels, average="macro",
                                                   zero_division=0)),
      "recall_macro": float(skm.recall_score(y_true, y_pred, labels=labels, average="macro",
                                             zero_division=0)),
      "f1_macro": float(skm.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
      "confusion": skm.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
      "num_examples": int(len(y_true)),
      "predicted": np.asarray(y_pred).astype(int).ravel().tolist(),
  }


def class_weights(labels: np.ndarray, num_classes: int, how: str) -> np.ndarray:
  """`none` -> ones; `balanced` -> n / (K * count_k) as scikit-learn (absent classes get 0)."""
  if how == "none":
    return np.ones(num_classes, np.float32)
  if how != "balanced":
    raise ValueError(f"class_weighting={how!r}: expected 'none' or 'balanced'")
  labels = np.asarray(labels).ravel()
  counts = np.bincount(labels[labels >= 0], minlength=num_classes).astype(np.float64)
  present = (counts > 0).sum()
  w = np.where(counts > 0, counts.sum() / (present * np.maximum(counts, 1)), 0.0)
  return w.astype(np.float32)


def plot_confusion(confusion, class_names, path: str, title: str) -> None:
  """Counts in the cells, colour by row-normalised rate (recall per true class)."""
  from sedl_jax.evaluate import plots
  cm = np.asarray(confusion, dtype=float)
  norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
  plots.class_matrix(norm, class_names, path, title=title, xlabel="predicted", ylabel="true",
                     cmap="Blues", vmax=1, labels=[[str(int(v)) for v in row] for row in cm],
                     light_text=norm > 0.5)
