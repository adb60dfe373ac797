"""Self-supervised pretraining: two augmented views -> encoder -> projection -> loss.

Two methods share this one stage implementation (and the one training loop):
  * `contrastive` (SEDL stages 1-3): SEDL's projection MLP and NT-Xent;
  * `barlow` (diffusion FER): the Linear-BN-ReLU projector and the Barlow Twins
    loss, with asymmetric views.
The stage name is the config section and the checkpoint directory. An online
linear probe on stop_gradient(features) trains alongside (its gradient never
reaches the encoder) and is evaluated on the val split every epoch. After
training: an offline logistic-regression probe and a cosine kNN on the frozen
features of the subject-disjoint test split, beside the same logistic
regression on raw pixels, saved to `workdir/report/<stage>.json` with
confusion-matrix plots.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from sedl_jax.data import augment
from sedl_jax.evaluate import classification, features, intervals, probes
from sedl_jax.losses.barlow import barlow_twins
from sedl_jax.losses.ntxent import nt_xent
from sedl_jax.models import heads
from sedl_jax.models import registry as models
from sedl_jax.results import StageResult
from sedl_jax.stages import encoder_init
from sedl_jax.train import stage as stage_lib

STAGE = "contrastive"


@dataclasses.dataclass(frozen=True)
class Method:
  """What differs between the pretraining methods; everything else is shared."""

  loss_name: str
  head: Callable  # (config) -> projection module
  loss: Callable  # (z1, z2, section) -> scalar
  stage_model: Callable  # (section) -> dict saved in, and checked against, checkpoints


METHODS = {
    "contrastive": Method(
        "ntxent", lambda config: models.build_projection(config.model),
        lambda z1, z2, sc: nt_xent(z1, z2, sc.temperature),
        lambda sc: {"temperature": sc.temperature}),
    "barlow": Method(
        "barlow_twins", lambda config: heads.BarlowProjector(tuple(config.barlow.projector)),
        lambda z1, z2, sc: barlow_twins(z1, z2, sc.lambd),
        lambda sc: {"projector": list(sc.projector), "lambd": sc.lambd}),
}


def _method(stage: str) -> Method:
  if stage not in METHODS:
    raise ValueError(f"pretraining stage {stage!r}: known {sorted(METHODS)}")
  return METHODS[stage]


class ContrastiveModel(nn.Module):
  """Returns (features h, projections z, online-probe logits on stop_gradient(h))."""

  encoder: nn.Module
  head: nn.Module
  num_classes: int

  @nn.compact
  def __call__(self, x, train: bool = False):
    h = self.encoder(x, train)
    z = self.head(h, train)
    logits = nn.Dense(self.num_classes, name="probe")(jax.lax.stop_gradient(h))
    return h, z, logits


def build_model(config, num_classes: int, stage: str = STAGE) -> ContrastiveModel:
  return ContrastiveModel(models.build_encoder(config.model), _method(stage).head(config),
                          num_classes)


def masked_probe_loss(logits, labels):
  """Cross-entropy and accuracy over labelled examples only (label -1 = unlabelled)."""
  valid = (labels >= 0).astype(jnp.float32)
  safe = jnp.maximum(labels, 0)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), safe)
  n = jnp.maximum(valid.sum(), 1.0)
  acc = ((jnp.argmax(logits, -1) == safe) * valid).sum() / n
  return (ce * valid).sum() / n, acc


def make_loss_fn(model: ContrastiveModel, config, image_size: int, stage: str = STAGE):
  sc, method = config[stage], _method(stage)
  v1, v2 = (augment.View.from_config(v) for v in sc.views)

  def loss_fn(params, batch_stats, batch, rng):
    k1, k2 = jax.random.split(rng)
    images = batch["image"]
    b = images.shape[0]
    x = jnp.concatenate([augment.augment_batch(k1, images, v1, image_size),
                         augment.augment_batch(k2, images, v2, image_size)])
    (h, z, logits), upd = model.apply({"params": params, "batch_stats": batch_stats},
                                      augment.normalize(x), train=True, mutable=["batch_stats"])
    l_ssl = method.loss(z[:b], z[b:], sc)
    l_probe, acc = masked_probe_loss(logits[:b], batch["label"])
    return l_ssl + l_probe, (upd["batch_stats"], {method.loss_name: l_ssl, "probe_loss": l_probe,
                                                  "probe_acc": acc})

  return loss_fn


def make_model_spec(config, num_classes: int, image_shape, stage: str = STAGE):
  """The pretraining model as the stage machinery builds and restores it."""
  return stage_lib.ModelSpec(stage, build_model(config, num_classes, stage),
                             (((1, *image_shape), "float32"),),
                             _method(stage).stage_model(config[stage]))


def model_spec(ctx, stage: str = STAGE) -> stage_lib.ModelSpec:
  return make_model_spec(ctx.config, len(ctx.data.class_names), ctx.data.image_shape, stage)


def encoder_variables(trained: stage_lib.Trained) -> dict:
  """The encoder's own variables, to start another model's encoder from."""
  v = jax.device_get(trained.variables)
  return {"params": v["params"]["encoder"], "batch_stats": v["batch_stats"].get("encoder", {})}


def predictor(ctx, trained: stage_lib.Trained, stage: str = STAGE):
  """fn(uint8 images) -> (encoder features h [N, D], online-probe logits [N, K])."""
  predict = features.image_model(trained.model, ctx.dp, ctx.config[stage].batch_size,
                                 select=lambda out: (out[0], out[2]))
  return lambda images: predict(trained.variables, images)


def restore(ctx, stage: str = STAGE) -> stage_lib.Trained:
  """The trained pretraining model for use (no optimiser, no training data)."""
  return stage_lib.restore(ctx, model_spec(ctx, stage))


def _train_spec(ctx, stage: str, spec: stage_lib.ModelSpec) -> stage_lib.TrainSpec:
  sc, data = ctx.config[stage], ctx.data
  images, labels = data.faces("train", use_sequence_frames=sc.use_sequence_frames,
                              frame_labels=False, unlabelled=True)
  val = data.images["val"]
  probe_logits = features.image_model(spec.model, ctx.dp, sc.batch_size, select=lambda out: out[2])

  def online_probe(state, epoch):
    labelled = val.labels >= 0
    if not labelled.any():
      return {}
    logits = probe_logits({"params": state.params, "batch_stats": state.batch_stats}, val.images)
    return {"online_probe_val_acc": float((logits.argmax(-1) == val.labels)[labelled].mean())}

  init_variables = init_meta = None
  if sc.get("init_from"):
    encoder, init_meta = encoder_init.load(ctx.config, stage, data.image_shape)
    init_variables = encoder_init.replace_encoder(encoder)
  return stage_lib.TrainSpec(
      loss_fn=make_loss_fn(spec.model, ctx.config, data.image_shape[0], stage),
      data={"image": images, "label": labels}, views_per_example=2,
      on_epoch_end=online_probe, init_variables=init_variables, init_meta=init_meta,
      lr_scale=sc.batch_size / 256 if sc.get("lr_batch_scaling", False) else 1.0)


def run(ctx, stage: str = STAGE) -> StageResult:
  spec = model_spec(ctx, stage)
  trained = stage_lib.train_stage(ctx, spec, _train_spec(ctx, stage, spec))
  predict = predictor(ctx, trained, stage)
  embed = lambda images: predict(images)[0]
  if stage == "contrastive":
    # SEDL's later stages use every image's and frame's embedding: computed here,
    # with the encoder already compiled, and cached for them.
    from sedl_jax.stages import embeddings
    ctx.embeddings = embeddings.load(ctx, embed)
    feats = ctx.embeddings.images
  else:
    feats = {s: embed(ctx.data.images[s].images) for s in ("train", "val", "test")}
  return evaluate(ctx, feats, trained.step, stage)


def pixel_probe(data) -> dict:
  """The logistic-regression probe on standardised raw pixels (same splits, same C
  search), over the labelled images."""
  flat, labels = {}, {}
  for s in ("train", "val", "test"):
    im = data.images[s]
    keep = im.labels >= 0
    flat[s] = im.images[keep].reshape(int(keep.sum()), -1).astype(np.float32) / 255.0
    labels[s] = im.labels[keep]
  return probes.linear_probe(flat["train"], labels["train"], flat["test"], labels["test"],
                             len(data.class_names), flat["val"], labels["val"])


def evaluate(ctx, image_features: dict, step: int, stage: str = STAGE) -> StageResult:
  """Offline linear probe and kNN on the frozen features of each split's static
  images (subject-disjoint test split), and the same linear probe on raw pixels
  as the reference to beat."""
  sc, data = ctx.config[stage], ctx.data
  # Unlabelled images (label -1) have nothing to be scored against.
  labelled = {s: data.images[s].labels >= 0 for s in ("train", "val", "test")}
  feats = {s: image_features[s][keep] for s, keep in labelled.items()}
  labels = {s: data.images[s].labels[keep] for s, keep in labelled.items()}
  nc = len(data.class_names)
  result = {
      "step": step,
      "linear_probe": probes.linear_probe(feats["train"], labels["train"], feats["test"],
                                          labels["test"], nc, feats["val"], labels["val"]),
      "knn": probes.knn_probe(feats["train"], labels["train"], feats["test"], labels["test"], nc,
                              k=sc.knn_k, temperature=sc.knn_temperature),
      "pixel_linear_probe": (pixel_probe(data) if sc.get("pixel_baseline", True) else None),
      "unlabelled_left_out": {s: int((~keep).sum()) for s, keep in labelled.items()},
      "unlabelled_pretraining_faces": int(len(data.unlabelled)) if data.unlabelled is not None else 0,
      "class_names": list(data.class_names),
      "test_subjects": sorted(set(data.images["test"].subjects.tolist())),
  }

  groups = data.eval_groups("test", static=True)[labelled["test"]]
  for name in ("linear_probe", "knn", "pixel_linear_probe"):
    if result[name] is not None:
      intervals.with_interval(result[name], labels["test"], groups)

  def render(report_dir):
    for name in ("linear_probe", "knn"):
      classification.plot_confusion(
          result[name]["confusion"], data.class_names,
          os.path.join(report_dir, f"{stage}_{name}_confusion.png"),
          f"{name.replace('_', ' ')}: acc {result[name]['accuracy']:.3f}")

  lp, kn, px = result["linear_probe"], result["knn"], result["pixel_linear_probe"]
  held_out = "held-out subjects" if (data.images["test"].subjects >= 0).all() else "test split"
  pct = lambda r: intervals.percent(r["accuracy"], r["accuracy_ci95"]) + "%"
  summary = (f"[{stage}] test ({held_out}): linear probe acc={pct(lp)} "
             f"F1={lp['f1_macro']:.4f}; kNN acc={pct(kn)}"
             + (f"; raw-pixel linear probe acc={pct(px)}" if px else ""))
  return StageResult(result, summary=summary, render=render)
