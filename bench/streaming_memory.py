"""Host memory of training as the data grows: peak RSS of a contrastive run on
image folders of --sizes images, with the pixels streamed from the prepared
cache (`data.in_memory_max_mb=0`) and, for comparison, held in memory.

  python bench/streaming_memory.py --out=bench/results [--sizes=5000,50000] [--steps=30]

Each size: a folder of synthetic faces (PNG, 48x48 grey) is written, prepared once
(preparation images/s recorded), then `launch.py` runs the `quick` contrastive
stage in a child process per mode; the child reports its own peak RSS. The
raw-pixel probe is off: it is a baseline on every training pixel by design.
Writes `streaming_memory.json` in --out.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from absl import app, flags

import bench_output

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

_OUT = flags.DEFINE_string("out", "bench/results", "Output folder for the JSON.")
_SIZES = flags.DEFINE_list("sizes", ["5000", "50000"], "Images per folder.")
_STEPS = flags.DEFINE_integer("steps", 30, "Contrastive steps per run.")
_MODES = flags.DEFINE_list("modes", ["stream", "memory"], "stream and/or memory.")

# Runs launch.py in this process and prints its peak RSS at exit.
_CHILD = r"""
import atexit, resource, runpy, sys
atexit.register(lambda: print("PEAK_RSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                              flush=True))
sys.argv = ["launch.py"] + sys.argv[1:]
runpy.run_path("launch.py", run_name="__main__")
"""


def _folder(root: str, n: int) -> None:
  """ROOT/<emotion>/<file>.png: n synthetic faces, drawn in chunks (in memory first)."""
  import cv2
  import data_fixtures as fx
  from sedl_jax.data import synthetic
  done = chunk = 0
  while done < n:
    subjects = min(400, max(3, -(-(n - done) // 14)))
    ims, labels, _ = fx._all_images(fx.faces(num_subjects=subjects, size=48,
                                             sequences_per_subject=0, seed=chunk))
    for i, (im, y) in enumerate(zip(ims[:n - done], labels)):
      d = os.path.join(root, synthetic.EMOTIONS[y])
      os.makedirs(d, exist_ok=True)
      cv2.imwrite(os.path.join(d, f"c{chunk}_{i:05d}.png"), im)
    done += min(len(ims), n - done)
    chunk += 1


def _run(folder: str, cache: str, workdir: str, limit_mb: int) -> dict:
  args = [sys.executable, "-c", _CHILD, "--config=configs/sedl.py:quick", f"--workdir={workdir}",
          "--config.stages=('contrastive',)", "--config.data.name=image_folder",
          f"--config.data.path={folder}", f"--config.data.cache_dir={cache}",
          f"--config.data.in_memory_max_mb={limit_mb}", f"--config.contrastive.steps={_STEPS.value}",
          "--config.contrastive.pixel_baseline=False"]
  t0 = time.perf_counter()
  out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
  if out.returncode:
    raise RuntimeError(out.stdout[-2000:] + out.stderr[-3000:])
  rss = int(out.stdout.rsplit("PEAK_RSS_KB", 1)[1].split()[0]) * 1024
  with open(os.path.join(workdir, "data_report.json")) as f:
    report = json.load(f)
  return {"peak_rss_bytes": rss, "wall_s": time.perf_counter() - t0,
          "images_in": report.get("images_in"), "images_prepared": report["images_prepared"],
          "cache": report["cache"]}


def _prepare(folder: str, cache: str) -> dict:
  """Builds the cache entry the runs then reuse (the same settings as `quick`)."""
  from sedl_jax.config import defaults
  from sedl_jax.data import sources
  d = defaults.data("quick")
  d.name, d.path, d.cache_dir, d.in_memory_max_mb = "image_folder", folder, cache, 0
  t0 = time.perf_counter()
  data = sources.load_dataset(d)
  dt = time.perf_counter() - t0
  n = sum(len(data.images[s]) for s in ("train", "val", "test"))
  return {"prepared": n, "preparation_s": dt, "preparation_images_per_s": n / dt,
          "preparation_note": "scan + content hash + decode + resize + ArrayRecord write + "
                              "read back the labels + split, 2 threads"}


def main(argv):
  work = tempfile.mkdtemp(prefix="sedl_stream_bench_")
  results = []
  try:
    for n in map(int, _SIZES.value):
      folder, cache = os.path.join(work, f"f{n}"), os.path.join(work, f"c{n}")
      t0 = time.perf_counter()
      _folder(folder, n)
      write_s = time.perf_counter() - t0
      row = {"images": n, "folder_write_s": write_s, **_prepare(folder, cache)}
      for mode in _MODES.value:
        limit = 0 if mode == "stream" else 1 << 20
        row[mode] = _run(folder, cache, os.path.join(work, f"w{n}_{mode}"), limit)
      results.append(row)
      shutil.rmtree(folder, ignore_errors=True)
  finally:
    shutil.rmtree(work, ignore_errors=True)
  bench_output.write(_OUT.value, "streaming_memory", {
      "benchmark": "peak RSS of a quick contrastive run vs prepared images",
      **bench_output.machine(), "steps": _STEPS.value, "results": results})


if __name__ == "__main__":
  app.run(main)
