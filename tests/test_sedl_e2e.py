"""The whole SEDL pipeline on the tiny config: report files, their numbers, eval mode."""

import csv
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import data_fixtures as fx
import learning
from configs import sedl
from sedl_jax import results as results_lib
from sedl_jax import runner
from sedl_jax.stages import embeddings, registry
from sedl_jax.stages.context import Context

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config():
  c = sedl.get_config("tiny")
  # Steps are cheap at this size (compiling dominates): enough for every loss to
  # fall and for the supervised CNN to learn the balanced static test images.
  c.contrastive.steps = 30
  c.temporal.steps = 24
  c.behaviour.steps = 40
  c.supervised_cnn.steps = 150
  c.supervised_cnn.optimizer.lr = 3e-3
  c.supervised_cnn.log_every_steps = 10
  # Label efficiency's SEDL row retrains in a sub-run (restoring the run's encoder
  # and temporal model); its classifier rows (supervised CNN, fine-tune) are
  # covered by test_card_e2e, so the 150-step CNN is not trained twice here.
  c.stages = ("contrastive", "temporal", "behaviour", "supervised_cnn", "label_efficiency", "report")
  c.label_efficiency.rows = ("pixels_linear", "random_forest", "ssl_linear", "sedl")
  c.ssl_finetune.steps = 10
  return c


@pytest.fixture(scope="module")
def sedl_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("sedl")
  results = runner.run(tiny_config(), str(workdir))
  return workdir, results


def test_every_stage_ran_and_report_files_exist(sedl_run):
  workdir, results = sedl_run
  assert set(results) == {"contrastive", "temporal", "behaviour", "supervised_cnn",
                          "label_efficiency", "report"}
  report = workdir / "report"
  for name in ("report.json", "report.md", "report.html", "insights.json", "sedl_confusion.png",
               "transitions.png", "trajectories.png", "tsne.png", "label_efficiency.png"):
    assert (report / name).stat().st_size > 100, name
  html = (report / "report.html").read_text()
  assert html.count("data:image/png;base64,") == 5 and 'src="' not in html


def test_label_efficiency_cuts_labels_and_reuses_the_full_label_stages(sedl_run):
  workdir, results = sedl_run
  le = results["label_efficiency"]["fractions"]
  half, full = le["0.5"], le["1"]
  # Stratified: about half of every class, at least one each.
  for h, f in zip(half["per_class"], full["per_class"]):
    assert (h >= 1 if f else h == 0) and abs(h - 0.5 * f) <= 0.5
  # 1.0 is the full-label stage's own result; 0.5 trained in its own sub-run.
  assert full["rows"]["sedl"]["accuracy"] == results["behaviour"]["emotion"]["accuracy"]
  assert (workdir / "label_efficiency" / "0.5" / "checkpoints" / "behaviour").is_dir()
  for found in (half, full):
    for row, m in found["rows"].items():
      assert m["accuracy_ci95"][0] <= m["accuracy"] <= m["accuracy_ci95"][1], row
    assert set(found["comparisons"]) == {"ssl_linear_vs_pixels_linear"}
  md = (workdir / "report" / "report.md").read_text()
  assert "## Label efficiency" in md
  assert half["comparisons"]["ssl_linear_vs_pixels_linear"]["verdict"] in md


def test_the_tiny_run_learned(sedl_run):
  workdir, results = sedl_run
  for stage in ("contrastive", "temporal", "behaviour", "supervised_cnn"):
    learning.assert_loss_fell(workdir, stage)
  # The static test images are balanced over the 7 classes (4 per class, 2 held-out
  # subjects); the test frames are half neutral, so they cannot show learning at this size.
  sup = results["supervised_cnn"]["test_images"]
  assert sup["num_examples"] == 28
  assert learning.above_chance(sup["accuracy"], sup["num_examples"], 7), sup["accuracy"]


