"""Checks a resolved config before anything compiles; errors name the field."""

from __future__ import annotations

import os

from sedl_jax.data import sources

# Total stride of the encoder's stem + stages: the image must be at least this
# big for the last stage to see one pixel.
STEM_DOWNSAMPLING = {"small": 8, "strided": 16, "imagenet": 32}
TRAINED_STAGES = ("contrastive", "temporal", "behaviour", "supervised_cnn", "barlow", "classifier",
                  "card")
# Fields with a fixed set of values: (section, field) -> allowed.
CHOICES = {
    ("temporal", "positional"): ("learned", "sinusoidal"),
    ("temporal", "output"): ("mixture", "residual"),
    ("behaviour", "features"): ("static", "temporal", "static+temporal"),
    ("behaviour", "class_weighting"): ("none", "balanced"),
    ("supervised_cnn", "mode"): ("finetune", "linear"),
    ("supervised_cnn", "init"): ("scratch", "contrastive", "barlow"),
    ("classifier", "mode"): ("finetune", "linear"),
    ("classifier", "init"): ("scratch", "contrastive", "barlow"),
    ("classifier", "class_weighting"): ("none", "balanced"),
    ("report", "random_forest_features"): ("hog", "pixels"),
}


class ConfigError(ValueError):
  """A config value that cannot work; the message names the field."""


def _positive_int(config, field: str) -> int:
  value = config
  for part in field.split("."):
    value = value[part]
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    raise ConfigError(f"config.{field}={value!r}: must be a positive integer")
  return value


def validate(config, *, known_stages, num_devices: int, process_count: int = 1) -> None:
  stages = tuple(config.stages)
  if not stages:
    raise ConfigError("config.stages is empty: name at least one stage")
  for s in stages:
    if s not in known_stages:
      raise ConfigError(f"config.stages: unknown stage {s!r} (known: {sorted(known_stages)})")
    if s not in config:
      raise ConfigError(f"config.stages names {s!r} but config.{s} (its settings) is missing")

  d = config.data
  if d.name not in sources.DATASETS:
    raise ConfigError(f"config.data.name={d.name!r}: unknown dataset (known: {sorted(sources.DATASETS)})")
  if d.name in sources.NEEDS_PATH:
    if not d.path:
      raise ConfigError(f"config.data.path is not set: dataset {d.name!r} reads files from disk")
    if not os.path.exists(d.path):
      raise ConfigError(f"config.data.path={d.path!r}: no such file or directory")
  _positive_int(config, "data.image_size")
  for field, allowed in (("face_crop", ("none", "haar")), ("no_face", ("keep", "skip"))):
    if d.get(field, allowed[0]) not in allowed:
      raise ConfigError(f"config.data.{field}={d[field]!r}: expected one of {allowed}")
  if d.name != "synthetic":
    fr = tuple(d.split_fractions)
    if len(fr) != 3 or min(fr) < 0 or fr[0] <= 0:
      raise ConfigError(f"config.data.split_fractions={fr}: need (train, val, test) >= 0, train > 0")
    _positive_int(config, "data.sequence_length")
    _positive_int(config, "data.video_stride")
    if d.video_fps < 0:
      raise ConfigError(f"config.data.video_fps={d.video_fps}: must be >= 0 (0 = use video_stride)")
    if d.sequence_length < 2:
      raise ConfigError(f"config.data.sequence_length={d.sequence_length}: a sequence needs >= 2 "
                        "frames to predict one from another")
    if d.folds and not 0 <= d.fold < d.folds:
      raise ConfigError(f"config.data.fold={d.fold}: must be in [0, data.folds={d.folds})")
  if d.channels not in (1, 3):
    raise ConfigError(f"config.data.channels={d.channels!r}: must be 1 (grey) or 3 (RGB)")

  m = config.get("model")
  if m is not None:
    if m.stem not in STEM_DOWNSAMPLING:
      raise ConfigError(f"config.model.stem={m.stem!r}: expected one of {sorted(STEM_DOWNSAMPLING)}")
    need = STEM_DOWNSAMPLING[m.stem]
    if d.image_size < need:
      raise ConfigError(
          f"config.data.image_size={d.image_size} is too small for config.model.stem={m.stem!r}, "
          f"which downsamples {need}x: use image_size >= {need} or stem='small'")
    if m.dtype not in ("float32", "bfloat16"):
      raise ConfigError(f"config.model.dtype={m.dtype!r}: expected 'float32' or 'bfloat16'")

  for (section, field), allowed in CHOICES.items():
    if section in stages and field in config[section] and config[section][field] not in allowed:
      raise ConfigError(f"config.{section}.{field}={config[section][field]!r}: "
                        f"expected one of {allowed}")
  for s in stages:
    if s not in TRAINED_STAGES:
      continue
    batch = _positive_int(config, f"{s}.batch_size")
    if batch % num_devices:
      raise ConfigError(
          f"config.{s}.batch_size={batch} (the global batch) is not divisible by the "
          f"{num_devices} devices: use a multiple of {num_devices}")
    if batch % process_count:
      raise ConfigError(f"config.{s}.batch_size={batch} is not divisible by {process_count} processes")
    st = config[s]
    if st.epochs < 0 or st.steps < 0 or (st.epochs == 0 and st.steps == 0):
      raise ConfigError(f"config.{s}.epochs={st.epochs}, steps={st.steps}: one must be positive")
