"""Runs the stages a config lists, in order, in one workdir."""

from __future__ import annotations

import json
import logging
import os

import jax
from tqdm import tqdm

from sedl_jax.config.validate import validate
from sedl_jax.stages import registry
from sedl_jax.stages.context import Context

MODES = ("train", "eval")


def run(config, workdir: str, mode: str = "train") -> dict:
  """Validates, writes `workdir/config.json`, runs each stage; returns results.

  Raises `StageNotBuilt` after the built stages ran when some listed stage is
  not built yet, so the caller exits non-zero instead of reporting a partial
  pipeline as done.
  """
  if mode not in MODES:
    raise ValueError(f"--mode={mode!r}: expected one of {MODES}")
  validate(config, known_stages=registry.STAGES, num_devices=jax.device_count(),
           process_count=jax.process_count())
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True))
  stages = tuple(config.stages)
  missing = [s for s in stages if not registry.is_built(s, config.get("pipeline"))]
  if missing:
    logging.warning("not built yet: %s (they will be skipped and the run will fail)",
                    ", ".join(missing))
  ctx = Context(config=config, workdir=workdir, mode=mode)
  results = {}
  bar = tqdm(stages, desc="stages", unit="stage", disable=len(stages) < 2)
  for stage in bar:
    bar.set_postfix_str(stage)
    if stage in missing:
      continue
    results[stage] = registry.STAGES[stage](ctx)
  if missing:
    done = [s for s in stages if s not in missing]
    raise registry.StageNotBuilt(
        f"these stages are not built yet: {', '.join(missing)}; "
        f"ran: {', '.join(done) if done else 'nothing'}. No results were produced for them.")
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump(results, f, indent=2, default=str)
  return results
