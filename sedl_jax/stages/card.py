"""Diffusion FER: CARD on top of the frozen classifier f_phi and its encoder.

Training: the encoder features h(x) and y_hat = softmax(f_phi(x)) of every
labelled train image are computed once (no augmentation; both networks are
frozen), then the noise network learns eps from (h, y_t, y_hat, t) with
antithetic timesteps, Adam with clipping, warm-up + cosine and an EMA of the
parameters that is used at test.

Evaluation: the x-branch runs once per image; the reverse chain runs under
lax.scan over the T steps and vmap over the n samples, jitted once for a fixed
image-batch shape. Majority vote, accuracy, PAvPU (paired t-test and
threshold variants), ECE and NLL of the mean sampled probabilities.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from sedl_jax.diffusion import card as diffusion
from sedl_jax.evaluate import calibration, classification, features, intervals, uncertainty
from sedl_jax.models import registry
from sedl_jax.models.card_net import NoiseNet
from sedl_jax.results import StageResult
from sedl_jax.stages import classifier
from sedl_jax.train import stage as stage_lib
from sedl_jax.train.mesh import to_host

STAGE = "card"
T_S_GRID = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


def make_loss_fn(net: NoiseNet, sched: diffusion.Schedule):
  def loss_fn(params, batch_stats, batch, rng):
    k_t, k_eps = jax.random.split(rng)
    y0, y_hat, h = batch["y0"], batch["y_hat"], batch["h"]
    t = diffusion.antithetic_timesteps(k_t, y0.shape[0], sched.timesteps)
    eps = jax.random.normal(k_eps, y0.shape)
    y_t = diffusion.q_sample(sched, y0, y_hat, t, eps)
    pred, upd = net.apply({"params": params, "batch_stats": batch_stats}, h, y_t, y_hat, t,
                          train=True, mutable=["batch_stats"])
    mse = jnp.mean(jnp.sum((eps - pred) ** 2, axis=-1))
    return mse, (upd["batch_stats"], {"noise_mse": mse})
  return loss_fn


def make_sampler(net: NoiseNet, sched: diffusion.Schedule, num_samples: int):
  """jitted fn(variables, h [B, D], y_hat [B, C], key) -> y0 samples [n, B, C]."""

  @jax.jit
  def sampler(variables, h, y_hat, key):
    x_feat = net.apply(variables, h, method=NoiseNet.embed_x)  # once per image

    def eps_fn(y_t, t):
      tt = jnp.full((y_t.shape[0],), t, jnp.int32)
      return net.apply(variables, x_feat, y_t, y_hat, tt, method=NoiseNet.eps_from_x)

    one = lambda k: diffusion.sample(eps_fn, sched, y_hat, k)
    return jax.vmap(one)(jax.random.split(key, num_samples))

  return sampler


def draw_samples(sampler, variables, h, y_hat, key, batch_size: int, desc: str,
                 dp=None) -> np.ndarray:
  """y0 samples [n, N, C] for every image, in fixed-size (padded) image batches;
  with `dp`, each batch is split across its devices (the chain of one image never
  leaves its device, so this scales with the device count)."""
  n = len(h)
  if dp is not None:
    batch_size = features.eval_batch_size(batch_size, dp)
  outs = []
  for i, start in enumerate(tqdm(range(0, n, batch_size), desc=desc, unit="batch",
                                 disable=jax.process_index() != 0)):
    idx = np.minimum(np.arange(start, start + batch_size), n - 1)
    batch = {"h": h[idx], "y_hat": y_hat[idx]}
    batch = dp.shard_global(batch) if dp is not None else jax.tree.map(jnp.asarray, batch)
    out = sampler(variables, batch["h"], batch["y_hat"], jax.random.fold_in(key, i))
    outs.append(to_host(out)[:, : min(batch_size, n - start)])
  return np.concatenate(outs, axis=1)


def tune_temperature(y0: np.ndarray, labels: np.ndarray) -> float:
  """T_s minimising the NLL of the mean sampled probabilities (on training images)."""
  best, best_nll = T_S_GRID[0], np.inf
  for ts in T_S_GRID:
    p = np.asarray(diffusion.sample_probabilities(jnp.asarray(y0), ts)).mean(0)
    v = calibration.nll(p, labels)
    if v < best_nll:
      best, best_nll = ts, v
  return best


def _features(ctx, cfg):
  """h and y_hat of every split's static images from the frozen classifier f_phi."""
  predict = classifier.predictor(ctx, classifier.restore(ctx, cfg.classifier_stage),
                                 cfg.classifier_stage)
  out = {}
  for s in ("train", "test"):
    h, logits = predict(ctx.data.images[s].images)
    out[s] = (h.astype(np.float32), np.asarray(jax.nn.softmax(logits, -1), np.float32))
  return out


def model_spec(ctx, feature_dim: int) -> stage_lib.ModelSpec:
  cfg, nc = ctx.config.card, len(ctx.data.class_names)
  net = NoiseNet(nc, int(cfg.hidden), int(cfg.timesteps), registry.compute_dtype(ctx.config.model))
  return stage_lib.ModelSpec(
      STAGE, net, (((1, feature_dim), "float32"), ((1, nc), "float32"), ((1, nc), "float32"),
                   ((1,), "int32")),
      {k: cfg[k] for k in ("timesteps", "hidden", "beta_start", "beta_end", "classifier_stage")},
      meta={"inference_params": "ema"})


