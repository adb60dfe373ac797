"""Self-supervised diffusion FER: Barlow Twins -> classifier f_phi -> CARD -> report.

Run (built-in synthetic faces, CPU-friendly):
  python launch.py --config=configs/card_fer.py --workdir=runs/card
Argument: a variant (`quick` default, `paper`, `tiny`), optionally with an
ablation of the paper's Table 3 after a comma:
  python launch.py --config=configs/card_fer.py:quick,ablation=r18 --workdir=runs/card_r18
Ablations (Table 3): `all` (default: every row below, each in WORKDIR/<row>, then
one report with the table), `proposed` (Barlow Twins SSL + CBAM + CARD), `r18_cbam`
(supervised f_phi on ResNet18+CBAM + CARD), `r18` (supervised ResNet18, no CBAM + CARD).
"""

import ml_collections

from sedl_jax.config import ablations, defaults


def _parse(arg):
  variant, ablation = None, "all"
  for part in (arg or "").split(","):
    part = part.strip()
    if not part:
      continue
    if part.startswith("ablation="):
      ablation = part.split("=", 1)[1]
    else:
      variant = part
  return defaults.check_variant(variant), ablation


def get_config(arg=None):
  variant, ablation = _parse(arg)
  c = ml_collections.ConfigDict()
  c.pipeline = "card_fer"
  c.variant = variant
  c.seed = 0
  # > 1: the whole run once per training seed in WORKDIR/seed_<k>/, then mean ± sd
  # of every accuracy and paired t-tests across seeds (WORKDIR/repeats.md).
  c.repeats = 1
  c.data = defaults.data(variant)
  c.model = defaults.encoder(variant, cbam=True)
  c.barlow = defaults.barlow(variant)
  c.classifier = defaults.classifier(variant)
  c.card = defaults.card(variant)
  # Label efficiency (in the proposed row): the supervised CNN from scratch beside
  # Barlow Twins + linear and + fine-tune (f_phi, config.classifier).
  c.supervised_cnn = defaults.supervised_cnn(variant)
  c.label_efficiency = defaults.label_efficiency(variant, (
      "pixels_linear", "random_forest", "supervised_cnn", "ssl_linear", "ssl_finetune"))
  c.report = ml_collections.ConfigDict(dict(num_examples=8))
  return ablations.apply(c, ablation)
