"""Wall-clock timing shared by the benchmarks."""

import time


def best_time(fn, timings: int = 2, calls: int = 1) -> float:
  """Seconds per call of `fn()`: the best of `timings` timings of `calls` calls
  each, after one warm-up call (the compile). What `fn` returns is waited for, so
  JAX's asynchronous dispatch is inside the timing; many calls per timing keep
  sub-millisecond ops above the clock's and the dispatch's noise."""
  import jax
  jax.block_until_ready(fn())
  best = float("inf")
  for _ in range(timings):
    t0 = time.perf_counter()
    for _ in range(calls):
      out = fn()
    jax.block_until_ready(out)
    best = min(best, (time.perf_counter() - t0) / calls)
  return best
