"""Listing a user's dataset on disk: one `Item` per image, pixel row or video.

Scanning reads no pixels except FER2013's rows (which are the pixels); it
checks names, labels and row shapes and records every item it passes over, with
the reason, in `Scan.skipped`. Layouts (README, "Your own data"):

  image_folder    ROOT/<class>/<files> or ROOT/{train,val,test}/<class>/<files>
  named_folder    the same, file names carrying ids (`config.data.name_pattern`,
                  CK+ style S010_004_00000017.png: subject, sequence, frame)
  fer2013         the FER2013 CSV: emotion,pixels,Usage
  sequence_folder ROOT/<subject>/<sequence>/<frames> and ROOT/<subject>/<video>
  manifest        a CSV: path,label[,subject][,sequence][,frame][,split]
                  [,valence][,arousal][,one column per behaviour trait]
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import re

import numpy as np

from sedl_jax.data.decode import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from sedl_jax.data.labels import FER2013

# Folder names accepted as given splits, case-insensitive.
SPLIT_DIRS = {"train": "train", "training": "train", "val": "val", "valid": "val",
              "validation": "val", "dev": "val", "test": "test", "testing": "test"}
FER_USAGE = {"training": "train", "publictest": "val", "privatetest": "test"}
FER_SIDE = 48
MANIFEST_KNOWN = ("path", "label", "subject", "sequence", "frame", "split", "valence", "arousal")


@dataclasses.dataclass
class Item:
  """One input before decoding. `kind`: file | pixels | video | video_frame."""

  key: str  # unique and stable: the path relative to the root, or "file.csv:row N"
  kind: str
  path: str = ""
  pixels: np.ndarray | None = None
  label: str | None = None  # raw class name; None = unlabelled
  subject: str = ""
  sequence: str = ""
  frame: int = -1
  split: str = ""  # given split, "" when none
  traits: dict | None = None
  valence: float = math.nan
  arousal: float = math.nan


@dataclasses.dataclass
class Scan:
  items: list
  skipped: list  # (key, reason)
  files: list  # every file whose content decides the prepared data (for the fingerprint)
  trait_names: tuple = ()


def _rel(path: str, root: str) -> str:
  return os.path.relpath(path, root).replace(os.sep, "/")


def _walk(root: str):
  """All files under root, sorted, hidden directories skipped."""
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    for name in sorted(filenames):
      yield os.path.join(dirpath, name)


def _ext(path: str) -> str:
  return os.path.splitext(path)[1].lower()


def _require_dir(root: str, name: str) -> None:
  if not os.path.isdir(root):
    raise ValueError(f"config.data.path={root!r}: data.name={name!r} expects a folder")


def image_folder(root: str, pattern: str | None = None) -> Scan:
  """ROOT/<class>/<files>, optionally under ROOT/{train,val,test}/; with a
  pattern, file names must match it and give subject/sequence/frame."""
  _require_dir(root, "named_folder" if pattern else "image_folder")
  regex = re.compile(pattern) if pattern else None
  top = [d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))]
  has_splits = any(d.lower() in SPLIT_DIRS for d in top)
  items, skipped, files = [], [], []
  for path in _walk(root):
    key = _rel(path, root)
    parts = key.split("/")
    if _ext(path) not in IMAGE_EXTENSIONS:
      skipped.append((key, f"not an image file ({_ext(path) or 'no extension'})"))
      continue
    split = ""
    if has_splits:
      if parts[0].lower() not in SPLIT_DIRS:
        skipped.append((key, "outside the train/val/test folders"))
        continue
      split, parts = SPLIT_DIRS[parts[0].lower()], parts[1:]
    if len(parts) < 2:
      skipped.append((key, "not inside a class folder"))
      continue
    item = Item(key=key, kind="file", path=path, label=parts[0], split=split)
    if regex is not None:
      m = regex.search(os.path.basename(path))
      if m is None:
        skipped.append((key, f"name does not match data.name_pattern {pattern!r}"))
        continue
      g = m.groupdict()
      item.subject = g.get("subject") or ""
      item.sequence = g.get("sequence") or ""
      item.frame = int(g["frame"]) if g.get("frame") else -1
    items.append(item)
    files.append(path)
  # Class folders with no files at all: reported, so an empty class is never silent.
  for split_dir in (top if has_splits else [""]):
    if has_splits and split_dir.lower() not in SPLIT_DIRS:
      continue
    base = os.path.join(root, split_dir)
    for d in sorted(os.listdir(base)):
      full = os.path.join(base, d)
      if os.path.isdir(full) and not d.startswith(".") and not any(True for _ in _walk(full)):
        skipped.append((_rel(full, root) + "/", "empty class folder"))
  return Scan(items, skipped, files)


def fer2013(path: str) -> Scan:
  """FER2013's CSV: `emotion` 0-6, `pixels` 2304 grey values, `Usage`."""
  if os.path.isdir(path):
    path = os.path.join(path, "fer2013.csv")
  if not os.path.isfile(path):
    raise ValueError(f"config.data.path: FER2013 CSV {path!r} not found")
  name = os.path.basename(path)
  items, skipped = [], []
  with open(path, newline="") as f:
    reader = csv.DictReader(f)
    cols = {c.strip().lower(): c for c in (reader.fieldnames or [])}
    missing = [c for c in ("emotion", "pixels") if c not in cols]
    if missing:
      raise ValueError(f"{path}: FER2013 CSV lacks column(s) {missing} "
                       f"(has {reader.fieldnames}); expected emotion,pixels[,Usage]")
    for row_no, row in enumerate(reader, start=2):  # line 1 is the header
      key = f"{name}:row {row_no}"
      raw_label = (row.get(cols["emotion"]) or "").strip()
      try:
        label = int(raw_label)
      except ValueError:
        skipped.append((key, f"unknown label {raw_label!r} (emotion must be 0-6)"))
        continue
      if not 0 <= label < len(FER2013):
        skipped.append((key, f"unknown label {label} (emotion must be 0-6)"))
        continue
      values = (row.get(cols["pixels"]) or "").split()
      if len(values) != FER_SIDE * FER_SIDE:
        skipped.append((key, f"wrong-length pixel row ({len(values)} values, "
                             f"expected {FER_SIDE * FER_SIDE})"))
        continue
      try:
        pix = np.asarray(values, np.int64)
      except ValueError:
        skipped.append((key, "non-numeric pixel values"))
        continue
      if pix.min() < 0 or pix.max() > 255:
        skipped.append((key, "pixel values outside 0-255"))
        continue
      usage = (row.get(cols["usage"]) or "").strip().lower() if "usage" in cols else ""
      split = FER_USAGE.get(usage, "")
      if usage and not split:
        skipped.append((key, f"unknown Usage {usage!r} (Training/PublicTest/PrivateTest)"))
        continue
      items.append(Item(key=key, kind="pixels",
                        pixels=pix.astype(np.uint8).reshape(FER_SIDE, FER_SIDE, 1),
                        label=FER2013[label], split=split))
  return Scan(items, skipped, [path])


