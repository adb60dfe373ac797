"""The one stage machinery: a trained stage declares what it trains, and
`train_stage` does the rest the same way for every stage.

A stage states
  * its model and the shapes of the model's inputs (`ModelSpec`): enough to build
    and restore it for use, with no optimiser and no training data;
  * its loss, its training arrays and its options (`TrainSpec`).
`train_stage` then clamps the batch to the data and the devices, resolves the
stage length, builds the optimiser, initialises (or takes a pretrained start),
resumes from the latest checkpoint, shards, runs the shared loop, saves
checkpoints with complete metadata, and returns the inference variables.
`--mode=eval` and later stages go through `restore`, which builds no training
state at all.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sedl_jax.train import loop, optim
from sedl_jax.train import state as train_state
from sedl_jax.train.checkpoint import StageCheckpoints
from sedl_jax.train import metrics as metrics_lib
from sedl_jax.train.metrics import MetricWriter
from sedl_jax.train.mesh import local_copy


@dataclasses.dataclass
class ModelSpec:
  """What a stage's model is: enough to build it and restore it for use."""

  name: str  # the stage: config section, checkpoint directory, metrics prefix
  model: nn.Module
  # One example input per positional argument of model.__call__ (leading batch
  # dimension 1); saved in the metadata so a restore needs no data.
  input_shapes: tuple[tuple[tuple[int, ...], str], ...]
  stage_model: dict  # the stage's own model fields, saved and checked on restore
  meta: dict = dataclasses.field(default_factory=dict)  # more metadata for this stage

  def example_inputs(self, abstract: bool = False):
    make = jax.ShapeDtypeStruct if abstract else jnp.zeros
    return tuple(make(tuple(shape), jnp.dtype(dtype)) for shape, dtype in self.input_shapes)


@dataclasses.dataclass
class TrainSpec:
  """How a stage trains its model."""

  loss_fn: train_state.LossFn
  data: dict[str, np.ndarray]  # equal-length training arrays, one record per example
  views_per_example: int = 1  # images/s counts both views of a self-supervised step
  ema_decay: float | None = None  # keep an EMA of the parameters (used for inference)
  # A fresh start's variables -> the variables to train from (a pretrained encoder).
  init_variables: Callable[[dict], dict] | None = None
  on_epoch_end: Callable[[Any, int], dict] | None = None  # (state, epoch) -> scalars
  lr_scale: float = 1.0
  init_meta: dict | None = None  # where `init_variables` came from, saved in the metadata
  # > 0: train on at most this many devices of every process (`DataParallel.per_process`),
  # for steps so small that splitting them costs more than it saves; 0: every device.
  devices_per_process: int = 0


@dataclasses.dataclass
class Trained:
  """A stage's model ready for use: inference variables on every device."""

  model: nn.Module
  variables: dict  # {"params": ..., "batch_stats": ...}; params are the EMA when kept
  step: int
  meta: dict


def fit_batch(requested: int, num_examples: int, num_devices: int, stage: str) -> int:
  """The global batch: at most the data, a multiple of the device count."""
  batch = min(int(requested), num_examples)
  batch -= batch % num_devices
  if batch <= 0:
    raise ValueError(f"stage {stage!r}: {num_examples} training examples cannot fill a batch "
                     f"on {num_devices} devices")
  return batch


def inference_variables(state) -> dict:
  params = state.ema_params if state.ema_params is not None else state.params
  return {"params": params, "batch_stats": state.batch_stats}


# Stage fields that do not change the training trajectory (evaluation, logging, I/O).
NOT_TRAINING = {"log_every_steps", "checkpoint_every_steps", "keep_checkpoints", "knn_k",
                "knn_temperature", "pixel_baseline", "horizons", "num_samples", "sample_temperature",
                "tune_images", "pavpu_alpha", "pavpu_threshold", "eval_batch_size",
                # where the steps run, like the device count (summation order only)
                "devices_per_process"}


