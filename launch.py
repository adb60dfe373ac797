"""sedl_jax launcher: runs the stages a config lists.

  python launch.py --config=configs/sedl.py --workdir=runs/sedl
  python launch.py --config=configs/card_fer.py:paper --workdir=runs/card --mode=eval
  python launch.py --config=configs/sedl.py --config.contrastive.epochs=5

Flags:
  --config    a config file with get_config(arg); `file.py:ARG` picks a variant,
              `--config.a.b=v` overrides any field.
  --workdir   where checkpoints, metrics, reports and config.json go.
  --mode      train (train what has no finished checkpoint, then evaluate) or
              eval (restore checkpoints and evaluate, no training).
"""

import logging
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file; `path.py:ARG` selects a variant.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/default", "Output directory of the run.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval"],
                          "train: train then evaluate; eval: restore checkpoints and evaluate.")
flags.mark_flags_as_required(["config"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # Imported after flag parsing so that --help stays fast.
  from sedl_jax import distributed, runner
  from sedl_jax.config.validate import ConfigError
  from sedl_jax.data.real import DataError
  from sedl_jax.stages.registry import StageNotBuilt

  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every save at INFO
  logging.getLogger().setLevel(logging.WARNING)
  distributed.maybe_initialize()
  try:
    runner.run(_CONFIG.value, _WORKDIR.value, _MODE.value)
  except ConfigError as e:
    print(f"config error: {e}", file=sys.stderr)
    sys.exit(2)
  except DataError as e:
    print(f"data error: {e}", file=sys.stderr)
    sys.exit(2)
  except StageNotBuilt as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(3)


if __name__ == "__main__":
  app.run(main)
