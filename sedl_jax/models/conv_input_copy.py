"""Stored convolution inputs: the CPU weight gradient transposes a stored activation.

On XLA's CPU backend a convolution's weight gradient reads its input activation
channel-major ([C, H, W, N]), so the backward pass transposes every activation
the forward pass wrote as [N, H, W, C]. XLA fuses the BatchNorm and ReLU that
produced the activation into that transpose, recomputing them there, and the
fused loop runs at about 5 GB/s where a plain transpose runs at 16-34 GB/s
(`bench/layout_transpose.py`, issue 16). `lax.optimization_barrier` does not stop
it: XLA removes the barrier before fusing.

A conditional is a boundary XLA's CPU fusion keeps. `stored` passes a training
activation through `lax.cond` (both branches return it), so the activation is
written once into the conditional's own buffer; the forward convolution reads
it there and the backward pass transposes it with XLA's plain transpose. The
copy costs one pass over memory and saves the slow fused one: the quick
contrastive step ran 8-12% faster on a 2-core AMD EPYC, in alternating bursts in
one process (`bench/torch_ratio.py --with_copy_off`), and the f_phi classifier
step 9%. The values are the forward pass's own, so the weight gradient no longer
depends on how XLA re-evaluates BatchNorm inside the transpose (float32 rounding
only).

It is used only on the CPU, only in training: on a GPU, convolutions read NHWC
without these transposes, and inference has no backward pass.
"""

from __future__ import annotations

# JAX is imported where it is used: launch.py reads SETTINGS before JAX starts.
SETTINGS = ("auto", "off")
_setting = "auto"


def set_setting(setting: str) -> None:
  """`auto` (stored inputs when training on the CPU) or `off` (never); the
  launcher's --cpu_conv_input_copy. Read when a model is built."""
  global _setting
  if setting not in SETTINGS:
    raise ValueError(f"--cpu_conv_input_copy={setting!r}: expected one of {', '.join(SETTINGS)}")
  _setting = setting


def enabled() -> bool:
  """Whether models built now store their training convolution inputs."""
  import jax
  return _setting == "auto" and jax.default_backend() == "cpu"


def in_effect() -> str:
  """For the run's `[devices]` line."""
  return "conv inputs stored" if enabled() else "conv inputs not stored"


def _same(x):
  import jax.numpy as jnp
  # x * 1 is x exactly (signed zeros and NaN too). XLA folds it only after it has
  # kept the conditional; branches that return x unchanged let it drop the
  # conditional, and the copy with it.
  return x * jnp.ones((), x.dtype)


def stored(x, token):
  """x, written once into a buffer of its own that XLA will not fuse through.

  token: any replicated array known only at run time (a convolution kernel). Its
  first element decides the branch, so XLA cannot fold the conditional away;
  both branches return x, so the result never depends on it.
  """
  import jax.numpy as jnp
  from jax import lax
  return lax.cond(jnp.isfinite(token.reshape(-1)[0]), _same, _same, x)
