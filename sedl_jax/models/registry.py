"""Explicit registries: encoder and head names in the config -> modules."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from sedl_jax.models import conv_input_copy, heads, resnet

ENCODERS = {
    "resnet18": functools.partial(resnet.ResNet, stage_sizes=(2, 2, 2, 2)),
    "resnet34": functools.partial(resnet.ResNet, stage_sizes=(3, 4, 6, 3)),
    "resnet_tiny": functools.partial(resnet.ResNet, stage_sizes=(1, 1, 1, 1)),  # tests
}
HEADS = {"mlp": heads.MLPHead, "mlp_bn": heads.MLPBNHead}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# `auto`: bfloat16 compute on an accelerator (its matrix units run bf16 at several
# times the float32 rate), float32 on the CPU (XLA's CPU convolutions are no
# faster in bf16). Parameters, optimiser state, losses and BN statistics are
# float32 either way, so a checkpoint does not depend on where it was trained.
AUTO_DTYPE = {"gpu": "bfloat16", "tpu": "bfloat16"}


def compute_dtype(model_cfg):
  name = model_cfg.dtype
  if name == "auto":
    name = AUTO_DTYPE.get(jax.default_backend(), "float32")
  return DTYPES[name]


def build_encoder(model_cfg) -> resnet.ResNet:
  if model_cfg.encoder not in ENCODERS:
    raise ValueError(f"config.model.encoder={model_cfg.encoder!r}: known {sorted(ENCODERS)}")
  return ENCODERS[model_cfg.encoder](
      width=model_cfg.width, stem=model_cfg.stem, cbam=model_cfg.cbam,
      cbam_reduction=model_cfg.cbam_reduction, dtype=compute_dtype(model_cfg),
      copy_conv_inputs=conv_input_copy.enabled())


def build_projection(model_cfg):
  if model_cfg.head not in HEADS:
    raise ValueError(f"config.model.head={model_cfg.head!r}: known {sorted(HEADS)}")
  return HEADS[model_cfg.head](hidden=model_cfg.proj_hidden, out=model_cfg.proj_dim)
