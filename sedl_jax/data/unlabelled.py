"""Extra unlabelled faces for the self-supervised stages (`config.data.unlabelled`).

Each entry is `LAYOUT:PATH` (or a bare PATH, read as `faces`):
  faces            every image and video under a folder (any depth), or one video
  image_folder, named_folder, sequence_folder, fer2013, manifest
                   the labelled layouts (README, "Your own data"); labels ignored
They are prepared (decoded, cropped, resized, cached) like `config.data` and
join only the self-supervised stages' training pool (`FaceData.faces(...,
unlabelled=True)`): never a supervised fit, a probe, or a val/test split. An
image whose bytes or prepared pixels equal a labelled val or test image is
dropped and counted, so pretraining never sees an evaluation face.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from sedl_jax import atomic_io
from sedl_jax.data import real, record_images, scan
from sedl_jax.data.types import FaceData, fingerprint_arrays

# `faces`, and every labelled layout with its own scanner (labels ignored later).
LAYOUTS = {"faces": lambda c: scan.faces(c.path), **real.SCANNERS}
# Layouts whose path is one file (faces takes a folder or one video/image).
FILE_LAYOUTS = ("fer2013", "manifest")


def parse(entry: str) -> tuple[str, str]:
  """'LAYOUT:PATH' -> (layout, path); a bare path is `faces`."""
  layout, sep, path = entry.partition(":")
  if sep and layout in LAYOUTS:
    return layout, path
  return "faces", entry


def check(entries) -> None:
  """ValueError naming the entry when a layout or path cannot work."""
  if isinstance(entries, str):
    raise ValueError(f"config.data.unlabelled={entries!r}: expected a tuple of 'LAYOUT:PATH' "
                     "strings, e.g. \"('faces:/data/videos', 'fer2013:/data/fer.csv')\"")
  for entry in entries:
    layout, path = parse(entry)
    where = f"config.data.unlabelled entry {entry!r}"
    if not path:
      raise ValueError(f"{where}: no path")
    if not os.path.exists(path):
      raise ValueError(f"{where}: no such file or directory {path!r} (layouts: "
                       f"{', '.join(LAYOUTS)}; a bare path is read as 'faces')")
    if layout in FILE_LAYOUTS and not os.path.isfile(path):
      raise ValueError(f"{where}: layout {layout!r} reads one file (a CSV), not a folder")
    if layout not in FILE_LAYOUTS + ("faces",) and not os.path.isdir(path):
      raise ValueError(f"{where}: layout {layout!r} reads a folder, not a file")


def pixel_hash(image: np.ndarray) -> str:
  return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


def held_out_hashes(data: FaceData) -> set[str]:
  """Hashes of every labelled val/test face: prepared pixels, and the source
  bytes where the data has them (`data.raw_hashes`)."""
  out = set()
  for split in ("val", "test"):
    out.update(pixel_hash(im) for im in data.images[split].images)
    if data.sequences is not None:
      frames = data.sequences[split].frames
      out.update(pixel_hash(f) for f in frames.reshape(-1, *frames.shape[2:]))
    out.update((data.raw_hashes or {}).get(split, ()))
  return out


def _prepare(layout: str, path: str, data_cfg):
  cfg = data_cfg.copy_and_resolve_references()
  with cfg.unlocked():
    cfg.name, cfg.path = layout, path
  return real.prepare_once(LAYOUTS[layout](cfg), cfg)


def attach(data: FaceData, data_cfg, workdir: str | None) -> FaceData:
  """`data` with `unlabelled` filled from `data_cfg.unlabelled` (and a
  fingerprint that includes them); the data report gains an `unlabelled` section."""
  entries = tuple(data_cfg.unlabelled)
  if not entries:
    return data
  held_out = held_out_hashes(data)
  kept, report, keys = [], {"sources": []}, []
  for entry in entries:
    layout, path = parse(entry)
    arrays, prep_report, key = _prepare(layout, path, data_cfg)
    images = arrays.get("image", np.zeros((0, *data.image_shape), np.uint8))
    raw = arrays.get("content_hash", np.zeros(0, object))
    overlap = np.asarray([h in held_out or pixel_hash(im) in held_out
                          for im, h in zip(images, raw)], bool)
    kept.append(images[~overlap])
    keys.append(key)
    report["sources"].append({
        "entry": entry, "layout": layout, "path": os.path.abspath(path),
        "items_scanned": prep_report["items_scanned"], "images_prepared": int(len(images)),
        "dropped_equal_to_a_val_or_test_image": int(overlap.sum()),
        "first_dropped": [str(k) for k in arrays.get("key", np.zeros(0, object))[overlap][:5]],
        "used": int((~overlap).sum()), "skipped_total": prep_report["skipped_total"],
        "skipped": prep_report["skipped"], "cache": prep_report["cache"],
        "cache_entry": prep_report["cache_entry"]})
  data.unlabelled = record_images.concatenate(kept) if kept else None
  report["total_used"] = int(len(data.unlabelled))
  report["used_by"] = "the self-supervised stages (contrastive, barlow) only"
  data.fingerprint = fingerprint_arrays(np.frombuffer(data.fingerprint.encode(), np.uint8),
                                        np.frombuffer(",".join(keys).encode(), np.uint8))
  print(f"[data] unlabelled: {report['total_used']} faces from {len(entries)} source(s) for "
        "self-supervised pretraining, "
        f"{sum(s['dropped_equal_to_a_val_or_test_image'] for s in report['sources'])} dropped as "
        "copies of val/test images, "
        f"{sum(s['skipped_total'] for s in report['sources'])} skipped", flush=True)
  _add_to_report(workdir, report, data.source)
  return data


def _add_to_report(workdir: str | None, section: dict, source: str) -> None:
  import jax
  if workdir is None or jax.process_index() != 0:
    return
  path = os.path.join(workdir, "data_report.json")
  report = {"source": source}
  if os.path.exists(path):
    with open(path) as f:
      report = json.load(f)
  report["unlabelled"] = section
  atomic_io.write_json(path, report)
