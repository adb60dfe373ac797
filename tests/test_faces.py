"""Face detection (YuNet shipped with the package, Haar), alignment from the
landmarks, and histogram equalisation, against NumPy references."""

import hashlib
import math
import os
import re

import cv2
import numpy as np
import pytest

import data_fixtures as fx
from sedl_jax.data import decode, face_align, face_detect
from sedl_jax.data.face_crop import FaceCropper


def test_yunet_ships_inside_the_package_with_its_licence_and_checksum():
  path = face_detect.yunet_model_path()
  folder = os.path.dirname(path)
  assert os.path.isfile(path) and {"LICENSE", "README.md"} <= set(os.listdir(folder))
  readme = open(os.path.join(folder, "README.md")).read()
  digest = re.search(r"sha256 `([0-9a-f]{64})`", readme).group(1)
  assert hashlib.sha256(open(path, "rb").read()).hexdigest() == digest
  assert "MIT" in open(os.path.join(folder, "LICENSE")).read()


@pytest.fixture(scope="module")
def cropper():
  return FaceCropper(0.2)


def test_yunet_finds_each_drawn_face_with_five_landmarks_and_nothing_in_a_blank_frame(cropper):
  faces = cropper.detect(fx.face_scene(2), max_faces=4)
  assert len(faces) == 2
  for f in faces:
    x, y, w, h = f.box
    right_eye, left_eye, nose, mouth_r, mouth_l = f.landmarks
    # The subject's right eye is on the image's left; eyes above nose above mouth.
    assert x < right_eye[0] < left_eye[0] < x + w
    assert max(right_eye[1], left_eye[1]) < nose[1] < min(mouth_r[1], mouth_l[1]) < y + h
  assert cropper.detect(np.full((240, 320, 3), 40, np.uint8), 4) == []
  assert face_detect.make(face_detect.DetectorSettings("haar"))(np.full((240, 320, 3), 40,
                                                                        np.uint8)) == []


def test_large_frames_are_scaled_down_for_yunet_and_boxes_mapped_back():
  frame = fx.face_scene(1)  # 320 x 240
  big = cv2.resize(frame, (1280, 960), interpolation=cv2.INTER_LINEAR)
  small_det = face_detect.make(face_detect.DetectorSettings())
  # max_side 320: the 1280-pixel frame runs at a quarter of its size.
  scaled_det = face_detect.make(face_detect.DetectorSettings(max_side=320))
  (a,) = small_det(frame)
  (b,) = scaled_det(big)
  # The same face, 4x the coordinates, within the detector's own jitter (a few
  # pixels at the small scale, x4).
  np.testing.assert_allclose(np.array(b.box) / 4, a.box, atol=3)
  np.testing.assert_allclose(b.landmarks / 4, a.landmarks, atol=3)


def test_a_user_onnx_path_is_accepted_and_bad_detectors_name_themselves(tmp_path):
  det = face_detect.make(face_detect.DetectorSettings(face_detect.yunet_model_path()))
  assert len(det(fx.face_scene(1))) == 1
  with pytest.raises(FileNotFoundError, match="nope.onnx"):
    face_detect.make(face_detect.DetectorSettings(str(tmp_path / "nope.onnx")))
  junk = tmp_path / "junk.onnx"
  junk.write_bytes(b"not a model")
  with pytest.raises(ValueError, match="junk.onnx"):
    face_detect.make(face_detect.DetectorSettings(str(junk)))
  with pytest.raises(ValueError, match="dlib"):
    face_detect.make(face_detect.DetectorSettings("dlib"))
  with pytest.raises(ValueError, match="haar gives boxes only"):
    FaceCropper(detector="haar", align="landmarks")


def _reference_alignment(landmarks, margin):
  """NumPy reference: the similarity that puts the eyes level, FACE_PER_EYE_DISTANCE
  eye distances (times 1 + 2 margin) to the crop side, written independently as
  a rotation matrix applied to centred coordinates."""
  re_, le = landmarks[0], landmarks[1]
  d = le - re_
  a = np.arctan2(d[1], d[0])
  rot = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])  # R(-a)
  dist = np.linalg.norm(d)
  centre = (re_ + le) / 2 + face_align.CENTRE_BELOW_EYES * dist * np.array([-np.sin(a), np.cos(a)])
  side = (1 + 2 * margin) * face_align.FACE_PER_EYE_DISTANCE * dist
  return rot, centre, side


@pytest.mark.parametrize("angle_deg", [-40.0, -12.5, 0.0, 20.0, 35.0])
def test_the_alignment_transform_levels_the_eyes_and_scales_by_their_distance(angle_deg):
  rng = np.random.default_rng(int(angle_deg) + 50)
  a = math.radians(angle_deg)
  eye_dist, out = rng.uniform(20, 90), 48
  right_eye = rng.uniform(100, 300, 2)
  left_eye = right_eye + eye_dist * np.array([math.cos(a), math.sin(a)])
  lm = np.stack([right_eye, left_eye, *(rng.uniform(100, 300, (3, 2)))])
  cx, cy, side, angle = face_align.alignment(lm, 0.2)
  assert angle == pytest.approx(angle_deg, abs=1e-9)
  m = face_align.affine_matrix(cx, cy, side, angle, out)
  rot, centre, ref_side = _reference_alignment(lm, 0.2)
  assert side == pytest.approx(ref_side, rel=1e-12)
  pts = lm[:2] @ m[:, :2].T + m[:, 2]
  ref = (lm[:2] - centre) @ rot.T * (out / ref_side) + out / 2
  np.testing.assert_allclose(pts, ref, atol=1e-9)
  # Level eyes, the expected distance, symmetric about the crop's vertical midline.
  assert pts[0, 1] == pytest.approx(pts[1, 1], abs=1e-9)
  assert pts[1, 0] - pts[0, 0] == pytest.approx(out / (1.4 * face_align.FACE_PER_EYE_DISTANCE))
  assert (pts[0, 0] + pts[1, 0]) / 2 == pytest.approx(out / 2)


