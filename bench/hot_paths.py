"""The other hot paths of a quick run, in images (or points) per second, on whatever
devices the launcher would use (`--cpu_devices`, default auto = one per core):

  * the classifier / supervised CNN train step (f_phi: ResNet18+CBAM, quick);
  * the CARD train step (noise network on cached features, quick), on the devices
    its stage trains on (`card.devices_per_process`) and on all of them;
  * the embedding pass (the encoder over uint8 images, inference);
  * the report's t-SNE and the linear / kNN probes (scikit-learn, host only).

  python bench/hot_paths.py --out=bench/results [--cpu_devices=auto|N]
      [--cpu_conv_kernels=auto|xla_default] [--cpu_conv_input_copy=auto|off] [--steps=5]

CARD sampling has its own benchmark (bench/card_sampling.py); the contrastive step
too (bench/contrastive_step.py). Run once with --cpu_devices=1 and once with the
default to see what one device per core gives. Writes `hot_paths[_N]dev.json`.
"""

import os
import sys
import time

from absl import app, flags

import bench_output
import cpu_setup

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_OUT = flags.DEFINE_string("out", "bench/results", "Output folder for the JSON.")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed calls of each jitted path after its compile call.")
_POINTS = flags.DEFINE_integer("points", 800, "Embeddings for t-SNE (quick: report.tsne_max_points).")
_PROBE_ITEMS = flags.DEFINE_integer("probe_items", 4000, "Training embeddings for the probes.")


def _timed(fn, args, steps: int, carry_first: bool):
  """(compile s, s per call) of a jitted fn; with carry_first, its first output
  is fed back as the first argument (a train step's state)."""
  import jax
  t0 = time.perf_counter()
  out = fn(*args)
  jax.block_until_ready(out)
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(steps):
    out = fn(out[0], *args[1:]) if carry_first else fn(*args)
  jax.block_until_ready(out)
  return compile_s, (time.perf_counter() - t0) / steps


def _train_step(dp, spec, tx, sched, loss_fn, batch, steps):
  from sedl_jax.train import stage as stage_lib, state as train_state
  st = dp.replicate(stage_lib.initial_state(spec, tx, 0))
  step = dp.jit_step(train_state.make_train_step(loss_fn, tx, sched))
  return _timed(step, (st, dp.shard_local(batch)), steps, carry_first=True)


