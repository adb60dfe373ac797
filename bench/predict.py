"""Prediction benchmark: model-only faces/s of a trained SEDL run (encoder; the
behaviour heads with their temporal context; with forecasts and surprise too) and of a diffusion-FER run (f_phi
+ CARD with the run's n samples and T steps), and end-to-end frames/s on a
640x480 video with one face, with the seconds spent decoding, detecting and in
the model.

  python bench/predict.py --out=bench/results [--sedl_workdir=runs/sedl]
                          [--card_workdir=runs/card/proposed]

Writes `predict.json` in --out. A part whose run is missing is reported as
skipped, with the command that trains it.
"""

import os
import sys
import tempfile

from absl import app, flags

import bench_output
import cpu_setup
import timing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))  # data_fixtures draws a face Haar finds

_OUT = flags.DEFINE_string("out", "bench/results", "Output folder for the JSON.")
_SEDL = flags.DEFINE_string("sedl_workdir", "runs/sedl", "A trained SEDL run (make run).")
_CARD = flags.DEFINE_string("card_workdir", "runs/card/proposed", "A trained diffusion-FER run.")
_FACES = flags.DEFINE_integer("faces", 2048, "Faces for the SEDL model-only measurement.")
_CARD_FACES = flags.DEFINE_integer("card_faces", 128, "Faces for the CARD measurement.")
_FRAMES = flags.DEFINE_integer("video_frames", 300, "Frames of the 640x480 test video (30 fps).")


def _faces(model, n: int):
  import numpy as np
  s, _, c = model.image_shape
  return np.random.default_rng(0).integers(0, 256, (n, s, s, c), dtype=np.uint8)



def sedl_model_only(workdir: str) -> dict:
  from sedl_jax.predict import Predictor
  p = Predictor.from_workdir(workdir, {"face": "none"})
  faces = _faces(p.model, _FACES.value)
  enc = timing.best_time(lambda: p.model.face_outputs(faces))
  per_face = p.model.face_outputs(faces)
  heads = timing.best_time(lambda: p.model.track_outputs(per_face, forecasts=False))
  full = timing.best_time(lambda: p.model.track_outputs(per_face, forecasts=True))
  n = len(faces)
  return {"faces": n, "one_track": True, "encoder_faces_per_s": round(n / enc, 1),
          "heads_with_temporal_context_faces_per_s": round(n / heads, 1),
          "encoder_and_heads_faces_per_s": round(n / (enc + heads), 1),
          "with_forecasts_and_surprise_faces_per_s": round(n / (enc + full), 1),
          "checkpoint_steps": p.model.steps, "forecast_horizons": p.model.horizons,
          "behaviour_features": p.model.features}


def card_model_only(workdir: str) -> dict:
  from sedl_jax.predict import Predictor
  p = Predictor.from_workdir(workdir, {"face": "none"})
  faces = _faces(p.model, _CARD_FACES.value)
  wall = timing.best_time(lambda: p.model.face_outputs(faces), timings=1)
  n = len(faces)
  return {"faces": n, "num_samples": p.model.num_samples,
          "timesteps": int(p.model.card.meta["stage_model"]["timesteps"]),
          "model_only_faces_per_s": round(n / wall, 2)}


def end_to_end(workdir: str) -> dict:
  import numpy as np
  import data_fixtures as fx
  from sedl_jax.predict import Predictor
  with tempfile.TemporaryDirectory() as tmp:
    video = os.path.join(tmp, "session.avi")
    frames = []
    face = fx.draw_face(100)
    for t in range(_FRAMES.value):
      f = np.full((480, 640, 3), 40, np.uint8)
      x = 150 + (t % 120)
      f[140:340, x:x + 200] = face
      frames.append(f)
    fx.write_video(video, np.stack(frames), fps=30)
    p = Predictor.from_workdir(workdir, {"timeline": False})
    p.predict(video)  # compiles
    pred = p.predict(video)
  t = pred.summary["throughput"]
  parts = {k: t[k] for k in ("decode_s", "detect_s", "model_s")}
  return {"video": "640x480 MJPG, 30 fps, one face", "frames": t["frames"],
          "faces_found": t["faces"], "frames_per_s": t["frames_per_s"], "wall_s": t["wall_s"],
          **parts, "share": {k: round(v / t["wall_s"], 3) for k, v in parts.items()},
          "note": "detection runs on worker threads, so the parts can sum to more than the wall time"}


def _part(fn, workdir: str, train: str) -> dict:
  if not os.path.isfile(os.path.join(workdir, "config.json")):
    return {"skipped": f"no trained run at {workdir}: train one with {train}"}
  return fn(workdir)


def main(argv):
  setup = cpu_setup.apply([256], quiet=True)
  import jax
  sedl_train = "make run"
  card_train = ("python launch.py --config=configs/card_fer.py:quick,ablation=proposed "
                "--workdir=runs/card/proposed")
  result = {
      "machine": {**bench_output.machine(), **setup},
      "backend": jax.default_backend(), "devices": jax.device_count(),
      "sedl_model_only": _part(sedl_model_only, _SEDL.value, sedl_train),
      "card_model_only": _part(card_model_only, _CARD.value, card_train),
      "end_to_end_sedl": _part(end_to_end, _SEDL.value, sedl_train),
  }
  bench_output.write(_OUT.value, "predict", result)


if __name__ == "__main__":
  app.run(main)