def test_report_numbers_equal_metrics_json(sedl_run):
  workdir, _ = sedl_run
  metrics = json.load(open(workdir / "report" / "report.json"))
  md = (workdir / "report" / "report.md").read_text()
  rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
          for line in md.splitlines() if line.startswith("| ")}
  labels = {"random_forest": "Random Forest (hog)", "kmeans": "K-Means (hog, Hungarian-matched)",
            "supervised_cnn": "Supervised CNN (same encoder, from scratch)",
            "simclr_linear": "SimCLR + linear", "sedl": "SEDL (static+temporal)"}
  for key, label in labels.items():
    m = metrics["table1"][key]
    cells = rows[label]
    lo, hi = m["accuracy_ci95"]
    assert lo <= m["accuracy"] <= hi
    assert cells[0] == f"{100 * m['accuracy']:.1f} ({100 * lo:.1f}-{100 * hi:.1f})", (key, cells)
    assert cells[1] == f"{m['precision_macro']:.3f}" and cells[2] == f"{m['f1_macro']:.3f}"
  assert rows["SEDL (static+temporal)"][3] == f"{metrics['table1_temporal_mse']:.3f}"
  assert rows["SEDL (static+temporal)"][4] == "86.4"  # the paper's column, labelled as such
  h1 = metrics["temporal"]["test_mse"]["1"]
  assert rows["E(t+1)"] == [f"{h1['model']:.3f}", f"{h1['persistence']:.3f}", f"{h1['sequence_mean']:.3f}"]
  assert set(metrics["traits"]) == {"agitation", "distress", "engagement", "restlessness"}
  assert re.search(r"Transition rate: [0-9.]+ changes per frame", md)
  # Headline pairs tested on the same frames, each with its verdict in the report.
  assert set(metrics["comparisons"]) == {"sedl_vs_simclr_linear", "simclr_linear_vs_supervised_cnn",
                                         "sedl_vs_supervised_cnn"}
  for c in metrics["comparisons"].values():
    assert c["verdict"] in md and 0 <= c["p_value"] <= 1
    assert c["significant"] == (c["p_value"] < 0.05)
    assert c["verdict"].endswith("not significant") != c["significant"]


def test_behaviour_predictions_cover_every_test_frame(sedl_run):
  workdir, results = sedl_run
  with np.load(workdir / "report" / "behaviour.npz") as z:
    probs, labels = z["probs"], z["labels"]
  assert probs.shape[:2] == labels.shape and np.allclose(probs.sum(-1), 1, atol=1e-5)
  acc = float((probs.argmax(-1) == labels).mean())
  assert np.isclose(acc, results["behaviour"]["emotion"]["accuracy"])


def test_embeddings_are_cached_and_reused(sedl_run, monkeypatch):
  workdir, _ = sedl_run
  cached = list((workdir / "cache").glob("embeddings_step30_*.npz"))
  assert len(cached) == 1
  first = Context(tiny_config(), str(workdir)).embeddings
  calls = []
  real = embeddings.pretrain.restore
  monkeypatch.setattr(embeddings.pretrain, "restore",
                      lambda *a, **k: calls.append(1) or real(*a, **k))
  second = Context(tiny_config(), str(workdir)).embeddings
  assert not calls  # served from the cache file, the encoder was not even restored
  np.testing.assert_array_equal(first.frames["test"], second.frames["test"])


def test_eval_mode_rebuilds_the_same_report(sedl_run):
  workdir, results = sedl_run
  before = json.load(open(workdir / "report" / "report.json"))
  c = tiny_config()
  # Label efficiency's eval (its sub-runs restored) is test_card_e2e's eval test;
  # here the report reads its saved result (22 of this test's 29 s before).
  c.stages = tuple(s for s in c.stages if s != "label_efficiency")
  again = runner.run(c, str(workdir), mode="eval")
  after = json.load(open(workdir / "report" / "report.json"))
  assert after["table1"] == before["table1"]
  assert after["temporal"] == before["temporal"]
  assert again["behaviour"]["emotion"] == results["behaviour"]["emotion"]


def test_without_trait_labels_the_report_says_so(sedl_run, tmp_path):
  workdir, _ = sedl_run
  work = tmp_path / "w"
  shutil.copytree(workdir, work, ignore=shutil.ignore_patterns("behaviour", "label_efficiency"))
  c = tiny_config()
  c.stages = ("behaviour", "report")
  ctx = Context(c, str(work))
  data = ctx.data
  seqs = {s: dataclasses.replace(v, traits=None) for s, v in data.sequences.items()}
  ctx.data = dataclasses.replace(data, sequences=seqs, trait_names=())
  for stage in c.stages:  # what runner.run does, on the edited data
    ctx.results[stage] = result = registry.STAGES[stage](ctx)
    results_lib.write(str(work), stage, result)
  assert "no trait labels" in ctx.results["behaviour"].metrics["traits"]
  md = (work / "report" / "report.md").read_text()
  traits_section = md.split("## Behaviour traits", 1)[1].split("##", 1)[0]
  assert "no trait labels in this dataset: trait heads were not trained" in traits_section
  assert "| trait |" not in traits_section


