"""What a stage receives: the config, the workdir, the mode and lazily loaded data."""

from __future__ import annotations

import dataclasses
import functools
import os

from sedl_jax.data import sources
from sedl_jax.data.types import FaceData


@dataclasses.dataclass
class Context:
  config: object
  workdir: str
  mode: str = "train"  # train | eval
  # Values later stages share within one run (e.g. cached embeddings).
  shared: dict = dataclasses.field(default_factory=dict)

  @functools.cached_property
  def data(self) -> FaceData:
    return sources.load_dataset(self.config.data, workdir=self.workdir)

  def path(self, *parts: str) -> str:
    p = os.path.join(self.workdir, *parts)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    return p
