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
import json
import os
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from sedl_jax.data import augment, pipeline
from sedl_jax.evaluate import classification, features, probes
from sedl_jax.losses.barlow import barlow_twins
from sedl_jax.losses.ntxent import nt_xent
from sedl_jax.models import heads
from sedl_jax.models import registry as models
from sedl_jax.stages.meta import stage_meta
from sedl_jax.train import loop, optim
from sedl_jax.train import state as train_state
from sedl_jax.train.checkpoint import StageCheckpoints
from sedl_jax.train.mesh import DataParallel

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


def init_state(model, config, image_shape, tx, stage: str = STAGE):
  rng = jax.random.PRNGKey(config[stage].seed)
  init_rng, state_rng = jax.random.split(rng)
  dummy = jnp.zeros((1, *image_shape), jnp.float32)
  variables = jax.jit(lambda r: model.init(r, dummy, train=False))(init_rng)
  return train_state.create(variables, tx, state_rng)


def make_apply_fns(model):
  """Jitted inference: features h and online-probe logits for a uint8 batch."""

  @jax.jit
  def infer(params, batch_stats, batch):
    x = augment.normalize(augment.to_float(batch["image"]))
    h, _, logits = model.apply({"params": params, "batch_stats": batch_stats}, x, train=False)
    return h, logits

  return infer


def _optimizer(sc, total: int, per_epoch: int):
  scale = sc.batch_size / 256 if sc.get("lr_batch_scaling", False) else 1.0
  return optim.make_optimizer(sc.optimizer, total, per_epoch, lr_scale=scale)


def _restore_state(ctx, stage: str):
  config, sc = ctx.config, ctx.config[stage]
  data = ctx.data
  ckpt = StageCheckpoints(ctx.workdir, stage, keep=sc.keep_checkpoints)
  if ckpt.latest_step() is None:
    raise FileNotFoundError(f"no {stage} checkpoint in {ckpt.directory}: "
                            f"run the {stage!r} stage first")
  model = build_model(config, len(data.class_names), stage)
  tx, _ = _optimizer(sc, 1, 1)  # only the optimiser state's structure matters here
  state = init_state(model, config, data.image_shape, tx, stage)
  state, _ = ckpt.restore(state, stage_meta(ctx, stage, stage_model=_method(stage).stage_model(sc)))
  ckpt.close()
  return model, state


def restore_encoder_variables(ctx, stage: str = STAGE):
  """(params, batch_stats) of a trained pretraining stage's model, on the host."""
  _, state = _restore_state(ctx, stage)
  return jax.device_get(state.params), jax.device_get(state.batch_stats)


def restore_encoder(ctx, stage: str = STAGE):
  """A trained encoder for inference: returns (embed, step), where
  embed(uint8 images [N, H, W, C]) -> encoder features [N, D] as NumPy."""
  model, state = _restore_state(ctx, stage)
  sc = ctx.config[stage]
  dp = DataParallel.create()
  state = dp.replicate(state)
  infer = make_apply_fns(model)
  bs = features.eval_batch_size(sc.batch_size, dp)

  def embed(images):
    fn = lambda batch: infer(state.params, state.batch_stats, batch)[0]
    return features.map_batches(fn, {"image": images}, batch_size=bs, dp=dp)

  return embed, int(jax.device_get(state.step))


def pretraining_set(data, use_sequence_frames: bool) -> dict:
  """Train-split static images, plus the train split's sequence frames as
  unlabelled images (label -1) when asked: SEDL pretrains on unlabelled video."""
  train = data.images["train"]
  images, labels = [train.images], [train.labels]
  if (use_sequence_frames and data.sequences is not None and not data.frames_in_images
      and len(data.sequences["train"])):
    frames = data.sequences["train"].frames
    images.append(frames.reshape(-1, *frames.shape[2:]))
    labels.append(np.full(images[-1].shape[0], -1, np.int32))
  return {"image": np.concatenate(images), "label": np.concatenate(labels)}


