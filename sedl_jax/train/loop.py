"""The one training loop every stage uses: resume, log, checkpoint, stop on NaN.

`sedl_jax.train.stage.train_stage` is its only caller in the package."""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Iterator

import jax
import numpy as np
from tqdm import tqdm

from sedl_jax.train.checkpoint import StageCheckpoints
from sedl_jax.train.metrics import MetricWriter


class NonFiniteLoss(FloatingPointError):
  """The loss became NaN or inf; the run stops without saving that state."""


@dataclasses.dataclass
class LoopSpec:
  stage: str
  total_steps: int
  steps_per_epoch: int
  examples_per_step: int  # images/s counts these (both views for SSL)
  log_every: int
  checkpoint_every: int


def _mean_metrics(buffer: list[dict]) -> dict:
  host = jax.device_get(buffer)
  return {k: float(np.mean([m[k] for m in host])) for k in host[0]}


def _check_finite(spec: LoopSpec, step: int, scalars: dict, ckpt: StageCheckpoints, bar) -> None:
  # The parameters can turn non-finite while the loss still looks fine (or the
  # reverse), so all three are checked before anything is saved.
  bad = {k: scalars[k] for k in ("loss", "grad_norm", "param_norm")
         if k in scalars and not np.isfinite(scalars[k])}
  if bad:
    bar.close()
    what = ", ".join(f"{k} is {v}" for k, v in bad.items())
    raise NonFiniteLoss(
        f"stage {spec.stage!r}: {what} at step {step}; stopping. "
        f"The last good checkpoint (step {ckpt.latest_step()}) is kept in {ckpt.directory}. "
        "Lower the learning rate or check the data.")


def train(spec: LoopSpec, state, train_step: Callable, batches: Callable[[int], Iterator],
          ckpt: StageCheckpoints, meta: dict, writer: MetricWriter,
          on_epoch_end: Callable[[object, int], dict] | None = None,
          inference_variables: Callable[[object], dict] = lambda state: {"params": state.params}):
  """Runs train_step from the state's step to spec.total_steps.

  `batches(start_step)` returns the (sharded) batch iterator resuming at that
  step. Loss, gradient norm and parameter norm are checked at every log step,
  and every save is a log step, so a non-finite value raises NonFiniteLoss
  before it is saved and the last good checkpoint stays the latest.
  `inference_variables(state)` is what a checkpoint keeps for later use.
  """
  start = int(jax.device_get(state.step))
  it = batches(start)
  buffer: list[dict] = []
  t_last, n_last = time.perf_counter(), 0
  bar = tqdm(total=spec.total_steps, initial=start, desc=spec.stage, unit="step",
             disable=jax.process_index() != 0, dynamic_ncols=True)
  epoch_stats: list[dict] = []
  for step in range(start + 1, spec.total_steps + 1):
    state, metrics = train_step(state, next(it))
    buffer.append(metrics)
    n_last += 1
    is_ckpt = step % spec.checkpoint_every == 0 or step == spec.total_steps
    is_epoch = step % spec.steps_per_epoch == 0
    if step % spec.log_every == 0 or is_ckpt or is_epoch:
      scalars = _mean_metrics(buffer)
      buffer = []
      _check_finite(spec, step, scalars, ckpt, bar)
      now = time.perf_counter()
      scalars["images_per_s"] = n_last * spec.examples_per_step / max(now - t_last, 1e-9)
      t_last, n_last = now, 0
      writer.write(spec.stage, step, scalars)
      epoch_stats.append(scalars)
      bar.set_postfix(loss=f"{scalars['loss']:.4f}", img_s=f"{scalars['images_per_s']:.0f}")
    bar.update(1)
    if is_ckpt:
      ckpt.save(step, state, inference_variables(state), meta)
    if is_epoch:
      _end_epoch(spec, step, state, epoch_stats, on_epoch_end, writer)
      epoch_stats = []
  bar.close()
  return state


def _end_epoch(spec, step, state, epoch_stats, on_epoch_end, writer) -> None:
  epoch = step // spec.steps_per_epoch
  extra = on_epoch_end(state, epoch) if on_epoch_end else {}
  if extra:
    writer.write(spec.stage, step, extra)
  summary = {"loss": np.mean([s["loss"] for s in epoch_stats])} if epoch_stats else {}
  summary.update(extra or {})
  if jax.process_index() == 0:
    text = " ".join(f"{k}={v:.4g}" for k, v in summary.items())
    tqdm.write(f"[{spec.stage}] epoch {epoch} (step {step}/{spec.total_steps}) {text}")
