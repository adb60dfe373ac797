import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sedl_jax.config import defaults
from sedl_jax.data import augment

KEY = jax.random.PRNGKey(0)


def _img(c=3, size=24, seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(size=(size, size, c)), jnp.float32)


OPS = {
    "crop": lambda img: augment.resized_crop(img, jnp.array([2.0, 3.0, 15.0, 12.0]), 20),
    "flip": lambda img: augment.flip(img, jnp.array(True)),
    "brightness": lambda img: augment.adjust_brightness(img, 1.5),
    "contrast": lambda img: augment.adjust_contrast(img, 1.7),
    "saturation": lambda img: augment.adjust_saturation(img, 1.8),
    "hue": lambda img: augment.adjust_hue(img, 0.3),
    "jitter": lambda img: augment.color_jitter(KEY, img, 0.8, 0.8, 0.8, 0.2),
    "gray": augment.grayscale,
    "blur": lambda img: augment.gaussian_blur(img, jnp.float32(1.5), 3),
    "noise": lambda img: augment.add_noise(KEY, img, 0.3),
    "solarize": lambda img: augment.solarize(img, 0.5),
}


@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("channels", [1, 3])
def test_op_keeps_range_dtype_shape(name, channels):
  img = _img(channels)
  out = jax.jit(OPS[name])(img)
  chex.assert_type(out, jnp.float32)
  expected = (20, 20, channels) if name == "crop" else img.shape
  chex.assert_shape(out, expected)
  assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
  chex.assert_tree_all_finite(out)


def test_flip_twice_is_identity():
  img = _img()
  t = jnp.array(True)
  np.testing.assert_array_equal(augment.flip(augment.flip(img, t), t), img)
  assert not np.allclose(augment.flip(img, t), img)


def test_blur_tiny_sigma_is_identity_and_matches_numpy():
  img = _img()
  np.testing.assert_allclose(augment.gaussian_blur(img, jnp.float32(1e-3), 3), img, atol=1e-6)
  # numpy reference: separable Gaussian with reflect padding
  sigma, r = 1.2, 2
  x = np.arange(-r, r + 1)
  k = np.exp(-0.5 * (x / sigma) ** 2)
  k /= k.sum()
  a = np.asarray(img)
  p = np.pad(a, ((r, r), (0, 0), (0, 0)), mode="reflect")
  a = sum(k[i] * p[i:i + a.shape[0]] for i in range(2 * r + 1))
  p = np.pad(a, ((0, 0), (r, r), (0, 0)), mode="reflect")
  a = sum(k[i] * p[:, i:i + a.shape[1]] for i in range(2 * r + 1))
  np.testing.assert_allclose(augment.gaussian_blur(img, jnp.float32(sigma), r), a, atol=1e-5)


def test_identity_factors():
  img = _img()
  np.testing.assert_allclose(augment.adjust_brightness(img, 1.0), img, atol=1e-7)
  np.testing.assert_allclose(augment.adjust_contrast(img, 1.0), img, atol=1e-6)
  np.testing.assert_allclose(augment.adjust_saturation(img, 1.0), img, atol=1e-6)
  np.testing.assert_allclose(augment.adjust_hue(img, 0.0), img, atol=1e-5)
  grey = _img(1)
  np.testing.assert_array_equal(augment.adjust_hue(grey, 0.3), grey)


def test_full_area_crop_at_same_size_is_identity():
  img = _img(size=17)
  out = augment.resized_crop(img, jnp.array([0.0, 0.0, 17.0, 17.0]), 17)
  np.testing.assert_allclose(out, img, atol=1e-6)


def test_grayscale_has_equal_channels_and_solarize_is_involution_above_threshold():
  g = augment.grayscale(_img())
  np.testing.assert_allclose(g[..., 0], g[..., 2], atol=1e-7)
  img = _img()
  s = augment.solarize(img, 0.5)
  np.testing.assert_allclose(jnp.where(img >= 0.5, 1 - s, s), img, atol=1e-7)


def test_crop_box_within_image_and_area_range():
  boxes = jax.vmap(lambda k: augment.random_crop_box(k, 32, 32, (0.3, 1.0), (0.75, 4 / 3)))(
      jax.random.split(KEY, 256))
  y0, x0, h, w = np.asarray(boxes).T
  assert (y0 >= 0).all() and (x0 >= 0).all()
  assert (y0 + h <= 32 + 1e-4).all() and (x0 + w <= 32 + 1e-4).all()
  area = h * w / 32 ** 2
  assert area.min() >= 0.3 * 0.7 and area.max() <= 1.0 + 1e-5


def test_augment_batch_is_independent_per_example_and_deterministic():
  view = augment.View.from_config(defaults.view())
  one = (np.random.default_rng(0).uniform(size=(20, 20, 3)) * 255).astype(np.uint8)
  batch = jnp.asarray(np.stack([one] * 4))
  fn = jax.jit(augment.augment_batch, static_argnums=(2, 3))
  a = fn(KEY, batch, view, 16)
  chex.assert_shape(a, (4, 16, 16, 3))
  assert float(jnp.abs(a[0] - a[1]).mean()) > 1e-3  # same image, different views
  np.testing.assert_array_equal(a, fn(KEY, batch, view, 16))


def test_asymmetric_views_differ_by_config_only():
  cfg = defaults.barlow("quick")
  v1, v2 = (augment.View.from_config(v) for v in cfg.views)
  assert v1.blur_p == 1.0 and v2.blur_p == 0.1
  assert v1.solarize_p == 0.0 and v2.solarize_p == 0.2
  # with p = 1 for solarize and nothing else, the view equals the op
  plain = augment.View.from_config(defaults.view(
      crop_area=(1.0, 1.0), crop_aspect=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, gray_p=0.0,
      blur_p=0.0, noise_p=0.0, solarize_p=1.0))
  img = (np.random.default_rng(1).uniform(size=(1, 12, 12, 1)) * 255).astype(np.uint8)
  out = augment.augment_batch(KEY, jnp.asarray(img), plain)
  np.testing.assert_allclose(out, augment.solarize(augment.to_float(img), 0.5), atol=1e-6)


def test_mirrored_crop_is_the_flipped_crop_exactly():
  """augment_one folds the flip into the crop's sampling columns."""
  img, box = _img(size=30), jnp.array([2.5, 3.25, 21.0, 17.5])
  crop = augment.resized_crop(img, box, 20)
  np.testing.assert_array_equal(augment.resized_crop(img, box, 20, jnp.array(True)),
                                augment.flip(crop, jnp.array(True)))
  np.testing.assert_array_equal(augment.resized_crop(img, box, 20, jnp.array(False)), crop)
