"""The diffusion-FER pipeline on the tiny config, reading a FER2013 CSV written
here (with three bad rows): all three Table-3 rows, the report, eval mode."""

import json
import os
import pathlib

import numpy as np
import pytest

import data_fixtures as fx
import kill_drill as drills
import learning
from configs import card_fer
from sedl_jax import runner


@pytest.fixture(scope="module")
def fer_csv(tmp_path_factory):
  root = tmp_path_factory.mktemp("fer")
  fx.fer2013_csv(str(root / "fer2013.csv"), fx.faces(num_subjects=8, size=32), bad_rows=True)
  return root


def tiny_config(fer_root, arg="tiny"):
  c = card_fer.get_config(arg)
  c.data.name, c.data.path = "fer2013", str(fer_root / "fer2013.csv")
  c.data.cache_dir = str(fer_root / "cache")
  c.data.in_memory_max_mb = 64  # pixels in memory; the SEDL real-data tests stream them
  c.barlow.steps = 8
  c.classifier.steps = 8
  c.card.steps = 40
  c.supervised_cnn.steps = 8  # label efficiency's supervised row (proposed sub-run)
  c.label_efficiency.fractions = (0.5,)  # 1.0's reuse of the full-label stages: test_sedl_e2e
  return c


@pytest.fixture(scope="module")
def card_run(tmp_path_factory, fer_csv):
  workdir = tmp_path_factory.mktemp("card")
  return workdir, runner.run(tiny_config(fer_csv), str(workdir))


def proposed_config(fer_root: str, cache_dir: str):
  """The proposed row alone, as the fixture's sub-run trains it, preparing its data
  into `cache_dir`; the kill drill's config (tests/kill_drill.py)."""
  c = tiny_config(pathlib.Path(fer_root), "tiny,ablation=proposed")
  c.data.cache_dir = cache_dir
  return c


def test_sigkill_at_each_point_then_restart_equals_an_unbroken_run(card_run, fer_csv, tmp_path):
  """The proposed row SIGKILLed during data preparation, mid-Barlow (a metrics
  row past the last checkpoint), during a CARD checkpoint save and during the
  report, restarted each time: it ends equal to the fixture's unbroken row.
  (Runs before the tests below that write into the fixture's workdir.)"""
  workdir, _ = card_run
  drills.run(("prepare:10", "step:barlow:6", "save:card:8", "write:report/report.md"),
             "test_card_e2e:proposed_config", [str(fer_csv), str(tmp_path / "c")], tmp_path / "w")
  drills.assert_same_run(tmp_path / "w", workdir / "proposed", ("barlow", "classifier", "card"))
  assert os.listdir(tmp_path / "c") == os.listdir(fer_csv / "cache")  # the killed build is gone


def test_fer2013_csv_was_read_with_its_splits_and_bad_rows_counted(card_run):
  workdir, _ = card_run
  for row in ("r18", "r18_cbam", "proposed"):
    report = json.load(open(workdir / row / "data_report.json"))
    assert report["source"] == "fer2013" and report["split_method"] == "as given by the data"
    assert report["skipped_total"] == 3 and len(report["class_names"]) == 7
    assert report["cache"] == ("built" if row == "r18" else "reused")


def test_every_ablation_row_ran_with_its_own_model(card_run):
  workdir, results = card_run
  for row, stages in (("r18", {"classifier", "card", "report"}),
                      ("r18_cbam", {"classifier", "card", "report"}),
                      ("proposed", {"barlow", "classifier", "card", "label_efficiency", "report"})):
    cfg = json.load(open(workdir / row / "config.json"))
    assert set(cfg["stages"]) == stages
    assert cfg["model"]["cbam"] == (row != "r18")
    assert cfg["classifier"]["init"] == ("barlow" if row == "proposed" else "scratch")
    assert (workdir / row / "report" / "card.json").exists()
  assert (workdir / "proposed" / "checkpoints" / "barlow").is_dir()


def test_pretraining_and_card_lowered_their_loss(card_run):
  # f_phi's 8 fine-tuning steps on 8 subjects stay at noise level here; the same
  # classifier stage code is checked to learn in test_sedl_e2e (supervised_cnn).
  workdir, _ = card_run
  learning.assert_loss_fell(workdir / "proposed", "barlow", windows=2)
  learning.assert_loss_fell(workdir / "proposed", "card", windows=3)


