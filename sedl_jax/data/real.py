"""The user's own data: scan -> prepare (cached TFDS ArrayRecord) -> splits ->
FaceData, with a data report of everything counted, skipped or suspicious."""

from __future__ import annotations

import collections
import json
import os
import warnings

import numpy as np

from sedl_jax import atomic_io
from sedl_jax.data import prepare, scan, splits
from sedl_jax.data.labels import LabelMap
from sedl_jax.data.types import FaceData, ImageSet, SequenceSet, SPLITS, fingerprint_arrays

SCANNERS = {
    "image_folder": lambda c: scan.image_folder(c.path),
    "named_folder": lambda c: scan.image_folder(c.path, c.name_pattern),
    "fer2013": lambda c: scan.fer2013(c.path),
    "sequence_folder": lambda c: scan.sequence_folder(c.path),
    "manifest": lambda c: scan.manifest(c.path, bool(c.allow_outside_paths)),
}


class DataError(ValueError):
  """Nothing usable is left, or a split is empty; the message says what to fix."""


def prepare_once(sc, data_cfg):
  """Process 0 prepares the cache; the others wait for it, then read it. When
  process 0 fails, every process stops with its message (none waits forever)."""
  import jax
  if jax.process_count() > 1:
    from sedl_jax.train.mesh import lead_then_all
    lead_then_all(f"preparing {data_cfg.path}", lambda: prepare.prepare(sc, data_cfg, data_cfg.path),
                  DataError)
  return prepare.prepare(sc, data_cfg, data_cfg.path)


def _ids(values: np.ndarray) -> np.ndarray:
  """String ids -> int32 (sorted order), '' -> -1."""
  names = sorted({v for v in values if v})
  index = {n: i for i, n in enumerate(names)}
  return np.asarray([index.get(v, -1) for v in values], np.int32)


def _windows(a: dict, idx: np.ndarray, length: int, stride: int):
  """Fixed-length windows over each (subject, sequence) of one split."""
  groups = collections.defaultdict(list)
  for i in idx:
    if a["sequence"][i]:
      groups[(a["subject"][i], a["sequence"][i])].append(i)
  windows, short = [], []
  for name, members in sorted(groups.items()):
    members = sorted(members, key=lambda i: (a["frame"][i], a["key"][i]))
    if len(members) < length:
      short.append(f"{name[0]}/{name[1]} ({len(members)} frames)")
      continue
    for start in range(0, len(members) - length + 1, stride):
      windows.append(np.asarray(members[start:start + length]))
  return windows, short


def _sequences(a, split_idx, labels, subjects, data_cfg, trait_names, report):
  if not any(a["sequence"]):
    return None
  length = int(data_cfg.sequence_length)
  stride = int(data_cfg.sequence_stride) or length
  out, info = {}, {"window_length": length, "window_stride": stride}
  traits_complete = bool(trait_names)
  for s in SPLITS:
    windows, short = _windows(a, split_idx[s], length, stride)
    info[s] = {"windows": len(windows), "sequences_shorter_than_window": len(short),
               "first_short": short[:5]}
    w = np.stack(windows) if windows else np.zeros((0, length), np.int64)
    traits = None
    if trait_names:
      t = a["traits"][w] if len(w) else np.zeros((0, length, len(trait_names)), np.float32)
      with warnings.catch_warnings():  # all-NaN windows are caught just below
        warnings.simplefilter("ignore", RuntimeWarning)
        traits = (np.nanmean(t, axis=1) >= 0.5).astype(np.float32)
      traits_complete &= not np.isnan(t).all(axis=1).any()
    out[s] = SequenceSet(frames=a["image"][w], labels=labels[w].astype(np.int32),
                         subjects=subjects[w[:, 0]] if len(w) else np.zeros(0, np.int32),
                         traits=traits)
  if trait_names and not traits_complete:
    info["traits"] = "some windows have no value for some trait: trait labels not used"
    for s in SPLITS:
      out[s].traits = None
  report["sequences"] = info
  if not all(len(out[s]) for s in SPLITS):
    empty = [s for s in SPLITS if not len(out[s])]
    raise DataError(
        f"{data_cfg.path}: no sequence of at least data.sequence_length={length} frames in "
        f"split(s) {empty}; lower --config.data.sequence_length (shortest sequences: "
        f"{info[empty[0]]['first_short'][:3]})")
  return out


def _duplicates(hashes: np.ndarray, keys: np.ndarray, split_of: np.ndarray) -> dict:
  by_hash = collections.defaultdict(list)
  for h, k, s in zip(hashes, keys, split_of):
    if s:
      by_hash[h].append((s, k))
  across = [v for v in by_hash.values() if len({s for s, _ in v}) > 1]
  within = sum(1 for v in by_hash.values() if len(v) > 1 and len({s for s, _ in v}) == 1)
  return {"across_splits": len(across), "within_one_split": within,
          "first": [[f"{s}: {k}" for s, k in v] for v in across[:5]]}


def _assign_splits(a, labels, data_cfg):
  if data_cfg.split_file:
    return splits.read(data_cfg.split_file, a["key"])
  return splits.assign(a["key"], labels, a["subject"], a["split"],
                       fractions=tuple(data_cfg.split_fractions), seed=int(data_cfg.seed),
                       folds=int(data_cfg.folds), fold=int(data_cfg.fold))


