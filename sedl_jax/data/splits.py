"""Train/val/test assignment for prepared real data.

Order of precedence:
  1. `config.data.split_file` (a `splits.json` an earlier run wrote): reused as is;
  2. `config.data.folds` > 1: k-fold over subjects (or items), test = fold
     `config.data.fold`, val carved from the rest;
  3. splits given by the data (train/val/test folders, FER2013 Usage, a manifest's
     split column) when every item has one; missing val (or test) is carved from train;
  4. subject-disjoint splits when every item has a subject id;
  5. stratified random splits otherwise.
Carving is greedy over units (subjects, or single items), keeping each split's
class mix close to its share of every class. All of it is seeded.
"""

from __future__ import annotations

import json

import numpy as np

from sedl_jax import atomic_io
from sedl_jax.data.types import SPLITS


def allocate_units(unit_of: np.ndarray, labels: np.ndarray, fractions, seed) -> np.ndarray:
  """Assigns each unit (e.g. subject) to one of len(fractions) parts; returns
  the part index per item. Units are placed largest first, each where its
  classes are most under target; every part with a positive share gets a unit."""
  fractions = np.asarray(fractions, np.float64)
  fractions = fractions / fractions.sum()
  units, inverse = np.unique(unit_of, return_inverse=True)
  classes = np.unique(labels, return_inverse=True)[1]  # -1 (unlabelled) is its own class
  counts = np.zeros((len(units), classes.max() + 1 if len(classes) else 1))
  np.add.at(counts, (inverse, classes), 1)
  rng = np.random.default_rng(seed)
  order = rng.permutation(len(units))
  order = order[np.argsort(-counts[order].sum(1), kind="stable")]
  total = counts.sum(0)
  target = fractions[:, None] * total[None, :]
  current = np.zeros_like(target)
  part = np.empty(len(units), np.int64)
  for u in order:
    deficit = ((target - current) * counts[u][None, :] / np.maximum(total, 1)).sum(1)
    deficit = np.where(fractions > 0, deficit, -np.inf)
    p = int(np.argmax(deficit))
    part[u] = p
    current[p] += counts[u]
  # A part with a positive share but no unit takes the smallest unit of the biggest part.
  for p in np.flatnonzero(fractions > 0):
    if (part == p).any():
      continue
    sizes = counts.sum(1)
    big = np.bincount(part, minlength=len(fractions)).argmax()
    donors = np.flatnonzero(part == big)
    if len(donors) > 1:
      part[donors[np.argmin(sizes[donors])]] = p
  return part[inverse]


def _carve(idx: np.ndarray, units: np.ndarray, labels: np.ndarray, shares: dict, seed) -> dict:
  names = list(shares)
  parts = allocate_units(units[idx], labels[idx], [shares[n] for n in names], seed)
  return {n: idx[parts == i] for i, n in enumerate(names)}


def assign(keys, labels, subjects, given, *, fractions, seed, folds: int = 0,
           fold: int = 0) -> tuple[np.ndarray, str]:
  """Split name per item and a sentence saying how the split was made."""
  keys = np.asarray(keys, object)
  labels = np.asarray(labels)
  subjects = np.asarray(subjects, object)
  given = np.asarray(given, object)
  n = len(keys)
  have_subjects = n > 0 and all(subjects != "")
  units = subjects if have_subjects else keys
  unit_word = "subject" if have_subjects else "item"
  frac = dict(zip(SPLITS, (float(f) for f in fractions)))
  out = np.full(n, "", object)
  if folds and folds > 1:
    if not 0 <= fold < folds:
      raise ValueError(f"config.data.fold={fold}: must be in [0, {folds})")
    parts = allocate_units(units, labels, [1.0] * folds, seed)
    out[parts == fold] = "test"
    rest = np.flatnonzero(parts != fold)
    share = frac["val"] / max(frac["train"] + frac["val"], 1e-9)
    for name, idx in _carve(rest, units, labels, {"train": 1 - share, "val": share}, seed).items():
      out[idx] = name
    return out, (f"{folds}-fold over {unit_word}s, stratified by class; "
                 f"fold {fold} is the test split, val carved from the other folds")
  if n and all(given != ""):
    present = set(given)
    if "train" not in present:
      raise ValueError("the data gives splits but no 'train' split: add train data or "
                       "remove the split folders/column to let sedl_jax split it")
    out[:] = given
    missing = [s for s in SPLITS if s not in present]
    if missing:
      train = np.flatnonzero(given == "train")
      shares = {"train": frac["train"], **{s: frac[s] for s in missing}}
      for name, idx in _carve(train, units, labels, shares, seed).items():
        out[idx] = name
      how = "subject-disjoint, stratified by class" if have_subjects else "stratified by class"
      return out, f"as given by the data; {' and '.join(missing)} carved from train ({how})"
    return out, "as given by the data"
  parts = allocate_units(units, labels, [frac[s] for s in SPLITS], seed)
  out[:] = np.asarray(SPLITS, object)[parts]
  if have_subjects:
    return out, "subject-disjoint, stratified by class as far as subjects allow"
  return out, "stratified random (no subject ids in the data)"


def write(path: str, keys, split_of, method: str, seed) -> None:
  """Atomically: `data.split_file` may point at this very file."""
  atomic_io.write_text(path, json.dumps(
      {"method": method, "seed": seed,
       "assignment": {str(k): str(s) for k, s in zip(keys, split_of)}}, indent=0))


def read(path: str, keys) -> tuple[np.ndarray, str]:
  """Split per item from a written `splits.json`; '' for items it does not list."""
  try:
    with open(path) as f:
      saved = json.load(f)
    assignment = saved["assignment"]
  except (OSError, ValueError, KeyError) as e:
    raise ValueError(f"config.data.split_file={path!r}: not a readable splits.json ({e})") from None
  bad = sorted({s for s in assignment.values() if s not in SPLITS})
  if bad:
    raise ValueError(f"config.data.split_file={path!r}: unknown split names {bad}")
  return (np.asarray([assignment.get(str(k), "") for k in keys], object),
          f"read from {path} ({saved.get('method', 'unknown method')})")