def test_a_rotated_face_comes_back_level():
  """A drawn face turned by 20 degrees: the aligned crop, warped from YuNet's
  landmarks, has its eye line level as far as the landmarks allow. Tolerance:
  YuNet's eye landmarks on this 120-pixel drawn face (eye distance ~40 px)
  land within ~2 px of the eye, so one detection's eye-line angle is within
  atan(2 * 2 / 40) = 5.7 degrees of the truth; the crop's residual tilt,
  re-detected in the crop and compared with the upright face's own residual,
  involves four such detections: within 2 * 5.7 = 11.4 degrees, where the
  unaligned crop would be off by the full 20."""
  face = np.pad(fx.draw_face(120), ((60, 60), (60, 60), (0, 0)), constant_values=40)
  h, w = face.shape[:2]
  c = FaceCropper(0.2)
  residual = {}
  for tilt in (0.0, 20.0):
    m = cv2.getRotationMatrix2D((w / 2, h / 2), tilt, 1.0)  # counter-clockwise on screen
    turned = cv2.warpAffine(face, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
    (found,) = c.detect(turned, 1)
    # Counter-clockwise on screen: the eye line rises to the right (angle < 0).
    assert face_align.alignment(found.landmarks, 0.2)[3] == pytest.approx(-tilt, abs=5.7)
    crop = cv2.resize(c.crop(turned, found, 64), (192, 192))
    (again,) = c.detect(crop, 1)
    residual[tilt] = face_align.alignment(again.landmarks, 0.2)[3]
  assert abs(residual[20.0] - residual[0.0]) < 11.4


def test_crops_are_square_and_widened_boxes_stay_inside_the_image(cropper):
  frame = fx.face_scene(2)
  for box, crop in cropper.faces(frame, 48, 4):
    top, left, bottom, right = box
    assert bottom - top == right - left and 0 <= top and 0 <= left
    assert bottom <= frame.shape[0] and right <= frame.shape[1]
    assert crop.shape[0] == crop.shape[1] and crop.dtype == np.uint8
  assert face_align.widened_box((-10, -10, 50, 50), 0.5, (40, 60)) == (0, 0, 40, 40)


def _numpy_equalize(grey):
  """OpenCV's equalizeHist, written from its definition: the grey level v goes
  to round(255 * (cdf(v) - cdf_min) / (N - cdf_min)), cdf_min the count of the
  darkest level present."""
  hist = np.bincount(grey.ravel(), minlength=256)
  cdf = np.cumsum(hist)
  cdf_min = cdf[np.flatnonzero(hist)[0]]
  n = grey.size
  if n == cdf_min:
    return grey.copy()
  lut = np.clip(np.round((cdf - cdf_min) * 255.0 / (n - cdf_min)), 0, 255).astype(np.uint8)
  return lut[grey]


def test_equalization_matches_the_numpy_reference_and_flattens_the_histogram():
  rng = np.random.default_rng(0)
  grey = np.clip(rng.normal(90, 20, (48, 48)), 0, 255).astype(np.uint8)
  out = decode.equalize_histogram(grey[..., None])[..., 0]
  # The two roundings may disagree by one grey level where a value lands on .5.
  assert np.abs(out.astype(int) - _numpy_equalize(grey)).max() <= 1
  assert out.min() == 0 and out.max() == 255 and abs(out.mean() - 127.5) < 4
  # RGB: the luma is equalised, the chroma kept (a skin-like tint, which the
  # YCrCb round trip keeps inside the RGB cube: +-3 levels of rounding).
  rgb = np.stack([grey, (grey * 0.85).astype(np.uint8), (grey * 0.7).astype(np.uint8)], -1)
  eq = decode.equalize_histogram(rgb)
  y = cv2.cvtColor(eq, cv2.COLOR_RGB2YCrCb)
  y0 = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)
  # Where a brightened pixel would leave the RGB cube it is clipped; elsewhere
  # only the round trip's rounding separates it from the reference.
  inside = (eq > 0).all(-1) & (eq < 255).all(-1)
  assert inside.mean() > 0.8
  assert np.abs(y[..., 0].astype(int) - _numpy_equalize(y0[..., 0]))[inside].max() <= 3
  assert np.abs(y[..., 1:].astype(int) - y0[..., 1:])[inside].max() <= 3
  # model_input applies it after resizing, on the model's own pixels.
  big = np.repeat(cv2.resize(grey, (96, 96))[..., None], 3, axis=2)
  np.testing.assert_array_equal(
      decode.model_input(big, 48, 1, equalize=True),
      decode.equalize_histogram(decode.model_input(big, 48, 1)))
