"""Faces found and cut the same way for training's data preparation and for
prediction: a detector (`face_detect`: YuNet by default, or Haar) and the crop
geometry (`face_align`: eye-levelled from landmarks, or the widened box)."""

from __future__ import annotations

import numpy as np

from sedl_jax.data import face_align, face_detect

Box = face_align.Box


class FaceCropper:
  """Detected faces, largest first, each as a square box (the detector's box
  widened by `margin` and made square) and a crop (aligned from the landmarks
  when `align` allows and the detector gives them; else the box's pixels).
  Not thread-safe (OpenCV state): one per thread."""

  def __init__(self, margin: float = 0.2, min_size: int = 20, detector: str = "yunet",
               align: str = "auto", score_threshold: float = 0.6, nms_threshold: float = 0.3,
               max_side: int = 640):
    if align not in face_align.ALIGN_MODES:
      raise ValueError(f"face_align={align!r}: expected one of {face_align.ALIGN_MODES}")
    if align == "landmarks" and detector == "haar":
      raise ValueError("face_align='landmarks' needs a detector with landmarks (yunet or a "
                       "YuNet-format .onnx); haar gives boxes only (use face_align='none')")
    self.detector = face_detect.make(face_detect.DetectorSettings(
        detector, float(score_threshold), float(nms_threshold), int(min_size), int(max_side)))
    self.margin = float(margin)
    self.align = align

  def detect(self, image: np.ndarray, max_faces: int = 1) -> list[face_detect.Face]:
    return self.detector(image)[:max(int(max_faces), 0)]

  def boxes(self, image: np.ndarray, max_faces: int = 1) -> list[Box]:
    """Up to `max_faces` widened square boxes, largest face first."""
    return [face_align.widened_box(f.box, self.margin, image.shape)
            for f in self.detect(image, max_faces)]

  def crop(self, image: np.ndarray, face: face_detect.Face, out_size: int) -> np.ndarray:
    """One face's crop (uint8, any square size; `decode.model_input` sizes it)."""
    if face_align.uses_landmarks(self.align, face):
      return face_align.aligned_crop(image, face.landmarks, self.margin, out_size)
    top, left, bottom, right = face_align.widened_box(face.box, self.margin, image.shape)
    return image[top:bottom, left:right]

  def faces(self, image: np.ndarray, out_size: int, max_faces: int = 1):
    """[(box, crop)] of up to `max_faces` faces, largest first."""
    return [(face_align.widened_box(f.box, self.margin, image.shape), self.crop(image, f, out_size))
            for f in self.detect(image, max_faces)]

  def box(self, image: np.ndarray) -> Box | None:
    """The widened square box around the largest face."""
    found = self.boxes(image, 1)
    return found[0] if found else None

  def __call__(self, image: np.ndarray, out_size: int = 224) -> np.ndarray | None:
    """The largest face's crop, or None when no face is found."""
    found = self.faces(image, out_size, 1)
    return found[0][1] if found else None


def from_config(cfg, margin: float | None = None) -> FaceCropper:
  """The cropper a `config.data` (or a run's saved data config) describes."""
  return FaceCropper(float(cfg.face_margin if margin is None else margin),
                     int(cfg.get("face_min_size", 20)), cfg.face_crop,
                     cfg.get("face_align", "none"), float(cfg.get("face_score", 0.6)),
                     float(cfg.get("face_nms", 0.3)))
