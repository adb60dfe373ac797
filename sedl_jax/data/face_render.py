"""Procedural face drawing in NumPy, vectorised over a batch.

A face is drawn from three groups of parameters, each an array with a leading
batch axis:
  * identity (head shape, skin tone, eye spacing, ...): fixed per subject;
  * expression: action-unit-like values in roughly [-1, 1] (see `AU_NAMES`);
  * nuisance: position, scale, rotation, lighting, noise and occlusion.

Coordinates are in a canvas of [-1, 1] x [-1, 1] with y pointing down (image
rows), so "raised" means a smaller y.
"""

from __future__ import annotations

import dataclasses

import numpy as np

AU_NAMES = (
    "brow_angle",  # > 0 raises the inner ends of the brows (sad, fear)
    "brow_height",  # > 0 lifts both brows (surprise)
    "eye_open",  # > 0 widens the eyes
    "mouth_curve",  # > 0 corners up (smile), < 0 corners down
    "mouth_open",  # > 0 opens the lips
    "cheek_raise",  # > 0 lifts the cheeks and narrows the lower eyelid
    "nose_wrinkle",  # > 0 wrinkles across the nose bridge (disgust)
)
NUM_AUS = len(AU_NAMES)


@dataclasses.dataclass
class Identity:
  """Per-face identity parameters, each shaped [B]."""

  face_w: np.ndarray
  face_h: np.ndarray
  skin_rgb: np.ndarray  # [B, 3]
  background: np.ndarray  # [B]
  eye_spacing: np.ndarray
  eye_size: np.ndarray
  brow_thickness: np.ndarray
  mouth_width: np.ndarray
  mouth_y: np.ndarray
  hair: np.ndarray  # [B] darkness of the hair cap in [0, 1]

  def take(self, idx: np.ndarray) -> "Identity":
    return Identity(**{f.name: getattr(self, f.name)[idx] for f in dataclasses.fields(self)})


@dataclasses.dataclass
class Nuisance:
  """Per-image nuisance parameters, each shaped [B] unless noted."""

  dx: np.ndarray
  dy: np.ndarray
  scale: np.ndarray
  rotation: np.ndarray  # radians
  light_angle: np.ndarray
  light_strength: np.ndarray
  noise_std: np.ndarray
  occluded: np.ndarray  # bool
  occ_box: np.ndarray  # [B, 4] as x0, y0, x1, y1 in canvas units
  occ_value: np.ndarray


def sample_identity(rng: np.random.Generator, n: int) -> Identity:
  skin_base = rng.uniform(0.35, 0.85, size=(n, 1))
  tint = rng.normal(0.0, 1.0, size=(n, 1)) * np.array([[0.08, 0.0, -0.08]])
  return Identity(
      face_w=rng.uniform(0.50, 0.66, n),
      face_h=rng.uniform(0.66, 0.84, n),
      skin_rgb=np.clip(skin_base + tint, 0.1, 0.95),
      background=rng.uniform(0.05, 0.95, n),
      eye_spacing=rng.uniform(0.19, 0.27, n),
      eye_size=rng.uniform(0.075, 0.105, n),
      brow_thickness=rng.uniform(0.028, 0.045, n),
      mouth_width=rng.uniform(0.18, 0.28, n),
      mouth_y=rng.uniform(0.36, 0.46, n),
      hair=rng.uniform(0.0, 1.0, n),
  )


def sample_nuisance(rng: np.random.Generator, n: int, *, max_shift: float,
                    scale_range: tuple[float, float], max_rotation_deg: float,
                    light_strength: float, noise_std: float,
                    occlusion_p: float) -> Nuisance:
  x0 = rng.uniform(-0.9, 0.5, n)
  y0 = rng.uniform(-0.6, 0.6, n)
  w = rng.uniform(0.35, 0.6, n)
  h = rng.uniform(0.3, 0.6, n)
  return Nuisance(
      dx=rng.uniform(-max_shift, max_shift, n),
      dy=rng.uniform(-max_shift, max_shift, n),
      scale=rng.uniform(scale_range[0], scale_range[1], n),
      rotation=np.deg2rad(rng.uniform(-max_rotation_deg, max_rotation_deg, n)),
      light_angle=rng.uniform(0, 2 * np.pi, n),
      light_strength=rng.uniform(0.0, light_strength, n),
      noise_std=rng.uniform(0.0, noise_std, n),
      occluded=rng.uniform(size=n) < occlusion_p,
      occ_box=np.stack([x0, y0, x0 + w, y0 + h], axis=1),
      occ_value=rng.uniform(0.0, 1.0, n),
  )


