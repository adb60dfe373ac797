"""Preparing a scanned source once into a TFDS ArrayRecord dataset (no
TensorFlow needed), cached under a key of the source's content and the
preparation settings, and reading it back with `tfds.data_source` + grain.

Decoding, face cropping and resizing happen here, on the host, once; a second
run with the same files and settings reads the cache, and any changed,
added or removed file (or a changed setting) gives a new key and a rebuild.
"""

from __future__ import annotations

import collections
import concurrent.futures
import glob
import hashlib
import json
import logging
import os
import shutil
import threading

import grain
import ml_collections
import cv2
import numpy as np
import tensorflow_datasets as tfds
from tqdm import tqdm

from sedl_jax import atomic_io
from sedl_jax.data import decode, face_crop, record_images
from sedl_jax.data.labels import LabelMap

# Bump when the prepared format or the decoding changes, to invalidate old caches.
PREP_VERSION = 1
BUILDER_NAME = "sedl_prepared_faces"
REPORT_FILE = "prep_report.json"


def default_cache_dir() -> str:
  return os.environ.get("SEDL_JAX_CACHE",
                        os.path.join(os.path.expanduser("~"), ".cache", "sedl_jax", "prepared"))


def settings(data_cfg) -> dict:
  """Everything that changes the prepared pixels or labels (part of the cache key)."""
  return {
      "prep_version": PREP_VERSION, "source": data_cfg.name,
      "image_size": int(data_cfg.image_size), "channels": int(data_cfg.channels),
      "face_crop": data_cfg.face_crop, "face_margin": float(data_cfg.face_margin),
      **({"face_align": data_cfg.face_align, "face_score": float(data_cfg.face_score),
          "face_nms": float(data_cfg.face_nms), "face_min_size": int(data_cfg.face_min_size)}
         if data_cfg.face_crop != "none" else {}),
      # Only when on, so caches prepared before the option existed stay valid.
      **({"equalize": True} if data_cfg.get("equalize", False) else {}),
      "no_face": data_cfg.no_face, "label_map": data_cfg.label_map,
      "extra_classes": data_cfg.extra_classes, "name_pattern": data_cfg.name_pattern,
      "video_stride": int(data_cfg.video_stride), "video_max_frames": int(data_cfg.video_max_frames),
      "video_fps": float(data_cfg.video_fps), "max_pixels": int(data_cfg.max_pixels),
  }


def fingerprint(scan, root: str, prep: dict) -> str:
  """Hash of every input file's name (relative to the root) and bytes, the
  FER2013 rows being inside the CSV, and the preparation settings."""
  h = hashlib.sha256(json.dumps(prep, sort_keys=True).encode())
  base = root if os.path.isdir(root) else os.path.dirname(os.path.abspath(root))
  for path in sorted(scan.files):
    h.update(os.path.relpath(path, base).encode() + b"\0")
    try:
      with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
          h.update(chunk)
    except OSError as e:
      h.update(f"unreadable:{e.errno}".encode())
  return h.hexdigest()[:16]


class PreparedFaces(tfds.core.GeneratorBasedBuilder):
  """Decoded, cropped, resized faces with their ids, one TFDS split `faces`."""

  name = BUILDER_NAME
  VERSION = tfds.core.Version("1.0.0")

  def __init__(self, *, image_shape=(48, 48, 1), num_traits: int = 0, examples=None, **kwargs):
    self._image_shape = tuple(int(s) for s in image_shape)
    self._num_traits = int(num_traits)
    self._examples = examples
    super().__init__(**kwargs)

  def _info(self):
    f = tfds.features
    return tfds.core.DatasetInfo(builder=self, features=f.FeaturesDict({
        "image": f.Tensor(shape=self._image_shape, dtype=np.uint8),
        "index": f.Scalar(dtype=np.int64),
        "label": f.Text(),  # canonical class name, "" = unlabelled
        "key": f.Text(), "subject": f.Text(), "sequence": f.Text(), "split": f.Text(),
        "frame": f.Scalar(dtype=np.int64),
        "content_hash": f.Text(),
        "traits": f.Tensor(shape=(self._num_traits,), dtype=np.float32),
        "valence": f.Scalar(dtype=np.float32), "arousal": f.Scalar(dtype=np.float32),
    }))

  def _split_generators(self, dl_manager):
    return {"faces": self._generate_examples()}

  def _generate_examples(self):
    for i, ex in enumerate(self._examples):
      yield i, dict(ex, index=i)


