"""The `ablations` stage: runs every Table-3 row as its own pipeline in
`workdir/<row>/` (resumable like any run), so one command yields the table."""

from __future__ import annotations

import os

from sedl_jax.config import ablations


def run(ctx) -> dict:
  from sedl_jax import runner  # the runner imports the stage registry
  out = {}
  for name in ablations.ABLATIONS:
    print(f"[ablations] row {name!r}: {ablations.DESCRIPTIONS[name]}")
    sub = ablations.row_config(ctx.config, name)
    out[name] = runner.run(sub, os.path.join(ctx.workdir, name), mode=ctx.mode).get("card")
  return out
