"""On-device augmentation in JAX, one example at a time, vmapped over keys.

Every op takes and returns float32 images [H, W, C] in [0, 1]. `augment_batch`
turns a uint8 batch into one augmented view whose parameters come from a view
config (`sedl_jax.config.defaults.view`), so asymmetric views (Barlow Twins)
are two configs, not two code paths. Randomness is per example: the batch key
is split into one key per image.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# NumPy, not jnp: a module-level JAX array would start the backend at import time,
# before launch.py can call jax.distributed.initialize().
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


class View(NamedTuple):
  """Hashable view parameters (static under jit); see `defaults.view`."""

  crop_area: tuple[float, float]
  crop_aspect: tuple[float, float]
  flip_p: float
  jitter_p: float
  brightness: float
  contrast: float
  saturation: float
  hue: float
  gray_p: float
  blur_p: float
  blur_sigma: tuple[float, float]
  blur_kernel_frac: float
  noise_p: float
  noise_std: float
  solarize_p: float
  solarize_threshold: float
  # Fields added later default to "off", so a run's saved config without them
  # rebuilds the same view.
  rotate_deg: float = 0.0
  erase_p: float = 0.0
  erase_area: tuple[float, float] = (0.02, 0.2)
  erase_aspect: tuple[float, float] = (0.3, 3.3)

  @classmethod
  def from_config(cls, cfg) -> "View":
    vals = {}
    for name in cls._fields:
      if name not in cfg and name in cls._field_defaults:
        continue
      v = cfg[name]
      vals[name] = tuple(float(x) for x in v) if isinstance(v, (tuple, list)) else float(v)
    return cls(**vals)


def to_float(images_u8: jax.Array) -> jax.Array:
  return images_u8.astype(jnp.float32) / 255.0


def grayscale(img: jax.Array) -> jax.Array:
  if img.shape[-1] == 1:
    return img
  g = img @ _LUMA
  return jnp.repeat(g[..., None], img.shape[-1], axis=-1)


def resized_crop(img: jax.Array, box: jax.Array, out_size: int,
                 mirrored: jax.Array | bool = False, angle: jax.Array | None = None) -> jax.Array:
  """Bilinear crop of box = (y0, x0, h, w) in pixels, resized to out_size^2.

  Output pixel i samples the source at y0 + (i + 0.5) h / out - 0.5, so the
  full-image box at the same size samples exactly the pixel centres (identity).
  mirrored: sample the columns right to left, which is `flip` of the crop exactly,
  without a pass of its own (under vmap a `flip` computes the crop for both
  branches of its select).
  angle: radians; the sampling grid turns about the box centre, so the crop
  shows the content rotated by -angle (counter-clockwise for angle > 0 on
  screen), in the same single interpolation pass; the border repeats edge pixels.
  """
  y0, x0, h, w = box[0], box[1], box[2], box[3]
  i = jnp.arange(out_size, dtype=jnp.float32) + 0.5
  ys = y0 + i * h / out_size - 0.5
  xs = x0 + i * w / out_size - 0.5
  xs = jnp.where(mirrored, xs[::-1], xs)
  yy, xx = jnp.meshgrid(ys, xs, indexing="ij")
  if angle is not None:
    cy, cx = y0 + h / 2 - 0.5, x0 + w / 2 - 0.5
    c, s = jnp.cos(angle), jnp.sin(angle)
    dy, dx = yy - cy, xx - cx
    yy, xx = cy + c * dy + s * dx, cx - s * dy + c * dx

  def one_channel(c):
    return jax.scipy.ndimage.map_coordinates(c, [yy, xx], order=1, mode="nearest")

  return jnp.moveaxis(jax.vmap(one_channel, in_axes=-1)(img), 0, -1)


def random_crop_box(key: jax.Array, height: int, width: int, area: tuple[float, float],
                    aspect: tuple[float, float]) -> jax.Array:
  """Inception-style box: area fraction and log-uniform aspect, clipped to the image."""
  k1, k2, k3, k4 = jax.random.split(key, 4)
  frac = jax.random.uniform(k1, minval=area[0], maxval=area[1])
  log_r = jax.random.uniform(k2, minval=jnp.log(aspect[0]), maxval=jnp.log(aspect[1]))
  ratio = jnp.exp(log_r)
  a = frac * height * width
  w = jnp.clip(jnp.sqrt(a * ratio), 1.0, width)
  h = jnp.clip(jnp.sqrt(a / ratio), 1.0, height)
  y0 = jax.random.uniform(k3) * (height - h)
  x0 = jax.random.uniform(k4) * (width - w)
  return jnp.stack([y0, x0, h, w])


def flip(img: jax.Array, do: jax.Array) -> jax.Array:
  return jnp.where(do, img[:, ::-1, :], img)


def adjust_brightness(img, factor):
  return jnp.clip(img * factor, 0.0, 1.0)


def adjust_contrast(img, factor):
  mean = jnp.mean(grayscale(img)[..., :1])
  return jnp.clip((img - mean) * factor + mean, 0.0, 1.0)


def adjust_saturation(img, factor):
  g = grayscale(img)
  return jnp.clip(g + (img - g) * factor, 0.0, 1.0)


def adjust_hue(img, shift):
  """Rotates chroma in YIQ space by `shift` turns (a no-op on grey images)."""
  if img.shape[-1] == 1:
    return img
  to_yiq = jnp.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322],
                      [0.211, -0.523, 0.312]], jnp.float32)
  yiq = img @ to_yiq.T
  th = 2.0 * jnp.pi * shift
  c, s = jnp.cos(th), jnp.sin(th)
  i = yiq[..., 1] * c - yiq[..., 2] * s
  q = yiq[..., 1] * s + yiq[..., 2] * c
  rgb = jnp.stack([yiq[..., 0], i, q], axis=-1) @ jnp.linalg.inv(to_yiq).T
  return jnp.clip(rgb, 0.0, 1.0)


def color_jitter(key, img, brightness, contrast, saturation, hue):
  """SimCLR colour jitter: the four ops in random order, clipped after each."""
  kb, kc, ks, kh, kp = jax.random.split(key, 5)
  fb = jax.random.uniform(kb, minval=1 - brightness, maxval=1 + brightness)
  fc = jax.random.uniform(kc, minval=1 - contrast, maxval=1 + contrast)
  fs = jax.random.uniform(ks, minval=1 - saturation, maxval=1 + saturation)
  fh = jax.random.uniform(kh, minval=-hue, maxval=hue)
  ops = [lambda x: adjust_brightness(x, fb), lambda x: adjust_contrast(x, fc),
         lambda x: adjust_saturation(x, fs), lambda x: adjust_hue(x, fh)]
  for op_index in jax.random.permutation(kp, 4):
    img = jax.lax.switch(op_index, ops, img)
  return img


def gaussian_kernel(sigma: jax.Array, radius: int) -> jax.Array:
  x = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  k = jnp.exp(-0.5 * (x / jnp.maximum(sigma, 1e-6)) ** 2)
  return k / jnp.sum(k)


def gaussian_blur(img: jax.Array, sigma: jax.Array, radius: int) -> jax.Array:
  """Separable blur with reflect padding; radius is static, sigma traced."""
  if radius < 1:
    return img
  k = gaussian_kernel(sigma, radius)
  pad = jnp.pad(img, ((radius, radius), (0, 0), (0, 0)), mode="reflect")
  h = img.shape[0]
  img = sum(k[i] * pad[i:i + h] for i in range(2 * radius + 1))
  pad = jnp.pad(img, ((0, 0), (radius, radius), (0, 0)), mode="reflect")
  w = img.shape[1]
  return sum(k[i] * pad[:, i:i + w] for i in range(2 * radius + 1))


def blur_radius(size: int, kernel_frac: float) -> int:
  """Kernel about `kernel_frac` of the side, odd: radius = kernel // 2."""
  kernel = max(3, int(round(size * kernel_frac)) | 1)
  return kernel // 2


