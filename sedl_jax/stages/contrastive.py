"""SEDL stages 1-3: two augmented views -> encoder -> projection MLP -> NT-Xent.

An online linear probe on stop_gradient(features) trains alongside (its
gradient never reaches the encoder) and is evaluated on the val split every
epoch. After training: an offline logistic-regression probe and a cosine kNN on
the frozen features of the subject-disjoint test split, saved to
`workdir/report/contrastive.json` with confusion-matrix plots.
"""

from __future__ import annotations

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from sedl_jax.data import augment, pipeline
from sedl_jax.evaluate import classification, features, probes
from sedl_jax.losses.ntxent import nt_xent
from sedl_jax.models import registry as models
from sedl_jax.stages.meta import stage_meta
from sedl_jax.train import loop, optim
from sedl_jax.train import state as train_state
from sedl_jax.train.checkpoint import StageCheckpoints
from sedl_jax.train.mesh import DataParallel
from sedl_jax.train.metrics import MetricWriter

STAGE = "contrastive"


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


def build_model(config, num_classes: int) -> ContrastiveModel:
  return ContrastiveModel(models.build_encoder(config.model), models.build_projection(config.model),
                          num_classes)


def masked_probe_loss(logits, labels):
  """Cross-entropy and accuracy over labelled examples only (label -1 = unlabelled)."""
  valid = (labels >= 0).astype(jnp.float32)
  safe = jnp.maximum(labels, 0)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), safe)
  n = jnp.maximum(valid.sum(), 1.0)
  acc = ((jnp.argmax(logits, -1) == safe) * valid).sum() / n
  return (ce * valid).sum() / n, acc


def make_loss_fn(model: ContrastiveModel, config, image_size: int):
  sc = config.contrastive
  v1, v2 = (augment.View.from_config(v) for v in sc.views)

  def loss_fn(params, batch_stats, batch, rng):
    k1, k2 = jax.random.split(rng)
    images = batch["image"]
    b = images.shape[0]
    x = jnp.concatenate([augment.augment_batch(k1, images, v1, image_size),
                         augment.augment_batch(k2, images, v2, image_size)])
    (h, z, logits), upd = model.apply({"params": params, "batch_stats": batch_stats},
                                      augment.normalize(x), train=True, mutable=["batch_stats"])
    l_con = nt_xent(z[:b], z[b:], sc.temperature)
    l_probe, acc = masked_probe_loss(logits[:b], batch["label"])
    return l_con + l_probe, (upd["batch_stats"], {"ntxent": l_con, "probe_loss": l_probe,
                                                  "probe_acc": acc})

  return loss_fn


def init_state(model, config, image_shape, tx):
  rng = jax.random.PRNGKey(config.contrastive.seed)
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


def run(ctx) -> dict:
  config, sc = ctx.config, ctx.config.contrastive
  data = ctx.data
  train_set = data.images["train"]
  num_classes = len(data.class_names)
  dp = DataParallel.create()
  model = build_model(config, num_classes)
  total, per_epoch = optim.resolve_steps(sc, len(train_set), sc.batch_size)
  tx, schedule = optim.make_optimizer(sc.optimizer, total, per_epoch)
  state = init_state(model, config, data.image_shape, tx)
  meta = stage_meta(ctx, STAGE, stage_model={"temperature": sc.temperature})
  ckpt = StageCheckpoints(ctx.workdir, STAGE, keep=sc.keep_checkpoints)
  if ckpt.latest_step() is not None:
    state, _ = ckpt.restore(state, meta)
  elif ctx.mode == "eval":
    raise FileNotFoundError(f"--mode=eval: no checkpoint in {ckpt.directory}; train first")
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
    step_fn = dp.jit_step(train_state.make_train_step(make_loss_fn(model, config, data.image_shape[0]),
                                                      tx, schedule))
    source = pipeline.ArraySource({"image": train_set.images, "label": train_set.labels})

    def batches(start):
      stream = pipeline.batch_stream(source, global_batch=sc.batch_size, seed=config.data.shuffle_seed,
                                     start_step=start, process_index=jax.process_index(),
                                     process_count=jax.process_count())
      return map(dp.shard_local, pipeline.iterate(stream, num_threads=config.data.num_threads,
                                                  prefetch=config.data.prefetch))

    spec = loop.LoopSpec(stage=STAGE, total_steps=total, steps_per_epoch=per_epoch,
                         examples_per_step=2 * sc.batch_size, log_every=sc.log_every_steps,
                         checkpoint_every=sc.checkpoint_every_steps)
    writer = MetricWriter(ctx.workdir)
    try:
      state = loop.train(spec, state, step_fn, batches, ckpt, meta, writer, online_probe)
    finally:
      writer.close()
  ckpt.close()

  def embed(split_set):
    fn = lambda batch: infer(state.params, state.batch_stats, batch)[0]
    return features.map_batches(fn, {"image": split_set.images}, batch_size=bs_eval, dp=dp)

  return evaluate(ctx, embed, data, int(jax.device_get(state.step)))


def evaluate(ctx, embed, data, step: int) -> dict:
  """Offline linear probe and kNN on frozen features of the subject-disjoint test split."""
  sc = ctx.config.contrastive
  feats = {s: embed(data.images[s]) for s in ("train", "val", "test")}
  labels = {s: data.images[s].labels for s in feats}
  nc = len(data.class_names)
  result = {
      "step": step,
      "linear_probe": probes.linear_probe(feats["train"], labels["train"], feats["test"],
                                          labels["test"], nc, feats["val"], labels["val"]),
      "knn": probes.knn_probe(feats["train"], labels["train"], feats["test"], labels["test"], nc,
                              k=sc.knn_k, temperature=sc.knn_temperature),
      "class_names": list(data.class_names),
      "test_subjects": sorted(set(data.images["test"].subjects.tolist())),
  }
  if jax.process_index() == 0:
    report = os.path.join(ctx.workdir, "report")
    os.makedirs(report, exist_ok=True)
    with open(os.path.join(report, "contrastive.json"), "w") as f:
      json.dump(result, f, indent=2)
    for name in ("linear_probe", "knn"):
      classification.plot_confusion(result[name]["confusion"], data.class_names,
                                    os.path.join(report, f"contrastive_{name}_confusion.png"),
                                    f"{name.replace('_', ' ')}: acc {result[name]['accuracy']:.3f}")
    lp, kn = result["linear_probe"], result["knn"]
    print(f"[contrastive] test (held-out subjects): linear probe acc={lp['accuracy']:.4f} "
          f"F1={lp['f1_macro']:.4f}; kNN acc={kn['accuracy']:.4f}")
  return result
