"""Process start-up: nothing starts a JAX backend at import, the distributed plan
read from the environment, the XLA CPU device count and convolution kernels, the
persistent compilation cache, huge pages for host memory."""

import os
import subprocess
import sys

import pytest

import conftest
from sedl_jax import compile_cache, cpu_devices, cpu_kernels, distributed, huge_pages

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

IMPORT_ALL = r'''
import importlib, pkgutil, sedl_jax
for m in pkgutil.walk_packages(sedl_jax.__path__, "sedl_jax."):
  importlib.import_module(m.name)
import configs.sedl, configs.card_fer
from jax._src import xla_bridge
print("BACKEND_STARTED", xla_bridge.backends_are_initialized())
'''


def test_importing_every_module_starts_no_backend():
  """jax.distributed.initialize() must come before any backend: a module-level
  JAX array anywhere in the package would break multi-process start-up."""
  out = subprocess.run([sys.executable, "-c", IMPORT_ALL], cwd=ROOT, capture_output=True,
                       text=True, timeout=300, env=dict(os.environ, PYTHONPATH=ROOT))
  assert out.returncode == 0, out.stderr[-2000:]
  assert "BACKEND_STARTED False" in out.stdout


JAX_ENV = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "2",
           "JAX_PROCESS_ID": "1"}


