"""SEDL stage 5: emotion per frame (softmax) and behaviour traits per sequence
(independent sigmoids), fed by static embeddings, temporal context, or both.

Static features are the frozen encoder's frame features (standardised with
train statistics); temporal context is the frozen predictor's causal hidden
state at each frame, so a frame's prediction uses that frame and the frames
before it, never later ones. Trait heads train only when the data has trait
labels; otherwise the results say so.
"""

from __future__ import annotations

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from sedl_jax.data import pipeline
from sedl_jax.data.types import SPLITS
from sedl_jax.evaluate import classification
from sedl_jax.stages import embeddings as embeddings_lib
from sedl_jax.stages import temporal
from sedl_jax.train import loop, optim
from sedl_jax.train import state as train_state
from sedl_jax.train.checkpoint import StageCheckpoints
from sedl_jax.train.mesh import DataParallel

STAGE = "behaviour"
FEATURES = ("static", "temporal", "static+temporal")


class BehaviourHeads(nn.Module):
  """Per-frame features [B, T, F] -> (emotion logits [B, T, K], trait logits [B, M])."""

  num_classes: int
  num_traits: int
  hidden: int
  dropout: float = 0.1

  @nn.compact
  def __call__(self, x, train: bool = False):
    h = nn.relu(nn.Dense(self.hidden, name="hidden")(x))
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    emotion = nn.Dense(self.num_classes, name="emotion")(h)
    pooled = jnp.concatenate([h.mean(axis=1), h.max(axis=1)], axis=-1)
    traits = nn.Dense(max(self.num_traits, 1), name="traits")(pooled)
    return emotion, traits[:, : self.num_traits]


def frame_features(kind: str, static: np.ndarray | None, context: np.ndarray | None) -> np.ndarray:
  if kind not in FEATURES:
    raise ValueError(f"behaviour.features={kind!r}: expected one of {FEATURES}")
  parts = {"static": [static], "temporal": [context], "static+temporal": [static, context]}[kind]
  return np.concatenate(parts, axis=-1).astype(np.float32)


def make_loss_fn(model, weights: np.ndarray, has_traits: bool):
  weights = jnp.asarray(weights)

  def loss_fn(params, batch_stats, batch, rng):
    logits, trait_logits = model.apply({"params": params}, batch["x"], train=True,
                                       rngs={"dropout": rng})
    labels = batch["label"]
    valid = (labels >= 0).astype(jnp.float32)
    safe = jnp.maximum(labels, 0)
    w = weights[safe] * valid
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, safe)
    l_emotion = (ce * w).sum() / jnp.maximum(w.sum(), 1e-6)
    acc = ((logits.argmax(-1) == safe) * valid).sum() / jnp.maximum(valid.sum(), 1.0)
    metrics = {"emotion_loss": l_emotion, "emotion_acc": acc}
    loss = l_emotion
    if has_traits:
      l_traits = optax.sigmoid_binary_cross_entropy(trait_logits, batch["traits"]).mean()
      metrics["trait_loss"] = l_traits
      loss = loss + l_traits
    return loss, (batch_stats, metrics)

  return loss_fn


def _inputs(ctx, features: str) -> dict[str, np.ndarray]:
  """Per-split frame features [S, T, F] for the feature kind; data without
  sequences gives each static image as a one-frame sequence."""
  emb = embeddings_lib.load(ctx)
  per_split = emb.frames if emb.frames else {s: emb.images[s][:, None, :] for s in SPLITS}
  flat = per_split["train"].reshape(-1, per_split["train"].shape[-1])
  mean, std = flat.mean(0), flat.std(0) + 1e-6
  context_fn = None
  if features != "static":
    model, params = ctx.shared.get("temporal") or temporal.restore(ctx)
    ctx.shared["temporal"] = (model, params)
    context_fn = temporal.make_context_fn(model)
  out = {}
  for s in SPLITS:
    static = (per_split[s] - mean) / std
    context = (np.asarray(context_fn(params, jnp.asarray(emb.unit_frames(s))))
               if context_fn is not None else None)
    out[s] = frame_features(features, static, context)
  return out


def _targets(data, split: str):
  """(emotion labels [S, T], subjects [S], traits [S, K] or None) of a split."""
  if data.sequences is None:
    im = data.images[split]
    return im.labels[:, None], im.subjects, None
  seq = data.sequences[split]
  return seq.labels, seq.subjects, seq.traits


