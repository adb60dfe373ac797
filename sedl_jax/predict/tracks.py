"""Face tracks: the boxes of each frame matched to the tracks of earlier frames
by overlap (intersection over union), with scipy's assignment solver, so a face
keeps its track id while it stays in view."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def iou(a, b) -> float:
  """Intersection over union of two (top, left, bottom, right) boxes."""
  top, left = max(a[0], b[0]), max(a[1], b[1])
  bottom, right = min(a[2], b[2]), min(a[3], b[3])
  inter = max(0, bottom - top) * max(0, right - left)
  area = lambda r: (r[2] - r[0]) * (r[3] - r[1])
  union = area(a) + area(b) - inter
  return inter / union if union > 0 else 0.0


class Tracker:
  """Assigns track ids (0, 1, ...) to the boxes of consecutive frames of one input.

  A box continues the track whose last box it overlaps best (IoU >= min_iou),
  one box per track, solved jointly for the frame; a track unseen for more than
  `max_gap` frames ends; a box that continues none starts a new track.
  """

  def __init__(self, min_iou: float = 0.3, max_gap: int = 10):
    self.min_iou = float(min_iou)
    self.max_gap = int(max_gap)
    self.live: dict[int, tuple] = {}  # id -> (last box, frames since seen)
    self.next_id = 0

  def update(self, boxes) -> list[int]:
    ids = [-1] * len(boxes)
    track_ids = list(self.live)
    if boxes and track_ids:
      overlap = np.array([[iou(b, self.live[t][0]) for t in track_ids] for b in boxes])
      rows, cols = linear_sum_assignment(-overlap)
      for r, c in zip(rows, cols):
        if overlap[r, c] >= self.min_iou:
          ids[r] = track_ids[c]
    for i, b in enumerate(boxes):
      if ids[i] < 0:
        ids[i] = self.next_id
        self.next_id += 1
    seen = set(ids)
    for t in list(self.live):
      if t not in seen:
        box, gap = self.live[t]
        if gap + 1 > self.max_gap:
          del self.live[t]
        else:
          self.live[t] = (box, gap + 1)
    for i, b in zip(ids, boxes):
      self.live[i] = (tuple(b), 0)
    return ids
