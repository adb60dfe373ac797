"""SEDL stage 5: emotion per frame (softmax) and behaviour traits per sequence
(independent sigmoids), fed by static embeddings, temporal context, or both.

Static features are the frozen encoder's frame features (standardised with
train statistics): the contrastive encoder (`behaviour.encoder=frozen`), or
the same encoder fine-tuned with labels by the `ssl_finetune` stage
(`finetune`); temporal context is the frozen predictor's causal hidden
state at each frame, so a frame's prediction uses that frame and the frames
before it, never later ones. Trait heads train only when the data has trait
labels; otherwise the results say so.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from sedl_jax.data.types import SPLITS
from sedl_jax.evaluate import classification, intervals
from sedl_jax.results import StageResult
from sedl_jax.stages import temporal
from sedl_jax.train import stage as stage_lib

STAGE = "behaviour"
FEATURES = ("static", "temporal", "static+temporal")
ENCODERS = ("frozen", "finetune")
FINETUNE_STAGE = "ssl_finetune"


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


def static_features(ctx) -> dict[str, np.ndarray]:
  """Per-split static features [S, T, D] of every frame (data without sequences:
  each static image as a one-frame sequence), from `behaviour.encoder`."""
  emb = ctx.embeddings
  if ctx.config.behaviour.get("encoder", "frozen") == "frozen":
    return emb.frames if emb.frames else {s: emb.images[s][:, None, :] for s in SPLITS}
  from sedl_jax.stages import classifier  # the fine-tuned encoder is a classifier stage's
  predict = classifier.predictor(ctx, classifier.restore(ctx, FINETUNE_STAGE), FINETUNE_STAGE)
  data, out = ctx.data, {}
  for s in SPLITS:
    if data.sequences is None:
      out[s] = np.asarray(predict(data.images[s].images)[0])[:, None, :]
    else:
      frames = data.sequences[s].frames
      h = np.asarray(predict(frames.reshape(-1, *frames.shape[2:]))[0])
      out[s] = h.reshape(*frames.shape[:2], -1)
  return out


def static_stats(per_split: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
  """Mean and std of the train split's static features: their standardisation,
  saved in the checkpoint so prediction standardises the same way."""
  flat = per_split["train"].reshape(-1, per_split["train"].shape[-1])
  return flat.mean(0), flat.std(0) + 1e-6


def label_transitions(data) -> list | None:
  """[K, K] counts of label a at frame t followed by b at t + 1 (staying
  included) in the train sequences: the prior of prediction's HMM smoothing."""
  if data.sequences is None:
    return None
  k = len(data.class_names)
  labels = data.sequences["train"].labels
  a, b = labels[:, :-1].ravel(), labels[:, 1:].ravel()
  keep = (a >= 0) & (b >= 0)
  counts = np.zeros((k, k), np.int64)
  np.add.at(counts, (a[keep], b[keep]), 1)
  return counts.tolist()


def _inputs(ctx, features: str, per_split: dict) -> dict[str, np.ndarray]:
  """Per-split frame features [S, T, F] for the feature kind; data without
  sequences gives each static image as a one-frame sequence."""
  emb = ctx.embeddings
  mean, std = static_stats(per_split)
  context = None
  if features != "static":
    predictor = temporal.restore(ctx)
    context_fn = temporal.make_context_fn(predictor.model)
    context = lambda s: np.asarray(context_fn(predictor.variables["params"],
                                              jnp.asarray(emb.unit_frames(s))))
  return {s: frame_features(features, (per_split[s] - mean) / std,
                            context(s) if context is not None else None) for s in SPLITS}


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


def heads_spec(cfg, num_classes: int, feature_dim: int, seq_len: int, num_traits: int,
               features: str, meta: dict) -> stage_lib.ModelSpec:
  """The heads as the stage machinery builds and restores them; `cfg` is
  `config.behaviour`, `meta` the stage's extra metadata."""
  model = BehaviourHeads(num_classes, num_traits, int(cfg.hidden), float(cfg.dropout))
  return stage_lib.ModelSpec(STAGE, model, (((1, seq_len, feature_dim), "float32"),),
                             dict({"features": features, "hidden": cfg.hidden,
                                   "dropout": cfg.dropout},
                                  # Saved only when not the default, so older
                                  # checkpoints (frozen encoder) still restore.
                                  **({"encoder": "finetune"}
                                     if cfg.get("encoder", "frozen") == "finetune" else {})),
                             meta=meta)


