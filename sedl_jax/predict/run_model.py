"""A trained run, restored for prediction from its workdir alone.

`RUN/config.json` says how the models were configured; each stage's checkpoint
metadata says what the data was (class names, image size, channels, label map,
trait names, the static features' standardisation). Models are rebuilt from
their stage's `ModelSpec` and restored through `stage.restore`: no optimiser,
no training data. Two kinds of run predict:

  * SEDL (`SedlModel`): the contrastive encoder -> per-frame embeddings; the
    behaviour heads -> emotion probabilities per frame and trait probabilities
    per track; the temporal predictor, when trained -> forecasts and surprise.
  * Diffusion FER (`CardModel`): the classifier f_phi -> h, y_hat; CARD -> n
    sampled probability vectors per face -> vote, vote share, paired t-test and
    the run's PAvPU certainty rule.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sedl_jax import results as results_lib
from sedl_jax.diffusion import card as diffusion
from sedl_jax.evaluate import features, uncertainty
from sedl_jax.stages import behaviour, card, classifier, pretrain, temporal
from sedl_jax.stages.context import Context
from sedl_jax.stages.embeddings import unit_norm
from sedl_jax.train import stage as stage_lib
from sedl_jax.train.checkpoint import MissingCheckpoint, StageCheckpoints


@dataclasses.dataclass
class RunData:
  """What a checkpoint says about the data it was trained on: it stands in for
  the training data (`Context.data`) when a model is rebuilt to predict."""

  class_names: tuple
  image_shape: tuple
  source: str
  fingerprint: str
  label_map: dict | None = None
  trait_names: tuple = ()

  @classmethod
  def from_meta(cls, meta: dict) -> "RunData":
    return cls(tuple(meta["class_names"]), (meta["image_size"], meta["image_size"], meta["channels"]),
               meta.get("data_source", ""), meta.get("data_fingerprint", ""), meta.get("label_map"),
               tuple(meta.get("trait_names", ())))


def load_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise MissingCheckpoint(f"{path} not found: --workdir={workdir!r} is not a trained run "
                            "(train one with python launch.py --config=configs/sedl.py "
                            f"--workdir={workdir})")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def _train_command(config, workdir: str) -> str:
  return (f"python launch.py --config=configs/{config.pipeline}.py:{config.get('variant', 'quick')} "
          f"--workdir={workdir}")


def stage_meta(config, workdir: str, stage: str) -> dict:
  """The latest checkpoint's metadata of a stage; MissingCheckpoint says how to train it."""
  if not os.path.isdir(os.path.join(workdir, "checkpoints", stage)):
    raise MissingCheckpoint(
        f"{workdir}: no checkpoint of stage {stage!r}, which prediction needs; train it with "
        f"{_train_command(config, workdir)} (with {stage!r} in config.stages)")
  with StageCheckpoints(workdir, stage) as ckpt:
    try:
      return ckpt.read_meta()
    except MissingCheckpoint:
      raise MissingCheckpoint(
          f"{workdir}: stage {stage!r} has no finished checkpoint, which prediction needs; "
          f"train it with {_train_command(config, workdir)}") from None


def _context(config, workdir: str, meta: dict) -> Context:
  ctx = Context(config=config, workdir=workdir, mode="eval")
  ctx.data = RunData.from_meta(meta)  # replaces the lazily loaded training data
  return ctx


def _input_shape(meta: dict, index: int = 0) -> tuple:
  return tuple(meta["input_shapes"][index][0])