class _Decoder:
  """Item -> list of (frame, uint8 image, content hash, original size); raises BadItem."""

  def __init__(self, prep: dict):
    self.size, self.channels = prep["image_size"], prep["channels"]
    self.crop = prep["face_crop"] != "none"
    self.prep = prep
    self.equalize = prep.get("equalize", False)
    self._local = threading.local()  # one detector per thread: OpenCV's are not thread-safe
    self.skip_no_face = prep["no_face"] == "skip"
    self.stride, self.max_frames = prep["video_stride"], prep["video_max_frames"]
    self.fps = prep["video_fps"]
    self.max_pixels = prep["max_pixels"]

  def raw_frames(self, item):
    if item.kind == "file":
      raw = decode.read_file(item.path)
      yield (item.frame, decode.decode_image_bytes(raw, 3, self.max_pixels),
             hashlib.sha1(raw).hexdigest())
    elif item.kind == "pixels":
      yield item.frame, item.pixels, hashlib.sha1(item.pixels.tobytes()).hexdigest()
    elif item.kind == "video":
      for idx, frame in decode.video_frames(item.path, self.stride, self.max_frames, 3, self.fps):
        yield idx, frame, hashlib.sha1(frame.tobytes()).hexdigest()
    elif item.kind == "video_frame":
      frame = decode.video_frame(item.path, item.frame, 3)
      yield item.frame, frame, hashlib.sha1(frame.tobytes()).hexdigest()
    else:
      raise ValueError(f"unknown item kind {item.kind!r}")

  def __call__(self, item):
    out, faces = [], collections.Counter()
    for frame, image, digest in self.raw_frames(item):
      size = f"{image.shape[1]}x{image.shape[0]}"
      if self.crop:
        if not hasattr(self._local, "cropper"):
          self._local.cropper = face_crop.from_config(ml_collections.ConfigDict(self.prep))
        face = self._local.cropper(image, self.size)
        if face is None:
          faces["no_face_skipped" if self.skip_no_face else "no_face_kept_full_image"] += 1
          if self.skip_no_face:
            continue
        else:
          faces["face_found"] += 1
          image = face
      out.append((frame, decode.model_input(image, self.size, self.channels, self.equalize),
                  digest, size))
    return out, faces


def _decoded(items, decoder, num_threads: int):
  """(item, result or BadItem) in item order, decoded by a thread pool."""
  def safe(item):
    try:
      return decoder(item)
    except decode.BadItem as e:
      return e
    except (cv2.error, MemoryError) as e:
      # An OpenCV failure inside a video or image, or a frame too big for memory,
      # costs that one item, never the whole preparation.
      what = "OpenCV error" if isinstance(e, cv2.error) else type(e).__name__
      return decode.BadItem(f"{what} while decoding: {str(e).strip()[:200]}")
  with concurrent.futures.ThreadPoolExecutor(max(1, num_threads)) as pool:
    for start in range(0, len(items), 256):
      chunk = items[start:start + 256]
      yield from zip(chunk, pool.map(safe, chunk))


def _skip_summary(skipped, first: int = 5) -> dict:
  by_reason = collections.defaultdict(list)
  for key, reason in skipped:
    by_reason[reason.split(" (")[0]].append(f"{key}: {reason}")
  return {r: {"count": len(v), "first": v[:first]} for r, v in sorted(by_reason.items())}