def training_fields(config, stage: str) -> dict:
  """What decides a stage's training trajectory: its section's training fields
  and the data order's seed, as JSON values. Saved with every checkpoint; a
  resume compares them (`StageCheckpoints.check_training`)."""
  section = json.loads(config[stage].to_json_best_effort())
  return {stage: {k: v for k, v in section.items() if k not in NOT_TRAINING},
          "data": {"shuffle_seed": config.data.shuffle_seed}}


def expected_meta(ctx, spec: ModelSpec) -> dict:
  """Complete metadata: data, classes, image format, model config, input shapes."""
  data = ctx.data
  h, _, c = data.image_shape
  meta = {
      "stage": spec.name,
      "class_names": list(data.class_names),
      "num_classes": len(data.class_names),
      "image_size": int(h),
      "channels": int(c),
      "model": ctx.config.model.to_dict(),
      "stage_model": spec.stage_model,
      "input_shapes": [[list(s), d] for s, d in spec.input_shapes],
      "data_source": data.source,
      "data_fingerprint": data.fingerprint,
      "training": training_fields(ctx.config, spec.name),
  }
  if data.label_map:
    meta["label_map"] = data.label_map  # raw names -> these class names, for later prediction
  meta.update(spec.meta)
  return meta


# Initialising compiles the random draws of every parameter, thousands of HLO ops
# run once (no convolutions: the forward pass's outputs are unused). On the CPU,
# LLVM's optimisation level 1 compiles that 1.3-2.7x faster than XLA's default
# (quick ResNet18 5.9 -> 2.2 s, ResNet18+CBAM 9.5 -> 4.7 s on a 2-core EPYC), with
# bitwise the same parameters for every model of both pipelines (checked there;
# tests/test_train_machinery.py checks a tiny encoder). Not used on GPUs: unmeasured.
INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}


def init_variables_of(spec: ModelSpec, rng) -> dict:
  """The model's variables initialised from `rng`."""
  init = jax.jit(lambda r: spec.model.init(r, *spec.example_inputs(), train=False))
  if jax.default_backend() != "cpu":
    return init(rng)
  return init.lower(rng).compile(compiler_options=INIT_COMPILER_OPTIONS)(rng)


def initial_state(spec: ModelSpec, tx, seed: int, init_variables=None, ema: bool = False):
  """A fresh TrainState: the model initialised from `seed` (then passed through
  `init_variables`, e.g. a pretrained encoder), the optimiser state, the step rng."""
  init_rng, state_rng = jax.random.split(jax.random.PRNGKey(seed))
  variables = init_variables_of(spec, init_rng)
  if init_variables is not None:
    variables = init_variables(variables)
  return train_state.create(variables, tx, state_rng, ema=ema)


def restore(ctx, spec: ModelSpec, step: int | None = None, expected: dict | None = None,
            workdir: str | None = None) -> Trained:
  """The stage's latest (or given) checkpoint as a model for use: only the
  inference variables are read, straight into replicated device buffers; no
  optimiser or train state is built. `expected` is the metadata the checkpoint
  must match (default: `expected_meta`, from the config and the data); a caller
  without the training data passes what it knows (e.g. the model config).
  Read from `workdir`, else the context's workdir when it holds the stage, else
  its `restore_from` (a sub-run takes its parent run's earlier stages)."""
  dp = ctx.dp
  abstract = jax.eval_shape(lambda *x: spec.model.init(jax.random.PRNGKey(0), *x, train=False),
                            *spec.example_inputs(abstract=True))
  abstract = {k: abstract[k] for k in ("params", "batch_stats") if k in abstract}
  abstract.setdefault("batch_stats", {})
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=dp.replicated),
                          abstract)
  keep = int(ctx.config[spec.name].get("keep_checkpoints", 2))
  if workdir is None:
    # A sub-run's own checkpoint of the stage first, else its parent run's.
    own = os.path.isdir(os.path.join(ctx.workdir, "checkpoints", spec.name))
    workdir = ctx.workdir if own else (getattr(ctx, "restore_from", None) or ctx.workdir)
  with StageCheckpoints(workdir, spec.name, keep=keep) as ckpt:
    variables, meta = ckpt.restore_model(
        abstract, expected_meta(ctx, spec) if expected is None else expected, step)
  return Trained(spec.model, variables, int(meta["step"]), meta)