class SedlModel:
  """Encoder + behaviour heads (+ temporal predictor) of a SEDL run."""

  kind = "sedl"

  def __init__(self, config, workdir: str, batch_size: int, horizons=()):
    enc_meta = stage_meta(config, workdir, "contrastive")
    head_meta = stage_meta(config, workdir, "behaviour")
    self.ctx = ctx = _context(config, workdir, enc_meta)
    self.class_names = list(ctx.data.class_names)
    self.image_shape = ctx.data.image_shape
    spec = pretrain.make_model_spec(config, len(self.class_names), self.image_shape, "contrastive")
    self.encoder = stage_lib.restore(ctx, spec)
    embed = features.image_model(self.encoder.model, ctx.dp, batch_size, select=lambda o: o[0])
    self.embed = lambda images: embed(self.encoder.variables, images)
    self.features = head_meta["stage_model"]["features"]
    self.static_embed = None
    if head_meta["stage_model"].get("encoder") == "finetune":
      # The heads read the fine-tuned encoder's features as their static part.
      f_meta = stage_meta(config, workdir, behaviour.FINETUNE_STAGE)
      fctx = _context(config, workdir, f_meta)
      tuned = stage_lib.restore(fctx, classifier.model_spec(fctx, behaviour.FINETUNE_STAGE))
      f_embed = features.image_model(tuned.model, ctx.dp, batch_size, select=lambda o: o[0])
      self.static_embed = lambda images: f_embed(tuned.variables, images)
    if "static_mean" not in head_meta:
      raise MissingCheckpoint(f"{workdir}: the behaviour checkpoint predates prediction (no "
                              f"static-feature statistics); retrain it with "
                              f"{_train_command(config, workdir)} after deleting "
                              f"{workdir}/checkpoints/behaviour")
    self.mean = np.asarray(head_meta["static_mean"], np.float32)
    self.std = np.asarray(head_meta["static_std"], np.float32)
    self.trait_names = list(head_meta.get("trait_names", []))
    self.transitions = head_meta.get("label_transitions")
    _, head_len, feature_dim = _input_shape(head_meta)
    hctx = _context(config, workdir, head_meta)
    self.heads = stage_lib.restore(hctx, behaviour.heads_spec(
        config.behaviour, len(self.class_names), feature_dim, head_len, len(self.trait_names),
        self.features, {}))
    self.apply_heads = jax.jit(lambda v, x: self.heads.model.apply(v, x, train=False))
    self.temporal = None
    has_temporal = os.path.isdir(os.path.join(workdir, "checkpoints", "temporal"))
    if self.features != "static" or has_temporal:
      t_meta = stage_meta(config, workdir, "temporal")
      _, self.window, emb_dim = _input_shape(t_meta)
      tspec = temporal.model_spec(_context(config, workdir, t_meta), self.window, emb_dim)
      self.temporal = stage_lib.restore(_context(config, workdir, t_meta), tspec)
      self.context_fn = temporal.make_context_fn(self.temporal.model)
    self.horizons = [int(h) for h in horizons if 0 < int(h) < getattr(self, "window", 0)]
    if self.static_embed is not None and "static" in self.features:
      # Forecasts are future contrastive embeddings; these heads read fine-tuned
      # features, so no forecast (nor surprise) can be classified.
      self.horizons = []
    self.steps = {"contrastive": self.encoder.step, "behaviour": self.heads.step}
    if self.temporal is not None:
      self.steps["temporal"] = self.temporal.step
      self._forecaster = _make_forecaster(self.temporal.model, self.horizons)

  def face_outputs(self, faces: np.ndarray) -> dict:
    """Per-face arrays computed batch by batch: the encoder features."""
    out = {"embedding": np.asarray(self.embed(faces), np.float32)}
    if self.static_embed is not None:
      out["static"] = np.asarray(self.static_embed(faces), np.float32)
    return out

  def _head_inputs(self, static: np.ndarray, context: np.ndarray | None) -> np.ndarray:
    return behaviour.frame_features(self.features, (static - self.mean) / self.std, context)

  def track_outputs(self, per_face: dict, forecasts: bool = True) -> dict:
    """Per-frame probabilities, traits, forecasts and surprise of one track's
    faces in time order (per_face["embedding"] [N, D]). Arrays go to the device
    padded to a power of two, so a new track length rarely compiles anything."""
    h = per_face["embedding"]
    unit = unit_norm(h)
    context = self._contexts(unit) if self.temporal is not None else None
    x = self._head_inputs(per_face.get("static", h), context)
    out = {"probs": self._emotion_probs(x)}
    if self.trait_names:
      out["traits"] = self._traits(x)
    if forecasts and self.temporal is not None and self.horizons:
      out.update(self._forecasts(h, unit))
    return out

  def _emotion_probs(self, x: np.ndarray) -> np.ndarray:
    """Emotion probabilities [N, K] of per-frame head inputs [N, F] (the emotion
    head reads each frame on its own)."""
    logits, _ = self.apply_heads(self.heads.variables, jnp.asarray(_padded(x)[None]))
    return np.asarray(jax.nn.softmax(logits[0, : len(x)], -1))

  def _windows(self, unit: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """For each frame i, the window of up to `length` frames ending at i, left
    aligned in a [W]-frame array (zeros after), and i's position in it."""
    n, w = len(unit), self.window
    start = np.maximum(np.arange(n) - length + 1, 0)
    pos = np.arange(n) - start
    idx = np.minimum(start[:, None] + np.arange(w)[None], n - 1)
    windows = unit[idx] * (np.arange(w)[None, :, None] <= pos[:, None, None])
    return windows.astype(np.float32), pos

  def _contexts(self, unit: np.ndarray) -> np.ndarray:
    """The temporal model's causal context at every frame. Windows of W frames
    start every W/2 frames; frame i reads the last window that holds it, so it
    sees its W/2 to W - 1 previous frames (all of them while i < W): one model
    pass covers about 2 frames per window position instead of 1, a W/2-fold
    saving over a window per frame, and every history length stays one the
    behaviour heads were trained on (contexts at positions 0..W-1)."""
    n, w = len(unit), self.window
    stride = max(w // 2, 1)
    count = max(1, -(-max(n - w, 0) // stride) + 1)
    starts = np.arange(count) * stride
    idx = np.minimum(starts[:, None] + np.arange(w)[None], n - 1)
    valid = (starts[:, None] + np.arange(w)[None]) < n
    windows = (unit[idx] * valid[..., None]).astype(np.float32)
    ctx = np.asarray(self.context_fn(self.temporal.variables["params"],
                                     jnp.asarray(_padded(windows))))
    frames = np.arange(n)
    which = np.clip(-(-(frames - w + 1) // stride), 0, count - 1)
    return ctx[which, frames - starts[which]]

  def _traits(self, x: np.ndarray) -> np.ndarray:
    """Trait probabilities of a track: the mean over its consecutive windows of
    the training sequence length (the whole track when it is shorter)."""
    length = _input_shape(self.heads.meta)[1]
    if len(x) < length:
      _, traits = self.apply_heads(self.heads.variables, jnp.asarray(x[None]))
      return np.asarray(jax.nn.sigmoid(traits[0]))
    k = len(x) // length
    chunks = x[: k * length].reshape(k, length, -1)
    _, traits = self.apply_heads(self.heads.variables, jnp.asarray(_padded(chunks)))
    return np.asarray(jax.nn.sigmoid(traits[:k])).mean(0)

  def _forecasts(self, h: np.ndarray, unit: np.ndarray) -> dict:
    """For every origin frame t and horizon k: the predicted embedding of frame
    t + k from frames up to t, classified by the behaviour heads; and the
    surprise at t: ||predicted(t from t - 1) - actual(t)||^2 of unit embeddings."""
    n, top = len(unit), max(self.horizons)
    windows, pos = self._windows(unit, self.window - top)
    preds, contexts = self._forecaster(self.temporal.variables["params"],
                                       jnp.asarray(_padded(windows)), jnp.asarray(_padded(pos)))
    norms = np.linalg.norm(h, axis=-1, keepdims=True)
    # The heads read unnormalised features: a prediction takes its origin's norm.
    x = np.concatenate([self._head_inputs(
        np.asarray(preds[k])[:n] * norms,
        np.asarray(contexts[k])[:n] if self.features != "static" else None) for k in self.horizons])
    probs = self._emotion_probs(x).reshape(len(self.horizons), n, -1)
    out = {f"forecast_{k}": probs[i] for i, k in enumerate(self.horizons)}
    surprise = np.full(n, np.nan, np.float32)
    surprise[1:] = np.sum((np.asarray(preds[1])[: n - 1] - unit[1:]) ** 2, axis=-1)
    out["surprise"] = surprise
    return out


def _padded(a: np.ndarray) -> np.ndarray:
  """`a` with zero rows appended up to a power of two (at least 16) rows."""
  n = len(a)
  m = max(16, 1 << max(n - 1, 0).bit_length())
  return np.concatenate([a, np.zeros((m - n, *a.shape[1:]), a.dtype)]) if m > n else a


def _make_forecaster(model, horizons):
  """jitted fn(params, windows [N, W, D], pos [N]) -> ({k: predicted unit
  embedding of pos + k, k = 1..max horizon}, {k: causal context at pos + k, k in
  horizons}): autoregressive, one model call per step, every origin at once."""
  top = max(horizons) if horizons else 0

  @jax.jit
  def forecast(params, windows, pos):
    n = jnp.arange(windows.shape[0])
    x, preds = windows, {}
    for k in range(1, top + 1):
      pred, _ = model.apply({"params": params}, x, train=False)
      nxt = pred[n, pos + k - 1]
      x = x.at[n, pos + k].set(nxt)
      preds[k] = nxt
    _, context = model.apply({"params": params}, x, train=False)
    return preds, {k: context[n, pos + k] for k in horizons}

  return forecast


class CardModel:
  """f_phi + CARD of a diffusion-FER run."""

  kind = "card_fer"

  def __init__(self, config, workdir: str, batch_size: int, num_samples: int = 0, seed: int = 0):
    card_meta = stage_meta(config, workdir, "card")
    cls_stage = card_meta["stage_model"]["classifier_stage"]
    cls_meta = stage_meta(config, workdir, cls_stage)
    self.ctx = ctx = _context(config, workdir, cls_meta)
    self.class_names = list(ctx.data.class_names)
    self.image_shape = ctx.data.image_shape
    self.classifier = stage_lib.restore(ctx, classifier.model_spec(ctx, cls_stage))
    infer = features.image_model(self.classifier.model, ctx.dp, batch_size,
                                 tta=config[cls_stage].get("tta", "none"))
    self.infer = lambda images: infer(self.classifier.variables, images)
    cctx = _context(config, workdir, card_meta)
    self.card = stage_lib.restore(cctx, card.model_spec(cctx, _input_shape(card_meta)[1]))
    cfg = config.card
    self.num_samples = int(num_samples) or int(cfg.num_samples)
    self.sampler = card.make_sampler(self.card.model, card.schedule(cfg), self.num_samples)
    self.sample_batch = int(cfg.eval_batch_size)
    self.temperature = _sample_temperature(cfg, workdir)
    self.alpha, self.threshold = float(cfg.pavpu_alpha), float(cfg.pavpu_threshold)
    self.key = jax.random.PRNGKey(seed)
    self.calls = 0
    self.steps = {cls_stage: self.classifier.step, "card": self.card.step}
    self.trait_names, self.transitions, self.horizons = [], None, []

  def face_outputs(self, faces: np.ndarray) -> dict:
    """Per-face: mean sampled probabilities, vote share, paired t-test p-value,
    certainty (t-test and threshold rules), f_phi's own probabilities and features."""
    h, logits = self.infer(faces)
    y_hat = np.asarray(jax.nn.softmax(logits, -1), np.float32)
    self.calls += 1
    y0 = card.draw_samples(self.sampler, self.card.variables, h.astype(np.float32), y_hat,
                           jax.random.fold_in(self.key, self.calls), self.sample_batch,
                           f"card: n={self.num_samples}", self.ctx.dp)
    probs = np.asarray(diffusion.sample_probabilities(jnp.asarray(y0), self.temperature))
    s = uncertainty.summarise_samples(probs, alpha=self.alpha)
    mean = probs.mean(0)
    share = s["votes"][np.arange(len(mean)), s["vote"]] / probs.shape[0]
    return {"probs": mean, "vote": s["vote"], "vote_share": share, "p_value": s["p_value"],
            "certain_ttest": s["certain_ttest"],
            "certain_threshold": uncertainty.threshold_certain(mean, self.threshold),
            "classifier_probs": y_hat, "embedding": np.asarray(h, np.float32)}

  def track_outputs(self, per_face: dict) -> dict:
    return {}


def _sample_temperature(cfg, workdir: str) -> float:
  """T_s as the run's evaluation used it: the config's, or the tuned one it recorded."""
  if float(cfg.sample_temperature) > 0:
    return float(cfg.sample_temperature)
  found = results_lib.read(workdir, "card")
  if found is None or "sample_temperature" not in found.metrics:
    raise MissingCheckpoint(f"{workdir}: card.sample_temperature <= 0 (tuned) but the run has no "
                            "report/card.json with the tuned value; run --mode=eval first")
  return float(found.metrics["sample_temperature"])


def load(workdir: str, batch_size: int, *, horizons=(), num_samples: int = 0, seed: int = 0):
  """The run's prediction model, by the run's pipeline. SEDL forecast horizons:
  () = the run's temporal.horizons, None = no forecasts."""
  config = load_config(workdir)
  pipeline = config.get("pipeline")
  subs = sorted(d for d in os.listdir(workdir)
                if os.path.isfile(os.path.join(workdir, d, "config.json")))
  if subs and not os.path.isdir(os.path.join(workdir, "checkpoints")):
    raise MissingCheckpoint(f"{workdir} holds sub-runs ({', '.join(subs)}), each its own model: "
                            f"predict with --workdir={os.path.join(workdir, subs[0])} (or another)")
  if pipeline == "sedl":
    if horizons is not None and not horizons:
      horizons = tuple(config.temporal.horizons)
    return SedlModel(config, workdir, batch_size, horizons or ())
  if pipeline == "card_fer":
    return CardModel(config, workdir, batch_size, num_samples, seed)
  raise ValueError(f"{workdir}/config.json: pipeline {pipeline!r} cannot predict (sedl, card_fer)")