def _with_canonical_labels(scan, label_map, skipped: list) -> list:
  """Scanned items with labels folded to canonical names; unknown labels skipped."""
  kept = []
  for item in scan.items:
    if item.label is not None:
      canon = label_map.canonical(item.label)
      if canon is None:
        skipped.append((item.key, f"unknown label {item.label!r} (add it to data.label_map "
                                  "or data.extra_classes)"))
        continue
      item.label = canon
    kept.append(item)
  return kept


def _examples(items, decoder, num_threads: int, trait_names, stats: dict, skipped: list, source: str):
  """TFDS examples of every decoded frame; bad items are skipped and counted."""
  bar = tqdm(total=len(items), desc=f"preparing {source}", unit="item", disable=len(items) < 200)
  for item, result in _decoded(items, decoder, num_threads):
    bar.update(1)
    if isinstance(result, decode.BadItem):
      skipped.append((item.key, str(result)))
      continue
    frames, faces = result
    stats["faces"].update(faces)
    if not frames and faces["no_face_skipped"]:
      skipped.append((item.key, "no face found (data.no_face='skip')"))
    for frame, image, digest, size in frames:
      stats["sizes"][size] += 1
      stats["images"] += 1
      traits = [item.traits.get(t, np.nan) for t in trait_names] if item.traits else \
          [np.nan] * len(trait_names)
      yield {"image": image, "label": item.label or "", "key": item.key,
             "subject": item.subject, "sequence": item.sequence, "split": item.split,
             "frame": int(frame), "content_hash": digest,
             "traits": np.asarray(traits, np.float32),
             "valence": np.float32(item.valence), "arousal": np.float32(item.arousal)}
  bar.close()


def build(scan, data_cfg, entry: str, prep: dict) -> dict:
  """Decodes every item into a TFDS ArrayRecord dataset under `entry`; returns the report."""
  label_map = LabelMap.from_config(data_cfg)
  skipped = list(scan.skipped)
  items = _with_canonical_labels(scan, label_map, skipped)
  stats = {"faces": collections.Counter(), "sizes": collections.Counter(),
           "scanned_classes": collections.Counter(i.label for i in items if i.label), "images": 0}
  trait_names = tuple(scan.trait_names)
  examples = _examples(items, _Decoder(prep), int(data_cfg.num_threads), trait_names, stats,
                       skipped, prep["source"])
  tfds.disable_progress_bar()  # our own bar counts items
  tmp = entry + f".incomplete-{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  shape = (prep["image_size"], prep["image_size"], prep["channels"])
  builder = PreparedFaces(image_shape=shape, num_traits=len(trait_names), examples=examples,
                          data_dir=tmp, file_format="array_record")
  try:
    builder.download_and_prepare()
  except AssertionError:
    if stats["images"]:
      raise
    # TFDS cannot write an empty split; the report alone records why nothing is left.
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
  report = {
      "source": prep["source"], "path": os.path.abspath(data_cfg.path), "settings": prep,
      "label_map": label_map.to_dict(), "trait_names": list(trait_names),
      "items_scanned": len(scan.items) + len(scan.skipped), "images_prepared": stats["images"],
      "skipped_total": len(skipped), "skipped": _skip_summary(skipped),
      "scanned_classes": dict(stats["scanned_classes"]),
      "image_sizes_seen": dict(stats["sizes"].most_common(10)),
      "distinct_image_sizes": len(stats["sizes"]),
      "face_crop": dict(stats["faces"]) if prep["face_crop"] != "none" else "off",
  }
  with open(os.path.join(tmp, REPORT_FILE), "w") as f:
    json.dump(report, f, indent=2)
  try:
    os.rename(tmp, entry)
  except OSError:  # another process finished the same entry first
    shutil.rmtree(tmp, ignore_errors=True)
  return report


