"""Host-side decoding: files and pixel rows -> uint8 [H, W, C] at the config's size.

Every failure raises `BadItem` with a reason a person can act on; the
preparation step skips and counts the item instead of crashing the run.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv")


class BadItem(Exception):
  """An input item that cannot be used; the message is the reason."""


def _to_mode(im: Image.Image, channels: int) -> np.ndarray:
  """Any PIL mode (L, RGB, RGBA, P, I;16, F, ...) -> uint8 grey or RGB."""
  if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
    a = np.asarray(im, np.float64)
    lo, hi = float(a.min()), float(a.max())
    a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
    im = Image.fromarray(a.astype(np.uint8), "L")
  if im.mode in ("P", "PA", "LA", "RGBA") or "transparency" in im.info:
    # Transparent pixels become white, as most viewers show them.
    rgba = im.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    im = Image.alpha_composite(white, rgba)
  im = im.convert("L" if channels == 1 else "RGB")
  a = np.asarray(im, np.uint8)
  return a[..., None] if a.ndim == 2 else a


# 40 Mpx (e.g. 8000 x 5000): far above any face photo, and a decoded RGB image this
# size already takes 120 MB; PIL's own limit (89 Mpx warns, 179 Mpx fails) is higher.
DEFAULT_MAX_PIXELS = 40_000_000


def decode_image_bytes(raw: bytes, channels: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
  """Bytes -> uint8 [H, W, channels]; BadItem for anything unusable, including an
  image over `max_pixels` (read from the header: nothing is decoded)."""
  if not raw:
    raise BadItem("empty file")
  try:
    with Image.open(io.BytesIO(raw)) as im:
      w, h = im.size
      if max_pixels and w * h > max_pixels:
        raise BadItem(f"image of {w} x {h} = {w * h} pixels is over data.max_pixels={max_pixels}")
      im.load()  # raises on truncated data, which Image.open alone does not
      return _to_mode(im, channels)
  except UnidentifiedImageError:
    raise BadItem("not a readable image (unknown or corrupt format)") from None
  except Image.DecompressionBombError as e:
    raise BadItem(f"decompression bomb refused ({e})") from None
  except MemoryError:
    raise BadItem("out of memory decoding this image") from None
  except (OSError, ValueError, SyntaxError) as e:
    raise BadItem(f"unreadable image ({e})") from None


def read_file(path: str) -> bytes:
  try:
    with open(path, "rb") as f:
      return f.read()
  except OSError as e:
    raise BadItem(f"cannot read file ({e.strerror or e})") from None


def square_box(h: int, w: int) -> tuple[int, int, int, int]:
  """(top, left, bottom, right) of the centred square of an h x w image."""
  s = min(h, w)
  top, left = (h - s) // 2, (w - s) // 2
  return top, left, top + s, left + s


def square(image: np.ndarray) -> np.ndarray:
  """Centre crop to a square, so resizing never distorts a face."""
  top, left, bottom, right = square_box(*image.shape[:2])
  return image[top:bottom, left:right]


def resize(image: np.ndarray, size: int) -> np.ndarray:
  """Square uint8 image -> [size, size, C]; area averaging when shrinking
  (no aliasing), bicubic when enlarging."""
  h = image.shape[0]
  if h == size:
    return image
  interp = cv2.INTER_AREA if h > size else cv2.INTER_CUBIC
  c = image.shape[2]
  out = cv2.resize(image, (size, size), interpolation=interp)
  return out.reshape(size, size, c)


def model_input(image: np.ndarray, size: int, channels: int, equalize: bool = False) -> np.ndarray:
  """A decoded RGB image or face crop -> the model's input format: centre
  square, resized, channels converted, and (`equalize`) its grey levels spread
  to a flat histogram. Training's preparation and prediction both call this, so
  a face reaches the model prepared the same way."""
  out = convert_channels(resize(square(image), size), channels)
  return equalize_histogram(out) if equalize else out


def equalize_histogram(image: np.ndarray) -> np.ndarray:
  """cv2.equalizeHist of a grey image [H, W, 1]; of the luma (YCrCb's Y) of an
  RGB one, so colours keep their hue."""
  if image.shape[2] == 1:
    return cv2.equalizeHist(np.ascontiguousarray(image[..., 0]))[..., None]
  ycc = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2YCrCb)
  ycc[..., 0] = cv2.equalizeHist(ycc[..., 0])
  return cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB)


def convert_channels(image: np.ndarray, channels: int) -> np.ndarray:
  if image.shape[2] == channels:
    return image
  if channels == 1:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None]
  return np.repeat(image, 3, axis=2)


def video_frames(path: str, stride: int, max_frames: int, channels: int, fps: float = 0.0):
  """Yields (frame index, uint8 [H, W, C]) for every `stride`-th frame of a
  video, or, with `fps` > 0, for about `fps` frames per second of video."""
  cap = cv2.VideoCapture(path)
  if not cap.isOpened():
    raise BadItem("cannot open video (unknown codec or corrupt file)")
  if fps > 0:
    native = cap.get(cv2.CAP_PROP_FPS)
    if not native or native <= 0:
      cap.release()
      raise BadItem("video reports no frame rate; set data.video_fps=0 and use data.video_stride")
    stride = max(1, int(round(native / fps)))
  try:
    index = kept = 0
    while True:
      ok, frame = cap.read()
      if not ok:
        break
      if index % stride == 0:
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        yield index, convert_channels(rgb, channels)
        kept += 1
        if max_frames and kept >= max_frames:
          break
      index += 1
    if index == 0:
      raise BadItem("video has no decodable frames")
  finally:
    cap.release()


def video_stream(path: str, fps: float = 0.0):
  """Yields (frame index, time in seconds, uint8 RGB [H, W, 3]) one decoded frame
  at a time (constant memory), every frame, or with `fps` > 0 about `fps` frames
  per second of video. The time is the frame's own timestamp from the container
  (the frame index over the nominal rate when the container gives none)."""
  cap = cv2.VideoCapture(path)
  if not cap.isOpened():
    raise BadItem("cannot open video (unknown codec or corrupt file)")
  nominal = cap.get(cv2.CAP_PROP_FPS) or 0.0
  try:
    index, next_time, last = 0, 0.0, -1.0
    while True:
      ok, frame = cap.read()
      if not ok:
        break
      t = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
      if (t <= last or (index > 0 and t == 0.0)) and nominal > 0:
        t = index / nominal  # a backend without per-frame timestamps
      last = t
      if fps <= 0 or t + 1e-6 >= next_time:
        yield index, t, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        if fps > 0:
          next_time = max(next_time + 1.0 / fps, t + 0.5 / fps)
      index += 1
    if index == 0:
      raise BadItem("video has no decodable frames")
  finally:
    cap.release()


def video_frame(path: str, index: int, channels: int) -> np.ndarray:
  """One frame of a video by index (manifest rows that point into videos)."""
  cap = cv2.VideoCapture(path)
  if not cap.isOpened():
    raise BadItem("cannot open video (unknown codec or corrupt file)")
  try:
    cap.set(cv2.CAP_PROP_POS_FRAMES, int(index))
    ok, frame = cap.read()
    if not ok:
      raise BadItem(f"video has no frame {index}")
    return convert_channels(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), channels)
  finally:
    cap.release()
