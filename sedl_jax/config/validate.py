"""Checks a resolved config before anything compiles; errors name the field."""

from __future__ import annotations

import math
import os

from sedl_jax.data import face_align, face_detect, sources

# Total stride of the encoder's stem + stages: the image must be at least this
# big for the last stage to see one pixel.
STEM_DOWNSAMPLING = {"small": 8, "strided": 16, "imagenet": 32}
TRAINED_STAGES = ("contrastive", "temporal", "behaviour", "supervised_cnn", "ssl_finetune", "barlow",
                  "classifier", "card")
PIPELINES = ("sedl", "card_fer")
# Sources whose `data.path` is one file (the others read a folder).
FILE_SOURCES = ("fer2013", "manifest")


class ConfigError(ValueError):
  """A config value that cannot work; the message names the field."""


def choices() -> dict[tuple[str, str], tuple[str, ...]]:
  """(section, field) -> allowed values, taken from the modules that use them."""
  from sedl_jax.evaluate import features
  from sedl_jax.models import temporal as temporal_model
  from sedl_jax.stages import behaviour, classifier
  out = {("temporal", "positional"): temporal_model.POSITIONAL,
         ("temporal", "output"): temporal_model.OUTPUTS,
         ("behaviour", "features"): behaviour.FEATURES,
         ("behaviour", "encoder"): behaviour.ENCODERS,
         ("report", "random_forest_features"): ("hog", "pixels")}
  for section in ("supervised_cnn", "ssl_finetune", "classifier"):
    out[(section, "mode")] = classifier.MODES
    out[(section, "init")] = classifier.INITS
    out[(section, "tta")] = features.TTA_MODES
  for section in ("behaviour", "supervised_cnn", "ssl_finetune", "classifier"):
    out[(section, "class_weighting")] = ("none", "balanced")
  return out


# Every number in a config must be finite and >= 0 (tuples element by element),
# except these fields, where a negative value means something:
MAY_BE_NEGATIVE = {"card.sample_temperature": "<= 0 tunes T_s on training images"}
# These (by field name, in any section) must also be > 0: sizes, counts, scales.
POSITIVE = {"width", "hidden", "heads", "layers", "proj_dim", "proj_hidden", "cbam_reduction",
            "knn_k", "knn_temperature", "lambd", "tune_images", "num_examples", "num_subjects",
            "images_per_subject", "sequence_length", "sequences_per_subject", "context_length",
            "max_pixels", "num_threads", "face_min_size", "mean_dwell", "beta_start", "beta_end", "batch_size",
            "eval_batch_size", "image_size", "channels", "ngram", "tsne_max_points", "timesteps",
            "num_samples", "keep_checkpoints", "log_every_steps", "checkpoint_every_steps", "lr",
            "temperature", "video_stride", "fractions", "encoder_lr_scale", "repeats"}
# And these are fractions: at most 1 (probabilities, decays, quantiles).
FRACTIONS = {"fractions", "momentum", "ema_decay", "pavpu_alpha", "pavpu_threshold", "onset_rate",
             "blur_kernel_frac", "solarize_threshold", "beta_start", "beta_end", "hue", "au_noise",
             "label_smoothing", "erase_area", "face_score", "face_nms"}


def _numbers(tree, prefix: str = ""):
  """(dotted field, value) of every number (or tuple of numbers) in a config."""
  for key, value in tree.items():
    field = f"{prefix}{key}"
    if hasattr(value, "items"):
      yield from _numbers(value, field + ".")
    elif isinstance(value, bool):
      continue
    elif isinstance(value, (int, float)) or (
        isinstance(value, (tuple, list)) and value and
        all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
      yield field, value


def _check_numbers(config) -> None:
  """The generic range rules above, for every numeric field of the config."""
  for field, value in _numbers(config):
    leaf = field.rsplit(".", 1)[-1]
    values = value if isinstance(value, (tuple, list)) else (value,)
    for v in values:
      if not math.isfinite(v):
        raise ConfigError(f"config.{field}={value!r}: must be a finite number")
      if v < 0 and field not in MAY_BE_NEGATIVE:
        raise ConfigError(f"config.{field}={value!r}: must be >= 0")
      if leaf in POSITIVE and v <= 0 and field not in MAY_BE_NEGATIVE:
        raise ConfigError(f"config.{field}={value!r}: must be > 0")
      if (leaf in FRACTIONS or leaf.endswith("_p")) and v > 1:
        raise ConfigError(f"config.{field}={value!r}: must be at most 1 (a fraction)")


def _get(config, field: str):
  value = config
  for part in field.split("."):
    value = value[part]
  return value


def _positive_int(config, field: str) -> int:
  value = _get(config, field)
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    raise ConfigError(f"config.{field}={value!r}: must be a positive integer")
  return value


def _positive_number(config, field: str) -> float:
  value = _get(config, field)
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
      math.isfinite(value) and value > 0):
    raise ConfigError(f"config.{field}={value!r}: must be a finite number > 0")
  return float(value)


