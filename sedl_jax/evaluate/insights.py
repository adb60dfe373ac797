"""SEDL insights from frame-wise emotion probabilities of face sequences.

Per sequence: the most probable emotion and its confidence per frame, dwell
times (lengths of runs of one emotion), emotion transitions (between
consecutive runs, so a matrix entry a -> b counts changes, not frames),
transition rate (changes per frame), and a valence-like score per frame
(probabilities times a fixed valence per emotion) with its linear trend.
Per subject and overall: the same aggregated, and the most frequent emotion
n-grams over the run sequence (e.g. neutral -> sad -> angry).
"""

from __future__ import annotations

import collections

import numpy as np
from scipy import stats

# Valence per emotion name (circumplex-style signs; used only for the trend).
VALENCE = {"angry": -0.8, "disgust": -0.6, "fear": -0.7, "happy": 0.9, "sad": -0.8,
           "surprise": 0.3, "neutral": 0.0, "contempt": -0.5}


def runs(seq: np.ndarray) -> list[tuple[int, int]]:
  """[(value, length), ...] of consecutive equal values."""
  seq = np.asarray(seq)
  if seq.size == 0:
    return []
  change = np.flatnonzero(np.diff(seq)) + 1
  starts = np.r_[0, change]
  ends = np.r_[change, seq.size]
  return [(int(seq[s]), int(e - s)) for s, e in zip(starts, ends)]


def transition_counts(seqs: np.ndarray, num_classes: int) -> np.ndarray:
  """[K, K] counts of changes a -> b (a != b) between consecutive frames."""
  m = np.zeros((num_classes, num_classes), np.int64)
  for s in np.asarray(seqs):
    a, b = s[:-1], s[1:]
    keep = a != b
    np.add.at(m, (a[keep], b[keep]), 1)
  return m


def row_normalise(m: np.ndarray) -> np.ndarray:
  m = np.asarray(m, np.float64)
  return m / np.maximum(m.sum(axis=1, keepdims=True), 1)


def ngrams(seqs: np.ndarray, n: int, names, top: int = 10) -> list[dict]:
  """Most frequent n-grams of the run sequence (repeats collapsed), with counts."""
  counter = collections.Counter()
  for s in np.asarray(seqs):
    r = [v for v, _ in runs(s)]
    counter.update(tuple(r[i:i + n]) for i in range(len(r) - n + 1))
  return [{"pattern": " -> ".join(names[i] for i in gram), "count": int(c)}
          for gram, c in counter.most_common(top)]


def dwell_times(seqs: np.ndarray, num_classes: int) -> dict[int, list[int]]:
  out = {k: [] for k in range(num_classes)}
  for s in np.asarray(seqs):
    for v, length in runs(s):
      out[v].append(length)
  return out


def valence_scores(probs: np.ndarray, names) -> np.ndarray:
  v = np.array([VALENCE.get(n, 0.0) for n in names])
  return np.asarray(probs) @ v


def _summary(pred: np.ndarray, probs: np.ndarray, names, n: int) -> dict:
  k = len(names)
  dwell = dwell_times(pred, k)
  trans = transition_counts(pred, k)
  changes = int(trans.sum())
  frames = int(pred.size)
  dist = np.bincount(pred.ravel(), minlength=k) / max(frames, 1)
  return {
      "frames": frames,
      "emotion_share": {names[i]: float(dist[i]) for i in range(k)},
      "mean_dwell_frames": {names[i]: (float(np.mean(dwell[i])) if dwell[i] else None)
                            for i in range(k)},
      "transition_rate": changes / max(frames - len(pred), 1),
      "transition_counts": trans.tolist(),
      "top_ngrams": ngrams(pred, n, names),
      "mean_confidence": float(probs.max(-1).mean()),
  }


def sequence_insights(probs: np.ndarray, subjects: np.ndarray, names, n: int = 3) -> dict:
  """Insights from probabilities [S, T, K] of sequences with subject ids [S]."""
  probs = np.asarray(probs)
  pred = probs.argmax(-1)
  conf = probs.max(-1)
  valence = valence_scores(probs, names)
  t = np.arange(probs.shape[1])
  per_sequence = []
  for i in range(len(pred)):
    slope = float(stats.linregress(t, valence[i]).slope) if len(t) > 1 else 0.0
    per_sequence.append({
        "subject": int(subjects[i]),
        "emotion": [names[j] for j in pred[i]],
        "confidence": np.round(conf[i], 4).tolist(),
        "dwell": [{"emotion": names[v], "frames": l} for v, l in runs(pred[i])],
        "transition_rate": float((np.diff(pred[i]) != 0).mean()) if len(t) > 1 else 0.0,
        "valence_trend_per_frame": slope,
    })
  per_subject = {str(int(s)): _summary(pred[subjects == s], probs[subjects == s], names, n)
                 for s in np.unique(subjects)}
  overall = _summary(pred, probs, names, n)
  overall["transition_matrix"] = row_normalise(np.asarray(overall["transition_counts"])).tolist()
  return {"overall": overall, "per_subject": per_subject, "per_sequence": per_sequence}
