"""Registry of data sources: `config.data.name` -> a loader returning FaceData."""

from __future__ import annotations

from typing import Callable

from sedl_jax.data import real, synthetic, unlabelled
from sedl_jax.data.types import FaceData

DATASETS: dict[str, Callable[..., FaceData]] = {
    "synthetic": lambda data_cfg, workdir=None: synthetic.load(data_cfg),
    **{name: real.load for name in real.SCANNERS},
}
# Sources that read the user's files need `config.data.path`.
NEEDS_PATH: frozenset[str] = frozenset(real.SCANNERS)


def load_dataset(data_cfg, workdir: str | None = None) -> FaceData:
  """The dataset `config.data` names, with `config.data.unlabelled` attached;
  real sources (and unlabelled ones) write `workdir/data_report.json`."""
  name = data_cfg.name
  if name not in DATASETS:
    raise ValueError(f"config.data.name={name!r}: unknown dataset (known: {sorted(DATASETS)})")
  data = DATASETS[name](data_cfg, workdir=workdir)
  if data_cfg.get("unlabelled"):
    data = unlabelled.attach(data, data_cfg, workdir)
  return data