def test_report_table_holds_accuracy_and_pavpu_for_three_rows(card_run):
  workdir, _ = card_run
  metrics = json.load(open(workdir / "report" / "report.json"))
  md = (workdir / "report" / "report.md").read_text()
  assert set(metrics["table3"]) == {"r18", "r18_cbam", "proposed"}
  for name, row in metrics["table3"].items():
    card = json.load(open(workdir / name / "report" / "card.json"))
    assert row["accuracy"] == card["accuracy"] and row["pavpu_ttest"] == card["pavpu_ttest"]
    assert 0 <= row["pavpu_ttest"] <= 1 and 0 <= row["pavpu_threshold"] <= 1
    pct = lambda v, ci: f"{100 * v:.1f} ({100 * ci[0]:.1f}-{100 * ci[1]:.1f})"
    assert row["accuracy_ci95"][0] <= row["accuracy"] <= row["accuracy_ci95"][1]
    assert (f"| {pct(row['accuracy'], row['accuracy_ci95'])} | "
            f"{pct(row['pavpu_ttest'], row['pavpu_ttest_ci95'])} |") in md
  # The proposed row against each ablation row, tested on the same test images.
  for other in ("r18_cbam", "r18"):
    c = metrics["comparisons"][f"proposed_vs_{other}"]
    assert c["verdict"] in md and c["significant"] == (c["p_value"] < 0.05)
  # Label efficiency (from the proposed row): Barlow Twins + linear / + fine-tune
  # (f_phi) against the supervised CNN and pixels, tested at each fraction.
  le = metrics["label_efficiency"]["fractions"]
  assert set(le) == {"0.5"} and "## Label efficiency" in md
  for stage in ("supervised_cnn", "classifier"):  # retrained with half the labels
    assert (workdir / "proposed" / "label_efficiency" / "0.5" / "checkpoints" / stage).is_dir()
  assert set(le["0.5"]["comparisons"]) == {"ssl_linear_vs_supervised_cnn",
                                           "ssl_finetune_vs_supervised_cnn",
                                           "ssl_linear_vs_pixels_linear"}
  for name in ("reliability.png", "card_confusion.png", "certain_vs_uncertain.png", "report.html",
               "label_efficiency.png"):
    assert (workdir / "report" / name).stat().st_size > 1000
  card = json.load(open(workdir / "proposed" / "report" / "card.json"))
  assert card["num_samples"] == 8 and card["timesteps"] == 50


def test_eval_mode_reproduces_card_metrics(card_run, fer_csv):
  workdir, _ = card_run
  before = json.load(open(workdir / "proposed" / "report" / "card.json"))
  c = tiny_config(fer_csv, "tiny,ablation=proposed")
  runner.run(c, str(workdir / "proposed"), mode="eval")
  after = json.load(open(workdir / "proposed" / "report" / "card.json"))
  assert after == before


def test_predict_gives_card_votes_and_abstains_by_the_runs_ttest_rule(card_run, tmp_path):
  from sedl_jax.predict import Predictor
  from sedl_jax.train.checkpoint import MissingCheckpoint
  workdir, _ = card_run
  with pytest.raises(MissingCheckpoint, match="sub-runs"):  # the ablation parent is no model
    Predictor.from_workdir(str(workdir))
  faces = fx.faces(num_subjects=3, size=32).images["test"].images[:6]
  for i, face in enumerate(faces):
    fx.save(face, str(tmp_path / f"face_{i}.png"))
  run = workdir / "proposed"
  cfg = json.load(open(run / "config.json"))["card"]
  pred = Predictor.from_workdir(str(run), {"face": "none"}).predict(
      sorted(str(p) for p in tmp_path.glob("face_*.png")))
  assert len(pred.rows) == len(faces)
  n = cfg["num_samples"]
  for r in pred.rows:
    p = np.array([r[f"p_{c}"] for c in pred.summary["model"]["class_names"]])
    assert abs(p.sum() - 1) < 1e-4  # 7 entries rounded to 5 decimals
    assert round(r["vote_share"] * n) / n == pytest.approx(r["vote_share"]) and r["vote_share"] > 0
    # CARD's rule (uncertainty.summarise_samples): certain when the paired t-test
    # p < alpha; a zero-variance pair has p = 0 and is certain.
    assert r["certain"] == int(r["p_value"] < cfg["pavpu_alpha"])
    assert r["emotion_or_abstain"] == (r["emotion"] if r["certain"] else "abstain")
  for entry, r in zip(pred.summary["inputs"], pred.rows):  # one image, one face, one track each
    assert entry["input"] == r["input"] and entry["tracks"][0]["abstain_rate"] == 1 - r["certain"]
  assert pred.summary["model"]["num_samples"] == n