def _frame_number(name: str, fallback: int) -> int:
  digits = re.findall(r"\d+", os.path.splitext(name)[0])
  return int(digits[-1]) if digits else fallback


SEQUENCE_LABELS = "labels.csv"


def _sequence_labels(root: str) -> dict:
  """ROOT/labels.csv: subject,sequence[,frame],label -> {(subject, sequence, frame or -1): label}."""
  path = os.path.join(root, SEQUENCE_LABELS)
  if not os.path.exists(path):
    return {}
  out = {}
  with open(path, newline="") as f:
    reader = csv.DictReader(f)
    cols = [c.strip().lower() for c in reader.fieldnames or []]
    if not {"subject", "sequence", "label"} <= set(cols):
      raise ValueError(f"{path}: needs columns subject,sequence[,frame],label (has {cols})")
    for row in reader:
      row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k is not None}
      frame = int(row["frame"]) if row.get("frame") else -1
      out[(row["subject"], row["sequence"], frame)] = row["label"] or None
  return out


def faces(path: str) -> Scan:
  """Unlabelled faces: every image and video under a folder (any depth), or one
  video or image file. Each video is one sequence (its frames, by
  data.video_stride / video_fps / video_max_frames)."""
  if os.path.isfile(path):
    root, paths = os.path.dirname(os.path.abspath(path)), [os.path.abspath(path)]
  elif os.path.isdir(path):
    root, paths = path, list(_walk(path))
  else:
    raise ValueError(f"{path!r}: no such file or folder")
  items, skipped, files = [], [], []
  for full in paths:
    key, ext = _rel(full, root), _ext(full)
    if ext in VIDEO_EXTENSIONS:
      items.append(Item(key=key, kind="video", path=full, sequence=key))
    elif ext in IMAGE_EXTENSIONS:
      items.append(Item(key=key, kind="file", path=full))
    else:
      skipped.append((key, f"not an image or video file ({ext or 'no extension'})"))
      continue
    files.append(full)
  return Scan(items, skipped, files)


