import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import sedl
from sedl_jax.models import cbam, heads, registry


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_resnet18_parameter_count_is_11_69m():
  model = registry.ENCODERS["resnet18"](width=1.0, stem="imagenet", num_classes=1000)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3))))
  assert _count(shapes["params"]) == 11_689_512  # torchvision resnet18: 11.69M


@pytest.mark.parametrize("stem, size, cbam_on, channels", [
    ("small", 32, False, 1), ("small", 24, True, 3), ("imagenet", 64, True, 3)])
def test_encoder_output_shapes(stem, size, cbam_on, channels):
  model = registry.ENCODERS["resnet_tiny"](width=0.125, stem=stem, cbam=cbam_on)
  x = jnp.ones((2, size, size, channels))
  # Shapes by tracing only (compiling each variant cost 10-16 s on a cold cache);
  # one variant also runs, in train mode, to check the numbers are finite.
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  chex.assert_shape(jax.eval_shape(model.apply, variables, x), (2, 64))
  h, upd = jax.eval_shape(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]),
                          variables, x)
  chex.assert_shape(h, (2, 64))
  assert "batch_stats" in upd
  if (stem, size) == ("small", 32):
    real = jax.jit(model.init)(jax.random.PRNGKey(0), x)
    h, _ = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(real, x)
    chex.assert_tree_all_finite(h)
  has_cbam = any("cbam" in "/".join(str(k) for k in p) for p, _ in
                 jax.tree_util.tree_flatten_with_path(variables["params"])[0])
  assert has_cbam == cbam_on


def test_cbam_gates_shapes_and_spatial_gate_starts_at_half():
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 6, 6, 32))
  gate = cbam.SpatialGate()
  v = gate.init(jax.random.PRNGKey(0), x, train=False)
  np.testing.assert_array_equal(v["params"]["bn"]["scale"], 0.0)
  out = gate.apply(v, x, train=False)
  chex.assert_shape(out, x.shape)
  np.testing.assert_allclose(out, 0.5 * x, rtol=1e-6, atol=1e-7)
  out_train, _ = gate.apply(v, x, train=True, mutable=["batch_stats"])
  np.testing.assert_allclose(out_train, 0.5 * x, rtol=1e-6, atol=1e-7)
  ch = cbam.ChannelGate(reduction=16)
  vc = ch.init(jax.random.PRNGKey(0), x)
  assert vc["params"]["fc1"]["kernel"].shape == (32, 2)
  y = ch.apply(vc, x)
  chex.assert_shape(y, x.shape)
  ratio = np.asarray(y / x)  # one sigmoid weight per (example, channel), in (0, 1)
  assert ratio.min() > 0 and ratio.max() < 1
  np.testing.assert_allclose(ratio, ratio[:, :1, :1, :] * np.ones_like(ratio), rtol=1e-4)


@pytest.mark.parametrize("head", ["mlp", "mlp_bn"])
def test_projection_heads(head):
  cfg = sedl.get_config("tiny").model
  cfg.head = head
  proj = registry.build_projection(cfg)
  h = jnp.ones((4, 64))
  v = proj.init(jax.random.PRNGKey(0), h)
  chex.assert_shape(proj.apply(v, h), (4, cfg.proj_dim))
  bt = heads.BarlowProjector((32, 32, 16))
  vb = bt.init(jax.random.PRNGKey(0), h)
  chex.assert_shape(bt.apply(vb, h), (4, 16))


