"""Real-data preparation benchmark: items/s for scanning, decoding, resizing and
writing an image folder into the TFDS ArrayRecord cache, and for reading the
cache back on a second run.

  python bench/prepare_data.py --out=bench/results [--images=3000] [--size=48] [--face_crop=none]

Writes `prepare_data.json` in --out. The folder is written first (synthetic faces as
PNG/JPEG/BMP/... at 40-56 px, as in the tests) into a temporary directory.
"""

import os
import sys
import tempfile
import time

from absl import app, flags

import bench_output

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

_OUT = flags.DEFINE_string("out", "bench/results", "Output folder for the JSON.")
_IMAGES = flags.DEFINE_integer("images", 3000, "About how many images the folder holds.")
_SIZE = flags.DEFINE_integer("size", 48, "config.data.image_size.")
_FACE_CROP = flags.DEFINE_enum("face_crop", "none", ["none", "haar"], "config.data.face_crop.")
_THREADS = flags.DEFINE_integer("threads", 2, "config.data.num_threads (decoding threads).")


def main(argv):
  import data_fixtures as fx
  from sedl_jax.config import defaults
  from sedl_jax.data import sources

  work = tempfile.mkdtemp(prefix="sedl_prepare_bench_")
  subjects = max(3, _IMAGES.value // 14)
  fx.image_folder(os.path.join(work, "folder"), fx.faces(num_subjects=subjects, size=48,
                                                         sequences_per_subject=0))
  d = defaults.data("quick")
  d.name, d.path = "image_folder", os.path.join(work, "folder")
  d.cache_dir = os.path.join(work, "cache")
  d.image_size, d.face_crop, d.num_threads = _SIZE.value, _FACE_CROP.value, _THREADS.value
  timings = {}
  for run in ("build", "reuse"):
    t0 = time.perf_counter()
    data = sources.load_dataset(d, workdir=os.path.join(work, "run"))
    timings[run] = time.perf_counter() - t0
  n = sum(len(data.images[s]) for s in ("train", "val", "test"))
  result = {
      "benchmark": "prepare_data", **bench_output.machine(),
      "images": n, "image_size": _SIZE.value, "face_crop": _FACE_CROP.value,
      "threads": _THREADS.value,
      "build_s": timings["build"], "build_images_per_s": n / timings["build"],
      "reuse_s": timings["reuse"], "reuse_images_per_s": n / timings["reuse"],
      "note": "build = scan + content hash + decode + resize + TFDS ArrayRecord write + read back "
              "+ split; reuse = scan + content hash + read back + split",
  }
  bench_output.write(_OUT.value, "prepare_data", result)


if __name__ == "__main__":
  app.run(main)
