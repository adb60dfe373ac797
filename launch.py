"""sedl_jax launcher: runs the stages a config lists.

  python launch.py --config=configs/sedl.py --workdir=runs/sedl
  python launch.py --config=configs/card_fer.py:paper --workdir=runs/card --mode=eval
  python launch.py --config=configs/sedl.py --config.contrastive.epochs=5
  python launch.py --mode=predict --workdir=runs/sedl --input=session.mp4 --out=runs/sedl/predict

Flags:
  --config       a config file with get_config(arg); `file.py:ARG` picks a variant,
                 `--config.a.b=v` overrides any field.
  --workdir      where checkpoints, metrics, reports and config.json go.
  --mode         train (train what has no finished checkpoint, then evaluate),
                 eval (restore checkpoints and evaluate, no training) or
                 predict (apply the run in --workdir to --input; --config not needed).
  --input        predict: an image, a folder of frames, a video or a manifest CSV
                 (repeat the flag for several); or one live input: camera:N, an
                 rtsp:// or http(s):// stream, or live:SOURCE (any OpenCV source
                 read as it arrives); Ctrl-C stops it with every row so far written.
  --out          predict: the folder for frames.csv, summary.json, timeline.html.
  --predict.X    predict settings (sedl_jax/config/defaults.py:predict), e.g.
                 --predict.face=none --predict.smooth=hmm --predict.fps=10.
  --cpu_devices  XLA CPU devices: auto (one per usable core) or N.
  --cpu_conv_kernels  auto (XLA's Eigen convolutions on x86-64, jaxlib >= 0.8.2: 13-16%
                 faster there) or xla_default (XLA's own choice, YNNPACK).
  --cpu_conv_input_copy  auto (training on the CPU stores each ResNet convolution's
                 input once, so the weight gradient transposes it instead of
                 recomputing BatchNorm and ReLU: 8-12% faster quick step) or off.
  --host_huge_pages  auto (where the kernel's transparent huge pages are `madvise` and
                 glibc >= 2.35, the launcher runs itself again at once with
                 GLIBC_TUNABLES=glibc.malloc.hugetlb=1: XLA's per-step CPU buffers then
                 come in huge pages, a 20% faster quick step on a 2-core EPYC) or off.
  --compilation_cache  auto (JAX_COMPILATION_CACHE_DIR, else
                 ~/.cache/sedl_jax/jax_compilation_cache/<host CPU>), off, or a folder:
                 JAX's persistent compilation cache, so eval, resume, predict and
                 repeat runs read their compiled programs instead of compiling again.
  --distributed  auto | on | off: start jax.distributed from JAX_* / SLURM / Open MPI.
  --distributed_heartbeat_s  several processes: when one dies, the others abort after
                 this many seconds (default 100) instead of waiting.

Exit status: 0 done; 2 bad input (config, data, inputs, checkpoints, environment),
with one message naming what to fix; 1 training diverged (NaN/inf; the last good
checkpoint is kept) or an unexpected error.
"""

import logging
import sys

from absl import app, flags
from ml_collections import config_flags

from sedl_jax import compile_cache, cpu_kernels, huge_pages  # no JAX import: the backend starts after the flags
from sedl_jax.models import conv_input_copy  # no JAX import either
from sedl_jax.config import defaults

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file; `path.py:ARG` selects a variant (not needed with --mode=predict).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/default", "Output directory of the run.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "predict"],
                          "train: train then evaluate; eval: restore checkpoints and evaluate; "
                          "predict: apply the run in --workdir to --input, writing to --out.")
_ALLOW_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False,
    "Resume stages even when their training fields (batch size, learning rate, length, seeds, "
    "augmentation) differ from their checkpoints'.")
_INPUT = flags.DEFINE_multi_string(
    "input", [], "predict: image, folder, video or manifest CSV; or one live input "
    "(camera:N, rtsp://..., http(s)://..., live:SOURCE).")
_OUT = flags.DEFINE_string("out", None, "predict: output folder (default WORKDIR/predict).")
_PREDICT = config_flags.DEFINE_config_dict("predict", defaults.predict(),
                                           "Prediction settings (--predict.FIELD=VALUE).")
