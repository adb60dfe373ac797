"""Start a self-supervised stage from another run's encoder (`<stage>.init_from`).

One long pretraining run on many unlabelled faces can then serve many small
labelled runs: `--config.contrastive.init_from=RUN` starts the contrastive
encoder from RUN's (and `epochs=0` takes it as it is). RUN is a workdir (its
`checkpoints/contrastive`, else `checkpoints/barlow`, is used) or one of those
checkpoint directories. Only the encoder is taken; the projection head and the
online probe start fresh. The checkpoint's metadata must agree on what decides
the encoder's weights' shapes and meaning: the encoder fields of
`config.model`, the image size and the channels.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from sedl_jax.config.validate import ConfigError
from sedl_jax.models import registry as models
from sedl_jax.train.checkpoint import CheckpointMismatch, StageCheckpoints, config_diff

PRETRAINING_STAGES = ("contrastive", "barlow")
# config.model fields that decide the encoder's variables (dtype only changes compute).
ENCODER_FIELDS = ("encoder", "width", "stem", "cbam", "cbam_reduction")


def locate(path: str, stage: str) -> tuple[str, str]:
  """(workdir, stage) of the checkpoint `path` names; ConfigError when it names none."""
  field = f"config.{stage}.init_from={path!r}"
  full = os.path.abspath(os.path.expanduser(path))
  if not os.path.exists(full):
    raise ConfigError(f"{field}: no such directory")
  order = (stage,) + tuple(s for s in PRETRAINING_STAGES if s != stage)
  for source in order:
    if os.path.isdir(os.path.join(full, "checkpoints", source)):
      return full, source
  parent = os.path.dirname(full)
  if os.path.basename(parent) == "checkpoints" and os.path.basename(full) in PRETRAINING_STAGES:
    return os.path.dirname(parent), os.path.basename(full)
  raise ConfigError(f"{field}: neither a run's workdir with checkpoints/contrastive or "
                    "checkpoints/barlow, nor one of those checkpoint directories")


def check_meta(meta: dict, config, image_shape, where: str) -> None:
  """CheckpointMismatch listing every field that differs."""
  saved = meta.get("model", {})
  diffs = config_diff({k: saved.get(k) for k in ENCODER_FIELDS},
                      {k: config.model[k] for k in ENCODER_FIELDS}, "config.model")
  h, _, c = image_shape
  for key, value in (("image_size", int(h)), ("channels", int(c))):
    if meta.get(key) != value:
      diffs.append(f"{key}: checkpoint has {meta.get(key)!r}, config has {value!r}")
  if diffs:
    raise CheckpointMismatch(f"{where}: its encoder does not fit this config:\n  " + "\n  ".join(diffs)
                             + "\nSet these to the checkpoint's values, or pretrain anew.")


def _abstract_encoder(config, image_shape) -> dict:
  encoder = models.build_encoder(config.model)
  shapes = jax.eval_shape(lambda: encoder.init(jax.random.PRNGKey(0),
                                               jnp.zeros((1, *image_shape)), False))
  # Restored onto one local device of each process, then handed over as host arrays.
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  tree = {"params": {"encoder": shapes["params"]},
          "batch_stats": {"encoder": shapes.get("batch_stats", {})}}
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), tree)


def load(config, stage: str, image_shape) -> tuple[dict, dict]:
  """(encoder variables as host arrays, provenance for the metadata) of
  `config.<stage>.init_from`."""
  path = config[stage].init_from
  workdir, source = locate(path, stage)
  with StageCheckpoints(workdir, source) as ckpt:
    meta = ckpt.read_meta()
    check_meta(meta, config, image_shape, f"config.{stage}.init_from={path!r} ({ckpt.directory}, "
               f"step {meta['step']})")
    item = _abstract_encoder(config, image_shape)
    # Only the encoder is read: the source's projection head and probe may differ.
    out = ckpt.manager.restore(meta["step"], args=ocp.args.Composite(model=ocp.args.PyTreeRestore(
        item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
        partial_restore=True)))["model"]
  variables = jax.device_get({"params": out["params"]["encoder"],
                              "batch_stats": out["batch_stats"]["encoder"]})
  provenance = {"path": path, "checkpoint": os.path.join(workdir, "checkpoints", source),
                "stage": source, "step": int(meta["step"]), "save_id": meta.get("save_id"),
                "data_fingerprint": meta.get("data_fingerprint")}
  return variables, provenance


def replace_encoder(encoder: dict):
  """init_variables for the stage machinery: a fresh model with this encoder."""

  def init(variables: dict) -> dict:
    params = dict(variables["params"], encoder=encoder["params"])
    batch_stats = dict(variables.get("batch_stats", {}))
    if encoder["batch_stats"]:
      batch_stats["encoder"] = encoder["batch_stats"]
    return dict(variables, params=params, batch_stats=batch_stats)

  return init
