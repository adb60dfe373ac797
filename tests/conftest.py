import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Tests run on the CPU, one XLA device per xdist worker (the two workers keep 2 cores busy).
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The end-to-end tests compile the same tiny train steps many times over (every
# resume, eval run, real-data run and subprocess builds its own jitted functions):
# JAX's persistent compilation cache turns those repeats into cache hits. It is
# shared by both workers and the subprocesses (they inherit the variables) and
# keyed by the computation itself, so stale entries are never used.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(ROOT, ".pytest_cache", "jax_compilation_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
sys.path.insert(0, ROOT)
