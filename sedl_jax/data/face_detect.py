"""Face detectors: YuNet (the default; its ONNX model ships inside the package)
and OpenCV's bundled Haar cascade. Nothing is downloaded.

A detector maps an RGB (or grey) uint8 frame of any size to `Face`s, largest
first: a box in frame pixels, the five YuNet landmarks (right eye, left eye,
nose tip, right and left mouth corner, in the subject's sense: the right eye
is the one on the image's left) and a score. Haar gives no landmarks.
Detectors hold OpenCV state that is not thread-safe: one per thread.
"""

from __future__ import annotations

import dataclasses
import os
from importlib import resources

import cv2
import numpy as np

YUNET_FILE = "face_detection_yunet_2026may.onnx"
HAAR_CASCADE = "haarcascade_frontalface_default.xml"
# `data.face_crop` / `predict.face` values; a path ending in .onnx is a YuNet-format model.
DETECTORS = ("yunet", "haar")


def yunet_model_path() -> str:
  """The shipped YuNet model (package data, with its LICENSE and README beside it)."""
  return str(resources.files("sedl_jax").joinpath("assets", "yunet", YUNET_FILE))


def is_detector(name: str) -> bool:
  return name in DETECTORS or str(name).lower().endswith(".onnx")


@dataclasses.dataclass
class Face:
  box: tuple[float, float, float, float]  # (x, y, w, h) in frame pixels
  score: float
  landmarks: np.ndarray | None = None  # [5, 2] (x, y) in frame pixels; None for Haar

  @property
  def area(self) -> float:
    return self.box[2] * self.box[3]


@dataclasses.dataclass(frozen=True)
class DetectorSettings:
  name: str = "yunet"  # yunet | haar | a YuNet-format .onnx path
  score_threshold: float = 0.6  # YuNet: faces scoring below are dropped
  nms_threshold: float = 0.3  # YuNet: boxes overlapping a better one by this IoU are dropped
  min_size: int = 20  # smallest face side in frame pixels
  # Frames larger than this (longer side, pixels) are scaled down before YuNet
  # runs, and the boxes scaled back: detection time stays flat for HD frames.
  max_side: int = 640


class YuNetDetector:
  def __init__(self, s: DetectorSettings):
    path = yunet_model_path() if s.name == "yunet" else s.name
    if not os.path.isfile(path):
      raise FileNotFoundError(f"face detector model {path!r}: no such file")
    if not hasattr(cv2, "FaceDetectorYN"):
      raise RuntimeError(f"this OpenCV ({cv2.__version__}) has no cv2.FaceDetectorYN: install "
                         "opencv-python-headless >= 4.8, < 5")
    try:
      self.net = cv2.FaceDetectorYN.create(path, "", (320, 320), float(s.score_threshold),
                                           float(s.nms_threshold), 5000)
    except cv2.error as e:
      raise ValueError(f"face detector model {path!r}: OpenCV cannot load it as a YuNet "
                       f"model ({str(e).strip()[:160]})") from None
    self.s = s
    self._size = (320, 320)

  def __call__(self, image: np.ndarray) -> list[Face]:
    h, w = image.shape[:2]
    scale = min(1.0, self.s.max_side / max(h, w))
    bgr = _bgr(image)
    if scale < 1.0:
      bgr = cv2.resize(bgr, (max(1, round(w * scale)), max(1, round(h * scale))),
                       interpolation=cv2.INTER_AREA)
    size = (bgr.shape[1], bgr.shape[0])
    if size != self._size:
      self.net.setInputSize(size)
      self._size = size
    _, found = self.net.detect(bgr)
    faces = []
    for row in (found if found is not None else []):
      x, y, bw, bh = (float(v) / scale for v in row[:4])
      if min(bw, bh) < self.s.min_size:
        continue
      faces.append(Face((x, y, bw, bh), float(row[14]), row[4:14].reshape(5, 2) / scale))
    return sorted(faces, key=lambda f: -f.area)


class HaarDetector:
  def __init__(self, s: DetectorSettings, min_neighbors: int = 4):
    path = os.path.join(cv2.data.haarcascades, HAAR_CASCADE)
    self.cascade = cv2.CascadeClassifier(path)
    if self.cascade.empty():
      raise RuntimeError(f"could not load OpenCV's Haar cascade {path}: reinstall "
                         "opencv-python-headless (< 5; OpenCV 5 no longer bundles the cascades)")
    self.s, self.min_neighbors = s, int(min_neighbors)

  def __call__(self, image: np.ndarray) -> list[Face]:
    grey = image[..., 0] if image.shape[2] == 1 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    m = int(self.s.min_size)
    found = self.cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=self.min_neighbors,
                                          minSize=(m, m))
    faces = [Face(tuple(float(v) for v in f), 1.0) for f in found]
    return sorted(faces, key=lambda f: -f.area)


def make(s: DetectorSettings):
  """A detector for `s.name`; a clear error for an unknown name."""
  if s.name == "haar":
    return HaarDetector(s)
  if s.name == "yunet" or str(s.name).lower().endswith(".onnx"):
    return YuNetDetector(s)
  raise ValueError(f"face detector {s.name!r}: expected one of {DETECTORS} or a path to a "
                   "YuNet-format .onnx model")


def _bgr(image: np.ndarray) -> np.ndarray:
  if image.shape[2] == 1:
    return np.ascontiguousarray(np.repeat(image, 3, axis=2))
  return np.ascontiguousarray(image[..., ::-1])
