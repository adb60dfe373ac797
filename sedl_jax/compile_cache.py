"""JAX's persistent compilation cache for the launcher's runs.

Compiling is most of a short run's time: on an H100 the quick job's ResNet train
steps take 19-32 s each to compile and under 5 ms a step to run, and on the CPU
compiling is about two thirds of a tiny run. Every `--mode=eval`, resumed run,
`--mode=predict`, repeat seed (`config.repeats`) and second job with the same
shapes compiles the same programs again. With the cache those become reads.

The cache key covers the program, the compile options, the XLA flags, the JAX
version and the accelerator, so an entry is only reused where it is valid. The
default folder is also split by host CPU (model name and feature flags):
XLA's CPU code is compiled for the features of the host it was compiled on,
and a home folder shared by the nodes of a cluster must not hand one CPU's
code to another.

Settings: `auto` (JAX_COMPILATION_CACHE_DIR if set, else
$XDG_CACHE_HOME/sedl_jax/jax_compilation_cache/<host CPU key>), `off`, or a folder.
No JAX import here: the launcher calls `apply` before anything starts a backend.
"""

from __future__ import annotations

import hashlib
import os
import platform

ENV = "JAX_COMPILATION_CACHE_DIR"
# In the default folder the least recently used entries go once it passes this
# size. A quick SEDL job's programs take about 10 MB on the CPU, 8.5 MB of them on
# an H100 for five stages.
MAX_BYTES = 4 << 30


def host_cpu_key(cpuinfo: str | None = None) -> str:
  """A short stable name for this host's CPU: machine, model name and flags."""
  if cpuinfo is None:
    try:
      with open("/proc/cpuinfo") as f:
        cpuinfo = f.read()
    except OSError:
      cpuinfo = ""
  wanted = ("model name", "flags", "features", "cpu model", "cpu family", "model")
  seen = {}
  for line in cpuinfo.splitlines():
    key, _, value = line.partition(":")
    key = key.strip().lower()
    if key in wanted and key not in seen:  # the first core describes them all
      seen[key] = " ".join(sorted(value.split())) if key in ("flags", "features") else value.strip()
  text = platform.machine() + "|" + "|".join(f"{k}={seen[k]}" for k in sorted(seen))
  return f"{platform.machine() or 'cpu'}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def default_root(env=os.environ) -> str:
  """The folder under which the default caches live, one per host CPU."""
  home = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(home, "sedl_jax", "jax_compilation_cache")


def resolve(setting: str, env=os.environ, cpuinfo: str | None = None) -> str | None:
  """The cache folder for `setting` (`auto`, `off` or a folder), or None for off."""
  if not setting:
    raise ValueError("--compilation_cache: expected auto, off or a folder, got an empty value")
  if setting == "off":
    return None
  if setting != "auto":
    path = os.path.abspath(os.path.expanduser(setting))
    if os.path.exists(path) and not os.path.isdir(path):
      raise ValueError(f"--compilation_cache={setting}: {path} is a file, not a folder")
    return path
  if env.get(ENV):
    return env[ENV]
  return os.path.join(default_root(env), host_cpu_key(cpuinfo))


def apply(path: str | None, env=os.environ) -> None:
  """Points JAX at `path` (None: no persistent cache). A folder that cannot be
  created is reported and the run goes on without the cache.

  The size limit is set for the default folder only. JAX evicts by access times
  it records only while a limit is set, and its eviction fails on an entry that
  has none, so a folder that other JAX programs (or the tests) also write without
  a limit is left unlimited, as they leave it.
  """
  import jax
  if path is None:
    jax.config.update("jax_enable_compilation_cache", False)
    return
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    print(f"[compile cache] cannot create {path} ({e.strerror}); running without it")
    jax.config.update("jax_enable_compilation_cache", False)
    return
  jax.config.update("jax_enable_compilation_cache", True)
  jax.config.update("jax_compilation_cache_dir", path)
  ours = os.path.dirname(os.path.abspath(path)) == os.path.abspath(default_root(env))
  # JAX needs filelock to evict; without it a limit would make every write fail.
  if ours and jax.config.jax_compilation_cache_max_size == -1 and _has_filelock():
    jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)


def _has_filelock() -> bool:
  try:
    import filelock  # noqa: F401
  except ImportError:
    return False
  return True
