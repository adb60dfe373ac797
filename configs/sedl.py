"""SEDL: contrastive pretraining -> temporal predictor -> behaviour heads
-> supervised CNN baseline -> report (Table 1, insights).

Run (built-in synthetic faces, CPU-friendly):
  python launch.py --config=configs/sedl.py --workdir=runs/sedl
Variants by argument: `quick` (default), `paper` (224x224 RGB, ResNet18, tau 0.7,
Adam 5e-4, 120 + 40 epochs), `tiny` (tests):
  python launch.py --config=configs/sedl.py:paper --workdir=runs/sedl_paper
Any field can be overridden, e.g. `--config.contrastive.epochs=10`.
"""

import ml_collections

from sedl_jax.config import defaults


def get_config(arg=None):
  variant = defaults.check_variant(arg)
  c = ml_collections.ConfigDict()
  c.pipeline = "sedl"
  c.variant = variant
  # supervised_cnn trains Table 1's supervised baseline; the report reads it.
  c.stages = ("contrastive", "temporal", "behaviour", "supervised_cnn", "report")
  c.seed = 0
  c.data = defaults.data(variant)
  c.model = defaults.encoder(variant)
  c.contrastive = defaults.contrastive(variant)
  c.temporal = defaults.temporal(variant)
  c.behaviour = defaults.behaviour(variant)
  c.supervised_cnn = defaults.supervised_cnn(variant)
  c.report = defaults.sedl_report(variant)
  return c
