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

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from sedl_jax.data import augment, pipeline
from sedl_jax.evaluate import calibration, classification, features
from sedl_jax.models import registry as models
from sedl_jax.stages.meta import stage_meta
from sedl_jax.train import loop, optim
from sedl_jax.train import state as train_state
from sedl_jax.train.checkpoint import StageCheckpoints
from sedl_jax.train.mesh import DataParallel

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


def labelled_train_set(data, use_sequence_frames: bool) -> dict:
  train = data.images["train"]
  images, labels = [train.images], [train.labels]
  if (use_sequence_frames and data.sequences is not None and not data.frames_in_images
      and len(data.sequences["train"])):
    seq = data.sequences["train"]
    images.append(seq.frames.reshape(-1, *seq.frames.shape[2:]))
    labels.append(seq.labels.reshape(-1))
  images, labels = np.concatenate(images), np.concatenate(labels).astype(np.int32)
  keep = labels >= 0
  return {"image": images[keep], "label": labels[keep]}


def balanced_order(labels: np.ndarray, num_classes: int, seed: int) -> np.ndarray:
  """An index list in which every class appears equally often (minority classes repeated)."""
  rng = np.random.default_rng(seed)
  present = [np.flatnonzero(labels == k) for k in range(num_classes)]
  present = [p for p in present if len(p)]
  per = max(len(p) for p in present)
  idx = np.concatenate([rng.choice(p, per, replace=len(p) < per) for p in present])
  return rng.permutation(idx)


def make_loss_fn(model, view, image_size: int, weights: np.ndarray):
  weights = jnp.asarray(weights)

  def loss_fn(params, batch_stats, batch, rng):
    x = augment.normalize(augment.augment_batch(rng, batch["image"], view, image_size))
    (_, logits), upd = model.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                                   mutable=["batch_stats"])
    labels = batch["label"]
    w = weights[labels]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
    loss = (ce * w).sum() / jnp.maximum(w.sum(), 1e-6)
    acc = (logits.argmax(-1) == labels).mean()
    return loss, (upd["batch_stats"], {"ce": loss, "train_acc": acc})

  return loss_fn


def _init_from(ctx, stage: str, variables):
  """Copies the encoder weights of a pretraining stage into fresh variables."""
  init = ctx.config[stage].init
  if init == "scratch":
    return variables
  if init not in INITS:
    raise ValueError(f"config.{stage}.init={init!r}: expected one of {INITS}")
  from sedl_jax.stages import pretrain  # the pretraining stages that hold an encoder
  params, batch_stats = pretrain.restore_encoder_variables(ctx, init)
  return {"params": dict(variables["params"], encoder=params["encoder"]),
          "batch_stats": dict(variables["batch_stats"], encoder=batch_stats["encoder"])}


def evaluate_split(predict, images, labels, num_classes: int) -> dict:
  """Metrics over the labelled examples (label -1 = unlabelled is left out)."""
  keep = np.asarray(labels) >= 0
  images, labels = images[keep], np.asarray(labels)[keep]
  logits = predict(images)
  probs = np.asarray(jax.nn.softmax(logits.astype(np.float32), -1))
  out = classification.classification_metrics(labels, probs.argmax(-1), num_classes)
  out["nll"] = calibration.nll(probs, labels)
  out["ece"] = calibration.expected_calibration_error(probs, labels, bins=10)
  return out


def _setup(ctx, stage: str):
  """Model, train set, optimiser and state (restored when a checkpoint exists)."""
  config, sc = ctx.config, ctx.config[stage]
  data = ctx.data
  if sc.mode not in MODES:
    raise ValueError(f"config.{stage}.mode={sc.mode!r}: expected one of {MODES}")
  num_classes = len(data.class_names)
  train = labelled_train_set(data, sc.use_sequence_frames)
  if len(train["label"]) == 0:
    raise ValueError(f"stage {stage!r}: the train split has no labelled images")
  if sc.balanced_sampling:
    order = balanced_order(train["label"], num_classes, sc.seed)
    train = {k: v[order] for k, v in train.items()}
  model = Classifier(models.build_encoder(config.model), num_classes, sc.mode == "linear")
  total, per_epoch = optim.resolve_steps(sc, len(train["label"]), sc.batch_size)
  tx, schedule = optim.make_optimizer(sc.optimizer, total, per_epoch)
  rng = jax.random.PRNGKey(sc.seed)
  init_rng, state_rng = jax.random.split(rng)
  dummy = jnp.zeros((1, *data.image_shape), jnp.float32)
  variables = jax.jit(lambda r: model.init(r, dummy, train=False))(init_rng)
  meta = stage_meta(ctx, stage, stage_model={"mode": sc.mode, "init": sc.init})
  ckpt = StageCheckpoints(ctx.workdir, stage, keep=sc.keep_checkpoints)
  if ckpt.latest_step() is None and ctx.mode == "eval":
    raise FileNotFoundError(f"--mode=eval: no checkpoint in {ckpt.directory}; train first")
  if ckpt.latest_step() is None:
    variables = _init_from(ctx, stage, variables)
  state = train_state.create(variables, tx, state_rng)
  if ckpt.latest_step() is not None:
    state, _ = ckpt.restore(state, meta)
  return model, train, (tx, schedule, total, per_epoch), state, ckpt, meta


