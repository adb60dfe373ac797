"""Finished stages: a restarted run does not evaluate again what it already has.

A stage that resumes at its last step still evaluates (probes, CARD sampling
over the test set, the report's baselines): minutes at `quick` size, hours at
`paper` size, after a kill that came late in a run. So when a stage's results
are written, the runner records a key of everything they depend on:

  * the whole config (any changed value gives another key),
  * the data fingerprint,
  * the unique save id of the latest checkpoint of this stage and of every
    stage before it in `config.stages` (a retrained model gives another key).

The same command in the same workdir (a restart after a kill, or a second run)
reads a stage's results back from `report/` when its key is unchanged, and runs
it when not. `--mode=eval` always recomputes. Records go to
`WORKDIR/finished_stages.json`; deleting it makes every stage evaluate again.
"""

from __future__ import annotations

import hashlib
import json
import os

from sedl_jax import atomic_io
from sedl_jax.train.checkpoint import StageCheckpoints

FILE = "finished_stages.json"


def key(ctx, stage: str) -> str:
  """Call on every process at the same point (it opens Orbax checkpoint managers,
  which synchronise processes)."""
  stages = tuple(ctx.config.stages)
  save_ids = {}
  for s in stages[:stages.index(stage) + 1]:
    if os.path.isdir(os.path.join(ctx.workdir, "checkpoints", s)):
      with StageCheckpoints(ctx.workdir, s) as ckpt:
        if ckpt.latest_step() is not None:
          save_ids[s] = ckpt.read_meta().get("save_id")
  blob = json.dumps({"config": ctx.config.to_json_best_effort(sort_keys=True),
                     "data": ctx.data.fingerprint, "checkpoints": save_ids}, sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()


def _records(workdir: str) -> dict:
  try:
    with open(os.path.join(workdir, FILE)) as f:
      return json.load(f)
  except (OSError, ValueError):  # none yet, or unreadable: every stage runs
    return {}


def matches(workdir: str, stage: str, stage_key: str) -> bool:
  return _records(workdir).get(stage) == stage_key


def record(workdir: str, stage: str, stage_key: str) -> None:
  """Call on process 0 after the stage's results are written."""
  records = _records(workdir)
  records[stage] = stage_key
  atomic_io.write_json(os.path.join(workdir, FILE), records)

