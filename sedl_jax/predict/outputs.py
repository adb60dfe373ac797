"""What prediction writes: per-face rows (frames.csv), per input and track
statistics (summary.json), a self-contained timeline.html, embeddings.npz."""

from __future__ import annotations

import collections
import csv
import hashlib
import os

import numpy as np

from sedl_jax import atomic_io
from sedl_jax.evaluate import insights
from sedl_jax.predict import smoothing

BASE_COLUMNS = ["input", "frame", "time_s", "file", "track", "face_found", "box_top", "box_left",
                "box_bottom", "box_right"]


def columns(predictor) -> list[str]:
  m, s = predictor.model, predictor.settings
  cols = BASE_COLUMNS + [f"p_{c}" for c in m.class_names] + ["emotion", "confidence"]
  if s.smooth != "none":
    cols.append("emotion_smoothed")
  if m.kind == "card_fer":
    cols += ["vote_share", "p_value", "certain", "emotion_or_abstain"]
  for k in m.horizons:
    cols += [f"forecast_{k}_emotion", f"forecast_{k}_p"]
  if m.horizons:
    cols.append("surprise")
  return cols


def _round(x) -> float:
  return round(float(x), 5)


def fill_rows(predictor, rows: list[dict], per_face: dict) -> list[dict]:
  """Adds the model's outputs to an input's face rows (in place); returns one
  summary per track."""
  m, s = predictor.model, predictor.settings
  names = m.class_names
  face_rows = [r for r in rows if r["face_found"]]
  by_track: dict[int, list[int]] = {}
  for i, r in enumerate(face_rows):
    by_track.setdefault(r["track"], []).append(i)
  summaries = []
  for track, idx in sorted(by_track.items()):
    idx = np.asarray(idx)
    faces = {k: v[idx] for k, v in per_face.items()}
    out = dict(faces, **m.track_outputs(faces))
    probs = out["probs"]
    pred = probs.argmax(-1)
    smoothed = (smoothing.viterbi(probs, smoothing.transition_matrix(
        m.transitions, len(names), float(s.hmm_stay))) if s.smooth == "hmm" else None)
    certain = None
    if m.kind == "card_fer":
      certain = out["certain_ttest"] if s.abstain == "ttest" else out["certain_threshold"]
    for j, i in enumerate(idx):
      r = face_rows[i]
      r.update({f"p_{c}": _round(probs[j, k]) for k, c in enumerate(names)})
      r["emotion"], r["confidence"] = names[pred[j]], _round(probs[j, pred[j]])
      if smoothed is not None:
        r["emotion_smoothed"] = names[smoothed[j]]
      if certain is not None:
        r.update(vote_share=_round(out["vote_share"][j]), p_value=float(f"{out['p_value'][j]:.6g}"),
                 certain=int(certain[j]),
                 emotion_or_abstain=names[pred[j]] if certain[j] else "abstain")
      for k in m.horizons:
        f = out[f"forecast_{k}"][j]
        r[f"forecast_{k}_emotion"], r[f"forecast_{k}_p"] = names[f.argmax()], _round(f.max())
      if "surprise" in out:
        r["surprise"] = "" if np.isnan(out["surprise"][j]) else _round(out["surprise"][j])
    times = [face_rows[i]["time_s"] for i in idx]
    summaries.append(_track_summary(predictor, track, pred, smoothed, certain, out, times))
  return summaries


