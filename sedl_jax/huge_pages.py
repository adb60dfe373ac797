"""Transparent huge pages for the host memory XLA's CPU runtime allocates each step.

XLA's CPU runtime allocates every execution's temporary buffer (147 MB per device
for the quick contrastive step) and frees it when the step ends. glibc's malloc
serves blocks that large with mmap and returns them with munmap, so every step
touches fresh pages: 71,800 page faults per quick step on two devices (294 MB of
4 KiB pages zeroed by the kernel), 0.13-0.15 s of system time in a 0.37 s step
on a 2-core AMD EPYC (issue 16). Where the kernel's transparent huge pages are
`madvise` (the common default), glibc's tunable `glibc.malloc.hugetlb=1` (glibc
>= 2.35) marks malloc's mmapped blocks for huge pages: about 750 faults per step,
0.035 s of system time, and the quick step ran at 840-897 images/s against
686-725 in alternating whole-process runs on that machine.

glibc reads its tunables once, when the process starts, from the environment.
So the launcher, before JAX starts, runs itself again with the tunable added
(`os.execve`, the same process id and command line) when `auto` finds it would
help: Linux, glibc >= 2.35, the kernel's THP mode `madvise`, and GLIBC_TUNABLES
not already naming the tunable (the user's own choice is kept). With THP mode
`always` the kernel already backs these blocks with huge pages; with `never`
nothing can. The values computed do not change: only where the memory comes from.
"""

from __future__ import annotations

import os
import sys

SETTINGS = ("auto", "off")
TUNABLE = "glibc.malloc.hugetlb"
ENV = "GLIBC_TUNABLES"
THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"
FIRST_GLIBC = (2, 35)
# Set in the re-executed process: never execute a third time, whatever glibc did.
_MARK = "SEDL_JAX_HUGE_PAGES_REEXEC"


def thp_mode(path: str = THP_ENABLED) -> str | None:
  """The kernel's transparent huge page mode (`always`, `madvise`, `never`), or
  None where the kernel has none (not Linux, or built without it)."""
  try:
    with open(path) as f:
      text = f.read()
  except OSError:
    return None
  start, end = text.find("["), text.find("]")
  return text[start + 1:end] if 0 <= start < end else None


def glibc_version() -> tuple[int, ...] | None:
  """(major, minor) of the C library this process runs on, None if not glibc."""
  try:
    name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
  except (AttributeError, ValueError, OSError):
    return None
  if name != "glibc":
    return None
  try:
    return tuple(int(p) for p in version.split(".")[:2])
  except ValueError:
    return None


def choose(setting: str, env=os.environ, mode: str | None = "read",
           glibc: tuple[int, ...] | None | str = "read") -> tuple[bool, str]:
  """(whether to run the process again with the tunable, what is in effect).

  setting: `auto` or `off` (the launcher's --host_huge_pages). `mode` and
  `glibc` default to this machine's (tests pass their own).
  """
  if setting not in SETTINGS:
    raise ValueError(f"--host_huge_pages={setting!r}: expected one of {', '.join(SETTINGS)}")
  mode = thp_mode() if mode == "read" else mode
  glibc = glibc_version() if glibc == "read" else glibc
  tunables = env.get(ENV, "")
  if TUNABLE in tunables:
    return False, (f"huge pages ({TUNABLE}=1)" if env.get(_MARK)
                   else f"huge pages as {ENV}={tunables} sets")
  if mode == "always":
    return False, "huge pages (the kernel's THP mode is always)"
  if setting == "off":
    return False, "no huge pages (--host_huge_pages=off)"
  if mode is None or mode == "never":
    return False, "no huge pages (the kernel has them off)"
  if glibc is None or glibc < FIRST_GLIBC:
    return False, "no huge pages (needs glibc >= 2.35)"
  if env.get(_MARK):
    return False, "no huge pages (the tunable did not reach the process)"
  return True, f"huge pages ({TUNABLE}=1)"


def with_tunable(env) -> dict:
  """A copy of `env` with the tunable added to GLIBC_TUNABLES (its other
  tunables kept) and the mark that stops a second re-execution."""
  out = dict(env)
  tunables = [t for t in out.get(ENV, "").split(":") if t]
  out[ENV] = ":".join(tunables + [f"{TUNABLE}=1"])
  out[_MARK] = "1"
  return out


def without_ours(env) -> dict:
  """A copy of `env` without what `with_tunable` added: for a process that should
  run as its user would start it (the PyTorch reference in bench/torch_ratio.py)."""
  out = dict(env)
  if out.pop(_MARK, None):
    tunables = out.get(ENV, "").split(":")
    if f"{TUNABLE}=1" in tunables:
      tunables.remove(f"{TUNABLE}=1")
    if any(tunables):
      out[ENV] = ":".join(t for t in tunables if t)
    else:
      out.pop(ENV, None)
  return out


_effect: str | None = None


def reexec_if_useful(setting: str) -> str:
  """Runs this process again with the tunable when `choose` says so (it does not
  return then); otherwise returns what is in effect (also `in_effect()`).
  Call it before anything starts threads or JAX: all state so far is lost."""
  global _effect
  wanted, _effect = choose(setting)
  if wanted:
    sys.stdout.flush()
    sys.stderr.flush()
    try:
      os.execve(sys.executable, list(sys.orig_argv), with_tunable(os.environ))
    except OSError as e:  # go on without: slower, the same results
      _effect = f"no huge pages (could not run {sys.executable} again: {e})"
  return _effect


def in_effect() -> str:
  """For the run's `[devices]` line."""
  if _effect is not None:
    return _effect
  wanted, effect = choose("auto")
  # Not started by the launcher (a user's own script): say how to get them.
  return f"no huge pages ({ENV}={TUNABLE}=1 would give them)" if wanted else effect
