"""The whole SEDL pipeline on the tiny config: report files, their numbers, eval mode."""

import dataclasses
import json
import re
import shutil

import numpy as np
import pytest

import learning
from configs import sedl
from sedl_jax import results as results_lib
from sedl_jax import runner
from sedl_jax.stages import embeddings, registry
from sedl_jax.stages.context import Context


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
  return c


@pytest.fixture(scope="module")
def sedl_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("sedl")
  results = runner.run(tiny_config(), str(workdir))
  return workdir, results


def test_every_stage_ran_and_report_files_exist(sedl_run):
  workdir, results = sedl_run
  assert set(results) == {"contrastive", "temporal", "behaviour", "supervised_cnn", "report"}
  report = workdir / "report"
  for name in ("report.json", "report.md", "report.html", "insights.json", "sedl_confusion.png",
               "transitions.png", "trajectories.png", "tsne.png"):
    assert (report / name).stat().st_size > 100, name
  html = (report / "report.html").read_text()
  assert html.count("data:image/png;base64,") == 4 and 'src="' not in html


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
    assert cells[0] == f"{100 * m['accuracy']:.1f}", (key, cells)
    assert cells[1] == f"{m['precision_macro']:.3f}" and cells[2] == f"{m['f1_macro']:.3f}"
  assert rows["SEDL (static+temporal)"][3] == f"{metrics['table1_temporal_mse']:.3f}"
  assert rows["SEDL (static+temporal)"][4] == "86.4"  # the paper's column, labelled as such
  h1 = metrics["temporal"]["test_mse"]["1"]
  assert rows["E(t+1)"] == [f"{h1['model']:.3f}", f"{h1['persistence']:.3f}", f"{h1['sequence_mean']:.3f}"]
  assert set(metrics["traits"]) == {"agitation", "distress", "engagement", "restlessness"}
  assert re.search(r"Transition rate: [0-9.]+ changes per frame", md)


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
  again = runner.run(tiny_config(), str(workdir), mode="eval")
  after = json.load(open(workdir / "report" / "report.json"))
  assert after["table1"] == before["table1"]
  assert after["temporal"] == before["temporal"]
  assert again["behaviour"]["emotion"] == results["behaviour"]["emotion"]


def test_without_trait_labels_the_report_says_so(sedl_run, tmp_path):
  workdir, _ = sedl_run
  work = tmp_path / "w"
  shutil.copytree(workdir, work, ignore=shutil.ignore_patterns("behaviour"))
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