def _track_summary(predictor, track, pred, smoothed, certain, out, times) -> dict:
  m, s = predictor.model, predictor.settings
  names, k = m.class_names, len(m.class_names)
  seq = pred[None]
  trans = insights.transition_counts(seq, k)
  dwell = insights.dwell_times(seq, k)
  clock = [t for t in times if t != ""]
  step = float(np.median(np.diff(clock))) if len(clock) > 1 else None
  share = np.bincount(pred, minlength=k) / len(pred)
  out_ = {
      "track": int(track), "faces": int(len(pred)),
      "first_time_s": clock[0] if clock else None, "last_time_s": clock[-1] if clock else None,
      "emotion_share": {names[i]: _round(share[i]) for i in range(k)},
      "mean_dwell_frames": {names[i]: (_round(np.mean(dwell[i])) if dwell[i] else None)
                            for i in range(k)},
      "mean_dwell_s": ({names[i]: (_round(np.mean(dwell[i]) * step) if dwell[i] else None)
                        for i in range(k)} if step else None),
      "transitions": trans.tolist(),
      "transition_matrix": np.round(insights.row_normalise(trans), 4).tolist(),
      "transition_rate": _round(trans.sum() / max(len(pred) - 1, 1)),
      "top_ngrams": insights.ngrams(seq, int(s.ngram), names),
      "mean_confidence": _round(out["probs"].max(-1).mean()),
  }
  if smoothed is not None:
    st = insights.transition_counts(smoothed[None], k)
    out_["smoothed"] = {
        "emotion_share": {names[i]: _round(v) for i, v in
                          enumerate(np.bincount(smoothed, minlength=k) / len(smoothed))},
        "transition_rate": _round(st.sum() / max(len(smoothed) - 1, 1))}
  if certain is not None:
    out_["abstain_rate"] = _round(1.0 - np.mean(certain))
  if "traits" in out:
    out_["traits"] = {n: _round(p) for n, p in zip(m.trait_names, out["traits"])}
  return out_


def summarise(predictor, per_input, rows, skipped, timing, wall: float) -> dict:
  m, s, workdir = predictor.model, predictor.settings, predictor.workdir
  for entry in per_input:
    mine = [r for r in rows if r["input"] == entry["input"]]
    no_face = sum(1 for r in mine if not r["face_found"])
    entry["no_face_frames"] = no_face
    entry["no_face_rate"] = _round(no_face / max(entry["frames"], 1))
    entry["skipped"] = sum(1 for k in skipped if k["input"] == entry["input"])
  with open(os.path.join(workdir, "config.json"), "rb") as f:
    config_hash = hashlib.sha256(f.read()).hexdigest()[:16]
  parts = {p: _round(timing[p]) for p in ("decode_s", "detect_s", "model_s")}
  return {
      "model": {"workdir": os.path.abspath(workdir), "kind": m.kind, "checkpoint_steps": m.steps,
                "config_sha256": config_hash, "class_names": m.class_names,
                "trait_names": m.trait_names, "image_size": predictor.size,
                "channels": predictor.channels, "face_margin": predictor.margin,
                "face_detector": s.face, "face_align": predictor.align,
                "equalize": predictor.equalize,
                "forecast_horizons_frames": m.horizons,
                **({"num_samples": m.num_samples, "sample_temperature": m.temperature,
                    "abstain_rule": s.abstain,
                    "pavpu_alpha" if s.abstain == "ttest" else "pavpu_threshold":
                        m.alpha if s.abstain == "ttest" else m.threshold}
                   if m.kind == "card_fer" else {})},
      "settings": s.to_dict(),
      "inputs": per_input,
      "skipped": skipped,
      "skipped_count": len(skipped),
      "throughput": {"frames": int(timing["frames"]), "faces": int(timing["faces"]),
                     "wall_s": _round(wall), "frames_per_s": _round(timing["frames"] / wall),
                     "faces_per_s": _round(timing["faces"] / wall),
                     # Detection runs on worker threads: its seconds overlap the others.
                     **parts},
  }


def csv_writer(f, cols):
  w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
  w.writeheader()
  return w