def train_stage(ctx, spec: ModelSpec, train: TrainSpec) -> Trained:
  """Trains (or resumes) a stage to its configured length; in eval mode, restores it."""
  if ctx.mode == "eval":
    return restore(ctx, spec, workdir=ctx.workdir)
  config, cfg = ctx.config, ctx.config[spec.name]
  dp = ctx.dp.per_process(train.devices_per_process)
  n = len(next(iter(train.data.values())))
  batch = fit_batch(cfg.batch_size, n, dp.num_devices, spec.name)
  total, per_epoch = optim.resolve_steps(cfg, n, batch)
  if jax.process_index() == 0:
    print(f"[{spec.name}] length: {optim.describe_length(cfg, n, batch)}", flush=True)
    if dp is not ctx.dp:
      print(f"[{spec.name}] training on {dp.num_devices} of {ctx.dp.num_devices} devices "
            f"({train.devices_per_process} per process); the model is then used on all",
            flush=True)
  tx, schedule = optim.make_optimizer(cfg.optimizer, total, per_epoch, train.lr_scale)
  meta = expected_meta(ctx, spec)
  if train.init_meta:
    meta["init_from"] = train.init_meta
  with StageCheckpoints(ctx.workdir, spec.name, keep=cfg.keep_checkpoints) as ckpt:
    fresh = ckpt.latest_step() is None
    state = initial_state(spec, tx, cfg.seed, train.init_variables if fresh else None,
                          ema=train.ema_decay is not None)
    # Replicated first, so the restore target carries the global sharding: restored
    # arrays then land on every device of every process (no cross-host copy).
    state = dp.replicate(state)
    if not fresh:
      if not ctx.allow_config_change:
        ckpt.check_training(meta["training"])
      state = ckpt.restore_state(state, meta)
      metrics_lib.truncate(ctx.workdir, spec.name, int(jax.device_get(state.step)))
    if int(jax.device_get(state.step)) < total:
      state = _run_loop(ctx, dp, spec, train, state, (tx, schedule), batch, total, per_epoch,
                        ckpt, meta)
    elif fresh and train.init_variables is not None:
      # 0 steps from a pretrained start: the start itself is the stage's model.
      ckpt.save(0, state, inference_variables(state), meta)
    elif fresh:
      raise ValueError(f"stage {spec.name!r}: 0 training steps")
  step = int(jax.device_get(state.step))
  variables = inference_variables(state)
  if dp is not ctx.dp:  # later use (evaluation, sampling) runs on every device
    variables = ctx.dp.replicate(local_copy(variables))
  return Trained(spec.model, variables, step, dict(meta, step=step))


def _run_loop(ctx, dp, spec, train, state, optimiser, batch, total, per_epoch, ckpt, meta):
  from sedl_jax.data import pipeline  # the machinery itself does not depend on the data code
  tx, schedule = optimiser
  data_cfg = ctx.config.data
  step_fn = dp.jit_step(train_state.make_train_step(train.loss_fn, tx, schedule,
                                                    ema_decay=train.ema_decay))
  source = pipeline.ArraySource(train.data)

  def batches(start):
    stream = pipeline.batch_stream(source, global_batch=batch, seed=data_cfg.shuffle_seed,
                                   start_step=start, process_index=jax.process_index(),
                                   process_count=jax.process_count())
    return map(dp.shard_local, pipeline.iterate(stream, num_threads=data_cfg.num_threads,
                                                prefetch=data_cfg.prefetch))

  cfg = ctx.config[spec.name]
  lspec = loop.LoopSpec(stage=spec.name, total_steps=total, steps_per_epoch=per_epoch,
                        examples_per_step=train.views_per_example * batch,
                        log_every=cfg.log_every_steps, checkpoint_every=cfg.checkpoint_every_steps)
  writer = MetricWriter(ctx.workdir)
  try:
    return loop.train(lspec, state, step_fn, batches, ckpt, meta, writer, train.on_epoch_end,
                      inference_variables)
  finally:
    writer.close()