def sequence_folder(root: str) -> Scan:
  """ROOT/<subject>/<sequence>/<frames> and ROOT/<subject>/<video file>;
  labelled by ROOT/labels.csv (per sequence, or per frame) when present."""
  _require_dir(root, "sequence_folder")
  items, skipped, files = [], [], []
  seq_labels = _sequence_labels(root)
  for path in _walk(root):
    key = _rel(path, root)
    parts = key.split("/")
    ext = _ext(path)
    if key == SEQUENCE_LABELS:
      files.append(path)
      continue
    if ext in VIDEO_EXTENSIONS and len(parts) == 2:
      items.append(Item(key=key, kind="video", path=path, subject=parts[0],
                        sequence=os.path.splitext(parts[1])[0]))
    elif ext in IMAGE_EXTENSIONS and len(parts) == 3:
      items.append(Item(key=key, kind="file", path=path, subject=parts[0], sequence=parts[1],
                        frame=_frame_number(parts[2], len(items))))
    elif ext in IMAGE_EXTENSIONS or ext in VIDEO_EXTENSIONS:
      skipped.append((key, "not at ROOT/<subject>/<sequence>/<frame> or ROOT/<subject>/<video>"))
      continue
    else:
      skipped.append((key, f"not an image or video file ({ext or 'no extension'})"))
      continue
    it = items[-1]
    it.label = seq_labels.get((it.subject, it.sequence, it.frame),
                              seq_labels.get((it.subject, it.sequence, -1)))
    files.append(path)
  return Scan(items, skipped, files)


def _float(value: str) -> float:
  value = (value or "").strip()
  return float(value) if value else math.nan


def _outside(full: str, base: str) -> bool:
  """Whether a path (symlinks resolved) lies outside the folder `base`."""
  real, root = os.path.realpath(full), os.path.realpath(base)
  return os.path.commonpath([real, root]) != root


def manifest(path: str, allow_outside: bool = False) -> Scan:
  """A CSV listing path,label and optional ids, splits, valence/arousal and traits.
  Paths must lie inside the manifest's folder (after `..` and symlinks are
  resolved) unless `allow_outside`: a manifest cannot pull any readable file of
  the machine into training and the reports."""
  if not os.path.isfile(path):
    raise ValueError(f"config.data.path={path!r}: data.name='manifest' expects a CSV file")
  base = os.path.dirname(os.path.abspath(path))
  items, skipped, files = [], [], [path]
  with open(path, newline="") as f:
    reader = csv.DictReader(f)
    fields = [c.strip().lower() for c in (reader.fieldnames or [])]
    if "path" not in fields:
      raise ValueError(f"{path}: manifest has no 'path' column (columns: {reader.fieldnames})")
    traits = tuple(c for c in fields if c not in MANIFEST_KNOWN)
    for row_no, raw in enumerate(reader, start=2):
      row = {k.strip().lower(): (v or "").strip() for k, v in raw.items() if k is not None}
      key = f"{os.path.basename(path)}:row {row_no}"
      rel = row.get("path", "")
      if not rel:
        skipped.append((key, "empty path"))
        continue
      full = rel if os.path.isabs(rel) else os.path.join(base, rel)
      ext = _ext(full)
      if ext not in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS:
        skipped.append((key, f"{rel}: not an image or video file ({ext or 'no extension'})"))
        continue
      if not os.path.isfile(full):
        skipped.append((key, f"{rel}: file not found"))
        continue
      if not allow_outside and _outside(full, base):
        skipped.append((key, f"{rel}: outside the manifest's folder (set "
                             "data.allow_outside_paths=True to allow)"))
        continue
      try:
        frame = int(row["frame"]) if row.get("frame") else -1
        valence, arousal = _float(row.get("valence")), _float(row.get("arousal"))
        trait_values = {t: _float(row.get(t)) for t in traits}
      except ValueError as e:
        skipped.append((key, f"non-numeric frame/valence/arousal/trait value ({e})"))
        continue
      split = SPLIT_DIRS.get(row.get("split", "").lower(), "")
      if row.get("split") and not split:
        skipped.append((key, f"unknown split {row['split']!r} (train/val/test)"))
        continue
      kind = "file"
      if ext in VIDEO_EXTENSIONS:
        kind = "video_frame" if frame >= 0 else "video"
      sequence = row.get("sequence", "")
      if kind == "video" and not sequence:
        sequence = os.path.splitext(os.path.basename(rel))[0]
      items.append(Item(key=f"{key} ({rel})", kind=kind, path=full, label=row.get("label") or None,
                        subject=row.get("subject", ""), sequence=sequence, frame=frame,
                        split=split, traits=trait_values or None, valence=valence,
                        arousal=arousal))
      files.append(full)
  return Scan(items, skipped, sorted(set(files)), traits)
