"""The diffusion-FER pipeline on the tiny config: all three Table-3 rows and the report."""

import json

import pytest

from configs import card_fer
from sedl_jax import runner


def tiny_config(arg="tiny"):
  c = card_fer.get_config(arg)
  c.barlow.steps = 3
  c.classifier.steps = 3
  c.card.steps = 20
  return c


@pytest.fixture(scope="module")
def card_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("card")
  return workdir, runner.run(tiny_config(), str(workdir))


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


def test_report_table_holds_accuracy_and_pavpu_for_three_rows(card_run):
  workdir, _ = card_run
  metrics = json.load(open(workdir / "report" / "metrics.json"))
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


def test_eval_mode_reproduces_card_metrics(card_run):
  workdir, _ = card_run
  before = json.load(open(workdir / "proposed" / "report" / "card.json"))
  c = tiny_config("tiny,ablation=proposed")
  runner.run(c, str(workdir / "proposed"), mode="eval")
  after = json.load(open(workdir / "proposed" / "report" / "card.json"))
  assert after == before
