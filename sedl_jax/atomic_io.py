"""Atomic file writes: a temporary file in the same folder, then a rename, so a
run killed mid-write leaves the old file or the new one, never half of one."""

from __future__ import annotations

import glob
import json
import os
from typing import Callable

import numpy as np


def pid_alive(pid: int) -> bool:
  """Whether a process with this id runs on this machine (a temporary file's
  writer that does not was killed mid-write)."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _remove_dead_temps(root: str, ext: str) -> None:
  # A writer killed between write and rename leaves its temporary file; the
  # next write of the same file clears it (a live writer's is left alone).
  for tmp in glob.glob(f"{glob.escape(root)}.tmp-*{glob.escape(ext)}"):
    pid = tmp[len(root) + len(".tmp-"):len(tmp) - len(ext)]
    if pid.isdigit() and not pid_alive(int(pid)):
      try:
        os.remove(tmp)
      except OSError:  # already removed by another writer of the same file
        continue


def write_with(path: str, write: Callable[[str], None]) -> None:
  """Calls write(tmp_path), then renames the result onto `path`."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  root, ext = os.path.splitext(path)
  _remove_dead_temps(root, ext)
  # Keep the extension: numpy and matplotlib choose the format from it.
  tmp = f"{root}.tmp-{os.getpid()}{ext}"
  try:
    write(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_text(path: str, text: str) -> None:
  def put(tmp):
    with open(tmp, "w") as f:
      f.write(text)
  write_with(path, put)


def write_json(path: str, obj, **kwargs) -> None:
  write_text(path, json.dumps(obj, indent=2, default=str, **kwargs))


def savez(path: str, **arrays: np.ndarray) -> None:
  write_with(path, lambda tmp: np.savez(tmp, **arrays))