def test_stored_conv_inputs_change_the_compiled_training_step_not_the_numbers():
  """conv_input_copy (launch.py --cpu_conv_input_copy): the same parameters, the same
  gradients, a conditional (the stored copy) in the training step only."""
  from sedl_jax.models import conv_input_copy
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 16, 16, 3))
  on, off = (registry.ENCODERS["resnet_tiny"](width=0.125, stem="small", copy_conv_inputs=c)
             for c in (True, False))
  variables = on.init(jax.random.PRNGKey(0), x)
  chex.assert_trees_all_equal(variables, off.init(jax.random.PRNGKey(0), x))

  def grad_fn(model):
    def loss(params, x):
      h, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                         train=True, mutable=["batch_stats"])
      return jnp.sum(h ** 2)
    return jax.jit(jax.grad(loss))

  grads, conditionals = {}, {}
  for name, model in (("on", on), ("off", off)):
    fn = grad_fn(model)
    grads[name] = fn(variables["params"], x)
    conditionals[name] = fn.lower(variables["params"], x).compile().as_text().count(" conditional(")
  assert conditionals["on"] > 0 and conditionals["off"] == 0
  # The stored copy holds the forward pass's values; without it XLA recomputes
  # BatchNorm and ReLU inside the transpose, which may round each activation
  # differently by a few ulp (k = 4: subtract, multiply, add, each 1/2 ulp, and
  # slack). Through L = 12 convolutions that is at most 2 L k eps of the gradient.
  a, b = (np.concatenate([np.ravel(g) for g in jax.tree.leaves(grads[n])]) for n in ("on", "off"))
  bound = 2 * 12 * 4 * np.finfo(np.float32).eps
  assert np.linalg.norm(a - b) <= bound * np.linalg.norm(b)
  infer = jax.jit(lambda v, x: on.apply(v, x))
  assert " conditional(" not in infer.lower(variables, x).compile().as_text()
  chex.assert_trees_all_equal(infer(variables, x), jax.jit(lambda v, x: off.apply(v, x))(variables, x))
  # The registry's choice: on the CPU unless the launcher says off.
  assert conv_input_copy.enabled() == (jax.default_backend() == "cpu")
  conv_input_copy.set_setting("off")
  try:
    assert not conv_input_copy.enabled()
    assert not registry.build_encoder(sedl.get_config("tiny").model).copy_conv_inputs
  finally:
    conv_input_copy.set_setting("auto")
  with pytest.raises(ValueError, match="--cpu_conv_input_copy='always'"):
    conv_input_copy.set_setting("always")


def test_polynomial_softplus_is_as_accurate_as_log1p_and_its_derivative_is_the_sigmoid():
  """models/softplus.py (CARD's noise network) against float64 NumPy, on a stride
  through every finite float32. Bound, in float32 epsilons relative: exp 1, the
  fit 0.25, Horner's 9 roundings of values <= 1 over P(e) >= ln 2 = 6.5, the
  product and the sum 1: 10 eps. The derivative: exp, a sum and a quotient: 4 eps.
  Outputs below float32's smallest normal may flush to 0, as jax.nn.softplus's do."""
  from sedl_jax.models.softplus import softplus
  eps, tiny = np.finfo(np.float32).eps, np.finfo(np.float32).tiny
  magnitudes = np.arange(0, 0x7F800000, 4099, dtype=np.int64).astype(np.uint32).view(np.float32)
  x = np.concatenate([-magnitudes[::-1], magnitudes])
  x64 = x.astype(np.float64)
  y = np.asarray(jax.jit(softplus)(x), np.float64)
  dy = np.asarray(jax.jit(jax.vmap(jax.grad(softplus)))(x), np.float64)
  with np.errstate(over="ignore"):
    y_ref, dy_ref = np.logaddexp(x64, 0.0), 1.0 / (1.0 + np.exp(-x64))
  for got, ref, bound in ((y, y_ref, 10 * eps), (dy, dy_ref, 4 * eps)):
    normal = ref >= tiny
    assert np.all(np.abs(got[normal] - ref[normal]) <= bound * ref[normal])
    assert np.all(np.abs(got[~normal] - ref[~normal]) <= tiny)
  # Outputs under epsilon keep their relative accuracy (log(1 + e^x) would give 0).
  assert float(softplus(jnp.float32(-30.0))) == pytest.approx(np.exp(-30.0), rel=10 * float(eps))
  special = np.asarray(softplus(jnp.array([np.inf, -np.inf, np.nan], jnp.float32)))
  assert special[0] == np.inf and special[1] == 0.0 and np.isnan(special[2])
  half = jnp.linspace(-8, 8, 33, dtype=jnp.bfloat16)
  assert softplus(half).dtype == jnp.bfloat16
  # Computed in float32, rounded once: half a bfloat16 ulp (2^-9 relative), and slack.
  np.testing.assert_allclose(np.asarray(softplus(half), np.float64),
                             np.logaddexp(np.asarray(half, np.float64), 0.0), rtol=2 ** -8)
