"""Runs the stages a config lists, in order, in one workdir.

A config may first name sub-runs (the diffusion paper's Table-3 rows: each its
own pipeline in `workdir/<row>/`); they run before the config's own stages,
which can then read their results (`results.read(workdir/<row>, stage)`).
"""

from __future__ import annotations

import json
import os
import time

import jax
from tqdm import tqdm

from sedl_jax import atomic_io, cpu_kernels, finished, huge_pages, repeats, results
from sedl_jax.config import ablations
from sedl_jax.config.validate import validate
from sedl_jax.models import conv_input_copy
from sedl_jax.stages import registry
from sedl_jax.stages.context import Context
from sedl_jax.train.mesh import barrier

MODES = ("train", "eval")


def run(config, workdir: str, mode: str = "train", allow_config_change: bool = False) -> dict:
  """Validates the config and its sub-runs' configs, then runs every sub-run and
  stage; returns {stage: metrics} (a sub-run's under its name). With
  `config.repeats` > 1, all of it once per training seed (`sedl_jax.repeats`)."""
  if mode not in MODES:
    raise ValueError(f"--mode={mode!r}: expected one of {MODES}")
  if int(config.get("repeats", 1)) > 1:
    return repeats.run(config, workdir, lambda c, w: run(c, w, mode, allow_config_change))
  if jax.process_index() == 0:
    kernels = (f"; {cpu_kernels.in_effect()}; {conv_input_copy.in_effect()}; "
               f"{huge_pages.in_effect()}"
               if jax.default_backend() == "cpu" else "")
    print(f"[devices] {jax.device_count()} {jax.default_backend()} device(s) in "
          f"{jax.process_count()} process(es){kernels}")
  subs = ablations.sub_runs(config)
  for c in [config] + [sub for _, sub in subs]:  # every bad value, before anything compiles
    validate(c, known_stages=registry.STAGES, num_devices=jax.device_count(),
             process_count=jax.process_count())
  out = {}
  for name, sub in subs:
    print(f"[runner] sub-run {name!r}: {ablations.DESCRIPTIONS[name]}")
    out[name] = run_stages(sub, os.path.join(workdir, name), mode, allow_config_change)
  out.update(run_stages(config, workdir, mode, allow_config_change))
  return out


def run_stages(config, workdir: str, mode: str, allow_config_change: bool = False) -> dict:
  """Writes `workdir/config.json`, runs the config's stages in order; returns
  {stage: metrics} (also written to `workdir/results.json`; the wall time of
  loading the data and of each stage goes to `workdir/timings.json`)."""
  lead = jax.process_index() == 0
  if lead:
    atomic_io.write_text(os.path.join(workdir, "config.json"),
                         config.to_json_best_effort(indent=2, sort_keys=True))
  out = {}
  ctx = Context(config=config, workdir=workdir, mode=mode, allow_config_change=allow_config_change)
  stages = tuple(config.stages)
  earlier_timings = _earlier_timings(workdir)
  timings = {"data": _timed_data(ctx)}
  bar = tqdm(stages, desc="stages", unit="stage", disable=len(stages) < 2 or not lead)
  for stage in bar:
    bar.set_postfix_str(stage)
    start = time.perf_counter()
    result = _finished_earlier(ctx, stage) if mode == "train" else None
    # No process creates the stage's checkpoint folder while another still looks for it.
    barrier(f"sedl_jax stage {stage} checked")
    if result is not None:
      ctx.results[stage] = result
      out[stage] = result.metrics
      timings[stage] = earlier_timings.get(stage, 0.0)  # what computing it took
      if lead:
        tqdm.write(f"[runner] {stage}: finished earlier in this workdir with the same config, data "
                   f"and checkpoints; its results are read back (see {finished.FILE} in the README)")
      continue
    result = registry.STAGES[stage](ctx)
    timings[stage] = round(time.perf_counter() - start, 2)
    ctx.results[stage] = result
    out[stage] = result.metrics
    # Every process computes the key: opening checkpoints is collective across processes.
    done = finished.key(ctx, stage) if mode == "train" else None
    if lead:
      results.write(workdir, stage, result)
      if done:
        finished.record(workdir, stage, done)
      if result.summary:
        tqdm.write(result.summary)
    barrier(f"sedl_jax stage {stage} written")  # later stages may read it back
  if lead:
    atomic_io.write_json(os.path.join(workdir, "results.json"), out)
    atomic_io.write_json(os.path.join(workdir, "timings.json"), timings)
    print("[runner] wall time (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
  return out


def _finished_earlier(ctx, stage: str):
  """The stage's results as written when it finished with this config, data and
  these checkpoints (a restarted run), else None (`sedl_jax.finished`)."""
  if not finished.matches(ctx.workdir, stage, finished.key(ctx, stage)):
    return None
  return results.read(ctx.workdir, stage)


def _earlier_timings(workdir: str) -> dict:
  try:
    with open(os.path.join(workdir, "timings.json")) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def _timed_data(ctx) -> float:
  start = time.perf_counter()
  ctx.data  # loads (or generates) the dataset once, for every stage
  return round(time.perf_counter() - start, 2)