def model_spec(ctx, feature_dim: int, seq_len: int, num_traits: int,
               features: str, per_split: dict) -> stage_lib.ModelSpec:
  data = ctx.data
  mean, std = static_stats(per_split)
  return heads_spec(ctx.config.behaviour, len(data.class_names), feature_dim, seq_len, num_traits,
                    features, {"trait_names": list(data.trait_names) if num_traits else [],
                               "static_mean": mean.tolist(), "static_std": std.tolist(),
                               "label_transitions": label_transitions(data)})


def _feature_kind(ctx) -> tuple[str, str]:
  """(the feature kind this data allows, a note when it differs from the config's)."""
  data, features = ctx.data, ctx.config.behaviour.features
  if data.sequences is None and features != "static":
    return "static", (f"[behaviour] data source {data.source!r} has no sequences: using static "
                      f"features only (behaviour.features={features!r} needs the temporal model)")
  return features, ""


def run(ctx) -> StageResult:
  cfg, data = ctx.config.behaviour, ctx.data
  features, note = _feature_kind(ctx)
  per_split = static_features(ctx)
  x = _inputs(ctx, features, per_split)
  train_y, _, train_traits = _targets(data, "train")
  num_classes = len(data.class_names)
  has_traits = train_traits is not None and len(data.trait_names) > 0
  spec = model_spec(ctx, x["train"].shape[-1], x["train"].shape[1],
                    len(data.trait_names) if has_traits else 0, features, per_split)
  arrays = {"x": x["train"], "label": train_y.astype(np.int32)}
  if has_traits:
    arrays["traits"] = train_traits.astype(np.float32)
  weights = classification.class_weights(train_y, num_classes, cfg.class_weighting)
  trained = stage_lib.train_stage(ctx, spec, stage_lib.TrainSpec(
      loss_fn=make_loss_fn(spec.model, weights, has_traits), data=arrays))
  return _evaluate(ctx, trained, x["test"], features, has_traits, note)


def _evaluate(ctx, trained, x_test, features: str, has_traits: bool, note: str) -> StageResult:
  data = ctx.data
  apply = jax.jit(lambda v, x: trained.model.apply(v, x, train=False))
  logits, trait_logits = (np.asarray(a) for a in apply(trained.variables, jnp.asarray(x_test)))
  probs = np.asarray(jax.nn.softmax(logits, -1))
  test_y, test_subjects, test_traits = _targets(data, "test")
  labelled = test_y.ravel() >= 0
  result = {
      "features": features,
      "encoder": ctx.config.behaviour.get("encoder", "frozen"),
      "step": trained.step,
      "emotion": intervals.with_interval(classification.classification_metrics(
          test_y.ravel()[labelled], probs.argmax(-1).ravel()[labelled], len(data.class_names)),
          test_y.ravel()[labelled], data.eval_groups("test")[labelled]),
      "unlabelled_left_out": int((~labelled).sum()),
      "traits": (trait_metrics(np.asarray(jax.nn.sigmoid(trait_logits)), test_traits,
                               data.trait_names)
                 if has_traits and test_traits is not None else
                 "no trait labels in this dataset: trait heads were not trained"),
  }
  what = "test frames" if data.sequences is not None else "test images"
  emotion = result["emotion"]
  summary = (f"[behaviour] {what}: emotion acc="
             f"{intervals.percent(emotion['accuracy'], emotion['accuracy_ci95'])}% "
             f"F1={result['emotion']['f1_macro']:.4f} ({features})")
  return StageResult(result, arrays={"probs": probs, "labels": test_y, "subjects": test_subjects},
                     summary=f"{note}\n{summary}" if note else summary)