def predictor(ctx, stage: str, model, state):
  """fn(uint8 images) -> (features h [N, D], logits [N, K]) as NumPy."""
  dp = DataParallel.create()
  state = dp.replicate(state)

  @jax.jit
  def infer(params, batch_stats, batch):
    x = augment.normalize(augment.to_float(batch["image"]))
    return model.apply({"params": params, "batch_stats": batch_stats}, x, train=False)

  bs = features.eval_batch_size(ctx.config[stage].batch_size, dp)

  def predict(images):
    fn = lambda batch: infer(state.params, state.batch_stats, batch)
    return features.map_batches(fn, {"image": images}, batch_size=bs, dp=dp)

  return predict


def restore(ctx, stage: str):
  """The trained classifier's predictor (no training): fn(images) -> (h, logits)."""
  if stage in ctx.shared:
    return ctx.shared[stage]["predict"]
  model, _, _, state, ckpt, _ = _setup(ctx, stage)
  if ckpt.latest_step() is None:
    raise FileNotFoundError(f"no {stage} checkpoint in {ckpt.directory}: run the {stage!r} stage first")
  ckpt.close()
  return predictor(ctx, stage, model, state)


def run(ctx, stage: str) -> dict:
  config, sc = ctx.config, ctx.config[stage]
  data = ctx.data
  num_classes = len(data.class_names)
  model, train, (tx, schedule, total, per_epoch), state, ckpt, meta = _setup(ctx, stage)
  dp = DataParallel.create()
  state = dp.replicate(state)
  weights = classification.class_weights(train["label"], num_classes, sc.class_weighting)
  if ctx.mode == "train" and int(jax.device_get(state.step)) < total:
    view = augment.View.from_config(sc.view)
    step_fn = dp.jit_step(train_state.make_train_step(
        make_loss_fn(model, view, data.image_shape[0], weights), tx, schedule))
    source = pipeline.ArraySource(train)
    state = loop.fit(stage, state, step_fn, source, dp=dp, cfg=sc, global_batch=sc.batch_size,
                     total_steps=total, steps_per_epoch=per_epoch,
                     examples_per_step=sc.batch_size, shuffle_seed=config.data.shuffle_seed,
                     ckpt=ckpt, meta=meta, workdir=ctx.workdir,
                     num_threads=config.data.num_threads, prefetch=config.data.prefetch)
  ckpt.close()
  predict = predictor(ctx, stage, model, state)
  logits_only = lambda images: predict(images)[1]
  test = data.images["test"]
  result = {"step": int(jax.device_get(state.step)), "mode": sc.mode, "init": sc.init,
            "test_images": evaluate_split(logits_only, test.images, test.labels, num_classes)}
  if data.sequences is not None and len(data.sequences["test"]):
    seq = data.sequences["test"]
    result["test_frames"] = evaluate_split(logits_only,
                                           seq.frames.reshape(-1, *seq.frames.shape[2:]),
                                           seq.labels.reshape(-1), num_classes)
  ctx.shared[stage] = {"predict": predict}
  if jax.process_index() == 0:
    path = os.path.join(ctx.workdir, "report", f"{stage}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
      json.dump(result, f, indent=2)
    r = result["test_images"]
    print(f"[{stage}] test images: acc={r['accuracy']:.4f} F1={r['f1_macro']:.4f} "
          f"NLL={r['nll']:.3f} ECE={r['ece']:.3f}")
  return result