# SimCLR / Barlow Twins state blur sigma in pixels of a 224-pixel image; the same
# numbers at 48 pixels would blur about 5x harder relative to the face.
BLUR_REFERENCE_SIZE = 224


def blur_sigma_pixels(sigma_224, out_size: int):
  """A sigma given for a 224-pixel image, in pixels of an `out_size` image."""
  return sigma_224 * (out_size / BLUR_REFERENCE_SIZE)


def add_noise(key, img, std):
  return jnp.clip(img + std * jax.random.normal(key, img.shape), 0.0, 1.0)


def solarize(img, threshold):
  return jnp.where(img >= threshold, 1.0 - img, img)


def random_erase(key: jax.Array, img: jax.Array, area: tuple[float, float],
                 aspect: tuple[float, float]) -> jax.Array:
  """Random erasing (Zhong et al. 2020): one rectangle of `area` x the image's
  area and log-uniform `aspect` (h / w), clipped to the image, filled with
  uniform noise in [0, 1]."""
  size_h, size_w = img.shape[0], img.shape[1]
  box = random_crop_box(key, size_h, size_w, area, aspect)
  y0, x0, h, w = box[0], box[1], box[2], box[3]
  ys = jnp.arange(size_h, dtype=jnp.float32)[:, None, None] + 0.5
  xs = jnp.arange(size_w, dtype=jnp.float32)[None, :, None] + 0.5
  inside = (ys >= y0) & (ys < y0 + h) & (xs >= x0) & (xs < x0 + w)
  noise = jax.random.uniform(jax.random.fold_in(key, 1), img.shape)
  return jnp.where(inside, noise, img)


