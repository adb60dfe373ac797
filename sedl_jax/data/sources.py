"""Registry of data sources: `config.data.name` -> a loader returning FaceData."""

from __future__ import annotations

from typing import Callable

from sedl_jax.data import synthetic
from sedl_jax.data.types import FaceData

# Sources that read the user's files need `config.data.path`.
DATASETS: dict[str, Callable[..., FaceData]] = {
    "synthetic": synthetic.load,
}
NEEDS_PATH: frozenset[str] = frozenset()


def load_dataset(data_cfg) -> FaceData:
  name = data_cfg.name
  if name not in DATASETS:
    raise ValueError(f"config.data.name={name!r}: unknown dataset (known: {sorted(DATASETS)})")
  return DATASETS[name](data_cfg)
