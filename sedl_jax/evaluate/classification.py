"""Classification metrics and plots shared by every report."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def classification_metrics(y_true, y_pred, num_classes: int) -> dict:
  """accuracy, macro precision / recall / F1 over all classes, confusion matrix."""
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
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  cm = np.asarray(confusion, dtype=float)
  norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
  fig, ax = plt.subplots(figsize=(5.5, 4.8))
  im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
  ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
  ax.set_yticks(range(len(class_names)), class_names)
  for i in range(cm.shape[0]):
    for j in range(cm.shape[1]):
      ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
              color="white" if norm[i, j] > 0.5 else "black")
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  ax.set_title(title)
  fig.colorbar(im, ax=ax, fraction=0.046)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
