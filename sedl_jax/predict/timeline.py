"""timeline.html: per input and track, the class probabilities over time, the
abstained spans (CARD), the forecasts and the transitions; one self-contained
file (figures embedded), like the run reports."""

from __future__ import annotations

import os

import numpy as np

from sedl_jax import atomic_io
from sedl_jax.evaluate import plots
from sedl_jax.evaluate.report_doc import ReportDoc, fmt

MAX_PLOTS = 24  # tracks drawn; the rest are summarised in the tables only
MAX_POINTS = 1500  # points drawn per track: longer tracks are averaged in bins


def _spans(mask: np.ndarray):
  """(start, end) index pairs of the runs of True in a boolean array."""
  edges = np.flatnonzero(np.diff(np.r_[0, mask.astype(int), 0]))
  return list(zip(edges[::2], edges[1::2]))


def binned(values: np.ndarray, bins: int) -> np.ndarray:
  """Means of `bins` consecutive, nearly equal runs of rows (all rows when
  there are no more than `bins`): a long track is drawn from at most `bins`
  points, so an hour of video is as quick to draw and read as a minute."""
  values = np.asarray(values, float)
  if len(values) <= bins:
    return values
  edges = np.linspace(0, len(values), bins + 1).round().astype(int)
  sums = np.add.reduceat(np.nan_to_num(values), edges[:-1], axis=0)
  counts = np.add.reduceat(~np.isnan(values), edges[:-1], axis=0)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _plot(rows, names, horizons, path: str, title: str) -> None:
  plt = plots._plt()
  clock = all(r["time_s"] != "" for r in rows)
  x = binned(np.array([r["time_s"] if clock else r["frame"] for r in rows], float), MAX_POINTS)
  probs = binned(np.array([[r[f"p_{c}"] for c in names] for r in rows], float), MAX_POINTS)
  extra = bool(horizons)
  fig, axes = plt.subplots(2 if extra else 1, 1, figsize=(9, 4.6 if extra else 3.2), sharex=True,
                           squeeze=False)
  ax = axes[0, 0]
  cmap = plt.get_cmap("tab10")
  for k, name in enumerate(names):
    ax.plot(x, probs[:, k], color=cmap(k % 10), lw=1.2, label=name)
  if "certain" in rows[0]:
    # A drawn point abstains when most of its frames did.
    abstain = binned(np.array([not r["certain"] for r in rows], float), MAX_POINTS) > 0.5
    for a, b in _spans(abstain):
      ax.axvspan(x[a], x[min(b, len(x) - 1)], color="0.85", zorder=0,
                 label="abstained" if a == _spans(abstain)[0][0] else None)
  pred = probs.argmax(-1)
  changes = np.flatnonzero(np.diff(pred)) + 1
  if len(changes) <= 200:  # beyond that the marks are a grey wash, not information
    for i in changes:
      ax.axvline(x[i], color="0.4", lw=0.5, ls=":")
  ax.set_ylim(0, 1)
  ax.set_ylabel("probability")
  ax.legend(fontsize=7, ncol=min(len(names) + 1, 5), loc="upper right")
  ax.set_title(title, fontsize=9)
  if extra:
    ax2 = axes[1, 0]
    for k in horizons:
      f = binned(np.array([r.get(f"forecast_{k}_p", np.nan) for r in rows], float), MAX_POINTS)
      ax2.plot(x, f, lw=1, label=f"forecast +{k} frame(s): confidence")
    s = binned(np.array([r.get("surprise") if r.get("surprise") != "" else np.nan for r in rows],
                        float), MAX_POINTS)
    ax2.plot(x, s, color="k", lw=1, label="surprise ||pred - actual||²")
    ax2.set_ylabel("forecast")
    ax2.legend(fontsize=7, loc="upper right")
  axes[-1, 0].set_xlabel("time (s)" if clock else "frame")
  plots.save(fig, path, dpi=90)


def write(prediction, out: str) -> str:
  summary = prediction.summary
  model = summary["model"]
  names = model["class_names"]
  doc = ReportDoc("Prediction timeline")
  doc.para(f"Run {model['workdir']} ({model['kind']}; checkpoint steps "
           f"{', '.join(f'{k} {v}' for k, v in model['checkpoint_steps'].items())}). "
           f"{summary['throughput']['frames']} frames, {summary['throughput']['faces']} faces, "
           f"{summary['skipped_count']} skipped.")
  plot_dir = os.path.join(out, "timeline_plots")
  os.makedirs(plot_dir, exist_ok=True)
  drawn = 0
  for n_input, entry in enumerate(summary["inputs"]):
    doc.heading(f"{entry['input']} ({entry['kind']})")
    doc.para(f"{entry['frames']} frames; no face in {entry['no_face_frames']}; "
             f"{entry['skipped']} skipped; {len(entry['tracks'])} track(s).")
    headers = ["track", "faces", "top emotion", "share", "transitions / frame"]
    has_abstain = any("abstain_rate" in t for t in entry["tracks"])
    if has_abstain:
      headers.append("abstain rate")
    table = []
    for t in entry["tracks"]:
      top = max(t["emotion_share"], key=t["emotion_share"].get)
      row = [t["track"], t["faces"], top, t["emotion_share"][top], t["transition_rate"]]
      if has_abstain:
        row.append(t.get("abstain_rate"))
      table.append(row)
    doc.table(headers, table)
    for t in entry["tracks"]:
      if "traits" in t:
        doc.para(f"Track {t['track']} traits: " +
                 ", ".join(f"{k} {fmt(v)}" for k, v in t["traits"].items()))
      if drawn >= MAX_PLOTS:
        continue
      mine = [r for r in prediction.rows
              if r["input"] == entry["input"] and r["face_found"] and r["track"] == t["track"]]
      name = f"input{n_input}_track{t['track']}.png"
      _plot(mine, names, model["forecast_horizons_frames"], os.path.join(plot_dir, name),
            f"{os.path.basename(entry['input'])}, track {t['track']}")
      doc.image(name, f"Track {t['track']}: class probabilities over time"
                      + ("; grey: abstained" if has_abstain else "")
                      + ("; dotted: changes of the top emotion" if t["faces"] > 1 else ""))
      drawn += 1
  path = os.path.join(out, "timeline.html")
  atomic_io.write_text(path, doc.html(plot_dir))
  return path