def _soft(d: np.ndarray, sharp: float) -> np.ndarray:
  """Soft indicator of d > 0 (anti-aliased edge)."""
  return 1.0 / (1.0 + np.exp(-np.clip(d * sharp, -30, 30)))


def _local_coords(nuisance: Nuisance, size: int, col):
  """Canvas coordinates x, y [1, S, S] in [-1, 1] and face-local u, v [B, S, S]
  (translation, rotation and scale undone)."""
  coords = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
  y, x = np.meshgrid(coords, coords, indexing="ij")
  x, y = x[None], y[None]
  cos, sin = col(np.cos(nuisance.rotation)), col(np.sin(nuisance.rotation))
  xs, ys = x - col(nuisance.dx), y - col(nuisance.dy)
  u = (cos * xs + sin * ys) / col(nuisance.scale)
  v = (-sin * xs + cos * ys) / col(nuisance.scale)
  return x, y, u, v


def _eyes_brows_cheeks(identity, au, u, v, sharp, col, dark, light) -> None:
  """Adds both eyes, brows and cheeks to the darkening / brightening layers."""
  es, ez = col(identity.eye_spacing), col(identity.eye_size)
  eye_y = -0.12
  for side in (-1.0, 1.0):
    cx = side * es
    # Eye: an ellipse whose height follows eye openness; cheek raise pushes
    # the lower lid up, so happy eyes narrow from below.
    open_h = ez * np.clip(0.55 + 0.6 * au["eye_open"] - 0.35 * np.maximum(au["cheek_raise"], 0), 0.08, 1.6)
    cy = eye_y - 0.3 * ez * np.maximum(au["cheek_raise"], 0)
    eye = _soft(1.0 - ((u - cx) / (ez * 1.25)) ** 2 - ((v - cy) / open_h) ** 2, sharp * 0.2)
    pupil = _soft(1.0 - ((u - cx) / (ez * 0.5)) ** 2 - ((v - cy) / (ez * 0.5)) ** 2, sharp * 0.2)
    dark += 0.35 * eye + 0.55 * eye * pupil
    # Brow: a thick segment whose inner end rises with brow_angle.
    by = eye_y - 1.9 * ez - 0.14 * au["brow_height"]
    slope = -side * 0.8 * au["brow_angle"]  # inner side is towards u = 0
    line_v = by + slope * (u - cx)
    brow = (_soft(col(identity.brow_thickness) - np.abs(v - line_v), sharp)
            * _soft(ez * 1.6 - np.abs(u - cx), sharp))
    dark += 0.6 * brow
    # Cheek: a brighter blob that rises with cheek_raise.
    ch = _soft(1.0 - ((u - side * 0.3) / 0.14) ** 2 - ((v - 0.16) / 0.09) ** 2, sharp * 0.1)
    light += 0.35 * np.maximum(au["cheek_raise"], 0) * ch


