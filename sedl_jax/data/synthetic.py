"""The built-in synthetic face dataset: no files, deterministic per seed.

Subjects each have their own face (identity) and their own way of showing
emotion (a per-action-unit gain and a resting offset). Static images show the
7 FER2013 emotions at graded intensity with nuisance (position, scale,
rotation, lighting, noise, occlusion). Sequences follow a per-subject Markov
chain over (emotion, intensity level) states with dwell times, and frames move
smoothly between expressions (onset ramp, apex, offset), giving paths such as
neutral -> sad -> crying or happy -> excited.

Behaviour traits per sequence are fixed functions of the hidden state path
(see `trait_labels`), so a model that tracks emotion over time can learn them:
  agitation    fraction of frames angry/disgusted at level >= 1 is >= 0.08
  distress     fraction of frames sad/afraid at level >= 1 is >= 0.08
  engagement   fraction of frames happy/surprised (any level) is >= 0.2
  restlessness state changes per frame >= 0.25 (also drawn as head jitter)
(thresholds chosen so each trait holds for roughly 25-50% of sequences)
Splits are subject-disjoint: each subject is in exactly one of train/val/test.
"""

from __future__ import annotations

import numpy as np

from sedl_jax.data import face_render
from sedl_jax.data.types import FaceData, ImageSet, SequenceSet, SPLITS, fingerprint_arrays

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
NEUTRAL = EMOTIONS.index("neutral")
TRAITS = ("agitation", "distress", "engagement", "restlessness")
LEVEL_INTENSITY = np.array([0.45, 0.75, 1.05], np.float32)

# Action-unit prototypes per emotion at full intensity, in AU_NAMES order:
# brow_angle, brow_height, eye_open, mouth_curve, mouth_open, cheek_raise, nose_wrinkle
PROTOTYPES = np.array([
    [-1.0, -0.6, 0.3, -0.3, 0.1, 0.0, 0.2],   # angry
    [-0.4, -0.3, -0.4, -0.6, 0.3, 0.3, 1.0],  # disgust
    [0.8, 0.7, 1.0, -0.3, 0.6, 0.0, 0.0],     # fear
    [0.0, 0.1, -0.1, 1.0, 0.4, 1.0, 0.0],     # happy
    [1.0, -0.2, -0.5, -0.9, 0.0, 0.0, 0.0],   # sad
    [0.1, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0],      # surprise
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],      # neutral
], np.float32)


