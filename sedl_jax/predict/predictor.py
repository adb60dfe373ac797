"""Prediction: a trained run applied to images, folders, videos and manifests.

  from sedl_jax.predict import Predictor
  pred = Predictor.from_workdir("runs/sedl").predict(["session.mp4"])
  pred.rows[0]["emotion"]; pred.summary["inputs"][0]["tracks"]; pred.write("out/")

Per input: frames are decoded one at a time on a host thread; face
detection and cropping run on a pool of host threads, both a few frames ahead
of the model; faces
go to the devices in fixed-size batches (the last one padded, so nothing
recompiles); per-track outputs (SEDL's temporal context, forecasts and traits;
smoothing) are computed when the input ends, from the per-face embeddings
kept, so memory grows with the number of faces, not of pixels.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import itertools
import math
import os
import queue
import threading
import time

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from sedl_jax import atomic_io
from sedl_jax.config import defaults
from sedl_jax.data import decode
from sedl_jax.data import face_align, face_detect
from sedl_jax.data.face_crop import FaceCropper
from sedl_jax.predict import inputs, outputs, run_model, smoothing
from sedl_jax.predict.tracks import Tracker

FACE_MODES = face_detect.DETECTORS + ("none",)
ALIGN_SETTINGS = ("run",) + face_align.ALIGN_MODES
ABSTAIN_RULES = ("ttest", "threshold")


class NoUsableInput(ValueError):
  """Every input was unusable: nothing to predict."""


@dataclasses.dataclass
class Prediction:
  """rows: one dict per face per frame (a frame without a face: one row with
  face_found=0); summary: per input and track; embeddings: per face row."""

  rows: list[dict]
  columns: list[str]
  summary: dict
  embeddings: np.ndarray | None = None

  def write(self, out: str, save_embeddings: bool = False, timeline: bool = True) -> dict:
    """Writes frames.csv, summary.json, timeline.html (and embeddings.npz); returns the paths."""
    return outputs.write(self, out, save_embeddings, timeline)


def _settings(overrides) -> ml_collections.ConfigDict:
  s = defaults.predict()
  if overrides:
    s.update(overrides if isinstance(overrides, dict) else overrides.to_dict())
  check_settings(s)
  return s


def check_settings(s) -> None:
  """Clear errors for bad prediction settings, naming the field."""
  def need(ok, field, what):
    if not ok:
      raise ValueError(f"predict.{field}={s[field]!r}: {what}")
  need(s.face in FACE_MODES or str(s.face).lower().endswith(".onnx"), "face",
       f"expected one of {FACE_MODES} or a path to a YuNet-format .onnx model")
  need(not str(s.face).lower().endswith(".onnx") or os.path.isfile(s.face), "face",
       "no such model file")
  need(s.face_align in ALIGN_SETTINGS, "face_align", f"expected one of {ALIGN_SETTINGS}")
  need(not (s.face == "haar" and s.face_align == "landmarks"), "face_align",
       "landmarks need a detector with landmarks (yunet); haar gives boxes only")
  need(0.0 <= float(s.face_score) <= 1.0, "face_score", "must be in [0, 1]")
  need(0.0 <= float(s.face_nms) <= 1.0, "face_nms", "must be in [0, 1]")
  need(int(s.min_face) >= 1, "min_face", "must be >= 1")
  need(int(s.live_chunk_frames) >= 1, "live_chunk_frames", "must be >= 1")
  need(int(s.live_max_frames) >= 0, "live_max_frames", "must be >= 0 (0 = no limit)")
  need(s.abstain in ABSTAIN_RULES, "abstain", f"expected one of {ABSTAIN_RULES}")
  need(s.smooth in smoothing.MODES, "smooth", f"expected one of {smoothing.MODES}")
  need(int(s.batch_size) >= 1, "batch_size", "must be >= 1")
  need(int(s.max_faces) >= 1, "max_faces", "must be >= 1")
  need(float(s.fps) >= 0, "fps", "must be >= 0 (0 = every frame)")
  need(float(s.folder_fps) >= 0, "folder_fps", "must be >= 0 (0 = no clock)")
  need(0.0 < float(s.hmm_stay) < 1.0, "hmm_stay", "must be in (0, 1)")
  need(0.0 <= float(s.track_iou) <= 1.0, "track_iou", "must be in [0, 1]")
  need(int(s.workers) >= 1, "workers", "must be >= 1")


def run_alignment(data_cfg, s) -> str:
  """The crop geometry prediction uses: `predict.face_align`, or with "run" the
  run's own (data.face_align when it detected faces; auto for runs trained on
  ready crops, whose faces a detector must first find)."""
  if s.face_align != "run":
    return s.face_align
  crop = data_cfg.get("face_crop", "none")
  if crop == "none":
    return "auto"
  if crop == "haar":  # boxes without landmarks: never aligned
    return "none"
  return data_cfg.get("face_align", "auto")


class Predictor:
  """A run's models plus prediction settings (`config.predict`, see defaults.predict)."""

  def __init__(self, model, settings, workdir: str, margin: float, align: str = "auto",
               equalize: bool = False):
    self.model, self.settings, self.workdir, self.margin = model, settings, workdir, margin
    self.size, self.channels = int(model.image_shape[0]), int(model.image_shape[2])
    # The run's crop geometry and grey-level preparation, so a face reaches the
    # model as the training faces did.
    self.align = "none" if settings.face == "haar" and align == "auto" else align
    self.equalize = bool(equalize)
    self._local = threading.local()

  @classmethod
  def from_workdir(cls, workdir: str, settings=None) -> "Predictor":
    s = _settings(settings)
    if jax.process_count() > 1:
      raise ValueError("prediction runs in one process (it uses all of that process's devices)")
    model = run_model.load(workdir, int(s.batch_size),
                           horizons=tuple(s.horizons) if s.forecast else None,
                           num_samples=int(s.card_samples), seed=int(s.seed))
    data = model.ctx.config.data
    margin = float(s.face_margin) if float(s.face_margin) >= 0 else float(data.face_margin)
    return cls(model, s, workdir, margin, run_alignment(data, s), bool(data.get("equalize", False)))

  # -- host side: detect and crop -------------------------------------------------
  def _cropper(self) -> FaceCropper:
    if not hasattr(self._local, "cropper"):  # OpenCV's detectors are not thread-safe
      s = self.settings
      self._local.cropper = FaceCropper(self.margin, int(s.min_face), s.face, self.align,
                                        float(s.face_score), float(s.face_nms))
    return self._local.cropper

  def _faces(self, image: np.ndarray):
    """(boxes, model-ready crops [F, S, S, C], seconds) of one RGB frame."""
    start = time.perf_counter()
    if self.settings.face != "none":
      found = self._cropper().faces(image, self.size, int(self.settings.max_faces))
    else:
      t, l, b, r = box = decode.square_box(*image.shape[:2])
      found = [(box, image[t:b, l:r])]
    boxes = [box for box, _ in found]
    crops = [decode.model_input(crop, self.size, self.channels, self.equalize) for _, crop in found]
    return boxes, crops, time.perf_counter() - start

  def _prepared(self, frames, pool, timing):
    """Frames in order with their boxes and crops. A host thread decodes and
    hands each frame to the pool, which detects and crops; both run up to
    `4 x workers` frames ahead of the caller (the model)."""
    ahead = queue.Queue(maxsize=4 * int(self.settings.workers))
    stop = threading.Event()

    def produce():
      try:
        it = iter(frames)
        while not stop.is_set():
          start = time.perf_counter()
          frame = next(it, None)
          timing["decode_s"] += time.perf_counter() - start
          if frame is None:
            break
          ahead.put((frame, pool.submit(self._faces, frame.image)
                     if frame.image is not None else None))
      except BaseException as e:  # re-raised in the caller's thread
        ahead.put(e)
      finally:
        ahead.put(None)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
      while (item := ahead.get()) is not None:
        if isinstance(item, BaseException):
          raise item
        frame, job = item
        yield (frame, *job.result()) if job is not None else (frame, [], [], 0.0)
    finally:
      stop.set()
      while thread.is_alive():  # unblock a producer waiting on a full queue
        try:
          ahead.get_nowait()
        except queue.Empty:
          thread.join(0.01)

  # -- prediction -------------------------------------------------------------------
  def predict(self, paths) -> Prediction:
    """Predicts every input (paths: one or a list); see the module docstring."""
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    s = self.settings
    streams = inputs.streams([os.fspath(p) for p in paths], float(s.fps), float(s.folder_fps))
    timing = collections.Counter()
    rows, per_input, skipped, embeddings = [], [], [], []
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(int(s.workers)) as pool:
      for stream in streams:
        out = self._predict_stream(stream, pool, timing, skipped)
        rows += out["rows"]
        embeddings.append(out["embeddings"])
        per_input.append(out["summary"])
    wall = time.perf_counter() - start
    if not rows:  # every frame of every input was skipped
      raise NoUsableInput("no usable input: " + (
          "; ".join(f"{k['file'] or k['input']}: {k['reason']}" for k in skipped[:5])
          + (f" (and {len(skipped) - 5} more)" if len(skipped) > 5 else "") or "nothing was read"))
    summary = outputs.summarise(self, per_input, rows, skipped, timing, wall)
    emb = np.concatenate([e for e in embeddings if e is not None]) if any(
        e is not None for e in embeddings) else None
    return Prediction(rows, outputs.columns(self), summary, emb)

  def _predict_stream(self, stream, pool, timing, skipped, chunk=None, tracker=None) -> dict:
    """Rows, per-face embeddings and the summary of one stream, or of the
    frames of `chunk` (a live stream's, continuing its `tracker`)."""
    s, model = self.settings, self.model
    tracker = tracker or Tracker(float(s.track_iou), int(s.track_max_gap))
    rows, crops, per_face = [], [], collections.defaultdict(list)
    frames = 0

    def flush():
      if crops:
        t0 = time.perf_counter()
        for k, v in model.face_outputs(np.stack(crops)).items():
          per_face[k].append(v)
        timing["model_s"] += time.perf_counter() - t0
        timing["faces"] += len(crops)
        crops.clear()

    bar = tqdm(self._prepared(stream.frames() if chunk is None else chunk, pool, timing),
               desc=os.path.basename(stream.name), unit="frame", leave=False,
               disable=stream.kind in ("image", "live"))
    for frame, boxes, faces, detect_s in bar:
      timing["detect_s"] += detect_s
      base = {"input": stream.name, "frame": frame.index,
              "time_s": round(frame.time_s, 4) if not math.isnan(frame.time_s) else "",
              "file": frame.name if stream.kind != "video" else ""}
      if frame.error:
        skipped.append({"input": stream.name, "file": frame.name, "frame": frame.index,
                        "reason": frame.error})
        continue
      frames += 1
      if not boxes:
        rows.append(dict(base, track=-1, face_found=0))
        continue
      for track, box, face in zip(tracker.update(boxes), boxes, faces):
        rows.append(dict(base, track=track, face_found=1, box_top=box[0], box_left=box[1],
                         box_bottom=box[2], box_right=box[3]))
        crops.append(face)
      if len(crops) >= int(s.batch_size):
        flush()
    flush()
    timing["frames"] += frames
    per_face = {k: np.concatenate(v) for k, v in per_face.items()}
    t0 = time.perf_counter()
    tracks = outputs.fill_rows(self, rows, per_face)
    timing["model_s"] += time.perf_counter() - t0
    return {"rows": rows, "embeddings": per_face.get("embedding"),
            "summary": {"input": stream.name, "kind": stream.kind, "frames": frames,
                        "tracks": tracks}}

  # -- live inputs ------------------------------------------------------------------
  def predict_live(self, path: str, out: str) -> dict:
    """Predicts a live input (`camera:N`, a stream URL, `live:SOURCE`) as its
    frames arrive: every `live_chunk_frames` frames are predicted and their
    rows appended to OUT/frames.csv (flushed), so memory stays bounded by one
    chunk and the per-track running totals. Stops at the end of the stream,
    after `live_max_frames`, or on Ctrl-C (KeyboardInterrupt): the rows so far
    are in frames.csv either way, then summary.json and timeline.html are
    written. SEDL's temporal context, forecasts and smoothing start afresh in
    each chunk. Returns the written paths (and `interrupted`)."""
    s = self.settings
    stream = inputs.live_stream(path, float(s.fps), int(s.live_max_frames))
    os.makedirs(out, exist_ok=True)
    cols = outputs.columns(self)
    tracker = Tracker(float(s.track_iou), int(s.track_max_gap))
    totals = outputs.LiveTotals(self.model.class_names)
    timing, skipped = collections.Counter(), []
    frames_it = iter(stream.frames())
    chunk = int(s.live_chunk_frames)
    interrupted = False
    start = time.perf_counter()
    bar = tqdm(desc=f"live {path}", unit="frame")
    csv_path = os.path.join(out, "frames.csv")
    with open(csv_path, "w", newline="") as f, \
        concurrent.futures.ThreadPoolExecutor(int(s.workers)) as pool:
      writer = outputs.csv_writer(f, cols)
      try:
        while True:
          frames = list(itertools.islice(frames_it, chunk))
          if not frames:
            break
          got = self._predict_stream(stream, pool, timing, skipped, iter(frames), tracker)
          writer.writerows(got["rows"])
          f.flush()
          totals.add(got["rows"])
          bar.update(len(frames))
      except KeyboardInterrupt:
        interrupted = True  # the rows of every finished chunk are written
      finally:
        bar.close()
        close = getattr(frames_it, "close", None)
        if close:
          close()  # releases the capture
    wall = time.perf_counter() - start
    summary = outputs.live_summary(self, path, totals, skipped, timing, wall, interrupted)
    paths = {"frames": csv_path, "summary": os.path.join(out, "summary.json")}
    atomic_io.write_json(paths["summary"], summary)
    if s.timeline:
      from sedl_jax.predict import timeline as timeline_lib
      rows = outputs.read_rows(csv_path, self.model.class_names)
      paths["timeline"] = timeline_lib.write(Prediction(rows, cols, summary), out)
    paths["interrupted"] = interrupted
    return paths