_CPU_DEVICES = flags.DEFINE_string(
    "cpu_devices", "auto",
    "XLA CPU devices when running on the CPU: 'auto' = one per usable core (lowered to the "
    "largest count dividing every batch size), or a number. Ignored when XLA_FLAGS sets "
    "--xla_force_host_platform_device_count.")
_CPU_CONV_KERNELS = flags.DEFINE_enum(
    "cpu_conv_kernels", "auto", list(cpu_kernels.SETTINGS),
    "Which library runs convolutions on the CPU: auto = XLA's Eigen kernels on x86-64 with "
    "jaxlib >= 0.8.2 (YNNPACK keeps the matmuls; a 13-16% faster quick step on a 2-core EPYC), "
    "else XLA's default; xla_default = XLA's own choice. Ignored when XLA_FLAGS sets "
    "--xla_cpu_experimental_ynn_fusion_type. Only XLA's CPU backend reads it.")
_CPU_CONV_INPUT_COPY = flags.DEFINE_enum(
    "cpu_conv_input_copy", "auto", list(conv_input_copy.SETTINGS),
    "auto = when training on the CPU, store each ResNet convolution's input once, so its "
    "weight gradient transposes the stored activation instead of recomputing BatchNorm and "
    "ReLU inside XLA's slow fused transpose (sedl_jax/models/conv_input_copy.py; an 8-12% "
    "faster quick contrastive step on a 2-core EPYC); off = never. Results differ only by "
    "float32 rounding.")
_COMPILATION_CACHE = flags.DEFINE_string(
    "compilation_cache", "auto",
    "JAX's persistent compilation cache: auto = JAX_COMPILATION_CACHE_DIR when set, else "
    "~/.cache/sedl_jax/jax_compilation_cache/<host CPU key> (XDG_CACHE_HOME honoured); off; or "
    "a folder. Runs that compile the same programs again (eval, resume, predict, repeat "
    "seeds, a second job) read them from it. Entries are keyed by program, flags, JAX "
    "version and device, so results are the same with or without it.")
_HOST_HUGE_PAGES = flags.DEFINE_enum(
    "host_huge_pages", "auto", list(huge_pages.SETTINGS),
    "auto = where the kernel's transparent huge pages are 'madvise' and glibc >= 2.35, run "
    "this process again at once with GLIBC_TUNABLES=glibc.malloc.hugetlb=1, so the large "
    "buffers XLA's CPU runtime allocates every step come in huge pages: 71,800 -> 750 page "
    "faults per quick contrastive step, 686-725 -> 840-897 images/s on a 2-core EPYC "
    "(sedl_jax/huge_pages.py). Kept when GLIBC_TUNABLES already names the tunable; off = never.")
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed", "auto", ["auto", "on", "off"],
    "Multi-process start: auto = when JAX_COORDINATOR_ADDRESS/JAX_NUM_PROCESSES/JAX_PROCESS_ID "
    "are set, or a SLURM / Open MPI task count > 1; on = require it; off = never.")

_HEARTBEAT = flags.DEFINE_integer(
    "distributed_heartbeat_s", 100,
    "Several processes: when one dies, the others abort after this many seconds without its "
    "heartbeat (JAX's default, 100), instead of waiting; restart the command to resume.")


def _fail(message: str) -> None:
  print(message, file=sys.stderr)
  sys.exit(2)


