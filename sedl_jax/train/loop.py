"""The one training loop every stage uses: resume, log, checkpoint, stop on NaN."""

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


def train(spec: LoopSpec, state, train_step: Callable, batches: Callable[[int], Iterator],
          ckpt: StageCheckpoints, meta: dict, writer: MetricWriter,
          on_epoch_end: Callable[[object, int], dict] | None = None):
  """Runs train_step from the state's step to spec.total_steps.

  `batches(start_step)` returns the (sharded) batch iterator resuming at that
  step. A non-finite loss raises NonFiniteLoss before anything is saved, so the
  last good checkpoint stays the latest.
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
      if not np.isfinite(scalars["loss"]):
        bar.close()
        raise NonFiniteLoss(
            f"stage {spec.stage!r}: loss is {scalars['loss']} at step {step}; stopping. "
            f"The last good checkpoint (step {ckpt.latest_step()}) is kept in {ckpt.directory}. "
            "Lower the learning rate or check the data.")
      now = time.perf_counter()
      scalars["images_per_s"] = n_last * spec.examples_per_step / max(now - t_last, 1e-9)
      t_last, n_last = now, 0
      writer.write(spec.stage, step, scalars)
      epoch_stats.append(scalars)
      bar.set_postfix(loss=f"{scalars['loss']:.4f}", img_s=f"{scalars['images_per_s']:.0f}")
    bar.update(1)
    if is_ckpt:
      ckpt.save(step, state, meta)
    if is_epoch:
      epoch = step // spec.steps_per_epoch
      extra = on_epoch_end(state, epoch) if on_epoch_end else {}
      if extra:
        writer.write(spec.stage, step, extra)
      summary = {"loss": np.mean([s["loss"] for s in epoch_stats])} if epoch_stats else {}
      summary.update(extra or {})
      epoch_stats = []
      if jax.process_index() == 0:
        text = " ".join(f"{k}={v:.4g}" for k, v in summary.items())
        tqdm.write(f"[{spec.stage}] epoch {epoch} (step {step}/{spec.total_steps}) {text}")
  bar.close()
  return state


def fit(stage: str, state, step_fn: Callable, source, *, dp, cfg, global_batch: int,
        total_steps: int, steps_per_epoch: int, examples_per_step: int, shuffle_seed: int,
        ckpt: StageCheckpoints, meta: dict, workdir: str, num_threads: int = 1, prefetch: int = 2,
        on_epoch_end: Callable[[object, int], dict] | None = None):
  """`train` over a grain source: the resumable sharded batch stream, the log
  writer and the stage's log / checkpoint cadence (`cfg.log_every_steps`,
  `cfg.checkpoint_every_steps`) wired the same way for every stage."""
  from sedl_jax.data import pipeline  # the loop itself does not depend on the data code

  def batches(start):
    stream = pipeline.batch_stream(source, global_batch=global_batch, seed=shuffle_seed,
                                   start_step=start, process_index=jax.process_index(),
                                   process_count=jax.process_count())
    return map(dp.shard_local, pipeline.iterate(stream, num_threads=num_threads,
                                                prefetch=prefetch))

  spec = LoopSpec(stage=stage, total_steps=total_steps, steps_per_epoch=steps_per_epoch,
                  examples_per_step=examples_per_step, log_every=cfg.log_every_steps,
                  checkpoint_every=cfg.checkpoint_every_steps)
  writer = MetricWriter(workdir)
  try:
    return train(spec, state, step_fn, batches, ckpt, meta, writer, on_epoch_end)
  finally:
    writer.close()