def _check_stages(config, known_stages) -> tuple[str, ...]:
  stages = tuple(config.stages)
  if not stages:
    raise ConfigError("config.stages is empty: name at least one stage")
  for s in stages:
    if s not in known_stages:
      raise ConfigError(f"config.stages: unknown stage {s!r} (known: {sorted(known_stages)})")
    if s not in config:
      raise ConfigError(f"config.stages names {s!r} but config.{s} (its settings) is missing")
  if "report" in stages and config.get("pipeline") not in PIPELINES:
    raise ConfigError(f"config.pipeline={config.get('pipeline')!r}: the report stage needs one "
                      f"of {PIPELINES}")
  return stages


def _check_path(d) -> None:
  if d.name not in sources.NEEDS_PATH:
    return
  if not d.path:
    raise ConfigError(f"config.data.path is not set: dataset {d.name!r} reads files from disk")
  if not os.path.exists(d.path):
    raise ConfigError(f"config.data.path={d.path!r}: no such file or directory")
  wants_file = d.name in FILE_SOURCES
  if wants_file and not os.path.isfile(d.path):
    raise ConfigError(f"config.data.path={d.path!r}: dataset {d.name!r} reads one file (a CSV), "
                      "not a folder")
  if not wants_file and not os.path.isdir(d.path):
    raise ConfigError(f"config.data.path={d.path!r}: dataset {d.name!r} reads a folder, not a file")


def _check_real_data(config, d) -> None:
  fr = tuple(d.split_fractions)
  if len(fr) != 3 or min(fr) < 0 or fr[0] <= 0 or abs(sum(fr) - 1.0) > 1e-6:
    raise ConfigError(f"config.data.split_fractions={fr}: need (train, val, test) >= 0, train > 0, "
                      "summing to 1")
  _positive_int(config, "data.sequence_length")
  _positive_int(config, "data.video_stride")
  _positive_int(config, "data.max_pixels")
  if d.video_fps < 0:
    raise ConfigError(f"config.data.video_fps={d.video_fps}: must be >= 0 (0 = use video_stride)")
  if d.sequence_length < 2:
    raise ConfigError(f"config.data.sequence_length={d.sequence_length}: a sequence needs >= 2 "
                      "frames to predict one from another")
  if d.folds and not 0 <= d.fold < d.folds:
    raise ConfigError(f"config.data.fold={d.fold}: must be in [0, data.folds={d.folds})")


def _check_data(config) -> None:
  d = config.data
  if d.name not in sources.DATASETS:
    raise ConfigError(f"config.data.name={d.name!r}: unknown dataset (known: {sorted(sources.DATASETS)})")
  _check_path(d)
  _positive_int(config, "data.image_size")
  for field, allowed in (("no_face", ("keep", "skip")), ("face_align", face_align.ALIGN_MODES)):
    if d.get(field, allowed[0]) not in allowed:
      raise ConfigError(f"config.data.{field}={d[field]!r}: expected one of {allowed}")
  crop = d.get("face_crop", "none")
  if crop != "none" and not face_detect.is_detector(crop):
    raise ConfigError(f"config.data.face_crop={crop!r}: expected 'none', one of "
                      f"{face_detect.DETECTORS} or a path to a YuNet-format .onnx model")
  if crop.lower().endswith(".onnx") and not os.path.isfile(crop):
    raise ConfigError(f"config.data.face_crop={crop!r}: no such model file")
  if crop == "haar" and d.get("face_align") == "landmarks":
    raise ConfigError("config.data.face_align='landmarks' needs a detector with landmarks "
                      "(face_crop='yunet'); haar gives boxes only")
  if d.name != "synthetic":
    _check_real_data(config, d)
  if d.get("unlabelled"):
    from sedl_jax.data import unlabelled
    try:
      unlabelled.check(d.unlabelled)
    except ValueError as e:
      raise ConfigError(str(e)) from None
  if d.channels not in (1, 3):
    raise ConfigError(f"config.data.channels={d.channels!r}: must be 1 (grey) or 3 (RGB)")


def _check_model(config) -> None:
  m, d = config.get("model"), config.data
  if m is None:
    return
  if m.stem not in STEM_DOWNSAMPLING:
    raise ConfigError(f"config.model.stem={m.stem!r}: expected one of {sorted(STEM_DOWNSAMPLING)}")
  need = STEM_DOWNSAMPLING[m.stem]
  if d.image_size < need:
    raise ConfigError(
        f"config.data.image_size={d.image_size} is too small for config.model.stem={m.stem!r}, "
        f"which downsamples {need}x: use image_size >= {need} or stem='small'")
  if m.dtype not in ("float32", "bfloat16", "auto"):
    raise ConfigError(f"config.model.dtype={m.dtype!r}: expected 'float32', 'bfloat16' or 'auto' "
                      "(bfloat16 on a GPU/TPU, float32 on the CPU)")