def _nose_and_mouth(identity, au, u, v, sharp, col, dark) -> None:
  """Adds the nose ridge, its wrinkles and the mouth to the darkening layer."""
  nose = _soft(0.012 - np.abs(u), sharp) * _soft(0.13 - np.abs(v - 0.08), sharp)
  dark += 0.25 * nose
  for k in range(3):
    wy = -0.04 + 0.035 * k
    wr = _soft(0.009 - np.abs(v - wy - 0.02 * np.abs(u)), sharp) * _soft(0.08 - np.abs(u), sharp)
    dark += 0.7 * np.maximum(au["nose_wrinkle"], 0) * wr
  # Mouth: a parabola whose corners lift with mouth_curve, opening around it.
  mw, my = col(identity.mouth_width), col(identity.mouth_y)
  m_curve = au["mouth_curve"]
  t = np.clip(u / mw, -1.5, 1.5)
  mid = my + 0.15 * m_curve * (1.0 - t ** 2) - 0.05 * m_curve
  gap = 0.5 * 0.22 * np.clip(au["mouth_open"], 0, 1.2) * np.clip(1.0 - t ** 2, 0, 1)
  inside = _soft(gap - np.abs(v - mid), sharp) * _soft(mw - np.abs(u), sharp)
  lips = _soft(0.022 - np.abs(np.abs(v - mid) - gap), sharp) * _soft(mw * 1.05 - np.abs(u), sharp)
  dark += 0.7 * inside + 0.45 * lips


def _compose(identity, nuisance, face, hair, skin_l, x, y, col, channels, rng) -> np.ndarray:
  """Skin, hair, background, lighting, occlusion and noise -> uint8 [B, S, S, C]."""
  b, size = face.shape[0], face.shape[1]
  bg = col(identity.background)
  # Lighting: a linear gradient across the canvas.
  la = col(nuisance.light_angle)
  shade = 1.0 + col(nuisance.light_strength) * (np.cos(la) * x + np.sin(la) * y)
  out = np.empty((b, size, size, channels), np.float32)
  skin = identity.skin_rgb.astype(np.float32)
  if channels == 1:
    skin = (skin @ np.array([0.299, 0.587, 0.114], np.float32))[:, None]
  for c in range(channels):
    sk = skin[:, c].reshape(b, 1, 1)
    face_val = sk * skin_l * (1 - 0.7 * hair * col(identity.hair))
    out[..., c] = (face * face_val + (1 - face) * bg) * shade
  # Occlusion: a flat patch (a hand, a cup, a mask) over part of the face.
  sharp = size * 1.2
  x0, y0, x1, y1 = (col(nuisance.occ_box[:, i]) for i in range(4))
  occ = col(nuisance.occluded) * _soft(np.minimum.reduce(
      [x - x0, x1 - x, y - y0, y1 - y]), sharp)
  out = out * (1 - occ[..., None]) + occ[..., None] * col(nuisance.occ_value)[..., None]
  out += rng.standard_normal(out.shape, dtype=np.float32) * col(nuisance.noise_std)[..., None]
  return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)



def render(identity: Identity, aus: np.ndarray, nuisance: Nuisance, *,
           size: int, channels: int, rng: np.random.Generator) -> np.ndarray:
  """Draws faces; returns uint8 images [B, size, size, channels]."""
  b = aus.shape[0]
  sharp = size * 1.2  # edge width about one pixel at any resolution
  col = lambda a: np.asarray(a, np.float32).reshape(b, 1, 1)
  x, y, u, v = _local_coords(nuisance, size, col)
  au = {name: col(aus[:, i]) for i, name in enumerate(AU_NAMES)}
  fw, fh = col(identity.face_w), col(identity.face_h)
  # Luminance layers; colour enters through the skin tint at the end.
  face = _soft(1.0 - (u / fw) ** 2 - (v / fh) ** 2, sharp * 0.25)
  hair = face * _soft(-(v + fh * 0.62) - 0.08 * np.cos(u * 6), sharp * 0.5)
  dark = np.zeros_like(u)  # how much each pixel is darkened (features)
  light = np.zeros_like(u)  # how much each pixel is brightened (cheeks)
  _eyes_brows_cheeks(identity, au, u, v, sharp, col, dark, light)
  _nose_and_mouth(identity, au, u, v, sharp, col, dark)
  dark = np.clip(dark, 0, 0.9) * face
  skin_l = np.clip(1.0 - dark + light * face, 0, 1.3)
  return _compose(identity, nuisance, face, hair, skin_l, x, y, col, channels, rng)
