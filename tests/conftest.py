import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Tests run on the CPU, one XLA device per xdist worker (the two workers keep 2 cores busy).
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The end-to-end tests compile the same tiny train steps many times over (every
# resume, eval run, real-data run and subprocess builds its own jitted functions):
# JAX's persistent compilation cache turns those repeats into cache hits, within a
# run and across runs and clones on the same machine. It is shared by both workers
# and the subprocesses (they inherit the variables) and keyed by the computation,
# the compiler flags and the JAX version, so a stale entry is never used.
_CACHE_HOME = os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(_CACHE_HOME, "sedl_jax", "jax_compilation_cache_tests"))
# Every computation, however quick to compile: the subprocesses (kill-drill restarts,
# launcher runs) compile dozens of small ones each, and caching them halved the SEDL
# drill (46 -> 25 s warm; 36 s from an empty cache).
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# The tests' tiny models spend far longer compiling than running: LLVM's backend
# optimisation level 1 compiles about 30% faster than the default 2 (a tiny Barlow
# Twins stage, cold: 27 -> 18 s) at the same step time. (Level 0 halves compile
# time but its code gave NaN gradients at the second Barlow Twins step, where
# levels 1 and 2 agree to float32 rounding: not used.) The subprocesses inherit
# it; it is part of the compilation cache key, so a user's runs are not mixed
# with the tests'. Results stay deterministic for a given setting.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=1"
sys.path.insert(0, ROOT)
from sedl_jax import cpu_kernels, huge_pages, xla_flags  # noqa: E402  (JAX's backend has not started yet)
if TEST_XLA_FLAGS not in os.environ.get("XLA_FLAGS", ""):
  xla_flags.add(TEST_XLA_FLAGS)
# Huge pages for host memory, as the launcher has them (launch.py --host_huge_pages):
# the xdist workers, started after this runs, and every launcher subprocess inherit
# the tunable, so the subprocesses need not run themselves again.
if huge_pages.choose("auto")[0]:
  os.environ.update(huge_pages.with_tunable(os.environ))
# The launcher's CPU convolution kernels (launch.py --cpu_conv_kernels=auto) in this
# process too, so in-process runs compile what the launcher's runs compile.
cpu_kernels.apply(cpu_kernels.choose("auto"))


def child_env(cpu_devices: int | None = None) -> dict:
  """This environment for a subprocess, its XLA CPU device count left to the child
  (`--cpu_devices`) or set to `cpu_devices`; the tests' other XLA flags kept."""
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  if cpu_devices is not None:
    flags.append(f"--xla_force_host_platform_device_count={cpu_devices}")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  if flags:
    env["XLA_FLAGS"] = " ".join(flags)
  return env


# The longest test files first: `pytest -n 2 --dist loadfile --no-loadscope-reorder`
# (`make test`) hands whole files to the two workers in this order, so the long ones
# do not start last and leave one worker idle at the end (longest-first scheduling).
# Without --no-loadscope-reorder xdist sorts files by their number of tests instead:
# the two-process file (2 tests, the longest) ran last and the other worker sat idle
# for its last ~2.5 min (timings in the README's *Tests*).
# From an empty compilation cache, seconds on 2 cores: 319, 222, 205, 127, 111, 63, 35,
# 33, 19; every other file under 16.
LONGEST_FIRST = ("test_multiprocess.py", "test_card_e2e.py", "test_sedl_e2e.py",
                 "test_real_e2e.py", "test_multidevice.py", "test_contrastive_e2e.py",
                 "test_temporal.py", "test_bf16.py", "test_augment.py")


def pytest_collection_modifyitems(session, config, items):
  rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(os.path.basename(str(item.fspath)), len(rank)))
