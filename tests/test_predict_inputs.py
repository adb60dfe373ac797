"""Prediction's host side without a model: inputs as frame streams, face boxes,
tracks. (Prediction with trained runs is tested in test_sedl_e2e and test_card_e2e.)"""

import numpy as np
import pytest

import data_fixtures as fx
from sedl_jax.data import decode
from sedl_jax.data.face_crop import FaceCropper
from sedl_jax.predict import inputs
from sedl_jax.predict.tracks import Tracker, iou


def _frames(path, **kw):
  (stream,) = inputs.streams([str(path)], **kw)
  return list(stream.frames())


def test_video_frames_carry_their_timestamps_and_fps_subsamples(tmp_path):
  video = tmp_path / "v.avi"
  fx.face_video(str(video), [1] * 10, fps=10)
  frames = _frames(video)
  assert [f.index for f in frames] == list(range(10))
  np.testing.assert_allclose([f.time_s for f in frames], np.arange(10) / 10, atol=1e-6)
  assert frames[0].image.shape == (240, 320, 3)
  half = _frames(video, fps=5.0)
  assert [f.index for f in half] == [0, 2, 4, 6, 8]


def test_a_folder_is_one_sequence_ordered_by_the_last_number(tmp_path):
  face = fx.face_scene(1)
  for name in ("s1_frame_10.png", "s1_frame_2.png", "s1_frame_1.png"):
    fx.save(face, str(tmp_path / name))
  (tmp_path / "readme.md").write_text("notes")
  other, *frames = _frames(tmp_path, folder_fps=2.0)
  assert other.image is None and "not an image" in other.error and other.name.endswith("readme.md")
  assert [f.name.rsplit("/", 1)[1] for f in frames] == [
      "s1_frame_1.png", "s1_frame_2.png", "s1_frame_10.png"]
  assert [f.index for f in frames] == [0, 1, 2] and [f.time_s for f in frames] == [0.0, 0.5, 1.0]


def test_a_manifest_gives_one_stream_per_sequence_and_lists_bad_rows(tmp_path):
  face = fx.face_scene(1)
  for i in range(3):
    fx.save(face, str(tmp_path / f"f{i}.png"))
  (tmp_path / "m.csv").write_text("path,subject,sequence,frame\nf1.png,a,s,1\nf0.png,a,s,0\n"
                                  "f2.png,b,,\nmissing.png,b,,\n")
  streams = inputs.streams([str(tmp_path / "m.csv")])
  by_name = {s.name.rsplit(":", 1)[1]: s for s in streams}
  seq = list(by_name["a/s"].frames())
  assert [f.name.rsplit("/", 1)[1] for f in seq] == ["f0.png", "f1.png"]
  (bad,) = list(by_name["skipped rows"].frames())
  assert "file not found" in bad.error
  assert len(streams) == 3


def test_unusable_inputs_are_frames_with_errors_or_a_clear_error(tmp_path):
  empty = tmp_path / "empty.mp4"
  empty.write_bytes(b"")
  (frame,) = _frames(empty)
  assert frame.image is None and frame.error
  with pytest.raises(inputs.InputError, match="no such file"):
    inputs.streams([str(tmp_path / "gone.avi")])
  (tmp_path / "x.doc").write_text("?")
  with pytest.raises(inputs.InputError, match="not an image"):
    inputs.streams([str(tmp_path / "x.doc")])


def test_boxes_are_square_largest_first_and_crops_match_training_preparation():
  frame = fx.face_scene(2)
  boxes = FaceCropper(0.2).boxes(frame, max_faces=4)
  assert len(boxes) == 2
  for top, left, bottom, right in boxes:
    assert bottom - top == right - left > 0
  assert FaceCropper(0.2).boxes(frame, max_faces=1) == boxes[:1]
  top, left, bottom, right = boxes[0]
  crop = decode.model_input(frame[top:bottom, left:right], 32, 1)
  assert crop.shape == (32, 32, 1) and crop.dtype == np.uint8


def test_tracks_follow_overlapping_boxes_and_survive_short_gaps():
  assert iou((0, 0, 10, 10), (0, 5, 10, 15)) == pytest.approx(50 / 150)
  t = Tracker(min_iou=0.3, max_gap=2)
  a, b = (0, 0, 10, 10), (0, 50, 10, 60)
  assert t.update([a]) == [0]
  assert t.update([(0, 1, 10, 11), b]) == [0, 1]
  assert t.update([b, (0, 2, 10, 12)]) == [1, 0]  # order of detection does not matter
  assert t.update([]) == []
  assert t.update([(0, 2, 10, 12)]) == [0]  # back after one frame unseen
  for _ in range(3):
    t.update([])
  assert t.update([(0, 2, 10, 12)]) == [2]  # gone longer than max_gap: a new track
