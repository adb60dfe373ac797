"""Face boxes with OpenCV's bundled Haar cascade (ships with
opencv-python-headless: nothing is downloaded). Training's data preparation and
prediction both crop through here, so a face is cut the same way in both."""

from __future__ import annotations

import os

import cv2
import numpy as np

CASCADE = "haarcascade_frontalface_default.xml"

Box = tuple[int, int, int, int]  # (top, left, bottom, right), a square in image pixels


class FaceCropper:
  """Detected faces, each box widened by `margin` (a fraction of its side) and
  made square, largest first; `__call__` crops the largest (None when none)."""

  def __init__(self, margin: float = 0.2, min_size: int = 20, min_neighbors: int = 4):
    path = os.path.join(cv2.data.haarcascades, CASCADE)
    self.cascade = cv2.CascadeClassifier(path)
    if self.cascade.empty():
      raise RuntimeError(f"could not load OpenCV's Haar cascade {path}: reinstall "
                         "opencv-python-headless (< 5; OpenCV 5 no longer bundles the cascades)")
    self.margin = float(margin)
    self.min_size = int(min_size)
    self.min_neighbors = int(min_neighbors)

  def boxes(self, image: np.ndarray, max_faces: int = 1) -> list[Box]:
    """Up to `max_faces` widened square boxes, largest face first."""
    grey = image[..., 0] if image.shape[2] == 1 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    faces = self.cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=self.min_neighbors,
                                          minSize=(self.min_size, self.min_size))
    faces = sorted((tuple(int(v) for v in f) for f in faces), key=lambda f: -f[2] * f[3])
    return [self._widen(f, grey.shape) for f in faces[:max(int(max_faces), 0)]]

  def _widen(self, face, shape) -> Box:
    x, y, w, h = face
    side = int(round(max(w, h) * (1 + 2 * self.margin)))
    cy, cx = y + h / 2, x + w / 2
    top, left = int(round(cy - side / 2)), int(round(cx - side / 2))
    H, W = shape
    # Clip, keeping the box square.
    side = min(side, H, W)
    top = min(max(top, 0), H - side)
    left = min(max(left, 0), W - side)
    return top, left, top + side, left + side

  def box(self, image: np.ndarray) -> Box | None:
    """The widened square box around the largest face."""
    found = self.boxes(image, 1)
    return found[0] if found else None

  def __call__(self, image: np.ndarray) -> np.ndarray | None:
    b = self.box(image)
    if b is None:
      return None
    top, left, bottom, right = b
    return image[top:bottom, left:right]