def _read(entry: str, prep: dict, num_traits: int, num_threads: int,
          stream: bool = False) -> dict[str, np.ndarray]:
  """The prepared dataset as arrays in item order, read with tfds.data_source + grain.
  With `stream`, "image" is a `RecordImages` (record ids; pixels stay on disk)."""
  shape = (prep["image_size"], prep["image_size"], prep["channels"])
  source = tfds.data_source(BUILDER_NAME, split="faces", data_dir=entry, download=False,
                            builder_kwargs={"image_shape": shape, "num_traits": num_traits})
  n = len(source)
  if n == 0:
    return {}
  text = ("label", "key", "subject", "sequence", "split", "content_hash")
  skip = set(text) | ({"image"} if stream else set())

  def stack(records):
    out = {k: np.stack([r[k] for r in records]) for k in records[0] if k not in skip}
    out.update({k: np.asarray([r[k].decode() if isinstance(r[k], bytes) else str(r[k])
                               for r in records], object) for k in text})
    return out

  ds = grain.MapDataset.source(source).batch(512, batch_fn=stack)
  parts = list(ds.to_iter_dataset(grain.ReadOptions(num_threads=max(1, num_threads))))
  arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  order = np.argsort(arrays["index"], kind="stable")  # TFDS stores examples shuffled
  arrays = {k: v[order] for k, v in arrays.items()}
  if stream:
    arrays["image"] = record_images.RecordImages.of(record_images.RecordReader(source, shape),
                                                    order)
  return arrays


def streams(data_cfg, report: dict) -> bool:
  """Whether training reads this source's pixels from the cache (not from memory)."""
  size = report["images_prepared"] * report["settings"]["image_size"] ** 2 * \
      report["settings"]["channels"]
  return size > float(data_cfg.in_memory_max_mb) * 2 ** 20


def prepare(scan, data_cfg, root: str) -> tuple[dict, dict, str]:
  """(arrays, preparation report, cache entry); builds the entry when absent."""
  prep = settings(data_cfg)
  key = fingerprint(scan, root, prep)
  cache = data_cfg.cache_dir or default_cache_dir()
  entry = os.path.join(cache, f"{prep['source']}-{key}")
  report_path = os.path.join(entry, REPORT_FILE)
  for attempt in (0, 1):
    report = _entry_report(entry, report_path) if attempt == 0 else None
    if report is None:
      os.makedirs(cache, exist_ok=True)
      _remove_stale(entry)
      logging.info("preparing %s into %s", root, entry)
      report = build(scan, data_cfg, entry, prep)
      report["cache"] = "built"
    report["fingerprint"] = key
    report["cache_entry"] = entry
    if not report["images_prepared"]:
      return {}, report, key
    try:
      stream = streams(data_cfg, report)
      report["images_in"] = "cache (read per batch)" if stream else "memory"
      return (_read(entry, prep, len(report["trait_names"]), int(data_cfg.num_threads), stream),
              report, key)
    except Exception as e:  # noqa: BLE001 - any failure to read means a damaged entry
      if attempt == 1:
        raise
      logging.warning("prepared-data cache %s cannot be read (%s: %s): deleting and rebuilding it",
                      entry, type(e).__name__, e)
      print(f"[data] the prepared-data cache {entry} was damaged ({type(e).__name__}): rebuilding it")
  raise AssertionError("unreachable")


def _entry_report(entry: str, report_path: str) -> dict | None:
  """A finished entry's report (cache reused), or None when there is none to reuse."""
  if not os.path.exists(report_path):
    return None
  try:
    with open(report_path) as f:
      report = json.load(f)
  except (OSError, ValueError):
    return None
  report["cache"] = "reused"
  return report


def _remove_stale(entry: str) -> None:
  """Removes a half-written entry and the `.incomplete-PID` folders of processes
  that no longer run (killed during a build); a live build's folder is left alone."""
  shutil.rmtree(entry, ignore_errors=True)
  for tmp in glob.glob(glob.escape(entry) + ".incomplete-*"):
    pid = tmp.rsplit("-", 1)[1]
    if not pid.isdigit() or not atomic_io.pid_alive(int(pid)):
      shutil.rmtree(tmp, ignore_errors=True)
