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


# `report` is each pipeline's own final stage.
REPORTS_BUILT = ("sedl", "card_fer")


def _report(ctx):
  from sedl_jax.stages import card_report, sedl_report
  reports = {"sedl": sedl_report.run, "card_fer": card_report.run}
  if ctx.config.pipeline not in reports:
    return _not_built(f"report ({ctx.config.pipeline})")(ctx)
  return reports[ctx.config.pipeline](ctx)


def _registry() -> dict[str, Callable]:
  # Imported here so that importing the registry does not pull in every stage.
  from sedl_jax.stages import ablations, behaviour, card, classifier, pretrain, temporal
  stages = {}
  stages.update({
      "ablations": ablations.run,
      "card": card.run,
      "contrastive": lambda ctx: pretrain.run(ctx, "contrastive"),
      "barlow": lambda ctx: pretrain.run(ctx, "barlow"),
      "temporal": temporal.run,
      "behaviour": behaviour.run,
      "supervised_cnn": lambda ctx: classifier.run(ctx, "supervised_cnn"),
      "classifier": lambda ctx: classifier.run(ctx, "classifier"),
      "report": _report,
  })
  return stages


STAGES = _registry()


def is_built(name: str, pipeline: str | None = None) -> bool:
  if name == "report" and pipeline is not None:
    return pipeline in REPORTS_BUILT
  return not getattr(STAGES[name], "not_built", False)