def augment_one(key: jax.Array, img: jax.Array, view: Any, out_size: int) -> jax.Array:
  """One random view of one float image [H, W, C] -> [out_size, out_size, C]."""
  keys = jax.random.split(key, 12)
  h, w = img.shape[0], img.shape[1]

  def coin(k, p):
    return jax.random.uniform(k) < p

  box = random_crop_box(keys[0], h, w, tuple(view.crop_area), tuple(view.crop_aspect))
  angle = None
  if view.rotate_deg > 0:  # static: views without rotation keep their programs
    max_rad = float(np.deg2rad(view.rotate_deg))
    angle = jax.random.uniform(jax.random.fold_in(keys[10], 0), minval=-max_rad, maxval=max_rad)
  img = resized_crop(img, box, out_size, mirrored=coin(keys[1], view.flip_p), angle=angle)
  jittered = color_jitter(keys[2], img, view.brightness, view.contrast, view.saturation, view.hue)
  img = jnp.where(coin(keys[3], view.jitter_p), jittered, img)
  img = jnp.where(coin(keys[4], view.gray_p), grayscale(img), img)
  sigma = blur_sigma_pixels(
      jax.random.uniform(keys[5], minval=view.blur_sigma[0], maxval=view.blur_sigma[1]), out_size)
  blurred = gaussian_blur(img, sigma, blur_radius(out_size, view.blur_kernel_frac))
  img = jnp.where(coin(keys[6], view.blur_p), blurred, img)
  img = jnp.where(coin(keys[7], view.noise_p), add_noise(keys[8], img, view.noise_std), img)
  img = jnp.where(coin(keys[9], view.solarize_p), solarize(img, view.solarize_threshold), img)
  if view.erase_p > 0:  # static, as rotation
    k_coin, k_box = jax.random.split(keys[11])
    erased = random_erase(k_box, img, tuple(view.erase_area), tuple(view.erase_aspect))
    img = jnp.where(coin(k_coin, view.erase_p), erased, img)
  return img


def augment_batch(key: jax.Array, images_u8: jax.Array, view: Any,
                  out_size: int | None = None) -> jax.Array:
  """uint8 [B, H, W, C] -> float32 [B, S, S, C] in [0, 1], independent per example."""
  out_size = out_size or images_u8.shape[1]
  keys = jax.random.split(key, images_u8.shape[0])
  fn = lambda k, x: augment_one(k, x, view, out_size)
  return jax.vmap(fn)(keys, to_float(images_u8))


def normalize(images: jax.Array) -> jax.Array:
  """[0, 1] -> roughly zero-mean unit-scale model input (per-channel constants)."""
  return (images - 0.5) / 0.25
