"""The diffusion paper's Table 3 rows as config edits, and `all` to run every row
as a sub-run (each its own pipeline in `workdir/<row>/`) before one report."""

from __future__ import annotations

import copy

ABLATIONS = ("r18", "r18_cbam", "proposed")
DESCRIPTIONS = {
    "r18": "CARD + ResNet18 (supervised f_phi, no CBAM)",
    "r18_cbam": "CARD + ResNet18 + CBAM (supervised f_phi)",
    "proposed": "Proposed: Barlow Twins SSL + CBAM + CARD",
}
# methods.md section 10: the paper's Table 3 on FER2013 (accuracy %, PAvPU %).
PAPER_TABLE3 = {"r18": (61.3, 65.0), "r18_cbam": (64.8, 66.5), "proposed": (67.2, 66.9)}
PAPER_AFFECTNET = (68.1, 67.9)


def apply(config, ablation: str):
  """Edits `config` in place into one Table-3 row (or `all`: every row as a sub-run,
  then the report)."""
  if ablation not in ABLATIONS + ("all",):
    raise ValueError(f"ablation={ablation!r}: expected one of {ABLATIONS + ('all',)}")
  config.ablation = ablation
  if ablation == "all":
    config.stages = ("report",)
    return config
  ssl = ablation == "proposed"
  # Label efficiency is measured once, in the proposed row (the ablation rows
  # differ in f_phi's start, which the label-efficiency rows already cover).
  config.stages = (("barlow", "classifier", "card", "label_efficiency", "report") if ssl else
                   ("classifier", "card", "report"))
  config.model.cbam = ablation != "r18"
  config.classifier.init = "barlow" if ssl else "scratch"
  return config


def row_config(config, ablation: str):
  """A copy of an `all` config turned into one row (command-line overrides kept)."""
  return apply(copy.deepcopy(config), ablation)


def rows(config) -> tuple[str, ...]:
  """The Table-3 rows a config's report covers."""
  if config.get("ablation") == "all":
    return ABLATIONS
  return (config.ablation,) if config.get("ablation") else ()


def sub_runs(config):
  """(name, config) of each sub-run a config asks for before its own stages."""
  if config.get("ablation") != "all":
    return []
  return [(name, row_config(config, name)) for name in ABLATIONS]
