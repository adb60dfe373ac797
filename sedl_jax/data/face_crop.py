"""Face cropping with OpenCV's bundled Haar cascade (ships with
opencv-python-headless: nothing is downloaded)."""

from __future__ import annotations

import os

import cv2
import numpy as np

CASCADE = "haarcascade_frontalface_default.xml"


class FaceCropper:
  """Largest detected face, widened by `margin` (a fraction of the box side)
  and made square; None when no face is found."""

  def __init__(self, margin: float = 0.2, min_size: int = 20, min_neighbors: int = 4):
    path = os.path.join(cv2.data.haarcascades, CASCADE)
    self.cascade = cv2.CascadeClassifier(path)
    if self.cascade.empty():
      raise RuntimeError(f"could not load OpenCV's Haar cascade {path}: reinstall "
                         "opencv-python-headless (< 5; OpenCV 5 no longer bundles the cascades)")
    self.margin = float(margin)
    self.min_size = int(min_size)
    self.min_neighbors = int(min_neighbors)

  def box(self, image: np.ndarray) -> tuple[int, int, int, int] | None:
    """(top, left, bottom, right) of the widened square box around the largest face."""
    grey = image[..., 0] if image.shape[2] == 1 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    faces = self.cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=self.min_neighbors,
                                          minSize=(self.min_size, self.min_size))
    if len(faces) == 0:
      return None
    x, y, w, h = max(faces, key=lambda f: int(f[2]) * int(f[3]))
    side = int(round(max(w, h) * (1 + 2 * self.margin)))
    cy, cx = y + h / 2, x + w / 2
    top, left = int(round(cy - side / 2)), int(round(cx - side / 2))
    H, W = grey.shape
    # Clip, keeping the box square.
    side = min(side, H, W)
    top = min(max(top, 0), H - side)
    left = min(max(left, 0), W - side)
    return top, left, top + side, left + side

  def __call__(self, image: np.ndarray) -> np.ndarray | None:
    b = self.box(image)
    if b is None:
      return None
    top, left, bottom, right = b
    return image[top:bottom, left:right]
