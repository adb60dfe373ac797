"""Orbax CheckpointManager per stage: the train state, the inference variables and
metadata, saved together.

Three items per step:
  * `state`: the whole TrainState (optimizer included), for resuming training;
  * `model`: only what inference needs (params, or their EMA when the stage
    keeps one, and batch statistics), so evaluation and prediction restore a
    model without building an optimiser or loading training data;
  * `meta`: JSON (class names, image size, channels, model config, input
    shapes, data fingerprint, a unique id of this save).
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import uuid
from typing import Any

import jax
import orbax.checkpoint as ocp


class CheckpointMismatch(ValueError):
  """A checkpoint that does not fit the config it is restored into."""


class TrainingChanged(CheckpointMismatch):
  """A resume whose training fields (batch size, lr, length, seeds, ...) differ from the checkpoint's."""


class MissingCheckpoint(FileNotFoundError):
  """A stage was asked to restore a checkpoint it never saved; says how to train it."""


def _flatten(d: Any, prefix: str = "") -> dict:
  if isinstance(d, dict):
    out = {}
    for k, v in d.items():
      out.update(_flatten(v, f"{prefix}{k}."))
    return out
  return {prefix[:-1]: list(d) if isinstance(d, tuple) else d}


def config_diff(saved: dict, current: dict, prefix: str) -> list[str]:
  a, b = _flatten(saved), _flatten(current)
  return [f"{prefix}.{k}: checkpoint has {a.get(k)!r}, config has {b.get(k)!r}"
          for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def meta_diffs(saved: dict, expected: dict, stage: str) -> list[str]:
  """What differs between a checkpoint's metadata and what the config expects."""
  diffs = []
  # "model" is config.model; "stage_model" holds the stage's own model fields.
  for key, prefix in (("model", "config.model"), ("stage_model", f"config.{stage}")):
    if key in expected or key in saved:
      diffs += config_diff(saved.get(key, {}), expected.get(key, {}), prefix)
  # Same class names in the same order: a head's outputs mean those classes.
  for key in ("image_size", "channels", "num_classes", "class_names"):
    if key in expected and saved.get(key) != expected[key]:
      diffs.append(f"{key}: checkpoint has {saved.get(key)!r}, config has {expected[key]!r}")
  return diffs


# Orbax names a save in progress `<step>` + this suffix and renames it when done.
UNFINISHED_SUFFIX = ".orbax-checkpoint-tmp"


def remove_unfinished_saves(directory: str) -> int:
  """Removes saves killed before their rename; returns how many.

  Done here, synchronously, rather than with Orbax's `cleanup_tmp_directories`:
  that runs in a background thread per manager, so two managers opened on one
  stage (a later stage reading it, then the stage itself) race to delete the same
  folder and the loser fails its next save. Saves are synchronous and collective
  and a stage opens its checkpoints only between them, so nothing removed here is
  being written. Process 0 removes; the others' managers skip unfinished names.
  """
  if jax.process_index() != 0:
    return 0
  paths = glob.glob(os.path.join(glob.escape(directory), "*" + UNFINISHED_SUFFIX + "*"))
  for path in paths:
    shutil.rmtree(path, ignore_errors=True)
  return len(paths)


class StageCheckpoints:
  """`workdir/checkpoints/<stage>`: periodic and final saves, keeps the last N."""

  def __init__(self, workdir: str, stage: str, *, keep: int = 2):
    self.stage = stage
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints", stage))
    removed = remove_unfinished_saves(self.directory)
    if removed:
      logging.warning("%s: removed %d unfinished save(s) of a run that was killed", self.directory, removed)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=False),
        item_names=("state", "model", "meta"))

  def __enter__(self) -> "StageCheckpoints":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, model_variables, meta: dict) -> None:
    meta = dict(meta, step=int(step), save_id=uuid.uuid4().hex)
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), model=ocp.args.StandardSave(model_variables),
        meta=ocp.args.JsonSave(meta)), force=True)
    self.manager.wait_until_finished()

  def _step(self, step: int | None) -> int:
    step = self.latest_step() if step is None else step
    if step is None:
      raise MissingCheckpoint(f"no checkpoint in {self.directory}: train stage {self.stage!r} first "
                              f"(list {self.stage!r} in config.stages and run with --mode=train)")
    return step

  def read_meta(self, step: int | None = None) -> dict:
    out = self.manager.restore(self._step(step), args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return out["meta"]

  def check(self, expected_meta: dict, step: int | None = None) -> dict:
    """The saved metadata, after checking it against what the config expects."""
    step = self._step(step)
    meta = self.read_meta(step)
    diffs = meta_diffs(meta, expected_meta, self.stage)
    if diffs:
      raise CheckpointMismatch(
          f"checkpoint {self.directory} (step {step}) does not fit the config:\n  " + "\n  ".join(diffs))
    fp = expected_meta.get("data_fingerprint")
    if fp and meta.get("data_fingerprint") not in (None, fp):
      logging.warning("checkpoint %s was trained on data with fingerprint %s; the data now has %s",
                      self.directory, meta.get("data_fingerprint"), fp)
    return meta

  def check_training(self, training: dict) -> None:
    """Refuses to resume with other training fields than the latest checkpoint's
    (the resumed run would be neither the old run nor the new one)."""
    step = self._step(None)
    saved = self.read_meta(step).get("training")
    if saved is None:  # a checkpoint from before these fields were saved
      return
    diffs = []
    for section in sorted(set(saved) | set(training)):
      diffs += config_diff(saved.get(section, {}), training.get(section, {}), f"config.{section}")
    if diffs:
      raise TrainingChanged(
          f"checkpoint {self.directory} (step {step}) was trained with other settings than the "
          "config now gives:\n  " + "\n  ".join(diffs) + "\nResuming would mix the two. Use "
          "a new --workdir, or pass --allow_config_change to resume with the new values.")

  def restore_state(self, target_state, expected_meta: dict):
    """The latest train state, restored into the structure of `target_state`."""
    step = self._step(None)
    self.check(expected_meta, step)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target_state)
    return self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract)))["state"]

  def restore_model(self, abstract_variables, expected_meta: dict, step: int | None = None):
    """(inference variables, meta) of a step; `abstract_variables` holds
    ShapeDtypeStructs (with shardings), so nothing is computed to restore."""
    step = self._step(step)
    meta = self.check(expected_meta, step)
    out = self.manager.restore(step, args=ocp.args.Composite(
        model=ocp.args.StandardRestore(abstract_variables)))
    return out["model"], meta

  def close(self):
    self.manager.close()
