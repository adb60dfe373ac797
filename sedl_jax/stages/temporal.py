"""SEDL stage 4: a causal transformer that predicts the next face embedding.

Inputs are the frozen contrastive encoder's frame embeddings, L2-normalised
(cached by `stages.embeddings`). Training minimises
  MSE = mean over sequences and t of ||E^(t+1) - E(t+1)||^2
with E^(t+1) made from E(1..t). Evaluation reports the test MSE at horizons
h (autoregressive roll-out for h > 1) beside two baselines that need no
training: persistence E^(t+h) = E(t) and the causal sequence mean
E^(t+h) = mean(E(1..t)) (not re-normalised: the best constant guess under MSE).
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from sedl_jax.data import pipeline
from sedl_jax.models import temporal as temporal_model
from sedl_jax.stages import embeddings as embeddings_lib
from sedl_jax.train import loop, optim
from sedl_jax.train import state as train_state
from sedl_jax.train.checkpoint import StageCheckpoints
from sedl_jax.train.mesh import DataParallel

STAGE = "temporal"


def sequence_mse(pred: np.ndarray, target: np.ndarray) -> float:
  """Squared L2 error summed over the embedding, averaged over sequences and time."""
  return float(np.mean(np.sum((np.asarray(pred) - np.asarray(target)) ** 2, axis=-1)))


def persistence_forecast(emb: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
  """(predictions, targets) for E^(t+h) = E(t), over all origins t."""
  return emb[:, :-horizon], emb[:, horizon:]


def mean_forecast(emb: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
  """(predictions, targets) for E^(t+h) = mean(E(1..t)), over all origins t."""
  csum = np.cumsum(emb, axis=1)
  mean = csum / np.arange(1, emb.shape[1] + 1)[None, :, None]
  return mean[:, :-horizon], emb[:, horizon:]


def make_loss_fn(model):
  def loss_fn(params, batch_stats, batch, rng):
    e = batch["emb"]
    pred, _ = model.apply({"params": params}, e[:, :-1], train=True, rngs={"dropout": rng})
    mse = jnp.mean(jnp.sum((pred - e[:, 1:]) ** 2, axis=-1))
    return mse, (batch_stats, {"mse": mse})
  return loss_fn


def make_rollout(model, horizon: int):
  """jitted fn(params, emb [B, T, D]) -> predictions of E(t+h) from E(1..t) for
  every origin t < T - h, [B, T - h, D]: h autoregressive steps, all origins at once."""

  @jax.jit
  def rollout(params, emb):
    b, t, d = emb.shape
    origins = t - horizon
    x = jnp.broadcast_to(emb[:, None], (b, origins, t, d))
    o = jnp.arange(origins)
    for k in range(1, horizon + 1):
      # Causality makes positions past o + k - 1 irrelevant to the prediction at o + k - 1.
      pred, _ = model.apply({"params": params}, x.reshape(b * origins, t, d), train=False)
      pred = pred.reshape(b, origins, t, d)
      nxt = pred[:, o, o + k - 1]  # [B, O, D]
      x = x.at[:, o, o + k].set(nxt)
    return x[:, o, o + horizon]

  return rollout


def make_context_fn(model):
  """jitted fn(params, emb [B, T, D]) -> causal context [B, T, width]."""
  return jax.jit(lambda params, emb: model.apply({"params": params}, emb, train=False)[1])


def _meta(ctx, emb_dim: int, emb_step: int) -> dict:
  return {"stage": STAGE, "embedding_dim": int(emb_dim), "contrastive_step": int(emb_step),
          "stage_model": {k: ctx.config.temporal[k] for k in
                          ("layers", "heads", "width", "dropout", "context_length", "positional",
                            "output")},
          "data_fingerprint": ctx.data.fingerprint}


def init_state(model, cfg, seq_len: int, emb_dim: int, tx):
  rng = jax.random.PRNGKey(cfg.seed)
  init_rng, state_rng = jax.random.split(rng)
  dummy = jnp.zeros((1, seq_len, emb_dim), jnp.float32)
  variables = jax.jit(lambda r: model.init(r, dummy, train=False))(init_rng)
  return train_state.create(variables, tx, state_rng)


def fit(cfg, train_emb: np.ndarray, workdir: str, meta: dict, mode: str = "train",
        shuffle_seed: int = 0):
  """Trains (or restores) the predictor on unit-norm sequences [S, T, D].

  Returns (model, params). Resumes from `workdir/checkpoints/temporal`.
  """
  model = temporal_model.build(cfg)
  s, t, d = train_emb.shape
  batch = min(int(cfg.batch_size), s)
  dp = DataParallel.create()
  batch -= batch % dp.num_devices
  if batch <= 0:
    raise ValueError(f"temporal: {s} training sequences cannot fill a batch on {dp.num_devices} devices")
  total, per_epoch = optim.resolve_steps(cfg, s, batch)
  tx, schedule = optim.make_optimizer(cfg.optimizer, total, per_epoch)
  state = init_state(model, cfg, t, d, tx)
  ckpt = StageCheckpoints(workdir, STAGE, keep=cfg.keep_checkpoints)
  state = ckpt.resume(state, meta, mode)
  state = dp.replicate(state)
  if mode == "train" and int(jax.device_get(state.step)) < total:
    step_fn = dp.jit_step(train_state.make_train_step(make_loss_fn(model), tx, schedule))
    source = pipeline.ArraySource({"emb": train_emb.astype(np.float32)})
    state = loop.fit(STAGE, state, step_fn, source, dp=dp, cfg=cfg, global_batch=batch,
                     total_steps=total, steps_per_epoch=per_epoch, examples_per_step=batch,
                     shuffle_seed=shuffle_seed, ckpt=ckpt, meta=meta, workdir=workdir)
  ckpt.close()
  return model, jax.device_get(state.params)


def feasible_horizons(horizons, length: int) -> list[int]:
  """Horizons a sequence of `length` frames has at least one target for."""
  return [int(h) for h in horizons if int(h) < length]


def forecast_report(model, params, emb: np.ndarray, horizons) -> dict:
  """Test MSE of the model and of both baselines at each feasible horizon."""
  out = {}
  for h in feasible_horizons(horizons, emb.shape[1]):
    pred = np.asarray(make_rollout(model, h)(params, jnp.asarray(emb)))
    target = emb[:, h:]
    out[str(h)] = {"model": sequence_mse(pred, target),
                   "persistence": sequence_mse(*persistence_forecast(emb, h)),
                   "sequence_mean": sequence_mse(*mean_forecast(emb, h))}
  return out


def restore(ctx):
  """(model, params) of the trained predictor for later stages (no training)."""
  emb = embeddings_lib.load(ctx)
  train = emb.unit_frames("train")
  return fit(ctx.config.temporal, train, ctx.workdir, _meta(ctx, train.shape[-1], emb.step),
             mode="eval")


def run(ctx) -> dict:
  cfg = ctx.config.temporal
  if ctx.data.sequences is None:
    reason = (f"data source {ctx.data.source!r} has no sequences (frames in order): "
              "nothing to predict; the temporal stage was skipped")
    print(f"[temporal] {reason}")
    return {"skipped": reason}
  emb = embeddings_lib.load(ctx)
  train = emb.unit_frames("train")
  model, params = fit(cfg, train, ctx.workdir, _meta(ctx, train.shape[-1], emb.step),
                      mode=ctx.mode, shuffle_seed=ctx.config.data.shuffle_seed)
  ctx.shared["temporal"] = (model, params)
  length = emb.frames["test"].shape[1]
  result = {"test_mse": forecast_report(model, params, emb.unit_frames("test"), cfg.horizons),
            "num_test_sequences": int(emb.frames["test"].shape[0])}
  too_long = [int(h) for h in cfg.horizons if int(h) not in feasible_horizons(cfg.horizons, length)]
  if too_long:
    result["horizons_not_evaluated"] = (f"{too_long}: not shorter than the {length}-frame "
                                        "sequences (data.sequence_length)")
  if jax.process_index() == 0:
    path = os.path.join(ctx.workdir, "report", "temporal.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
      json.dump(result, f, indent=2)
    first = next(iter(result["test_mse"]))
    h1 = result["test_mse"][first]
    print(f"[temporal] test MSE (h={first}): model={h1['model']:.4f} "
          f"persistence={h1['persistence']:.4f} sequence-mean={h1['sequence_mean']:.4f}")
  return result