# -- prediction with the trained run (sedl_jax.predict) ----------------------------------

PREDICT_NONE = {"face": "none", "smooth": "hmm"}


def _test_frames_folder(workdir, root):
  """The first test sequence's frames as PNG files (lossless: the pixels the run saw)."""
  seq = Context(tiny_config(), str(workdir)).data.sequences["test"]
  root.mkdir()
  for t, frame in enumerate(seq.frames[0]):
    fx.save(frame, str(root / f"frame_{t}.png"), "L")
  return seq


@pytest.fixture(scope="module")
def predictor(sedl_run):
  from sedl_jax.predict import Predictor
  return Predictor.from_workdir(str(sedl_run[0]), PREDICT_NONE)


def test_predicting_the_test_frames_reproduces_the_runs_evaluation(sedl_run, predictor, tmp_path):
  workdir, _ = sedl_run
  seq = _test_frames_folder(workdir, tmp_path / "frames")
  pred = predictor.predict(str(tmp_path / "frames"))
  names = predictor.model.class_names
  probs = np.array([[r[f"p_{c}"] for c in names] for r in pred.rows])
  with np.load(workdir / "report" / "behaviour.npz") as z:
    evaluated = z["probs"][0]
  # Same pixels, same crop (none), same encoder, standardisation and temporal
  # context: equal up to the 5 decimals the rows keep (5e-6) plus float32 rounding.
  np.testing.assert_allclose(probs, evaluated, atol=1e-5)
  assert [r["frame"] for r in pred.rows] == list(range(seq.frames.shape[1]))
  assert {r["track"] for r in pred.rows} == {0}
  track = pred.summary["inputs"][0]["tracks"][0]
  assert set(track["traits"]) == set(predictor.model.trait_names) and track["traits"]
  assert all(r["emotion_smoothed"] in names for r in pred.rows)
  # Forecasts for each feasible horizon; surprise from the second frame on.
  horizons = predictor.model.horizons
  assert horizons and all(f"forecast_{k}_emotion" in pred.columns for k in horizons)
  assert pred.rows[0]["surprise"] == "" and all(r["surprise"] >= 0 for r in pred.rows[1:])


def test_behaviour_on_the_fine_tuned_encoder_and_its_prediction(sedl_run, tmp_path):
  """ssl_finetune (the contrastive encoder fine-tuned with labels), then
  behaviour.encoder=finetune: the heads read that encoder, the report says so,
  and prediction reproduces the evaluation with it."""
  from sedl_jax.predict import Predictor
  workdir, results = sedl_run
  work = tmp_path / "w"
  shutil.copytree(workdir, work, ignore=shutil.ignore_patterns("behaviour", "label_efficiency"))
  c = tiny_config()
  c.stages = ("ssl_finetune", "behaviour", "report")
  c.behaviour.encoder = "finetune"
  c.report.tsne = False
  out = runner.run(c, str(work))
  assert out["ssl_finetune"]["init"] == "contrastive" and out["ssl_finetune"]["step"] == 10
  assert out["behaviour"]["encoder"] == "finetune"
  assert out["behaviour"]["emotion"]["predicted"] != results["behaviour"]["emotion"]["predicted"]
  assert "SEDL (static+temporal, fine-tuned encoder)" in (work / "report" / "report.md").read_text()
  seq = _test_frames_folder(work, tmp_path / "frames")
  pred = Predictor.from_workdir(str(work), PREDICT_NONE).predict(str(tmp_path / "frames"))
  probs = np.array([[r[f"p_{c}"] for c in pred.summary["model"]["class_names"]] for r in pred.rows])
  with np.load(work / "report" / "behaviour.npz") as z:
    np.testing.assert_allclose(probs, z["probs"][0], atol=1e-5)  # as the test above
  assert len(pred.rows) == seq.frames.shape[1]
  assert not any(k.startswith("forecast_") for k in pred.columns)  # see SedlModel


