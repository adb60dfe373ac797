"""From a detected face to the square crop the model reads: the same geometry
in data preparation and in prediction.

Without landmarks (`none`, or Haar): the detector's box, widened by `margin`
(a fraction of its side, each way) and made square. With landmarks: the image
turned about the face so that the eye line is level, scaled by the distance
between the eyes, and cropped around a centre below the eye midpoint:

  side   = (1 + 2 margin) * FACE_PER_EYE_DISTANCE * |left eye - right eye|
  centre = eye midpoint + CENTRE_BELOW_EYES * |eyes| along the face's downward axis

so a face's eyes land on the same rows of every crop, whatever its tilt, size
or position in the frame.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

ALIGN_MODES = ("auto", "landmarks", "none")
# A frontal face box (brows to chin, ear to ear) is about 2.5 eye distances wide;
# the eye midpoint sits 0.35 eye distances above the box centre (measured on
# YuNet's boxes of FER2013 faces and of the project's rendered faces).
FACE_PER_EYE_DISTANCE = 2.5
CENTRE_BELOW_EYES = 0.35
# The aligned crop is warped at most this many times the model's input side,
# then resized with area averaging (as unaligned crops are), so a large face
# is not aliased by the warp's bilinear sampling.
WARP_OVERSAMPLE = 4

Box = tuple[int, int, int, int]  # (top, left, bottom, right), a square in image pixels


def widened_box(box, margin: float, shape) -> Box:
  """The detector's (x, y, w, h) box widened by `margin`, made square and
  clipped to the image (still square)."""
  x, y, w, h = box
  side = int(round(max(w, h) * (1 + 2 * margin)))
  cy, cx = y + h / 2, x + w / 2
  top, left = int(round(cy - side / 2)), int(round(cx - side / 2))
  H, W = shape[:2]
  side = max(1, min(side, H, W))
  top = min(max(top, 0), H - side)
  left = min(max(left, 0), W - side)
  return top, left, top + side, left + side


def alignment(landmarks: np.ndarray, margin: float) -> tuple[float, float, float, float]:
  """(centre x, centre y, side, angle in degrees) of the aligned crop from five
  landmarks [5, 2]; angle > 0: the eye line falls to the image's right."""
  right_eye, left_eye = np.asarray(landmarks[0], float), np.asarray(landmarks[1], float)
  d = left_eye - right_eye
  dist = float(np.hypot(*d))
  angle = math.atan2(d[1], d[0])
  mid = (right_eye + left_eye) / 2
  down = np.array([-math.sin(angle), math.cos(angle)])  # the face's downward axis
  centre = mid + CENTRE_BELOW_EYES * dist * down
  side = (1 + 2 * margin) * FACE_PER_EYE_DISTANCE * dist
  return float(centre[0]), float(centre[1]), float(side), math.degrees(angle)


def affine_matrix(cx: float, cy: float, side: float, angle_deg: float, out: int) -> np.ndarray:
  """2x3 matrix taking image (x, y) to crop pixels: rotate by -angle about the
  centre, scale side -> out, put the centre at the crop's centre."""
  a = math.radians(angle_deg)
  s = out / side
  c, n = math.cos(a) * s, math.sin(a) * s
  # (x', y') = R(-a) s (p - centre) + out / 2, with y pointing down.
  return np.array([[c, n, out / 2 - c * cx - n * cy],
                   [-n, c, out / 2 + n * cx - c * cy]], np.float64)


def aligned_crop(image: np.ndarray, landmarks: np.ndarray, margin: float,
                 out_size: int) -> np.ndarray:
  """The eye-levelled square crop, at most WARP_OVERSAMPLE x out_size a side
  (never upsampled beyond the face's own pixels); borders repeat edge pixels."""
  cx, cy, side, angle = alignment(landmarks, margin)
  warp = int(max(1, min(round(side), WARP_OVERSAMPLE * out_size)))
  m = affine_matrix(cx, cy, side, angle, warp)
  crop = cv2.warpAffine(image, m, (warp, warp), flags=cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REPLICATE)
  return crop if crop.ndim == 3 else crop[..., None]


def uses_landmarks(align: str, face) -> bool:
  if align not in ALIGN_MODES:
    raise ValueError(f"face_align={align!r}: expected one of {ALIGN_MODES}")
  return align != "none" and face.landmarks is not None
