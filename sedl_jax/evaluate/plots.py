"""Report figures (matplotlib, Agg backend, PNG files)."""

from __future__ import annotations

import numpy as np


def save(fig, path: str, dpi: int = 110) -> None:
  """Writes the figure atomically (a killed run leaves the old PNG or the new) and closes it."""
  from sedl_jax import atomic_io
  fig.tight_layout()
  atomic_io.write_with(path, lambda tmp: fig.savefig(tmp, dpi=dpi))
  _plt().close(fig)


def _plt():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def tsne(features: np.ndarray, labels: np.ndarray, names, path: str, *, max_points: int,
         seed: int = 0, title: str = "t-SNE of embeddings") -> None:
  """2-D t-SNE (scikit-learn) of a seeded subsample, coloured by emotion."""
  from sklearn.manifold import TSNE
  rng = np.random.default_rng(seed)
  idx = rng.permutation(len(features))[:max_points]
  x, y = np.asarray(features)[idx], np.asarray(labels)[idx]
  perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
  xy = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
  plt = _plt()
  fig, ax = plt.subplots(figsize=(6, 5))
  cmap = plt.get_cmap("tab10")
  for k, name in enumerate(names):
    m = y == k
    if m.any():
      ax.scatter(xy[m, 0], xy[m, 1], s=6, color=cmap(k % 10), label=name, alpha=0.8)
  ax.legend(markerscale=2, fontsize=7, loc="best")
  ax.set_xticks([])
  ax.set_yticks([])
  ax.set_title(title)
  save(fig, path)


def trajectories(probs: np.ndarray, truth: np.ndarray, names, path: str, *, count: int = 4,
                 titles=None) -> None:
  """For a few sequences: true and predicted emotion per frame, and the confidence."""
  plt = _plt()
  count = min(count, len(probs))
  fig, axes = plt.subplots(count, 1, figsize=(7, 1.9 * count), sharex=True, squeeze=False)
  t = np.arange(probs.shape[1])
  for i, ax in enumerate(axes[:, 0]):
    ax.step(t, truth[i], where="mid", color="0.6", lw=2.5, label="true")
    ax.step(t, probs[i].argmax(-1), where="mid", color="C3", lw=1.2, label="predicted")
    ax.set_yticks(range(len(names)), names, fontsize=6)
    ax.set_ylim(-0.5, len(names) - 0.5)
    twin = ax.twinx()
    twin.plot(t, probs[i].max(-1), color="C0", lw=0.8, alpha=0.7)
    twin.set_ylim(0, 1.05)
    twin.set_ylabel("confidence", fontsize=6, color="C0")
    twin.tick_params(labelsize=6)
    if titles is not None:
      ax.set_title(titles[i], fontsize=8)
  axes[0, 0].legend(fontsize=6, loc="upper right")
  axes[-1, 0].set_xlabel("frame")
  save(fig, path)


def class_matrix(values: np.ndarray, names, path: str, *, title: str, xlabel: str, ylabel: str,
                 cmap: str, vmax: float, labels, light_text) -> None:
  """A class-by-class matrix as an image, `labels[i][j]` written in each cell
  (empty strings are left out), in white where `light_text[i, j]`."""
  plt = _plt()
  fig, ax = plt.subplots(figsize=(5.5, 4.8))
  im = ax.imshow(values, cmap=cmap, vmin=0, vmax=vmax)
  ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
  ax.set_yticks(range(len(names)), names)
  for i in range(values.shape[0]):
    for j in range(values.shape[1]):
      if labels[i][j]:
        ax.text(j, i, labels[i][j], ha="center", va="center", fontsize=7,
                color="white" if light_text[i, j] else "black")
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  fig.colorbar(im, ax=ax, fraction=0.046)
  save(fig, path)


def transition_heatmap(matrix: np.ndarray, names, path: str,
                       title: str = "emotion transitions P(next | current)") -> None:
  m = np.asarray(matrix, float)
  labels = [[f"{v:.2f}" if v > 0 else "" for v in row] for row in m]
  # magma is dark at low values: light text there.
  class_matrix(m, names, path, title=title, xlabel="next emotion", ylabel="current emotion",
               cmap="magma", vmax=max(m.max(), 1e-9), labels=labels,
               light_text=m <= 0.5 * m.max())


def reliability(mean_conf: np.ndarray, acc: np.ndarray, count: np.ndarray, path: str,
                title: str = "reliability diagram") -> None:
  plt = _plt()
  bins = len(count)
  edges = np.linspace(0, 1, bins + 1)
  centers = (edges[:-1] + edges[1:]) / 2
  fig, ax = plt.subplots(figsize=(4.5, 4.5))
  ax.bar(centers, np.where(count > 0, acc, 0), width=1 / bins, edgecolor="k", alpha=0.7,
         label="accuracy")
  ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
  ax.plot(centers[count > 0], mean_conf[count > 0], "o", color="C3", ms=3, label="mean confidence")
  ax.set_xlabel("confidence")
  ax.set_ylabel("accuracy")
  ax.set_xlim(0, 1)
  ax.set_ylim(0, 1)
  ax.legend(fontsize=7, loc="upper left")
  ax.set_title(title)
  save(fig, path)


def label_efficiency(series: dict, path: str) -> None:
  """Accuracy against the fraction of training labels (log x), one line per
  method, with 95% interval bars. series: name -> [(fraction, acc, [lo, hi])]."""
  plt = _plt()
  fig, ax = plt.subplots(figsize=(6, 4))
  for k, (name, points) in enumerate(series.items()):
    if not points:
      continue
    f, acc, ci = zip(*sorted(points))
    acc, ci = np.asarray(acc), np.asarray(ci)
    # Nudge the methods apart along x so that the bars do not hide each other.
    x = np.asarray(f) * (1 + 0.03 * (k - len(series) / 2))
    ax.errorbar(x, 100 * acc, yerr=100 * np.abs(ci.T - acc), marker="o", ms=4, capsize=3,
                label=name)
  ax.set_xscale("log")
  fractions = sorted({p[0] for points in series.values() for p in points})
  ax.set_xticks(fractions)
  ax.set_xticklabels([f"{f:.0%}" for f in fractions])
  ax.set_xlabel("fraction of training labels")
  ax.set_ylabel("test accuracy %")
  ax.legend(fontsize=7, loc="lower right")
  ax.grid(alpha=0.3)
  save(fig, path)