def test_smoothing_never_adds_changes_on_a_flickering_track():
  from sedl_jax.predict import smoothing
  # Two classes trading the lead by a hair every frame: raw labels change every
  # frame; with a sticky transition matrix the Viterbi path never changes.
  probs = np.tile([[0.51, 0.49], [0.49, 0.51]], (10, 1))
  path = smoothing.viterbi(probs, smoothing.transition_matrix(None, 2, stay=0.9))
  assert (np.diff(probs.argmax(-1)) != 0).all() and (np.diff(path) == 0).all()
  # Strong evidence still switches it, once.
  probs[:4], probs[-4:] = [0.99, 0.01], [0.01, 0.99]
  path = smoothing.viterbi(probs, smoothing.transition_matrix(None, 2, stay=0.9))
  assert path[0] == 0 and path[-1] == 1 and (np.diff(path) != 0).sum() == 1


def test_predicting_a_video_gives_every_frame_a_row_and_stable_tracks(sedl_run, tmp_path,
                                                                      monkeypatch):
  from sedl_jax.data import sources
  from sedl_jax.predict import NoUsableInput, Predictor
  # The workdir alone suffices (as on another machine): no training data is read.
  monkeypatch.setattr(sources, "load_dataset", lambda *a, **k: pytest.fail("data was loaded"))
  video = str(tmp_path / "session.avi")
  faces = [1, 1, 1, 2, 2, 2, 0, 1, 1]
  fx.face_video(video, faces, fps=10)
  bad = tmp_path / "bad"
  bad.mkdir()
  (bad / "notes.txt").write_text("not an image")
  (bad / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
  pred = Predictor.from_workdir(str(sedl_run[0]), {"save_embeddings": True}).predict(
      [video, str(bad)])
  rows = [r for r in pred.rows if r["input"] == video]
  # One row per face, one row for the frame without a face, in time order.
  assert [r["frame"] for r in rows] == [t for t, n in enumerate(faces) for _ in range(max(n, 1))]
  times = [r["time_s"] for r in rows]
  assert times == sorted(times) and times[-1] == pytest.approx(0.8)
  assert [r["face_found"] for r in rows if r["frame"] == 6] == [0]
  # The left face keeps one track throughout (across the empty frame); the right
  # face, present in frames 3-5, has its own.
  left = {r["track"] for r in rows if r["face_found"] and r["box_left"] < 160}
  right = {r["track"] for r in rows if r["face_found"] and r["box_left"] >= 160}
  assert len(left) == 1 and len(right) == 1 and left != right
  video_summary = pred.summary["inputs"][0]
  assert video_summary["no_face_frames"] == 1 and len(video_summary["tracks"]) == 2
  # Bad files are skipped, counted and listed; nothing else stops.
  assert pred.summary["skipped_count"] == 2
  assert {os.path.basename(k["file"]) for k in pred.summary["skipped"]} == {"notes.txt", "broken.png"}
  with pytest.raises(NoUsableInput, match="notes.txt"):  # nothing usable at all: one clear error
    Predictor.from_workdir(str(sedl_run[0])).predict(str(bad))
  paths = pred.write(str(tmp_path / "out"), save_embeddings=True)
  with open(paths["frames"]) as f:
    assert len(list(csv.DictReader(f))) == len(pred.rows)
  assert json.load(open(paths["summary"]))["skipped_count"] == 2
  assert "data:image/png;base64" in open(paths["timeline"]).read()
  with np.load(paths["embeddings"]) as z:
    assert z["embeddings"].shape[0] == sum(r["face_found"] for r in pred.rows)


def test_a_live_input_is_predicted_in_chunks_as_it_arrives(sedl_run, tmp_path, monkeypatch):
  """A video read as a live stream (the stand-in for a camera): frames.csv
  holds the same faces, boxes and tracks as the file predicted whole; with one
  chunk the same probabilities too. Ctrl-C mid-stream keeps every finished
  chunk's rows and still writes the summary and the timeline."""
  from sedl_jax.predict import Predictor, inputs
  video = str(tmp_path / "cam.avi")
  faces = [1, 1, 1, 2, 2, 2, 0, 1, 1, 1, 1]
  fx.face_video(video, faces, fps=10)
  whole = Predictor.from_workdir(str(sedl_run[0])).predict(video)
  keys = ["frame", "track", "face_found", "box_top", "box_left", "box_bottom", "box_right"]
  for chunk in (4, 100):
    p = Predictor.from_workdir(str(sedl_run[0]), {"live_chunk_frames": chunk})
    paths = p.predict_live(f"live:{video}", str(tmp_path / f"live{chunk}"))
    assert not paths["interrupted"]
    with open(paths["frames"]) as f:
      rows = list(csv.DictReader(f))
    assert [[int(r[k]) if r[k] else "" for k in keys] for r in rows] == [
        [r.get(k, "") for k in keys] for r in whole.rows]
    times = [float(r["time_s"]) for r in rows]
    assert times == sorted(times)  # the wall clock since the first frame
    if chunk == 100:
      names = p.model.class_names
      np.testing.assert_allclose(
          [[float(r[f"p_{c}"]) for c in names] for r in rows if r["face_found"] == "1"],
          [[r[f"p_{c}"] for c in names] for r in whole.rows if r["face_found"]], atol=2e-5)
    summary = json.load(open(paths["summary"]))
    assert summary["inputs"][0]["frames"] == len(faces)
    assert summary["inputs"][0]["no_face_frames"] == 1
    assert sum(t["faces"] for t in summary["inputs"][0]["tracks"]) == sum(faces)
  # Ctrl-C after 10 frames: chunks of 4 -> the first 8 frames are written.
  real_stream = inputs.live_stream

  def interrupted(path, fps=0.0, max_frames=0):
    stream = real_stream(path, fps, max_frames)

    def frames():
      for i, frame in enumerate(stream.frames()):
        if i == 10:
          raise KeyboardInterrupt
        yield frame
    return inputs.Stream(stream.name, "live", frames)

  monkeypatch.setattr(inputs, "live_stream", interrupted)
  p = Predictor.from_workdir(str(sedl_run[0]), {"live_chunk_frames": 4})
  paths = p.predict_live(f"live:{video}", str(tmp_path / "stopped"))
  assert paths["interrupted"]
  with open(paths["frames"]) as f:
    assert [int(r["frame"]) for r in csv.DictReader(f)] == [
        t for t, n in enumerate(faces[:8]) for _ in range(max(n, 1))]
  summary = json.load(open(paths["summary"]))
  assert summary["live"]["stopped_by"] == "interrupt" and summary["inputs"][0]["frames"] == 8
  assert "data:image/png;base64" in open(paths["timeline"]).read()
  with pytest.raises(inputs.InputError, match="camera:N"):
    real_stream("camera:front")
  with pytest.raises(inputs.InputError, match="cannot open"):
    real_stream(f"live:{tmp_path / 'missing.avi'}")


def _predict_cli(workdir, *args):
  return subprocess.run([sys.executable, "launch.py", "--mode=predict", f"--workdir={workdir}",
                         *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_predict_command_writes_the_outputs_and_exits_2_on_bad_input(sedl_run, tmp_path):
  workdir, _ = sedl_run
  video = str(tmp_path / "v.avi")
  fx.face_video(video, [1, 1, 0, 1])
  out = _predict_cli(workdir, f"--input={video}", f"--out={tmp_path / 'out'}")
  assert out.returncode == 0, out.stderr[-3000:]
  assert {"frames.csv", "summary.json", "timeline.html"} <= set(os.listdir(tmp_path / "out"))
  live = _predict_cli(workdir, f"--input=live:{video}", f"--out={tmp_path / 'live'}")
  assert live.returncode == 0 and "the stream ended" in live.stdout, live.stderr[-3000:]
  assert {"frames.csv", "summary.json", "timeline.html"} <= set(os.listdir(tmp_path / "live"))
  missing = _predict_cli(workdir, f"--input={tmp_path / 'nope.mp4'}")
  assert missing.returncode == 2 and "nope.mp4" in missing.stderr
  untrained = tmp_path / "untrained"
  shutil.copytree(workdir, untrained, ignore=shutil.ignore_patterns("behaviour", "cache",
                                                                    "label_efficiency"))
  out = _predict_cli(untrained, f"--input={video}")
  assert out.returncode == 2 and "'behaviour'" in out.stderr and "launch.py --config" in out.stderr
