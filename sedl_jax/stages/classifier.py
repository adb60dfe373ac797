"""An encoder with a linear softmax head trained with cross-entropy.

One module, two uses (each its own stage name, config section and checkpoint
directory): SEDL's `supervised_cnn` baseline (the same encoder trained from
scratch with labels) and the diffusion paper's classifier f_phi (the SSL
encoder fine-tuned, or linearly probed, with labels).

Training data: every labelled train-split face (static images, plus the
labelled frames of train sequences when `use_sequence_frames`). Evaluation:
accuracy, macro precision/F1, NLL and ECE on the test split's static images
and, when the data has sequences, on the test frames.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from sedl_jax.data import augment
from sedl_jax.evaluate import intervals, calibration, classification, features
from sedl_jax.models import registry as models
from sedl_jax.results import StageResult
from sedl_jax.train import stage as stage_lib

MODES = ("finetune", "linear")
INITS = ("scratch", "contrastive", "barlow")


class Classifier(nn.Module):
  """uint8-normalised images -> (features h, logits)."""

  encoder: nn.Module
  num_classes: int
  linear_probe: bool = False  # frozen encoder (BN in inference mode, no gradient)

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.linear_probe:
      h = jax.lax.stop_gradient(self.encoder(x, False))
    else:
      h = self.encoder(x, train)
    return h, nn.Dense(self.num_classes, name="head")(h)


def balanced_order(labels: np.ndarray, num_classes: int, seed: int) -> np.ndarray:
  """An index list in which every class appears equally often (minority classes repeated)."""
  rng = np.random.default_rng(seed)
  present = [np.flatnonzero(labels == k) for k in range(num_classes)]
  present = [p for p in present if len(p)]
  per = max(len(p) for p in present)
  idx = np.concatenate([rng.choice(p, per, replace=len(p) < per) for p in present])
  return rng.permutation(idx)


def make_loss_fn(model, view, image_size: int, weights: np.ndarray, label_smoothing: float = 0.0):
  weights = jnp.asarray(weights)
  num_classes = len(weights)

  def loss_fn(params, batch_stats, batch, rng):
    x = augment.normalize(augment.augment_batch(rng, batch["image"], view, image_size))
    (_, logits), upd = model.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                                   mutable=["batch_stats"])
    labels = batch["label"]
    w = weights[labels]
    if label_smoothing > 0:
      targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
      ce = optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)
    else:
      ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
    loss = (ce * w).sum() / jnp.maximum(w.sum(), 1e-6)
    acc = (logits.argmax(-1) == labels).mean()
    return loss, (upd["batch_stats"], {"ce": loss, "train_acc": acc})

  return loss_fn


def _encoder_start(ctx, stage: str) -> Callable[[dict], dict] | None:
  """For a fresh start from a pretraining stage: fresh variables -> the same with
  that stage's trained encoder."""
  init = ctx.config[stage].init
  if init == "scratch":
    return None
  from sedl_jax.stages import pretrain  # the pretraining stages that hold an encoder

  def start(variables):
    enc = pretrain.encoder_variables(pretrain.restore(ctx, init))
    return {"params": dict(variables["params"], encoder=enc["params"]),
            "batch_stats": dict(variables["batch_stats"], encoder=enc["batch_stats"])}

  return start


def evaluate_split(predict, images, labels, num_classes: int, groups=None) -> dict:
  """Metrics over the labelled examples (label -1 = unlabelled is left out);
  the accuracy's interval resamples `groups` (subjects)."""
  keep = np.asarray(labels) >= 0
  images, labels = images[keep], np.asarray(labels)[keep]
  logits = predict(images)
  probs = np.asarray(jax.nn.softmax(logits.astype(np.float32), -1))
  out = classification.classification_metrics(labels, probs.argmax(-1), num_classes)
  intervals.with_interval(out, labels, None if groups is None else np.asarray(groups)[keep])
  out["nll"] = calibration.nll(probs, labels)
  out["ece"] = calibration.expected_calibration_error(probs, labels, bins=10)
  out["unlabelled_left_out"] = int((~keep).sum())
  return out


def model_spec(ctx, stage: str) -> stage_lib.ModelSpec:
  sc, data = ctx.config[stage], ctx.data
  model = Classifier(models.build_encoder(ctx.config.model), len(data.class_names),
                     sc.mode == "linear")
  return stage_lib.ModelSpec(stage, model, (((1, *data.image_shape), "float32"),),
                             {"mode": sc.mode, "init": sc.init})


def predictor(ctx, trained: stage_lib.Trained, stage: str):
  """fn(uint8 images) -> (features h [N, D], logits [N, K]) as NumPy, averaged
  over the stage's test-time views (`tta`)."""
  sc = ctx.config[stage]
  predict = features.image_model(trained.model, ctx.dp, sc.batch_size, tta=sc.get("tta", "none"))
  return lambda images: predict(trained.variables, images)


def restore(ctx, stage: str) -> stage_lib.Trained:
  """The trained classifier for use (no optimiser, no training data)."""
  return stage_lib.restore(ctx, model_spec(ctx, stage))


def _train_spec(ctx, stage: str, spec: stage_lib.ModelSpec) -> stage_lib.TrainSpec:
  sc, data = ctx.config[stage], ctx.data
  num_classes = len(data.class_names)
  images, labels = data.labelled_faces("train", sc.use_sequence_frames)
  if len(labels) == 0:
    raise ValueError(f"stage {stage!r}: the train split has no labelled images")
  if sc.balanced_sampling:
    order = balanced_order(labels, num_classes, sc.seed)
    images, labels = images[order], labels[order]
  weights = classification.class_weights(labels, num_classes, sc.class_weighting)
  view = augment.View.from_config(sc.view)
  return stage_lib.TrainSpec(
      loss_fn=make_loss_fn(spec.model, view, data.image_shape[0], weights,
                           float(sc.get("label_smoothing", 0.0))),
      data={"image": images, "label": labels}, init_variables=_encoder_start(ctx, stage))


def run(ctx, stage: str) -> StageResult:
  sc, data = ctx.config[stage], ctx.data
  num_classes = len(data.class_names)
  spec = model_spec(ctx, stage)
  trained = stage_lib.train_stage(ctx, spec, _train_spec(ctx, stage, spec))
  predict = predictor(ctx, trained, stage)
  logits_only = lambda images: predict(images)[1]
  test = data.images["test"]
  result = {"step": trained.step, "mode": sc.mode, "init": sc.init,
            "test_images": evaluate_split(logits_only, test.images, test.labels, num_classes,
                                          data.eval_groups("test", static=True))}
  if data.sequences is not None and len(data.sequences["test"]):
    result["test_frames"] = evaluate_split(logits_only, *data.eval_set("test"), num_classes,
                                           data.eval_groups("test"))
  r = result["test_images"]
  return StageResult(result, summary=f"[{stage}] test images: acc="
                     f"{intervals.percent(r['accuracy'], r['accuracy_ci95'])}% "
                     f"F1={r['f1_macro']:.4f} NLL={r['nll']:.3f} ECE={r['ece']:.3f}")
