"""Self-supervised diffusion FER: Barlow Twins -> classifier f_phi -> CARD -> report.

Run (built-in synthetic faces, CPU-friendly):
  python launch.py --config=configs/card_fer.py --workdir=runs/card
Argument: a variant (`quick` default, `paper`, `tiny`), optionally with an
ablation of the paper's Table 3 after a comma:
  python launch.py --config=configs/card_fer.py:quick,ablation=r18 --workdir=runs/card_r18
Ablations: `proposed` (Barlow Twins SSL + CBAM + CARD, default), `r18_cbam`
(supervised f_phi on ResNet18+CBAM + CARD), `r18` (supervised ResNet18, no CBAM + CARD).
"""

import ml_collections

from sedl_jax.config import defaults

ABLATIONS = ("proposed", "r18_cbam", "r18")


def _parse(arg):
  variant, ablation = None, "proposed"
  for part in (arg or "").split(","):
    part = part.strip()
    if not part:
      continue
    if part.startswith("ablation="):
      ablation = part.split("=", 1)[1]
    else:
      variant = part
  if ablation not in ABLATIONS:
    raise ValueError(f"config argument ablation={ablation!r}: expected one of {ABLATIONS}")
  return defaults.check_variant(variant), ablation


def get_config(arg=None):
  variant, ablation = _parse(arg)
  c = ml_collections.ConfigDict()
  c.pipeline = "card_fer"
  c.variant = variant
  c.ablation = ablation
  ssl = ablation == "proposed"
  c.stages = ("barlow", "classifier", "card", "report") if ssl else ("classifier", "card", "report")
  c.seed = 0
  c.data = defaults.data(variant)
  c.model = defaults.encoder(variant, cbam=ablation != "r18")
  c.barlow = defaults.barlow(variant)
  c.classifier = defaults.classifier(variant)
  c.classifier.init = "barlow" if ssl else "scratch"
  c.card = defaults.card(variant)
  c.report = ml_collections.ConfigDict(dict(num_examples=8))
  return c