def classifier_step(c, dp, steps) -> dict:
  import numpy as np
  from sedl_jax.data import augment
  from sedl_jax.models import registry as models
  from sedl_jax.stages import classifier
  from sedl_jax.train import optim, stage as stage_lib
  size, ch, nc = c.data.image_size, c.data.channels, 7
  batch = max(dp.num_devices, c.classifier.batch_size // dp.num_devices * dp.num_devices)
  model = classifier.Classifier(models.build_encoder(c.model), nc, False)
  spec = stage_lib.ModelSpec("classifier", model, (((1, size, size, ch), "float32"),), {})
  tx, sched = optim.make_optimizer(c.classifier.optimizer, 1000, 100)
  loss_fn = classifier.make_loss_fn(model, augment.View.from_config(c.classifier.view), size,
                                    np.ones(nc, np.float32))
  rng = np.random.default_rng(0)
  data = {"image": rng.integers(0, 256, (batch, size, size, ch), dtype=np.uint8),
          "label": rng.integers(0, nc, batch).astype(np.int32)}
  compile_s, dt = _train_step(dp, spec, tx, sched, loss_fn, data, steps)
  return {"path": "classifier train step (f_phi, finetune)", "batch": batch,
          "encoder": c.model.encoder, "width": c.model.width, "cbam": c.model.cbam,
          "image_size": size, "compile_s": compile_s, "step_s": dt, "images_per_s": batch / dt}


def card_step(c, dp, steps, feature_dim: int) -> dict:
  import numpy as np
  from sedl_jax.models import registry
  from sedl_jax.models.card_net import NoiseNet
  from sedl_jax.stages import card
  from sedl_jax.train import optim, stage as stage_lib
  nc = 7
  batch = max(dp.num_devices, c.card.batch_size // dp.num_devices * dp.num_devices)
  net = NoiseNet(nc, int(c.card.hidden), int(c.card.timesteps), registry.compute_dtype(c.model))
  spec = stage_lib.ModelSpec("card", net, (((1, feature_dim), "float32"), ((1, nc), "float32"),
                                           ((1, nc), "float32"), ((1,), "int32")), {})
  tx, sched = optim.make_optimizer(c.card.optimizer, 1000, 100)
  rng = np.random.default_rng(0)
  data = {"h": rng.normal(size=(batch, feature_dim)).astype(np.float32),
          "y_hat": rng.dirichlet(np.ones(nc), batch).astype(np.float32),
          "y0": np.eye(nc, dtype=np.float32)[rng.integers(0, nc, batch)]}
  compile_s, dt = _train_step(dp, spec, tx, sched, card.make_loss_fn(net, card.schedule(c.card)),
                              data, steps)
  return {"path": f"CARD train step (noise network, features cached), {dp.num_devices} dev",
          "batch": batch, "devices": dp.num_devices, "feature_dim": feature_dim,
          "hidden": int(c.card.hidden), "compile_s": compile_s, "step_s": dt,
          "images_per_s": batch / dt}


def embedding_pass(c, dp, steps) -> tuple[dict, int]:
  import jax
  import numpy as np
  from sedl_jax.evaluate import features
  from sedl_jax.models import registry as models
  size, ch = c.data.image_size, c.data.channels
  encoder = models.build_encoder(c.model)
  x = np.zeros((1, size, size, ch), np.float32)
  variables = dp.replicate(encoder.init(jax.random.PRNGKey(0), x, False))
  batch = features.eval_batch_size(256, dp)
  images = np.random.default_rng(0).integers(0, 256, (4 * batch, size, size, ch), dtype=np.uint8)
  predict = features.image_model(encoder, dp, batch)
  t0 = time.perf_counter()
  h = predict(variables, images)
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(steps):
    predict(variables, images)
  dt = (time.perf_counter() - t0) / steps
  return ({"path": "embedding pass (encoder inference, host batches included)",
           "batch": batch, "images": len(images), "compile_s": compile_s,
           "pass_s": dt, "images_per_s": len(images) / dt}, int(h.shape[1]))


def host_analysis(feature_dim: int) -> list[dict]:
  import numpy as np
  from sklearn.manifold import TSNE
  from sedl_jax.evaluate import probes
  rng = np.random.default_rng(0)
  nc = 7
  centres = rng.normal(size=(nc, feature_dim))
  n_train, n_test = _PROBE_ITEMS.value, _PROBE_ITEMS.value // 4

  def sample(n):
    y = rng.integers(0, nc, n)
    return (centres[y] + 2.0 * rng.normal(size=(n, feature_dim))).astype(np.float32), y

  (xtr, ytr), (xva, yva), (xte, yte) = sample(n_train), sample(n_test), sample(n_test)
  out = []
  t0 = time.perf_counter()
  probes.linear_probe(xtr, ytr, xte, yte, nc, xva, yva)
  dt = time.perf_counter() - t0
  out.append({"path": "linear probe (L-BFGS, C picked on val)", "train_items": n_train,
              "feature_dim": feature_dim, "s": dt, "items_per_s": n_train / dt})
  t0 = time.perf_counter()
  probes.knn_probe(xtr, ytr, xte, yte, nc)
  dt = time.perf_counter() - t0
  out.append({"path": "kNN probe (cosine, k=20)", "train_items": n_train, "test_items": n_test,
              "s": dt, "items_per_s": n_test / dt})
  pts = _POINTS.value
  t0 = time.perf_counter()
  TSNE(2, perplexity=30, init="pca", random_state=0).fit_transform(xtr[:pts])
  dt = time.perf_counter() - t0
  out.append({"path": "t-SNE (sklearn, 2-D)", "points": pts, "s": dt, "items_per_s": pts / dt})
  return out


def main(argv):
  setup = cpu_setup.apply([32, 64, 128, 256])
  import jax
  from configs import card_fer
  from sedl_jax.train.mesh import DataParallel
  c = card_fer.get_config("quick,ablation=proposed")
  dp = DataParallel.create()
  emb, dim = embedding_pass(c, dp, _STEPS.value)
  # The CARD stage trains on card.devices_per_process devices of each process (the
  # first result); on every device too when that differs, for the comparison.
  card_dp = dp.per_process(int(c.card.devices_per_process))
  cards = [card_step(c, d, _STEPS.value, dim) for d in dict.fromkeys((card_dp, dp))]
  results = [classifier_step(c, dp, _STEPS.value), *cards, emb, *host_analysis(dim)]
  for r in results:
    rate = r.get("images_per_s", r.get("items_per_s"))
    print(f"{r['path']:58s} {rate:10.1f} /s")
  result = {"benchmark": "hot_paths", "backend": jax.default_backend(),
            "device_count": jax.device_count(), **setup,
            **bench_output.machine(), "results": results}
  bench_output.write(_OUT.value, f"hot_paths_{jax.device_count()}dev", result)


if __name__ == "__main__":
  app.run(main)