def schedule(cfg) -> diffusion.Schedule:
  return diffusion.Schedule.linear(int(cfg.timesteps), cfg.beta_start, cfg.beta_end)


def run(ctx) -> StageResult:
  cfg, data = ctx.config.card, ctx.data
  nc = len(data.class_names)
  feats = _features(ctx, cfg)
  keep = data.images["train"].labels >= 0
  h_tr, yhat_tr = feats["train"][0][keep], feats["train"][1][keep]
  y_tr = data.images["train"].labels[keep]
  spec = model_spec(ctx, h_tr.shape[1])
  trained = stage_lib.train_stage(ctx, spec, stage_lib.TrainSpec(
      loss_fn=make_loss_fn(spec.model, schedule(cfg)),
      data={"h": h_tr, "y_hat": yhat_tr, "y0": np.eye(nc, dtype=np.float32)[y_tr]},
      ema_decay=float(cfg.ema_decay), devices_per_process=int(cfg.devices_per_process)))
  return evaluate(ctx, trained, feats)


def _sample_temperature(ctx, sampler, variables, feats, key) -> float:
  """T_s from the config, or tuned on training images when it is <= 0."""
  cfg, labels = ctx.config.card, ctx.data.images["train"].labels
  ts = float(cfg.sample_temperature)
  if ts > 0:
    return ts
  rng = np.random.default_rng(cfg.seed)
  idx = rng.permutation(np.flatnonzero(labels >= 0))[: int(cfg.tune_images)]
  y0 = draw_samples(sampler, variables, feats["train"][0][idx], feats["train"][1][idx],
                    jax.random.fold_in(key, 1), int(cfg.eval_batch_size), "card: tuning T_s",
                    ctx.dp)
  return tune_temperature(y0, labels[idx])


def predict_samples(ctx, trained, h, y_hat, key, ts: float, sampler=None) -> np.ndarray:
  """Sampled class probabilities [n, N, C] of images given f_phi's h and y_hat:
  the one CARD inference path evaluation and prediction share."""
  cfg = ctx.config.card
  sampler = sampler or make_sampler(trained.model, schedule(cfg), int(cfg.num_samples))
  y0 = draw_samples(sampler, trained.variables, h, y_hat, key, int(cfg.eval_batch_size),
                    f"card: sampling n={cfg.num_samples}, T={cfg.timesteps}", ctx.dp)
  return np.asarray(diffusion.sample_probabilities(jnp.asarray(y0), ts))


def evaluate(ctx, trained, feats) -> StageResult:
  cfg, data = ctx.config.card, ctx.data
  nc = len(data.class_names)
  key = jax.random.PRNGKey(cfg.seed + 1)
  sampler = make_sampler(trained.model, schedule(cfg), int(cfg.num_samples))
  ts = _sample_temperature(ctx, sampler, trained.variables, feats, key)
  test_labels = data.images["test"].labels
  labelled = test_labels >= 0  # unlabelled test images have nothing to be scored against
  h_te, yhat_te = (a[labelled] for a in feats["test"])
  test_labels = test_labels[labelled]
  probs = predict_samples(ctx, trained, h_te, yhat_te, jax.random.fold_in(key, 2), ts, sampler)
  summary = uncertainty.summarise_samples(probs, alpha=float(cfg.pavpu_alpha))
  pred, mean_p = summary["vote"], probs.mean(0)
  metrics = classification.classification_metrics(test_labels, pred, nc)
  groups = data.eval_groups("test", static=True)[labelled]
  intervals.with_interval(metrics, test_labels, groups)
  f_phi_correct = yhat_te.argmax(-1) == test_labels
  metrics.update({
      "pavpu_ttest": uncertainty.pavpu(pred == test_labels, summary["certain_ttest"]),
      "pavpu_threshold": uncertainty.pavpu(
          pred == test_labels, uncertainty.threshold_certain(mean_p, float(cfg.pavpu_threshold))),
      "certain_fraction_ttest": float(summary["certain_ttest"].mean()),
      "zero_variance_fraction": float(summary["zero_variance"].mean()),
      "ece": calibration.expected_calibration_error(mean_p, test_labels, bins=10),
      "nll": calibration.nll(mean_p, test_labels),
      "sample_temperature": ts, "num_samples": int(cfg.num_samples),
      "timesteps": int(cfg.timesteps),
      "classifier_accuracy": float(f_phi_correct.mean()),
      "classifier_accuracy_ci95": intervals.accuracy_interval(f_phi_correct, groups),
      # PAvPU is a mean over items too: (accurate & certain) or (inaccurate & uncertain).
      "pavpu_ttest_ci95": intervals.accuracy_interval(
          (pred == test_labels) == summary["certain_ttest"], groups),
      "unlabelled_left_out": int((~labelled).sum()),
      "step": trained.step,
  })
  arrays = {"mean_probs": mean_p, "vote": pred, "labels": test_labels,
            "certain": summary["certain_ttest"], "p_value": summary["p_value"],
            "test_index": np.flatnonzero(labelled), "groups": groups}
  return StageResult(metrics, arrays=arrays, summary=(
      f"[card] test: acc={intervals.percent(metrics['accuracy'], metrics['accuracy_ci95'])}% PAvPU(t-test)={metrics['pavpu_ttest']:.4f} "
      f"PAvPU(threshold)={metrics['pavpu_threshold']:.4f} ECE={metrics['ece']:.3f} "
      f"(f_phi acc={metrics['classifier_accuracy']:.4f})"))