@pytest.mark.parametrize("env, mode, expected", [
    ({}, "auto", None),
    (JAX_ENV, "auto", {"coordinator_address": "10.0.0.1:1234", "num_processes": 2, "process_id": 1}),
    (JAX_ENV, "off", None),
    (dict(JAX_ENV, JAX_NUM_PROCESSES="1", JAX_PROCESS_ID="0"), "auto", None),
    # A plain `python` inside a SLURM allocation of one task is not a multi-process run.
    ({"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}, "auto", None),
    ({"SLURM_NTASKS": "2", "SLURM_PROCID": "0"}, "auto", {}),
    ({"SLURM_NTASKS": "2", "SLURM_PROCID": "0"}, "off", None),
    ({"OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_RANK": "3"}, "auto", {}),
    ({"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}, "on", {}),
])
def test_distributed_plan(env, mode, expected):
  assert distributed.plan(mode, env) == expected


@pytest.mark.parametrize("env, mode, named", [
    (dict(JAX_ENV, JAX_NUM_PROCESSES="two"), "auto", "JAX_NUM_PROCESSES='two'"),
    (dict(JAX_ENV, JAX_PROCESS_ID="2"), "auto", "JAX_PROCESS_ID=2"),
    (dict(JAX_ENV, JAX_COORDINATOR_ADDRESS="nohost"), "auto", "JAX_COORDINATOR_ADDRESS='nohost'"),
    ({"JAX_COORDINATOR_ADDRESS": "h:1"}, "auto", "JAX_NUM_PROCESSES, JAX_PROCESS_ID"),
    ({"SLURM_NTASKS": "x"}, "auto", "SLURM_NTASKS='x'"),
    ({}, "on", "--distributed=on"),
])
def test_malformed_environment_names_the_variable(env, mode, named):
  with pytest.raises(distributed.DistributedConfigError, match=named.replace("(", r"\(")):
    distributed.plan(mode, env)


def test_launcher_exits_2_naming_a_malformed_variable(tmp_path):
  env = dict(os.environ, JAX_COORDINATOR_ADDRESS="127.0.0.1:1", JAX_NUM_PROCESSES="2",
             JAX_PROCESS_ID="x", PYTHONPATH=ROOT)
  out = subprocess.run([sys.executable, "launch.py", "--config=configs/sedl.py:tiny",
                        f"--workdir={tmp_path}"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=120)
  assert out.returncode == 2 and "JAX_PROCESS_ID='x'" in out.stderr, out.stderr[-2000:]


def test_launcher_exits_2_when_the_compilation_cache_is_a_file(tmp_path):
  (tmp_path / "f").write_text("")
  out = subprocess.run([sys.executable, "launch.py", "--config=configs/sedl.py:tiny",
                        f"--workdir={tmp_path}", f"--compilation_cache={tmp_path / 'f'}"],
                       cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True,
                       text=True, timeout=120)
  assert out.returncode == 2 and "is a file, not a folder" in out.stderr, out.stderr[-2000:]


CPUINFO = "processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: sse2 avx2 fma\n\nprocessor\t: 1\n"


def test_compilation_cache_folder(tmp_path):
  assert compile_cache.resolve("off", {}) is None
  assert compile_cache.resolve(str(tmp_path / "c"), {}) == str(tmp_path / "c")
  assert compile_cache.resolve("auto", {compile_cache.ENV: "/x/y"}) == "/x/y"  # the user's
  auto = compile_cache.resolve("auto", {"XDG_CACHE_HOME": "/h"}, CPUINFO)
  assert auto == os.path.join("/h", "sedl_jax", "jax_compilation_cache",
                              compile_cache.host_cpu_key(CPUINFO))
  # One folder per CPU: another model or feature set gets its own, flag order does not.
  assert compile_cache.host_cpu_key(CPUINFO) == compile_cache.host_cpu_key(
      CPUINFO.replace("sse2 avx2 fma", "fma sse2 avx2"))
  assert compile_cache.host_cpu_key(CPUINFO) != compile_cache.host_cpu_key(
      CPUINFO.replace("avx2 ", "avx2 avx512f "))
  assert compile_cache.host_cpu_key(CPUINFO) != compile_cache.host_cpu_key(
      CPUINFO.replace("Some CPU", "Other CPU"))
  (tmp_path / "f").write_text("")
  for bad, says in ((str(tmp_path / "f"), "is a file"), ("", "empty")):
    with pytest.raises(ValueError, match=says):
      compile_cache.resolve(bad, {})


CACHED_JIT = r'''
import sys
from sedl_jax import compile_cache
compile_cache.apply(compile_cache.resolve(sys.argv[1]))
import jax, jax.numpy as jnp
print(float(jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((3, 3))).sum()))
print("limit", jax.config.jax_compilation_cache_max_size)
'''


def test_a_second_process_reads_the_compiled_program_from_the_cache(tmp_path):
  """What the launcher's --compilation_cache does: the first process writes the
  program, the next one with the same program reads it instead of compiling. Only
  the default folder gets a size limit (JAX's eviction needs the access times it
  records only under a limit)."""
  env = dict(conftest.child_env(1), PYTHONPATH=ROOT, JAX_LOG_COMPILES="1",
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", XDG_CACHE_HOME=str(tmp_path / "xdg"))
  env.pop(compile_cache.ENV, None)
  run = lambda setting: subprocess.run([sys.executable, "-c", CACHED_JIT, setting], cwd=ROOT,
                                       env=env, capture_output=True, text=True, timeout=120)
  runs = [run(str(tmp_path / "cc")) for _ in range(2)] + [run("auto")]
  for out in runs:
    assert out.returncode == 0, out.stderr[-2000:]
  assert runs[0].stdout == runs[1].stdout
  assert "compilation cache hit" not in runs[0].stderr
  assert "Persistent compilation cache hit for 'jit__lambda'" in runs[1].stderr
  assert any(name.endswith("-cache") for name in os.listdir(tmp_path / "cc"))
  assert runs[1].stdout.split()[-1] == "-1"  # a folder of the user's: no limit
  assert runs[2].stdout.split()[-1] == str(compile_cache.MAX_BYTES)
  default = compile_cache.resolve("auto", {"XDG_CACHE_HOME": str(tmp_path / "xdg")})
  names = os.listdir(default)
  assert any(n.endswith("-cache") for n in names) and any(n.endswith("-atime") for n in names)


def test_a_heartbeat_timeout_below_one_second_is_refused_before_starting():
  env = {"JAX_COORDINATOR_ADDRESS": "127.0.0.1:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"}
  with pytest.raises(distributed.DistributedConfigError, match="distributed_heartbeat_s=0"):
    distributed.maybe_initialize("auto", env, heartbeat_timeout_s=0)


def test_cpu_device_count():
  assert cpu_devices.largest_fitting(2, [128, 32, 64]) == 2
  assert cpu_devices.largest_fitting(3, [128, 32]) == 2  # 3 divides no batch: fall back to 2
  assert cpu_devices.largest_fitting(8, [96, 36]) == 6
  n, note = cpu_devices.choose("auto", [128], env={})
  assert n == cpu_devices.largest_fitting(cpu_devices.usable_cores(), [128])
  assert cpu_devices.choose("3", [128], env={}) == (3, "")
  # The user's own XLA_FLAGS win.
  assert cpu_devices.choose("auto", [128], env={
      "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}) == (None, "")
  with pytest.raises(ValueError, match="--cpu_devices='zero'"):
    cpu_devices.choose("zero", [128], env={})
  env = {"XLA_FLAGS": "--xla_cpu_enable_fast_math=false"}
  cpu_devices.apply(2, env)
  assert env["XLA_FLAGS"] == ("--xla_cpu_enable_fast_math=false "
                              "--xla_force_host_platform_device_count=2")


def test_usable_cores_respects_affinity():
  if not hasattr(os, "sched_getaffinity"):
    pytest.skip("no CPU affinity on this platform")
  assert cpu_devices.usable_cores() == len(os.sched_getaffinity(0))


def test_cpu_conv_kernel_choice():
  eigen, new = cpu_kernels.EIGEN_CONVOLUTIONS, (0, 10, 2)
  assert cpu_kernels.choose("auto", {}, new, "x86_64") == eigen
  assert cpu_kernels.choose("auto", {}, (0, 8, 2), "AMD64") == eigen
  # XLA aborts at start-up on a flag value it cannot parse: jaxlib 0.8.1 is not asked.
  assert cpu_kernels.choose("auto", {}, (0, 8, 1), "x86_64") is None
  assert cpu_kernels.choose("auto", {}, new, "aarch64") is None  # measured on x86-64 only
  assert cpu_kernels.choose("xla_default", {}, new, "x86_64") is None
  # The user's own XLA_FLAGS win.
  assert cpu_kernels.choose("auto", {"XLA_FLAGS": f"{cpu_kernels.FLAG}=dot"}, new, "x86_64") is None
  with pytest.raises(ValueError, match="--cpu_conv_kernels='eigen'"):
    cpu_kernels.choose("eigen")
  env = {"XLA_FLAGS": "--xla_cpu_enable_fast_math=false"}
  cpu_kernels.apply(eigen, env)
  assert env["XLA_FLAGS"] == f"--xla_cpu_enable_fast_math=false {eigen}"
  assert cpu_kernels.in_effect(env) == "Eigen convolutions, YNNPACK matmuls"
  assert cpu_kernels.in_effect({}) == "XLA's default kernels"


# The README's set-up for Python users, then a convolution's gradient at a shape
# XLA's default hands to YNNPACK (64 channels).
CONV_GRAD_HLO = r'''
import sys
from sedl_jax import cpu_devices, cpu_kernels
cpu_devices.apply(cpu_devices.choose("auto")[0])
cpu_kernels.apply(cpu_kernels.choose(sys.argv[1]))
import jax, jax.numpy as jnp
conv = lambda w, x: jax.lax.conv_general_dilated(
    x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
f = jax.jit(jax.grad(lambda w, x: (conv(w, x) ** 2).sum(), argnums=(0, 1)))
print(f.lower(jnp.ones((3, 3, 64, 64)), jnp.ones((4, 6, 6, 64))).compile().as_text())
'''


def test_eigen_kernels_take_the_convolutions_out_of_ynnpack():
  """What --cpu_conv_kernels=auto (and the README's Python set-up) asks of XLA
  happens: no convolution is left in a YNNPACK fusion, where XLA's default puts some."""
  if cpu_kernels.choose("auto", {}) is None:
    pytest.skip("--cpu_conv_kernels=auto keeps XLA's default kernels on this machine")
  hlo = {}
  for kernels in ("auto", "xla_default"):
    env = conftest.child_env()  # without the tests' kernel flag
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "").replace(cpu_kernels.EIGEN_CONVOLUTIONS, "")
    out = subprocess.run([sys.executable, "-c", CONV_GRAD_HLO, kernels], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    hlo[kernels] = out.stdout
  assert "__ynn_fusion" in hlo["xla_default"]
  assert "__ynn_fusion" not in hlo["auto"] and hlo["auto"].count(" convolution(") == 3


@pytest.mark.parametrize("setting, env, mode, glibc, wanted, says", [
    ("auto", {}, "madvise", (2, 36), True, "huge pages (glibc.malloc.hugetlb=1)"),
    ("off", {}, "madvise", (2, 36), False, "--host_huge_pages=off"),
    ("auto", {}, "always", (2, 36), False, "THP mode is always"),
    ("auto", {}, "never", (2, 36), False, "the kernel has them off"),
    ("auto", {}, None, (2, 36), False, "the kernel has them off"),
    ("auto", {}, "madvise", (2, 34), False, "needs glibc >= 2.35"),
    ("auto", {}, "madvise", None, False, "needs glibc >= 2.35"),  # musl, macOS
    # The user's own value wins, on or off.
    ("auto", {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, "madvise", (2, 36), False,
     "as GLIBC_TUNABLES=glibc.malloc.hugetlb=0 sets"),
    # Run once again at most, even if the tunable was lost on the way.
    ("auto", {"SEDL_JAX_HUGE_PAGES_REEXEC": "1"}, "madvise", (2, 36), False, "did not reach"),
])
def test_huge_pages_choice(setting, env, mode, glibc, wanted, says):
  assert huge_pages.choose(setting, env, mode, glibc)[0] is wanted
  assert says in huge_pages.choose(setting, env, mode, glibc)[1]


def test_huge_pages_tunable_added_and_taken_away():
  env = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "PATH": "/bin"}
  ours = huge_pages.with_tunable(env)
  assert ours["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
  assert huge_pages.choose("auto", ours, "madvise", (2, 36)) == (
      False, "huge pages (glibc.malloc.hugetlb=1)")
  assert huge_pages.without_ours(ours) == env
  assert huge_pages.without_ours(huge_pages.with_tunable({})) == {}
  with pytest.raises(ValueError, match="--host_huge_pages='yes'"):
    huge_pages.choose("yes", {})


# Runs itself again through huge_pages (as launch.py does), then mallocs a block the
# size of XLA's per-step buffers and reports how much of it the kernel backs with
# huge pages (/proc/self/smaps' AnonHugePages of the mapping that holds it).
MALLOC_PROBE = r'''
import ctypes, os, sys
print("PID", os.getpid(), flush=True)
from sedl_jax import huge_pages
effect = huge_pages.reexec_if_useful(sys.argv[1])
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
size = 64 << 20
block = libc.malloc(size)
ctypes.memset(block, 1, size)
huge_kb = None
with open("/proc/self/smaps") as f:
  for line in f:
    head = line.split()[0]
    if "-" in head and not head.endswith(":"):
      lo, hi = (int(v, 16) for v in head.split("-"))
      inside = lo <= block < hi
    elif inside and head == "AnonHugePages:":
      huge_kb = int(line.split()[1])
print("EFFECT", effect)
print("TUNABLES", os.environ.get("GLIBC_TUNABLES", ""))
print("HUGE_KB", huge_kb)
'''


def test_the_reexecuted_process_gets_huge_pages_for_large_blocks():
  """The mechanism end to end on this machine: the same process (same pid) runs
  again with the tunable, and glibc's large blocks are then backed by huge pages;
  with --host_huge_pages=off they are not."""
  env = huge_pages.without_ours(os.environ)
  env.pop("GLIBC_TUNABLES", None)
  if not huge_pages.choose("auto", env)[0]:
    pytest.skip(f"not useful here: {huge_pages.choose('auto', env)[1]}")
  env["PYTHONPATH"] = ROOT
  runs = {}
  for setting in ("auto", "off"):
    out = subprocess.run([sys.executable, "-c", MALLOC_PROBE, setting], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    runs[setting] = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    pids = [line for line in out.stdout.splitlines() if line.startswith("PID")]
    assert len(pids) == (2 if setting == "auto" else 1) and len(set(pids)) == 1
  auto, off = runs["auto"], runs["off"]
  assert auto["EFFECT"] == "huge pages (glibc.malloc.hugetlb=1)"
  assert "glibc.malloc.hugetlb=1" in auto["TUNABLES"]
  # A 64 MiB block holds at least 30 whole 2 MiB pages wherever it starts; the
  # kernel may still fall back to small pages when memory is fragmented, so ask
  # for one.
  assert int(auto["HUGE_KB"]) >= 2048, auto
  assert off["EFFECT"] == "no huge pages (--host_huge_pages=off)"
  assert "hugetlb" not in off["TUNABLES"] and int(off["HUGE_KB"]) == 0, off
