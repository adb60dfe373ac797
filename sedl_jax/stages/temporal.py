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

import jax
import jax.numpy as jnp
import numpy as np

from sedl_jax.models import temporal as temporal_model
from sedl_jax.results import StageResult
from sedl_jax.train import stage as stage_lib

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


def model_spec(ctx, seq_len: int, emb_dim: int) -> stage_lib.ModelSpec:
  cfg = ctx.config.temporal
  fields = ("layers", "heads", "width", "dropout", "context_length", "positional", "output")
  return stage_lib.ModelSpec(STAGE, temporal_model.build(cfg), (((1, seq_len, emb_dim), "float32"),),
                             {k: cfg[k] for k in fields})


def _spec_for(ctx, seq_len: int, emb_dim: int, contrastive_step: int | None):
  spec = model_spec(ctx, seq_len, emb_dim)
  spec.meta["contrastive_step"] = contrastive_step
  return spec


def fit(ctx, train_emb: np.ndarray, contrastive_step: int | None = None) -> stage_lib.Trained:
  """Trains (resumes, or in eval mode restores) the predictor on unit-norm
  sequences [S, T, D] of the embeddings of `contrastive_step`."""
  _, t, d = train_emb.shape
  spec = _spec_for(ctx, t, d, contrastive_step)
  train = stage_lib.TrainSpec(loss_fn=make_loss_fn(spec.model),
                              data={"emb": np.asarray(train_emb, np.float32)})
  return stage_lib.train_stage(ctx, spec, train)


def restore(ctx) -> stage_lib.Trained:
  """The trained predictor for use (no optimiser, no training data)."""
  emb = ctx.embeddings
  _, t, d = emb.frames["train"].shape
  return stage_lib.restore(ctx, _spec_for(ctx, t, d, emb.step))


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


def run(ctx) -> StageResult:
  cfg = ctx.config.temporal
  if ctx.data.sequences is None:
    reason = (f"data source {ctx.data.source!r} has no sequences (frames in order): "
              "nothing to predict; the temporal stage was skipped")
    return StageResult({"skipped": reason}, summary=f"[temporal] {reason}")
  emb = ctx.embeddings
  trained = fit(ctx, emb.unit_frames("train"), emb.step)
  params = trained.variables["params"]
  length = emb.frames["test"].shape[1]
  result = {"test_mse": forecast_report(trained.model, params, emb.unit_frames("test"),
                                        cfg.horizons),
            "num_test_sequences": int(emb.frames["test"].shape[0]), "step": trained.step}
  too_long = [int(h) for h in cfg.horizons if int(h) not in feasible_horizons(cfg.horizons, length)]
  if too_long:
    result["horizons_not_evaluated"] = (f"{too_long}: not shorter than the {length}-frame "
                                        "sequences (data.sequence_length)")
  first = next(iter(result["test_mse"]))
  h1 = result["test_mse"][first]
  return StageResult(result, summary=f"[temporal] test MSE (h={first}): model={h1['model']:.4f} "
                     f"persistence={h1['persistence']:.4f} "
                     f"sequence-mean={h1['sequence_mean']:.4f}")
