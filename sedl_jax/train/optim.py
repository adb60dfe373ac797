"""optax optimisers and schedules from `config.<stage>.optimizer`."""

from __future__ import annotations

import jax
import optax


def decay_mask(params):
  """True for weights (kernels, embeddings); False for biases and norm parameters."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def make_schedule(opt_cfg, total_steps: int, steps_per_epoch: int, lr_scale: float = 1.0):
  peak = opt_cfg.lr * lr_scale
  warmup = int(round(opt_cfg.warmup_epochs * steps_per_epoch))
  warmup = min(warmup, max(total_steps - 1, 0))
  if opt_cfg.schedule == "cosine":
    if warmup > 0:
      return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, max(total_steps, warmup + 1), 0.0)
    return optax.cosine_decay_schedule(peak, max(total_steps, 1))
  if opt_cfg.schedule == "constant":
    if warmup > 0:
      return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup),
                                   optax.constant_schedule(peak)], [warmup])
    return optax.constant_schedule(peak)
  raise ValueError(f"optimizer.schedule={opt_cfg.schedule!r}: expected 'cosine' or 'constant'")


def _base(opt_cfg, schedule):
  name, wd = opt_cfg.name, opt_cfg.weight_decay
  if name in ("adam", "adamw"):
    return optax.adamw(schedule, weight_decay=wd, mask=decay_mask)
  if name == "sgd":
    return optax.chain(optax.add_decayed_weights(wd, decay_mask),
                       optax.sgd(schedule, momentum=opt_cfg.momentum,
                                 nesterov=bool(opt_cfg.get("nesterov", False))))
  if name == "lars":
    # Biases and norm parameters are excluded from decay and from the trust ratio.
    return optax.lars(schedule, weight_decay=wd, weight_decay_mask=decay_mask,
                      trust_coefficient=opt_cfg.lars_eta, momentum=opt_cfg.momentum,
                      trust_ratio_mask=decay_mask)
  raise ValueError(f"optimizer.name={name!r}: expected one of adam, adamw, sgd, lars")


def make_optimizer(opt_cfg, total_steps: int, steps_per_epoch: int, lr_scale: float = 1.0):
  """Returns (tx, schedule). `bias_lr_scale` != 1 gives biases / norms their own lr."""
  schedule = make_schedule(opt_cfg, total_steps, steps_per_epoch, lr_scale)
  if opt_cfg.bias_lr_scale != 1.0:
    bias_schedule = make_schedule(opt_cfg, total_steps, steps_per_epoch,
                                  lr_scale * opt_cfg.bias_lr_scale)
    labels = lambda params: jax.tree.map(lambda p: "w" if p.ndim > 1 else "b", params)
    tx = optax.multi_transform({"w": _base(opt_cfg, schedule), "b": _base(opt_cfg, bias_schedule)},
                               labels)
  else:
    tx = _base(opt_cfg, schedule)
  encoder_scale = float(opt_cfg.get("encoder_lr_scale", 1.0))
  if encoder_scale != 1.0:
    tx = optax.chain(tx, scale_encoder_updates(encoder_scale))
  if opt_cfg.grad_clip > 0:
    tx = optax.chain(optax.clip_by_global_norm(opt_cfg.grad_clip), tx)
  return tx, schedule


def scale_encoder_updates(scale: float) -> optax.GradientTransformation:
  """Multiplies the updates of the `encoder` subtree: after the optimiser, this
  is the encoder's learning rate (and decoupled weight decay) x `scale`, as
  fine-tuning a pretrained encoder under a fresh head wants."""

  def update(updates, state, params=None):
    del params
    return {k: (jax.tree.map(lambda u: u * scale, v) if k == "encoder" else v)
            for k, v in updates.items()}, state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def resolve_steps(stage_cfg, num_examples: int, global_batch: int) -> tuple[int, int]:
  """(total_steps, steps_per_epoch): `steps` when > 0, else epochs x steps per
  epoch, raised to `min_steps` and lowered to `max_steps` (each when > 0)."""
  steps_per_epoch = max(1, num_examples // global_batch)
  if stage_cfg.steps > 0:
    return int(stage_cfg.steps), steps_per_epoch
  total = int(stage_cfg.epochs * steps_per_epoch)
  if total > 0:  # epochs=0 means no training (a stage that only takes a pretrained model)
    low, high = int(stage_cfg.get("min_steps", 0)), int(stage_cfg.get("max_steps", 0))
    total = max(total, low)
    total = min(total, high) if high > 0 else total
  return total, steps_per_epoch


def describe_length(stage_cfg, num_examples: int, global_batch: int) -> str:
  """How the stage length was chosen, in words (printed at the start of a stage)."""
  total, per_epoch = resolve_steps(stage_cfg, num_examples, global_batch)
  if stage_cfg.steps > 0:
    return f"{total} steps (steps={stage_cfg.steps})"
  given = int(stage_cfg.epochs * per_epoch)
  text = (f"{total} steps = {total / per_epoch:.3g} epochs of {num_examples} examples "
          f"at batch {global_batch}")
  if total > given:
    text += f" (epochs={stage_cfg.epochs} gives {given}; raised to min_steps={total})"
  elif total < given:
    text += f" (epochs={stage_cfg.epochs} gives {given}; lowered to max_steps={total})"
  return text