def run(ctx, stage: str = STAGE) -> dict:
  config, sc, method = ctx.config, ctx.config[stage], _method(stage)
  data = ctx.data
  pretrain = pretraining_set(data, sc.use_sequence_frames)
  num_classes = len(data.class_names)
  dp = DataParallel.create()
  model = build_model(config, num_classes, stage)
  total, per_epoch = optim.resolve_steps(sc, len(pretrain["label"]), sc.batch_size)
  tx, schedule = _optimizer(sc, total, per_epoch)
  state = init_state(model, config, data.image_shape, tx, stage)
  meta = stage_meta(ctx, stage, stage_model=method.stage_model(sc))
  ckpt = StageCheckpoints(ctx.workdir, stage, keep=sc.keep_checkpoints)
  state = ckpt.resume(state, meta, ctx.mode)
  state = dp.replicate(state)
  infer = make_apply_fns(model)
  bs_eval = features.eval_batch_size(sc.batch_size, dp)

  def online_probe(st, epoch):
    val = data.images["val"]
    if len(val) == 0:
      return {}
    fn = lambda batch: infer(st.params, st.batch_stats, batch)[1]
    logits = features.map_batches(fn, {"image": val.images}, batch_size=bs_eval, dp=dp)
    return {"online_probe_val_acc": float((logits.argmax(-1) == val.labels).mean())}

  if ctx.mode == "train" and int(jax.device_get(state.step)) < total:
    step_fn = dp.jit_step(train_state.make_train_step(
        make_loss_fn(model, config, data.image_shape[0], stage), tx, schedule))
    source = pipeline.ArraySource(pretrain)
    state = loop.fit(stage, state, step_fn, source, dp=dp, cfg=sc, global_batch=sc.batch_size,
                     total_steps=total, steps_per_epoch=per_epoch,
                     examples_per_step=2 * sc.batch_size, shuffle_seed=config.data.shuffle_seed,
                     ckpt=ckpt, meta=meta, workdir=ctx.workdir,
                     num_threads=config.data.num_threads, prefetch=config.data.prefetch,
                     on_epoch_end=online_probe)
  ckpt.close()

  def embed(split_set):
    fn = lambda batch: infer(state.params, state.batch_stats, batch)[0]
    return features.map_batches(fn, {"image": split_set.images}, batch_size=bs_eval, dp=dp)

  return evaluate(ctx, embed, data, int(jax.device_get(state.step)), stage)


def pixel_probe(data) -> dict:
  """The logistic-regression probe on standardised raw pixels (same splits, same C search)."""
  flat = {s: data.images[s].images.reshape(len(data.images[s]), -1).astype(np.float32) / 255.0
          for s in ("train", "val", "test")}
  return probes.linear_probe(flat["train"], data.images["train"].labels, flat["test"],
                             data.images["test"].labels, len(data.class_names), flat["val"],
                             data.images["val"].labels)


def evaluate(ctx, embed, data, step: int, stage: str = STAGE) -> dict:
  """Offline linear probe and kNN on frozen features of the subject-disjoint test
  split, and the same linear probe on raw pixels as the reference to beat."""
  sc = ctx.config[stage]
  feats = {s: embed(data.images[s]) for s in ("train", "val", "test")}
  labels = {s: data.images[s].labels for s in feats}
  nc = len(data.class_names)
  result = {
      "step": step,
      "linear_probe": probes.linear_probe(feats["train"], labels["train"], feats["test"],
                                          labels["test"], nc, feats["val"], labels["val"]),
      "knn": probes.knn_probe(feats["train"], labels["train"], feats["test"], labels["test"], nc,
                              k=sc.knn_k, temperature=sc.knn_temperature),
      "pixel_linear_probe": (pixel_probe(data) if sc.get("pixel_baseline", True) else None),
      "class_names": list(data.class_names),
      "test_subjects": sorted(set(data.images["test"].subjects.tolist())),
  }
  if jax.process_index() == 0:
    report = os.path.join(ctx.workdir, "report")
    os.makedirs(report, exist_ok=True)
    with open(os.path.join(report, f"{stage}.json"), "w") as f:
      json.dump(result, f, indent=2)
    for name in ("linear_probe", "knn"):
      classification.plot_confusion(result[name]["confusion"], data.class_names,
                                    os.path.join(report, f"{stage}_{name}_confusion.png"),
                                    f"{name.replace('_', ' ')}: acc {result[name]['accuracy']:.3f}")
    lp, kn = result["linear_probe"], result["knn"]
    px = result["pixel_linear_probe"]
    held_out = "held-out subjects" if (data.images["test"].subjects >= 0).all() else "test split"
    print(f"[{stage}] test ({held_out}): linear probe acc={lp['accuracy']:.4f} "
          f"F1={lp['f1_macro']:.4f}; kNN acc={kn['accuracy']:.4f}"
          + (f"; raw-pixel linear probe acc={px['accuracy']:.4f}" if px else ""))
  return result
