"""Orbax CheckpointManager per stage, with metadata saved beside the state."""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class CheckpointMismatch(ValueError):
  """A checkpoint that does not fit the config it is restored into."""


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


class StageCheckpoints:
  """`workdir/checkpoints/<stage>`: periodic and final saves, keeps the last N."""

  def __init__(self, workdir: str, stage: str, *, keep: int = 2):
    self.stage = stage
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints", stage))
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=False),
        item_names=("state", "meta"))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, meta: dict) -> None:
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(dict(meta, step=int(step)))),
        force=True)
    self.manager.wait_until_finished()

  def read_meta(self, step: int | None = None) -> dict:
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}: train stage {self.stage!r} first")
    out = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return out["meta"]

  def restore(self, target_state, expected_meta: dict, step: int | None = None):
    """Restores into the structure of `target_state`; checks the model config first."""
    step = self.latest_step() if step is None else step
    meta = self.read_meta(step)
    diffs = []
    # "model" is config.model; "stage_model" holds the stage's own model fields.
    for key, prefix in (("model", "config.model"), ("stage_model", f"config.{self.stage}")):
      if key in expected_meta or key in meta:
        diffs += config_diff(meta.get(key, {}), expected_meta.get(key, {}), prefix)
    # Same class names in the same order: a head's outputs mean those classes.
    for key in ("image_size", "channels", "num_classes", "class_names"):
      if key in expected_meta and meta.get(key) != expected_meta[key]:
        diffs.append(f"{key}: checkpoint has {meta.get(key)!r}, config has {expected_meta[key]!r}")
    if diffs:
      raise CheckpointMismatch(
          f"checkpoint {self.directory} (step {step}) does not fit the config:\n  " + "\n  ".join(diffs))
    fp = expected_meta.get("data_fingerprint")
    if fp and meta.get("data_fingerprint") not in (None, fp):
      logging.warning("checkpoint %s was trained on data with fingerprint %s; the data now has %s",
                      self.directory, meta.get("data_fingerprint"), fp)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target_state)
    out = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    return out["state"], out["meta"]

  def resume(self, state, expected_meta: dict, mode: str):
    """The latest checkpoint restored into `state` when there is one; else `state`
    unchanged in train mode, and a clear error in eval mode."""
    if self.latest_step() is not None:
      return self.restore(state, expected_meta)[0]
    if mode == "eval":
      raise FileNotFoundError(f"--mode=eval: no checkpoint in {self.directory}; train first")
    return state

  def close(self):
    self.manager.close()
