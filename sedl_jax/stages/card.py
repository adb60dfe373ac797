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

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from sedl_jax.data import pipeline
from sedl_jax.diffusion import card as diffusion
from sedl_jax.evaluate import calibration, classification, uncertainty
from sedl_jax.models.card_net import NoiseNet
from sedl_jax.stages import classifier
from sedl_jax.train import loop, optim
from sedl_jax.train import state as train_state
from sedl_jax.train.checkpoint import StageCheckpoints
from sedl_jax.train.mesh import DataParallel

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


def draw_samples(sampler, variables, h, y_hat, key, batch_size: int, desc: str) -> np.ndarray:
  """y0 samples [n, N, C] for every image, in fixed-size (padded) image batches."""
  n = len(h)
  outs = []
  for i, start in enumerate(tqdm(range(0, n, batch_size), desc=desc, unit="batch",
                                 disable=jax.process_index() != 0)):
    idx = np.minimum(np.arange(start, start + batch_size), n - 1)
    out = sampler(variables, jnp.asarray(h[idx]), jnp.asarray(y_hat[idx]), jax.random.fold_in(key, i))
    outs.append(np.asarray(out)[:, : min(batch_size, n - start)])
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
  predict = classifier.restore(ctx, cfg.classifier_stage)
  out = {}
  for s in ("train", "test"):
    h, logits = predict(ctx.data.images[s].images)
    out[s] = (h.astype(np.float32), np.asarray(jax.nn.softmax(logits, -1), np.float32))
  return out


def run(ctx) -> dict:
  config, cfg = ctx.config, ctx.config.card
  data = ctx.data
  nc = len(data.class_names)
  feats = _features(ctx, cfg)
  train_labels = data.images["train"].labels
  keep = train_labels >= 0
  h_tr, yhat_tr = feats["train"][0][keep], feats["train"][1][keep]
  y_tr = train_labels[keep]
  sched = diffusion.Schedule.linear(int(cfg.timesteps), cfg.beta_start, cfg.beta_end)
  net = NoiseNet(nc, int(cfg.hidden), sched.timesteps)
  dp = DataParallel.create()
  batch = min(int(cfg.batch_size), len(y_tr))
  batch -= batch % dp.num_devices
  total, per_epoch = optim.resolve_steps(cfg, len(y_tr), batch)
  tx, schedule = optim.make_optimizer(cfg.optimizer, total, per_epoch)
  init_rng, state_rng = jax.random.split(jax.random.PRNGKey(cfg.seed))
  variables = net.init(init_rng, jnp.zeros((1, h_tr.shape[1])), jnp.zeros((1, nc)),
                       jnp.zeros((1, nc)), jnp.zeros((1,), jnp.int32))
  state = train_state.create(variables, tx, state_rng, ema=True)
  meta = {"stage": STAGE, "class_names": list(data.class_names), "num_classes": nc,
          "stage_model": {"timesteps": cfg.timesteps, "hidden": cfg.hidden,
                          "beta_start": cfg.beta_start, "beta_end": cfg.beta_end,
                          "classifier_stage": cfg.classifier_stage},
          "model": config.model.to_dict(), "data_fingerprint": data.fingerprint}
  ckpt = StageCheckpoints(ctx.workdir, STAGE, keep=cfg.keep_checkpoints)
  state = ckpt.resume(state, meta, ctx.mode)
  state = dp.replicate(state)
  if ctx.mode == "train" and int(jax.device_get(state.step)) < total:
    step_fn = dp.jit_step(train_state.make_train_step(make_loss_fn(net, sched), tx, schedule,
                                                      ema_decay=float(cfg.ema_decay)))
    source = pipeline.ArraySource({"h": h_tr, "y_hat": yhat_tr,
                                   "y0": np.eye(nc, dtype=np.float32)[y_tr]})
    state = loop.fit(STAGE, state, step_fn, source, dp=dp, cfg=cfg, global_batch=batch,
                     total_steps=total, steps_per_epoch=per_epoch, examples_per_step=batch,
                     shuffle_seed=config.data.shuffle_seed, ckpt=ckpt, meta=meta,
                     workdir=ctx.workdir)
  ckpt.close()
  state = jax.device_get(state)
  ema_vars = {"params": state.ema_params, "batch_stats": state.batch_stats}
  return evaluate(ctx, net, sched, ema_vars, feats, int(state.step))


def evaluate(ctx, net, sched, variables, feats, step: int) -> dict:
  cfg, data = ctx.config.card, ctx.data
  nc = len(data.class_names)
  n = int(cfg.num_samples)
  sampler = make_sampler(net, sched, n)
  key = jax.random.PRNGKey(cfg.seed + 1)
  bs = int(cfg.eval_batch_size)
  ts = float(cfg.sample_temperature)
  if ts <= 0:
    rng = np.random.default_rng(cfg.seed)
    labels = data.images["train"].labels
    idx = rng.permutation(np.flatnonzero(labels >= 0))[: int(cfg.tune_images)]
    y0 = draw_samples(sampler, variables, feats["train"][0][idx], feats["train"][1][idx],
                      jax.random.fold_in(key, 1), bs, "card: tuning T_s")
    ts = tune_temperature(y0, labels[idx])
  h_te, yhat_te = feats["test"]
  test_labels = data.images["test"].labels
  y0 = draw_samples(sampler, variables, h_te, yhat_te, jax.random.fold_in(key, 2), bs,
                    f"card: sampling n={n}, T={sched.timesteps}")
  probs = np.asarray(diffusion.sample_probabilities(jnp.asarray(y0), ts))  # [n, N, C]
  summary = uncertainty.summarise_samples(probs, alpha=float(cfg.pavpu_alpha))
  pred = summary["vote"]
  mean_p = probs.mean(0)
  metrics = classification.classification_metrics(test_labels, pred, nc)
  metrics.update({
      "pavpu_ttest": uncertainty.pavpu(pred == test_labels, summary["certain_ttest"]),
      "pavpu_threshold": uncertainty.pavpu(
          pred == test_labels, uncertainty.threshold_certain(mean_p, float(cfg.pavpu_threshold))),
      "certain_fraction_ttest": float(summary["certain_ttest"].mean()),
      "zero_variance_fraction": float(summary["zero_variance"].mean()),
      "ece": calibration.expected_calibration_error(mean_p, test_labels, bins=10),
      "nll": calibration.nll(mean_p, test_labels),
      "sample_temperature": ts, "num_samples": n, "timesteps": sched.timesteps,
      "classifier_accuracy": float((yhat_te.argmax(-1) == test_labels).mean()),
      "step": step,
  })
  ctx.shared["card_eval"] = {"probs_mean": mean_p, "vote": pred, "summary": summary}
  if jax.process_index() == 0:
    report = os.path.join(ctx.workdir, "report")
    os.makedirs(report, exist_ok=True)
    with open(os.path.join(report, "card.json"), "w") as f:
      json.dump(metrics, f, indent=2)
    np.savez(os.path.join(report, "card_test_samples.npz"), mean_probs=mean_p, vote=pred,
             labels=test_labels, certain=summary["certain_ttest"], p_value=summary["p_value"])
    print(f"[card] test: acc={metrics['accuracy']:.4f} PAvPU(t-test)={metrics['pavpu_ttest']:.4f} "
          f"PAvPU(threshold)={metrics['pavpu_threshold']:.4f} ECE={metrics['ece']:.3f} "
          f"(f_phi acc={metrics['classifier_accuracy']:.4f})")
  return metrics
