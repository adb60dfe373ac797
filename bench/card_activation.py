"""What CARD sampling's time is made of on the CPU: the softplus against the rest.

  python bench/card_activation.py --out=bench/results [--rows=6400]
      [--config=quick] [--repeats=20]

Every reverse step of CARD sampling evaluates the noise network's y-branch once
on (images x samples) rows: three gated linear layers, each followed by BatchNorm
and a softplus (`sedl_jax/models/card_net.py`). This times, on one device, at the
quick run's sampling shape (`card.eval_batch_size` 64 images x `card.num_samples`
100 = 6,400 rows, `card.hidden` 128):

  * `eps_step`: one noise-network evaluation, as the reverse chain repeats it,
    with the model's softplus (`sedl_jax/models/softplus.py`: exp and a
    polynomial), and `eps_step_jax_nn_softplus` with `jax.nn.softplus` in its
    place (exp and log1p), alternating, in the same process;
  * `softplus_polynomial`, `jax_nn_softplus`: each on one [rows, hidden] activation;
  * `softplus_log_form`: max(x, 0) + log(1 + exp(-|x|)), which skips log1p and is
    not used: its relative error is 100% for outputs under float32's epsilon;
  * `exp`, `log`, `log1p`: the transcendental parts of a softplus, alone;
  * `relu`: the same array through max(x, 0), the cost of one pass over memory.

Writes `card_activation.json` in --out: ms for each, the share of `eps_step`
spent in its three softplus activations, and the eps-step speed-up.
"""

import os
import sys

from absl import app, flags

import bench_output
import cpu_setup
import timing

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_OUT = flags.DEFINE_string("out", "bench/results", "Output folder for the JSON.")
_CONFIG = flags.DEFINE_string("config", "quick", "configs/card_fer.py variant: its card.* sizes.")
_ROWS = flags.DEFINE_integer("rows", 0, "Rows per evaluation; 0 = eval_batch_size x num_samples.")
_REPEATS = flags.DEFINE_integer("repeats", 20, "Calls per timing; the best of 5 timings is kept.")


def main(argv):
  del argv
  setup = cpu_setup.apply([1], quiet=True)
  import jax
  import jax.numpy as jnp
  import numpy as np
  from configs import card_fer
  from sedl_jax.models import card_net, softplus
  from sedl_jax.models.card_net import NoiseNet

  cfg = card_fer.get_config(f"{_CONFIG.value},ablation=proposed").card
  rows = _ROWS.value or int(cfg.eval_batch_size) * int(cfg.num_samples)
  hidden, nc = int(cfg.hidden), 7
  net = NoiseNet(nc, hidden, int(cfg.timesteps))
  rng = np.random.default_rng(0)
  device = jax.devices()[0]
  put = lambda a: jax.device_put(a, device)
  h = put(rng.normal(size=(rows, hidden)).astype(np.float32))
  y = put(rng.normal(size=(rows, nc)).astype(np.float32))
  t = put(np.full((rows,), int(cfg.timesteps) // 2, np.int32))
  variables = net.init(jax.random.PRNGKey(0), h[:1], y[:1], y[:1], t[:1])
  x_feat = put(rng.normal(size=(rows, hidden)).astype(np.float32))
  positive = put(rng.uniform(0.0, 1.0, (rows, hidden)).astype(np.float32))
  def eps_with(activation):
    # card_net looks its softplus up at trace time, so swapping the module's name
    # while tracing builds the same network with the other activation.
    def traced(v, x, y, t):
      kept, card_net.softplus = card_net.softplus, activation
      try:
        return net.apply(v, x, y, y, t, method=NoiseNet.eps_from_x)
      finally:
        card_net.softplus = kept
    return jax.jit(traced)

  eps_steps = {"eps_step": eps_with(softplus.softplus),
               "eps_step_jax_nn_softplus": eps_with(jax.nn.softplus)}
  ops = {
      "softplus_polynomial": softplus.softplus,
      "jax_nn_softplus": jax.nn.softplus,
      "softplus_log_form": lambda x: jnp.maximum(x, 0.0) + jnp.log(1.0 + jnp.exp(-jnp.abs(x))),
      "exp": jnp.exp,
      "log": jnp.log,
      "log1p": jnp.log1p,
      "relu": jax.nn.relu,
  }
  rounds = {name: [] for name in eps_steps}
  for _ in range(5):  # alternating, so both see the same machine
    for name, fn in eps_steps.items():
      rounds[name].append(1e3 * timing.best_time(lambda: fn(variables, x_feat, y, t), timings=1,
                                                  calls=_REPEATS.value))
  timings = {name: float(np.min(ms)) for name, ms in rounds.items()}
  for name, fn in ops.items():
    jitted = jax.jit(fn)
    # exp and softplus of values in [0, 1) cost what they cost anywhere; log needs x > 0.
    timings[name] = 1e3 * timing.best_time(lambda: jitted(positive), timings=5,
                                           calls=_REPEATS.value)
  result = {
      "benchmark": "card_activation",
      "backend": jax.default_backend(),
      "rows": rows,
      "hidden": hidden,
      **setup,
      **bench_output.machine(),
      "ms": timings,
      "softplus_share_of_eps_step": 3 * timings["softplus_polynomial"] / timings["eps_step"],
      "jax_nn_softplus_share_of_its_eps_step":
          3 * timings["jax_nn_softplus"] / timings["eps_step_jax_nn_softplus"],
      "eps_step_speedup_paired_median": float(np.median(
          np.array(rounds["eps_step_jax_nn_softplus"]) / np.array(rounds["eps_step"]))),
  }
  bench_output.write(_OUT.value, "card_activation", result)


if __name__ == "__main__":
  app.run(main)
