"""Explicit registry of pipeline stages: name -> run(ctx) -> dict of results.

A stage that is not built yet is registered as such: running it raises
`StageNotBuilt` with a plain message; nothing ever returns a made-up value.
"""

from __future__ import annotations

from typing import Callable


class StageNotBuilt(RuntimeError):
  """A config lists a stage this version does not implement."""


def _not_built(name: str) -> Callable:
  def run(ctx):
    raise StageNotBuilt(f"stage {name!r} is not built yet in this version of sedl_jax")
  run.not_built = True
  return run


def _registry() -> dict[str, Callable]:
  # Imported here so that importing the registry does not pull in every stage.
  from sedl_jax.stages import contrastive
  stages = {name: _not_built(name) for name in
            ("temporal", "behaviour", "report", "barlow", "classifier", "card")}
  stages["contrastive"] = contrastive.run
  return stages


STAGES = _registry()


def is_built(name: str) -> bool:
  return not getattr(STAGES[name], "not_built", False)