class LiveTotals:
  """Running per-track totals of a live input (constant memory per track)."""

  def __init__(self, class_names):
    self.names = list(class_names)
    self.frames = self.no_face = 0
    self.tracks: dict[int, dict] = {}

  def add(self, rows) -> None:
    frames = {r["frame"] for r in rows}
    self.frames += len(frames)
    self.no_face += sum(1 for r in rows if not r["face_found"])
    for r in rows:
      if not r["face_found"]:
        continue
      t = self.tracks.setdefault(r["track"], {
          "faces": 0, "counts": collections.Counter(), "changes": 0, "last": None,
          "first_time_s": r["time_s"], "last_time_s": r["time_s"], "confidence": 0.0,
          "certain": 0, "has_certain": "certain" in r})
      t["faces"] += 1
      t["counts"][r["emotion"]] += 1
      t["changes"] += int(t["last"] is not None and t["last"] != r["emotion"])
      t["last"] = r["emotion"]
      t["last_time_s"] = r["time_s"]
      t["confidence"] += float(r["confidence"])
      t["certain"] += int(r.get("certain", 0))

  def summaries(self) -> list[dict]:
    out = []
    for track, t in sorted(self.tracks.items()):
      n = t["faces"]
      entry = {"track": int(track), "faces": n, "first_time_s": t["first_time_s"],
               "last_time_s": t["last_time_s"],
               "emotion_share": {c: _round(t["counts"][c] / n) for c in self.names},
               "transition_rate": _round(t["changes"] / max(n - 1, 1)),
               "mean_confidence": _round(t["confidence"] / n)}
      if t["has_certain"]:
        entry["abstain_rate"] = _round(1.0 - t["certain"] / n)
      out.append(entry)
    return out


def live_summary(predictor, path, totals, skipped, timing, wall: float, interrupted: bool) -> dict:
  """summary.json of a live input: the same model, settings and throughput
  sections as for files, one input whose tracks carry running totals."""
  timing["frames"] = totals.frames
  entry = {"input": path, "kind": "live", "frames": totals.frames, "tracks": totals.summaries()}
  out = summarise(predictor, [entry], [], skipped, timing, wall)
  entry["no_face_frames"] = totals.no_face
  entry["no_face_rate"] = _round(totals.no_face / max(totals.frames, 1))
  out["live"] = {"stopped_by": "interrupt" if interrupted else "end of stream or live_max_frames",
                 "chunk_frames": int(predictor.settings.live_chunk_frames)}
  return out


def read_rows(path: str, class_names) -> list[dict]:
  """frames.csv back as rows with numbers as numbers (what the timeline reads)."""
  numeric = {"frame", "track", "face_found", "certain"}
  floats = {f"p_{c}" for c in class_names} | {"confidence", "surprise"}
  rows = []
  with open(path, newline="") as f:
    for r in csv.DictReader(f):
      for k, v in r.items():
        if v == "" or k not in numeric and k not in floats and not k.endswith("_p"):
          continue
        r[k] = int(float(v)) if k in numeric else float(v)
      if r.get("time_s", "") != "":
        r["time_s"] = float(r["time_s"])
      rows.append(r)
  return rows


def write(prediction, out: str, save_embeddings: bool, timeline: bool) -> dict:
  os.makedirs(out, exist_ok=True)
  paths = {"frames": os.path.join(out, "frames.csv"), "summary": os.path.join(out, "summary.json")}

  def put_csv(tmp):
    with open(tmp, "w", newline="") as f:
      csv_writer(f, prediction.columns).writerows(prediction.rows)

  atomic_io.write_with(paths["frames"], put_csv)
  atomic_io.write_json(paths["summary"], prediction.summary)
  if save_embeddings and prediction.embeddings is not None:
    paths["embeddings"] = os.path.join(out, "embeddings.npz")
    face_rows = [r for r in prediction.rows if r["face_found"]]
    atomic_io.savez(paths["embeddings"], embeddings=prediction.embeddings,
                    input=np.array([r["input"] for r in face_rows]),
                    frame=np.array([r["frame"] for r in face_rows]),
                    track=np.array([r["track"] for r in face_rows]))
  if timeline:
    from sedl_jax.predict import timeline as timeline_lib
    paths["timeline"] = timeline_lib.write(prediction, out)
  return paths

