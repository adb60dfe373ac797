"""What prediction reads: images, folders of frames, videos and manifest CSVs,
as streams of frames, one decoded frame at a time.

Every input is a `Stream`: a name and a generator of `Frame`s in time order.
Live inputs (`camera:N`, `rtsp://...`, `http(s)://...`, or `live:SOURCE` for
anything else OpenCV opens, read as if it were live) are streams of kind
`live`: frames as they arrive, timed by the wall clock, until the source ends.
A frame that cannot be used (unreadable file, a video frame that fails to
decode) is yielded as a `Frame` with `error` set, so the caller counts and
lists it and the rest goes on.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from typing import Callable, Iterator

import cv2
import numpy as np

from sedl_jax.data import decode, scan


class InputError(ValueError):
  """An --input that cannot be read at all (does not exist, unknown kind)."""


@dataclasses.dataclass
class Frame:
  index: int  # frame number within its input (the video frame index, or the position)
  time_s: float  # seconds from the start; NaN when the input has no clock
  image: np.ndarray | None  # uint8 RGB [H, W, 3]; None when `error`
  name: str = ""  # the file the frame came from (folders, manifests)
  error: str = ""


@dataclasses.dataclass
class Stream:
  name: str  # the input as the user gave it (or manifest:sequence)
  kind: str  # image | folder | video | manifest
  frames: Callable[[], Iterator[Frame]]


def _last_number(name: str) -> tuple:
  digits = re.findall(r"\d+", os.path.splitext(name)[0])
  return (int(digits[-1]) if digits else -1, name)


def _image_frame(path: str, index: int, time_s: float) -> Frame:
  try:
    image = decode.decode_image_bytes(decode.read_file(path), 3)
  except decode.BadItem as e:
    return Frame(index, time_s, None, path, str(e))
  return Frame(index, time_s, image, path)


def _folder_frames(path: str, folder_fps: float) -> Iterator[Frame]:
  """The folder's image files as one sequence, in the order of the last number in
  their names; other files are reported (not counted as frames)."""
  names = [n for n in os.listdir(path)
           if os.path.isfile(os.path.join(path, n)) and not n.startswith(".")]
  is_image = lambda n: os.path.splitext(n)[1].lower() in decode.IMAGE_EXTENSIONS
  for n in sorted(n for n in names if not is_image(n)):
    yield Frame(-1, float("nan"), None, os.path.join(path, n), "not an image file (extension)")
  for i, n in enumerate(sorted(filter(is_image, names), key=_last_number)):
    yield _image_frame(os.path.join(path, n), i, i / folder_fps if folder_fps > 0 else float("nan"))


def _video_frames(path: str, fps: float) -> Iterator[Frame]:
  try:
    for index, t, image in decode.video_stream(path, fps):
      yield Frame(index, t, image, path)
  except decode.BadItem as e:
    yield Frame(-1, float("nan"), None, path, str(e))


def _manifest_streams(path: str, fps: float) -> list[Stream]:
  """Rows with the same subject and sequence form one stream (ordered by frame);
  a row without a sequence is a one-image stream; a video row is a video."""
  try:
    found = scan.manifest(path, allow_outside=True)  # the user names these files to predict
  except ValueError as e:
    raise InputError(str(e)) from None
  groups: dict[str, list] = {}
  for item in found.items:
    key = f"{item.subject}/{item.sequence}" if item.sequence else item.key
    groups.setdefault(key, []).append(item)
  streams = [Stream(f"{path}:{key}", "manifest", _manifest_frames(items, fps))
             for key, items in groups.items()]
  if found.skipped:
    streams.append(Stream(f"{path}:skipped rows", "manifest", lambda: iter(
        [Frame(-1, float("nan"), None, key, reason) for key, reason in found.skipped])))
  return streams


def _manifest_frames(items, fps: float) -> Callable[[], Iterator[Frame]]:
  items = sorted(items, key=lambda it: it.frame)

  def frames():
    for pos, item in enumerate(items):
      if item.kind == "video":
        yield from _video_frames(item.path, fps)
      elif item.kind == "video_frame":
        try:
          yield Frame(item.frame, float("nan"), decode.video_frame(item.path, item.frame, 3),
                      item.path)
        except decode.BadItem as e:
          yield Frame(item.frame, float("nan"), None, item.path, str(e))
      else:
        yield _image_frame(item.path, item.frame if item.frame >= 0 else pos, float("nan"))

  return frames


LIVE_SCHEMES = ("rtsp://", "rtmp://", "http://", "https://")


def is_live(path: str) -> bool:
  p = str(path)
  return p.startswith(("camera:", "live:")) or p.lower().startswith(LIVE_SCHEMES)


def _open_capture(path: str):
  if path.startswith("camera:"):
    index = path.split(":", 1)[1]
    if not index.isdigit():
      raise InputError(f"--input={path!r}: expected camera:N with N a camera number (camera:0)")
    cap, what = cv2.VideoCapture(int(index)), f"camera {index}"
  else:
    source = path.split(":", 1)[1] if path.startswith("live:") else path
    if path.startswith("live:") and not source:
      raise InputError(f"--input={path!r}: expected live:SOURCE (a file, device or URL)")
    cap, what = cv2.VideoCapture(source), repr(source)
  if not cap.isOpened():
    cap.release()
    raise InputError(f"--input={path!r}: OpenCV cannot open {what} (no such camera, "
                     "unreachable stream or unsupported format)")
  return cap


def live_stream(path: str, fps: float = 0.0, max_frames: int = 0) -> Stream:
  """A live source as a stream: opened at once (InputError when it cannot be);
  frames are read as they arrive, `time_s` is seconds since the first frame by
  the wall clock, and with `fps` > 0 frames closer than 1 / fps to the last
  kept one are dropped unread by the model. Ends when the source ends (or
  after `max_frames` kept frames)."""
  cap = _open_capture(path)

  def frames():
    try:
      start, kept, index, next_time = None, 0, 0, 0.0
      while True:
        ok, bgr = cap.read()
        if not ok:
          break
        now = time.monotonic()
        start = now if start is None else start
        t = now - start
        if fps <= 0 or t + 1e-6 >= next_time:
          yield Frame(index, t, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
          kept += 1
          next_time = t + 1.0 / fps if fps > 0 else 0.0
          if max_frames and kept >= max_frames:
            break
        index += 1
    finally:
      cap.release()

  return Stream(path, "live", frames)


def streams(paths, fps: float = 0.0, folder_fps: float = 0.0) -> list[Stream]:
  """One stream per input (a manifest gives one per sequence); raises
  InputError naming a path that does not exist or cannot be a face input.
  Live inputs are not streams here: `live_stream` opens them."""
  out = []
  for path in paths:
    if is_live(path):
      raise InputError(f"--input={path!r} is a live input: predict it on its own "
                       "(one --input), with Predictor.predict_live")
    ext = os.path.splitext(path)[1].lower()
    if not os.path.exists(path):
      raise InputError(f"--input={path!r}: no such file or folder")
    if os.path.isdir(path):
      out.append(Stream(path, "folder", lambda p=path: _folder_frames(p, folder_fps)))
    elif ext in decode.VIDEO_EXTENSIONS:
      out.append(Stream(path, "video", lambda p=path: _video_frames(p, fps)))
    elif ext == ".csv":
      out += _manifest_streams(path, fps)
    elif ext in decode.IMAGE_EXTENSIONS:
      out.append(Stream(path, "image", lambda p=path: iter([_image_frame(p, 0, float("nan"))])))
    else:
      raise InputError(f"--input={path!r}: not an image ({', '.join(decode.IMAGE_EXTENSIONS)}), "
                       f"a video ({', '.join(decode.VIDEO_EXTENSIONS)}), a manifest .csv or a folder")
  return out
