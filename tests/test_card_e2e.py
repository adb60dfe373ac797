"""The diffusion-FER pipeline on the tiny config, reading a FER2013 CSV written
here (with three bad rows): all three Table-3 rows, the report, eval mode."""

import json

import pytest

import data_fixtures as fx
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
  c.barlow.steps = 8
  c.classifier.steps = 8
  c.card.steps = 40
  return c


@pytest.fixture(scope="module")
def card_run(tmp_path_factory, fer_csv):
  workdir = tmp_path_factory.mktemp("card")
  return workdir, runner.run(tiny_config(fer_csv), str(workdir))


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
                      ("proposed", {"barlow", "classifier", "card", "report"})):
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
    assert f"| {100 * row['accuracy']:.1f} | {100 * row['pavpu_ttest']:.1f} |" in md
  for name in ("reliability.png", "card_confusion.png", "certain_vs_uncertain.png", "report.html"):
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
