"""Explicit registry of pipeline stages: name -> run(ctx) -> StageResult."""

from __future__ import annotations

from typing import Callable

from sedl_jax.stages import (behaviour, card, card_report, classifier, label_efficiency, pretrain,
                             sedl_report, temporal)


def _report(ctx):
  """`report` is each pipeline's own final stage."""
  return {"sedl": sedl_report.run, "card_fer": card_report.run}[ctx.config.pipeline](ctx)


STAGES: dict[str, Callable] = {
    "contrastive": lambda ctx: pretrain.run(ctx, "contrastive"),
    "barlow": lambda ctx: pretrain.run(ctx, "barlow"),
    "temporal": temporal.run,
    "behaviour": behaviour.run,
    "supervised_cnn": lambda ctx: classifier.run(ctx, "supervised_cnn"),
    "ssl_finetune": lambda ctx: classifier.run(ctx, "ssl_finetune"),
    "label_efficiency": label_efficiency.run,
    "classifier": lambda ctx: classifier.run(ctx, "classifier"),
    "card": card.run,
    "report": _report,
}
