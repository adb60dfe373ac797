"""The train state and the generic jitted train step shared by every stage."""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training; a plain pytree, so Orbax saves it whole."""

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array
  ema_params: Any = None  # only stages that keep an EMA (CARD)


def create(variables: dict, tx: optax.GradientTransformation, rng: jax.Array,
           ema: bool = False) -> TrainState:
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params),
                    # A copy: the step donates the state, and one buffer cannot be donated twice.
                    rng=rng, ema_params=jax.tree.map(jnp.copy, params) if ema else None)


# loss_fn(params, batch_stats, batch, rng) -> (loss, (new_batch_stats, metrics dict))
LossFn = Callable[[Any, Any, Any, jax.Array], tuple[jax.Array, tuple[Any, dict]]]


def make_train_step(loss_fn: LossFn, tx: optax.GradientTransformation,
                    schedule: Callable[[jax.Array], jax.Array],
                    ema_decay: float | None = None):
  """One optimiser step with health metrics; per-step randomness is fold_in(rng, step)."""

  def train_step(state: TrainState, batch) -> tuple[TrainState, dict]:
    rng = jax.random.fold_in(state.rng, state.step)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, (batch_stats, metrics)), grads = grad_fn(state.params, state.batch_stats, batch, rng)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = state.ema_params
    if ema_decay is not None:
      # Warm-up as TF's ExponentialMovingAverage(num_updates): early on the average
      # follows the parameters instead of remembering the random initialisation.
      decay = jnp.minimum(ema_decay, (1.0 + state.step) / (10.0 + state.step))
      ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)
    metrics = dict(metrics, loss=loss, lr=schedule(state.step),
                   grad_norm=optax.tree.norm(grads), param_norm=optax.tree.norm(params),
                   update_norm=optax.tree.norm(updates))
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              opt_state=opt_state, ema_params=ema)
    return new_state, metrics

  return train_step
