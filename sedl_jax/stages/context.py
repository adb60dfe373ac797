"""What a stage receives: the config, the workdir, the mode, the device mesh,
lazily loaded data, and the results of earlier stages."""

from __future__ import annotations

import dataclasses
import functools

from sedl_jax import results as results_lib
from sedl_jax.data import sources
from sedl_jax.data.types import FaceData
from sedl_jax.train.mesh import DataParallel


@dataclasses.dataclass
class Context:
  config: object
  workdir: str
  mode: str = "train"  # train | eval
  # Resume a stage even when its training fields differ from its checkpoint's.
  allow_config_change: bool = False
  # Results of the stages that ran in this process, by stage name.
  results: dict = dataclasses.field(default_factory=dict)
  # A sub-run (label efficiency) trains its own stages in `workdir` but takes
  # the earlier stages' models (pretrained encoder, temporal model) from here.
  restore_from: str | None = None

  @functools.cached_property
  def data(self) -> FaceData:
    return sources.load_dataset(self.config.data, workdir=self.workdir)

  @functools.cached_property
  def dp(self) -> DataParallel:
    return DataParallel.create()

  @functools.cached_property
  def embeddings(self):
    """The contrastive encoder's embeddings of every image and frame (cached on disk)."""
    from sedl_jax.stages import embeddings  # it needs the pretraining stage's model
    return embeddings.load(self)

  def result(self, stage: str) -> results_lib.StageResult | None:
    """A stage's result: from this run, else as the runner wrote it (None if never run)."""
    if stage not in self.results:
      found = results_lib.read(self.workdir, stage)
      if found is None:
        return None
      self.results[stage] = found
    return self.results[stage]