def _batch_sizes(config) -> list[int]:
  return [int(section.batch_size) for section in config.values()
          if hasattr(section, "get") and isinstance(section.get("batch_size"), int)]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # Both before anything starts a JAX backend: the device count and the
  # distributed runtime are fixed when it starts.
  from sedl_jax import cpu_devices, distributed
  predicting = _MODE.value == "predict"
  if _CONFIG.value is None and not predicting:
    _fail("error: --config is required (except with --mode=predict)")
  if predicting and not _INPUT.value:
    _fail("error: --mode=predict needs --input (an image, a folder, a video or a manifest CSV)")
  # First of all: it starts the process again (glibc reads its tunables at start).
  huge_pages.reexec_if_useful(_HOST_HUGE_PAGES.value)
  try:
    sizes = [int(_PREDICT.value.batch_size)] if predicting else _batch_sizes(_CONFIG.value)
    count, note = cpu_devices.choose(_CPU_DEVICES.value, sizes)
  except ValueError as e:
    _fail(f"error: {e}")
  if note:
    print(note)
  cpu_devices.apply(count)
  cpu_kernels.apply(cpu_kernels.choose(_CPU_CONV_KERNELS.value))
  try:
    compile_cache.apply(compile_cache.resolve(_COMPILATION_CACHE.value))
  except ValueError as e:
    _fail(f"error: {e}")
  try:
    distributed.maybe_initialize(_DISTRIBUTED.value, heartbeat_timeout_s=_HEARTBEAT.value)
  except distributed.DistributedConfigError as e:
    _fail(f"error: {e}")

  from sedl_jax import runner
  from sedl_jax.config.validate import ConfigError
  from sedl_jax.data.real import DataError
  from sedl_jax.train.checkpoint import CheckpointMismatch, MissingCheckpoint
  from sedl_jax.train.loop import NonFiniteLoss
  conv_input_copy.set_setting(_CPU_CONV_INPUT_COPY.value)  # read when models are built

  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every save at INFO
  logging.getLogger().setLevel(logging.WARNING)
  try:
    if predicting:
      _predict()
    else:
      runner.run(_CONFIG.value, _WORKDIR.value, _MODE.value, _ALLOW_CHANGE.value)
  except ConfigError as e:
    _fail(f"config error: {e}")
  except DataError as e:
    _fail(f"data error: {e}")
  except (MissingCheckpoint, CheckpointMismatch) as e:
    _fail(f"checkpoint error: {e}")
  except NonFiniteLoss as e:  # training diverged: not bad input, but no traceback either
    print(f"training stopped: {e}", file=sys.stderr)
    sys.exit(1)


def _predict() -> None:
  import os

  from sedl_jax.predict import NoUsableInput, Predictor, inputs
  out = _OUT.value or os.path.join(_WORKDIR.value, "predict")
  settings = _PREDICT.value
  live = [p for p in _INPUT.value if inputs.is_live(p)]
  try:
    if live:
      if len(_INPUT.value) > 1:
        raise inputs.InputError(f"--input={live[0]!r} is a live input: give it alone (one --input)")
      return _predict_live(Predictor.from_workdir(_WORKDIR.value, settings), live[0], out)
    inputs.streams(_INPUT.value)  # a missing input fails before any model is restored
    predictor = Predictor.from_workdir(_WORKDIR.value, settings)
    prediction = predictor.predict(_INPUT.value)
  except (inputs.InputError, NoUsableInput) as e:
    _fail(f"input error: {e}")
  except ValueError as e:
    if type(e) is not ValueError:  # checkpoint and config errors are handled by the caller
      raise
    _fail(f"predict error: {e}")
  paths = prediction.write(out, save_embeddings=settings.save_embeddings, timeline=settings.timeline)
  t = prediction.summary["throughput"]
  print(f"[predict] {t['frames']} frames, {t['faces']} faces in {t['wall_s']:.1f} s "
        f"({t['frames_per_s']:.1f} frames/s); {prediction.summary['skipped_count']} skipped")
  for name, path in paths.items():
    print(f"[predict] {name}: {path}")


def _predict_live(predictor, source: str, out: str) -> None:
  """A live input until it ends or Ctrl-C; every finished chunk is in frames.csv."""
  print(f"[predict] live input {source}: predicting as frames arrive; Ctrl-C stops "
        f"(rows are appended to {out}/frames.csv every "
        f"{int(predictor.settings.live_chunk_frames)} frames)", flush=True)
  paths = predictor.predict_live(source, out)
  stopped = "interrupted (Ctrl-C)" if paths.pop("interrupted") else "the stream ended"
  print(f"[predict] live input stopped: {stopped}")
  for name, path in paths.items():
    print(f"[predict] {name}: {path}")


if __name__ == "__main__":
  app.run(main)