def trait_metrics(probs: np.ndarray, truth: np.ndarray, names) -> dict:
  from sklearn.metrics import f1_score, roc_auc_score
  out = {}
  for i, name in enumerate(names):
    y, p = truth[:, i].astype(int), probs[:, i]
    pred = (p >= 0.5).astype(int)
    auc = float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else None
    out[name] = {"accuracy": float((pred == y).mean()), "f1": float(f1_score(y, pred, zero_division=0)),
                 "auroc": auc, "positive_rate": float(y.mean())}
  return out


def run(ctx) -> dict:
  cfg = ctx.config.behaviour
  data = ctx.data
  features = cfg.features
  if data.sequences is None and features != "static":
    print(f"[behaviour] data source {data.source!r} has no sequences: using static features "
          f"only (behaviour.features={features!r} needs the temporal model)")
    features = "static"
  x = _inputs(ctx, features)
  train_y, _, train_traits = _targets(data, "train")
  num_classes = len(data.class_names)
  has_traits = train_traits is not None and len(data.trait_names) > 0
  num_traits = len(data.trait_names) if has_traits else 0
  model = BehaviourHeads(num_classes, num_traits, int(cfg.hidden), float(cfg.dropout))
  dp = DataParallel.create()
  n = len(train_y)
  batch = min(int(cfg.batch_size), n)
  batch -= batch % dp.num_devices
  total, per_epoch = optim.resolve_steps(cfg, n, batch)
  tx, schedule = optim.make_optimizer(cfg.optimizer, total, per_epoch)
  rng = jax.random.PRNGKey(cfg.seed)
  init_rng, state_rng = jax.random.split(rng)
  variables = model.init(init_rng, jnp.zeros((1, *x["train"].shape[1:])), train=False)
  state = train_state.create(variables, tx, state_rng)
  meta = {"stage": STAGE, "class_names": list(data.class_names), "num_classes": num_classes,
          "trait_names": list(data.trait_names) if has_traits else [],
          "stage_model": {"features": features, "hidden": cfg.hidden, "dropout": cfg.dropout},
          "data_fingerprint": data.fingerprint}
  ckpt = StageCheckpoints(ctx.workdir, STAGE, keep=cfg.keep_checkpoints)
  state = ckpt.resume(state, meta, ctx.mode)
  state = dp.replicate(state)
  weights = classification.class_weights(train_y, num_classes, cfg.class_weighting)
  if ctx.mode == "train" and int(jax.device_get(state.step)) < total:
    step_fn = dp.jit_step(train_state.make_train_step(make_loss_fn(model, weights, has_traits),
                                                      tx, schedule))
    arrays = {"x": x["train"], "label": train_y.astype(np.int32)}
    if has_traits:
      arrays["traits"] = train_traits.astype(np.float32)
    source = pipeline.ArraySource(arrays)
    state = loop.fit(STAGE, state, step_fn, source, dp=dp, cfg=cfg, global_batch=batch,
                     total_steps=total, steps_per_epoch=per_epoch, examples_per_step=batch,
                     shuffle_seed=ctx.config.data.shuffle_seed, ckpt=ckpt, meta=meta,
                     workdir=ctx.workdir)
  ckpt.close()
  params = jax.device_get(state.params)
  apply = jax.jit(lambda p, v: model.apply({"params": p}, v, train=False))
  logits, trait_logits = (np.asarray(a) for a in apply(params, jnp.asarray(x["test"])))
  probs = np.asarray(jax.nn.softmax(logits, -1))
  test_y, test_subjects, test_traits = _targets(data, "test")
  labelled = test_y.ravel() >= 0
  result = {
      "features": features,
      "emotion": classification.classification_metrics(
          test_y.ravel()[labelled], probs.argmax(-1).ravel()[labelled], num_classes),
      "traits": (trait_metrics(np.asarray(jax.nn.sigmoid(trait_logits)), test_traits,
                               data.trait_names)
                 if has_traits and test_traits is not None else
                 "no trait labels in this dataset: trait heads were not trained"),
  }
  ctx.shared["behaviour_probs"] = probs
  if jax.process_index() == 0:
    report = os.path.join(ctx.workdir, "report")
    os.makedirs(report, exist_ok=True)
    np.savez(os.path.join(report, "behaviour_test_predictions.npz"), probs=probs,
             labels=test_y, subjects=test_subjects)
    with open(os.path.join(report, "behaviour.json"), "w") as f:
      json.dump(result, f, indent=2)
    what = "test frames" if data.sequences is not None else "test images"
    print(f"[behaviour] {what}: emotion acc={result['emotion']['accuracy']:.4f} "
          f"F1={result['emotion']['f1_macro']:.4f} ({features})")
  return result