def _check_trained_stage(config, s: str, num_devices: int, process_count: int) -> None:
  batch = _positive_int(config, f"{s}.batch_size")
  if batch % num_devices:
    raise ConfigError(
        f"config.{s}.batch_size={batch} (the global batch) is not divisible by the "
        f"{num_devices} devices: use a multiple of {num_devices}")
  if batch % process_count:
    raise ConfigError(f"config.{s}.batch_size={batch} is not divisible by {process_count} processes")
  st = config[s]
  init_from = st.get("init_from", "")
  if init_from:
    _check_init_from(config, s)
  if st.epochs < 0 or st.steps < 0 or (st.epochs == 0 and st.steps == 0 and not init_from):
    raise ConfigError(f"config.{s}.epochs={st.epochs}, steps={st.steps}: one must be positive "
                      "(0 and 0 only with init_from: the pretrained encoder as it is)")
  low, high = st.get("min_steps", 0), st.get("max_steps", 0)
  if high and low > high:
    raise ConfigError(f"config.{s}.min_steps={low} is above config.{s}.max_steps={high}")
  _positive_number(config, f"{s}.optimizer.lr")
  for field in ("log_every_steps", "checkpoint_every_steps", "keep_checkpoints"):
    _positive_int(config, f"{s}.{field}")
  if "temperature" in st:
    _positive_number(config, f"{s}.temperature")
  if s == "card":
    per_process = st.devices_per_process
    if isinstance(per_process, bool) or not isinstance(per_process, int) or per_process < 0:
      raise ConfigError(f"config.card.devices_per_process={per_process!r}: must be an integer "
                        ">= 0 (0: every device)")
    _positive_int(config, "card.num_samples")
    _positive_int(config, "card.eval_batch_size")
    if _positive_int(config, "card.timesteps") < 2:
      raise ConfigError(f"config.card.timesteps={st.timesteps}: must be >= 2")


def _check_label_efficiency(config) -> None:
  from sedl_jax.stages import label_efficiency
  le = config.label_efficiency
  if config.get("pipeline") not in label_efficiency.PIPELINES:
    raise ConfigError(f"config.pipeline={config.get('pipeline')!r}: label_efficiency needs one of "
                      f"{tuple(label_efficiency.PIPELINES)}")
  unknown = [r for r in le.rows if r not in label_efficiency.ROWS]
  if unknown or not le.rows:
    raise ConfigError(f"config.label_efficiency.rows={tuple(le.rows)}: unknown {unknown}; choose "
                      f"from {label_efficiency.ROWS}")
  if not le.fractions:
    raise ConfigError("config.label_efficiency.fractions is empty: give fractions in (0, 1]")
  needs = {"supervised_cnn": "supervised_cnn", "sedl": "behaviour",
           "ssl_finetune": label_efficiency.PIPELINES[config.pipeline].finetune_stage}
  for row, section in needs.items():
    if row in le.rows and section not in config:
      raise ConfigError(f"config.label_efficiency.rows has {row!r}, which trains "
                        f"config.{section}: that section is missing")


def _check_finetuned_behaviour(config, stages) -> None:
  """behaviour.encoder=finetune reads the ssl_finetune stage's encoder."""
  if "ssl_finetune" not in config:
    raise ConfigError("config.behaviour.encoder='finetune' reads the ssl_finetune stage's "
                      "encoder: config.ssl_finetune is missing")
  if "ssl_finetune" in stages and stages.index("ssl_finetune") > stages.index("behaviour"):
    raise ConfigError("config.behaviour.encoder='finetune': list 'ssl_finetune' before "
                      "'behaviour' in config.stages")
  rows = config.get("label_efficiency", {}).get("rows", ()) if "label_efficiency" in stages else ()
  if "sedl" in rows and "ssl_finetune" not in rows:
    raise ConfigError("config.behaviour.encoder='finetune' with label efficiency's 'sedl' row "
                      "needs its 'ssl_finetune' row too (else SEDL would read an encoder "
                      "fine-tuned on every label)")


def _check_init_from(config, s: str) -> None:
  """The pretrained encoder exists and fits, before anything compiles."""
  from sedl_jax.stages import encoder_init  # it reads checkpoints: loaded only when asked
  from sedl_jax.train.checkpoint import StageCheckpoints
  workdir, source = encoder_init.locate(config[s].init_from, s)
  with StageCheckpoints(workdir, source) as ckpt:
    meta = ckpt.read_meta()
    size, channels = int(config.data.image_size), int(config.data.channels)
    encoder_init.check_meta(meta, config, (size, size, channels),
                            f"config.{s}.init_from={config[s].init_from!r} ({ckpt.directory})")


def validate(config, *, known_stages, num_devices: int, process_count: int = 1) -> None:
  stages = _check_stages(config, known_stages)
  _check_numbers(config)
  _check_data(config)
  _check_model(config)
  for (section, field), allowed in choices().items():
    if section in stages and field in config[section] and config[section][field] not in allowed:
      raise ConfigError(f"config.{section}.{field}={config[section][field]!r}: "
                        f"expected one of {allowed}")
  if "label_efficiency" in stages:
    _check_label_efficiency(config)
  if "behaviour" in stages and config.behaviour.get("encoder", "frozen") == "finetune":
    _check_finetuned_behaviour(config, stages)
  for s in stages:
    if s in TRAINED_STAGES:
      _check_trained_stage(config, s, num_devices, process_count)