def _count(report: dict, a, split_of, split_idx, class_names) -> None:
  """Adds the per-split counts, duplicates and label coverage to the data report."""
  unassigned = int((split_of == "").sum())
  if unassigned:
    report["not_in_split_file"] = {"count": unassigned,
                                   "first": [str(k) for k in a["key"][split_of == ""][:5]]}
  counts = {s: collections.Counter(a["label"][split_idx[s]]) for s in SPLITS}
  report["class_counts"] = {s: {**{c: int(counts[s][c]) for c in class_names},
                                "unlabelled": int(counts[s][""])} for s in SPLITS}
  report["split_sizes"] = {s: int(len(split_idx[s])) for s in SPLITS}
  report["class_names"] = list(class_names)
  report["duplicates"] = _duplicates(a["content_hash"], a["key"], split_of)
  if "subject" in a and any(a["subject"]):
    report["subjects_per_split"] = {s: len(set(a["subject"][split_idx[s]])) for s in SPLITS}
  for field in ("valence", "arousal"):
    known = int(np.isfinite(a[field]).sum())
    if known:
      report[field] = {"labelled_images": known, "used_by": "the data report only; no stage "
                       "trains on it yet"}


def _check_usable(report, split_idx, class_names, method, data_cfg, workdir) -> None:
  empty = [s for s in SPLITS if not len(split_idx[s])]
  if empty:
    _write_report(report, workdir)
    raise DataError(f"{data_cfg.path}: split(s) {empty} are empty after splitting "
                    f"({method}; sizes {report['split_sizes']}); add data, change "
                    "data.split_fractions, or give the splits as folders")
  if not class_names:
    _write_report(report, workdir)
    raise DataError(f"{data_cfg.path}: no labelled images; the stages need emotion labels "
                    "(sequence folders take them from ROOT/labels.csv: subject,sequence[,frame],"
                    "label; or list the files in a manifest)")


def load(data_cfg, workdir: str | None = None) -> FaceData:
  name = data_cfg.name
  a, prep_report, key = prepare_once(SCANNERS[name](data_cfg), data_cfg)
  report = dict(prep_report)
  if not a:
    raise DataError(f"{data_cfg.path}: no usable images ({report['skipped_total']} items "
                    f"skipped: {json.dumps(report['skipped'])[:600]})")
  label_map = LabelMap.from_config(data_cfg)
  class_names = label_map.order({l for l in a["label"] if l})
  index = {c: i for i, c in enumerate(class_names)}
  labels = np.asarray([index.get(l, -1) for l in a["label"]], np.int32)
  subjects = _ids(a["subject"])
  report["empty_classes"] = sorted(c for c, n in report["scanned_classes"].items()
                                   if c not in index and n > 0)
  split_of, method = _assign_splits(a, labels, data_cfg)
  report["split_method"] = method
  split_idx = {s: np.flatnonzero(split_of == s) for s in SPLITS}
  _count(report, a, split_of, split_idx, class_names)
  _check_usable(report, split_idx, class_names, method, data_cfg, workdir)
  images = {s: ImageSet(a["image"][i], labels[i], subjects[i]) for s, i in split_idx.items()}
  seqs = _sequences(a, split_idx, labels, subjects, data_cfg, tuple(report["trait_names"]),
                    report)
  codes = np.asarray([SPLITS.index(s) if s else -1 for s in split_of], np.int8)
  fp = fingerprint_arrays(np.frombuffer(key.encode(), np.uint8), codes,
                          np.asarray([data_cfg.sequence_length, data_cfg.sequence_stride]))
  report["data_fingerprint"] = fp
  _write_report(report, workdir)
  if workdir is not None:
    _write_splits(workdir, a["key"], split_of, method, data_cfg)
  print(summary_line(report, workdir))
  return FaceData(source=name, class_names=class_names, images=images, sequences=seqs,
                  trait_names=tuple(report["trait_names"]) if seqs and seqs["train"].traits
                  is not None else (), fingerprint=fp, frames_in_images=seqs is not None,
                  label_map=label_map.to_dict(),
                  raw_hashes={s: set(a["content_hash"][i]) for s, i in split_idx.items()})


def _write_report(report: dict, workdir: str | None) -> None:
  import jax
  if workdir is None or jax.process_index() != 0:
    return
  atomic_io.write_json(os.path.join(workdir, "data_report.json"), report)


def _write_splits(workdir, keys, split_of, method, data_cfg) -> None:
  import jax
  if jax.process_index() == 0:
    splits.write(os.path.join(workdir, "splits.json"), keys, split_of, method, int(data_cfg.seed))


def summary_line(report: dict, workdir: str | None) -> str:
  sizes = report["split_sizes"]
  skipped = ", ".join(f"{r} {v['count']}" for r, v in report["skipped"].items())
  dup = report["duplicates"]["across_splits"]
  where = f"; report in {os.path.join(workdir, 'data_report.json')}" if workdir else ""
  return (f"[data] {report['source']} {report['path']}: {sum(sizes.values())} images "
          f"(train {sizes['train']} / val {sizes['val']} / test {sizes['test']}), "
          f"{len(report['class_names'])} classes, {report['skipped_total']} skipped"
          f"{' (' + skipped + ')' if skipped else ''}, {dup} duplicate(s) across splits, "
          f"cache {report['cache']}{where}")
