"""SEDL: contrastive pretraining -> temporal predictor -> behaviour heads
-> supervised CNN and SSL + fine-tune rows -> label efficiency -> report
(Table 1, label efficiency, insights).

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
  # supervised_cnn trains Table 1's supervised baseline, ssl_finetune its "SSL +
  # fine-tune" row; label_efficiency retrains the rows with fewer labels; the
  # report reads them all.
  c.stages = ("contrastive", "temporal", "behaviour", "supervised_cnn", "ssl_finetune",
              "label_efficiency", "report")
  c.seed = 0
  # > 1: the whole run once per training seed in WORKDIR/seed_<k>/, then mean ± sd
  # of every accuracy and paired t-tests across seeds (WORKDIR/repeats.md).
  c.repeats = 1
  c.data = defaults.data(variant)
  c.model = defaults.encoder(variant)
  c.contrastive = defaults.contrastive(variant)
  c.temporal = defaults.temporal(variant)
  c.behaviour = defaults.behaviour(variant)
  c.supervised_cnn = defaults.supervised_cnn(variant)
  c.ssl_finetune = defaults.ssl_finetune(variant)
  c.label_efficiency = defaults.label_efficiency(variant, (
      "pixels_linear", "random_forest", "supervised_cnn", "ssl_linear", "ssl_finetune", "sedl"))
  c.report = defaults.sedl_report(variant)
  return c