def _subject_style(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
  """Per-subject AU gain and resting offset: people emote differently."""
  gain = rng.uniform(0.6, 1.4, size=(n, face_render.NUM_AUS)).astype(np.float32)
  offset = rng.normal(0.0, 0.12, size=(n, face_render.NUM_AUS)).astype(np.float32)
  return gain, offset


def _allocate(total: int, weights: np.ndarray) -> np.ndarray:
  """Largest-remainder split of `total` into integer counts proportional to weights."""
  w = np.asarray(weights, np.float64)
  raw = total * w / w.sum()
  counts = np.floor(raw).astype(int)
  order = np.argsort(-(raw - counts), kind="stable")
  counts[order[: total - counts.sum()]] += 1
  return counts


def subject_splits(num_subjects: int, fractions: tuple[float, float, float],
                   seed: int) -> dict[str, np.ndarray]:
  """Subject ids per split, disjoint, each split with at least one subject."""
  if num_subjects < 3:
    raise ValueError(f"data.synthetic.num_subjects={num_subjects}: need >= 3 for train/val/test")
  perm = np.random.default_rng([seed, 7]).permutation(num_subjects)
  counts = np.maximum(_allocate(num_subjects, np.asarray(fractions)), 1)
  while counts.sum() > num_subjects:
    counts[np.argmax(counts)] -= 1
  bounds = np.cumsum(counts)[:-1]
  return {s: np.sort(ids) for s, ids in zip(SPLITS, np.split(perm, bounds))}


class SyntheticFaces:
  """Generator of the synthetic dataset; `cfg` is `config.data.synthetic`."""

  def __init__(self, cfg, image_size: int, channels: int, seed: int):
    self.cfg = cfg
    self.size = int(image_size)
    self.channels = int(channels)
    self.seed = int(seed)
    n = int(cfg.num_subjects)
    rng = np.random.default_rng([self.seed, 1])
    self.identity = face_render.sample_identity(rng, n)
    self.gain, self.offset = _subject_style(rng, n)
    # Each subject leans to some emotions (temperament) in its sequences.
    self.temperament = rng.dirichlet(np.full(len(EMOTIONS) - 1, 0.7), size=n)
    self.num_subjects = n

  def _nuisance(self, rng, n, jitter_scale=1.0):
    c = self.cfg
    return face_render.sample_nuisance(
        rng, n, max_shift=c.max_shift * jitter_scale, scale_range=tuple(c.scale_range),
        max_rotation_deg=c.max_rotation_deg * jitter_scale, light_strength=c.light_strength,
        noise_std=c.noise_std, occlusion_p=c.occlusion_p)

  def expression(self, subject: np.ndarray, emotion: np.ndarray, intensity: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
    """AU vectors [B, NUM_AUS] for subjects showing emotions at intensities."""
    au = PROTOTYPES[emotion] * intensity[:, None] * self.gain[subject] + self.offset[subject]
    au += rng.normal(0.0, self.cfg.au_noise, size=au.shape)
    return au.astype(np.float32)

  def _render(self, subject, aus, nuisance, rng):
    return face_render.render(self.identity.take(subject), aus, nuisance,
                              size=self.size, channels=self.channels, rng=rng)

  def static_images(self, subjects: np.ndarray) -> ImageSet:
    """`images_per_subject` images per subject, classes in `class_weights` proportion."""
    c = self.cfg
    per = int(c.images_per_subject)
    weights = np.asarray(c.class_weights, np.float64)
    imgs, labels, subs = [], [], []
    for s in subjects:
      rng = np.random.default_rng([self.seed, 2, int(s)])
      lab = np.repeat(np.arange(len(EMOTIONS)), _allocate(per, weights))
      lab = rng.permutation(lab)
      lo, hi = c.intensity_range
      inten = rng.uniform(lo, hi, per).astype(np.float32)
      sub = np.full(per, s, np.int32)
      aus = self.expression(sub, lab, inten, rng)
      imgs.append(self._render(sub, aus, self._nuisance(rng, per), rng))
      labels.append(lab.astype(np.int32))
      subs.append(sub)
    return ImageSet(np.concatenate(imgs), np.concatenate(labels), np.concatenate(subs))

  def state_path(self, subject: int, length: int, rng: np.random.Generator):
    """Hidden (emotion, level) per frame from the subject's Markov chain."""
    c = self.cfg
    emo = np.empty(length, np.int32)
    lev = np.empty(length, np.int32)
    e, l = NEUTRAL, 0
    t = 0
    while t < length:
      dwell = 1 + rng.poisson(c.mean_dwell)
      emo[t:t + dwell], lev[t:t + dwell] = e, l
      t += dwell
      r = rng.uniform()
      if e == NEUTRAL:
        e, l = int(rng.choice(len(EMOTIONS) - 1, p=self.temperament[subject])), 0
      elif r < 0.45 and l < 2:
        l += 1  # escalate: sad -> crying, happy -> excited
      elif r < 0.65 and l > 0:
        l -= 1
      elif r < 0.85:
        e, l = NEUTRAL, 0
      else:
        e, l = int(rng.choice(len(EMOTIONS) - 1, p=self.temperament[subject])), 0
    return emo, lev

  def sequences(self, subjects: np.ndarray) -> SequenceSet:
    c = self.cfg
    T, per = int(c.sequence_length), int(c.sequences_per_subject)
    frames, labels, levels, subs = [], [], [], []
    for s in subjects:
      for k in range(per):
        rng = np.random.default_rng([self.seed, 3, int(s), k])
        emo, lev = self.state_path(int(s), T, rng)
        target = PROTOTYPES[emo] * LEVEL_INTENSITY[lev][:, None]
        # Onset/offset: an exponential approach to each new apex over ~2 frames.
        cur = np.zeros(face_render.NUM_AUS, np.float32)
        smooth = np.empty_like(target)
        for t in range(T):
          cur = cur + c.onset_rate * (target[t] - cur)
          smooth[t] = cur
        sub = np.full(T, s, np.int32)
        aus = smooth * self.gain[s] + self.offset[s] + rng.normal(0, c.au_noise * 0.5, smooth.shape)
        # Head pose drifts slowly; restless stretches (many changes) jitter more.
        base = self._nuisance(rng, 1)
        drift = np.cumsum(rng.normal(0, 0.01, (T, 3)), axis=0)
        changes = np.r_[0, (np.diff(emo) != 0) | (np.diff(lev) != 0)].astype(np.float32)
        jitter = rng.normal(0, 1, (T, 3)) * (0.004 + 0.03 * changes)[:, None]
        nz = face_render.Nuisance(
            dx=base.dx + drift[:, 0] + jitter[:, 0], dy=base.dy + drift[:, 1] + jitter[:, 1],
            scale=np.repeat(base.scale, T), rotation=base.rotation + drift[:, 2] + 3 * jitter[:, 2],
            light_angle=np.repeat(base.light_angle, T),
            light_strength=np.repeat(base.light_strength, T),
            noise_std=np.repeat(base.noise_std, T), occluded=np.zeros(T, bool),
            occ_box=np.repeat(base.occ_box, T, axis=0), occ_value=np.repeat(base.occ_value, T))
        frames.append(self._render(sub, aus.astype(np.float32), nz, rng))
        labels.append(emo)
        levels.append(lev)
        subs.append(s)
    frames = np.stack(frames)
    labels = np.stack(labels)
    levels = np.stack(levels)
    return SequenceSet(frames=frames, labels=labels, subjects=np.asarray(subs, np.int32),
                       traits=trait_labels(labels, levels), levels=levels)


def trait_labels(emotions: np.ndarray, levels: np.ndarray) -> np.ndarray:
  """Behaviour traits [S, 4] from hidden paths [S, T] (module docstring)."""
  e = np.asarray(emotions)
  l = np.asarray(levels)
  idx = {n: i for i, n in enumerate(EMOTIONS)}
  strong = l >= 1
  agit = (np.isin(e, [idx["angry"], idx["disgust"]]) & strong).mean(1) >= 0.08
  distress = (np.isin(e, [idx["sad"], idx["fear"]]) & strong).mean(1) >= 0.08
  engage = np.isin(e, [idx["happy"], idx["surprise"]]).mean(1) >= 0.2
  change = ((np.diff(e, axis=1) != 0) | (np.diff(l, axis=1) != 0)).mean(1) >= 0.25
  return np.stack([agit, distress, engage, change], axis=1).astype(np.float32)


def load(data_cfg) -> FaceData:
  """Builds the synthetic dataset described by `config.data`."""
  c = data_cfg.synthetic
  gen = SyntheticFaces(c, data_cfg.image_size, data_cfg.channels, data_cfg.seed)
  splits = subject_splits(gen.num_subjects, tuple(c.split_fractions), data_cfg.seed)
  images = {s: gen.static_images(ids) for s, ids in splits.items()}
  seqs = None
  if int(c.sequences_per_subject) > 0:
    seqs = {s: gen.sequences(ids) for s, ids in splits.items()}
  arrays = [a for s in SPLITS for a in (images[s].images, images[s].labels)]
  if seqs is not None:
    arrays += [a for s in SPLITS for a in (seqs[s].frames, seqs[s].labels)]
  fp = fingerprint_arrays(*arrays)
  return FaceData(source="synthetic", class_names=EMOTIONS, images=images, sequences=seqs,
                  trait_names=TRAITS, fingerprint=fp)
