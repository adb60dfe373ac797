"""SEDL on real-format data written here: a CK+-style named folder (sequences)
and an image folder (no sequences: temporal skipped, static features). The
diffusion-FER pipeline reads a FER2013 CSV in test_card_e2e."""

import json

import data_fixtures as fx
from test_sedl_e2e import tiny_config
from sedl_jax import runner


def _sedl_tiny():
  c = tiny_config()
  c.report.tsne = False
  return c


def test_sedl_on_ckplus_named_folder(tmp_path):
  fx.ckplus_folder(str(tmp_path / "ck"), fx.faces(num_subjects=8, size=32))
  c = _sedl_tiny()
  c.data.name, c.data.path, c.data.cache_dir = "named_folder", str(tmp_path / "ck"), str(tmp_path / "c")
  c.data.sequence_length = 3  # the fixture's sequences have 6 frames: 2 windows each
  c.stages = ("contrastive", "temporal", "behaviour", "report")
  c.report.baselines = ("random_forest", "kmeans", "simclr_linear")
  results = runner.run(c, str(tmp_path / "w"))
  metrics = json.load(open(tmp_path / "w" / "report" / "report.json"))
  assert metrics["evaluated_on"].startswith("every labelled frame")
  # Horizon 4 does not fit 3-frame windows: reported, not crashed.
  assert set(results["temporal"]["test_mse"]) == {"1", "2"}
  assert "horizons_not_evaluated" in results["temporal"]
  for key in ("random_forest", "kmeans", "simclr_linear", "sedl"):
    assert 0.0 <= metrics["table1"][key]["accuracy"] <= 1.0
  report = json.load(open(tmp_path / "w" / "data_report.json"))
  assert report["sequences"]["train"]["windows"] > 0
  assert (tmp_path / "w" / "report" / "report.html").stat().st_size > 1000


def test_sedl_on_image_folder_without_sequences(tmp_path):
  fx.image_folder(str(tmp_path / "f"), fx.faces(num_subjects=6, size=32))
  c = _sedl_tiny()
  c.stages = ("contrastive", "temporal", "behaviour", "report")
  c.report.baselines = ("random_forest", "simclr_linear")
  c.data.name, c.data.path, c.data.cache_dir = "image_folder", str(tmp_path / "f"), str(tmp_path / "c")
  results = runner.run(c, str(tmp_path / "w"))
  assert "no sequences" in results["temporal"]["skipped"]
  assert results["behaviour"]["features"] == "static"
  metrics = json.load(open(tmp_path / "w" / "report" / "report.json"))
  assert metrics["evaluated_on"].startswith("the test-split images")
  assert metrics["num_test_frames"] == sum(json.load(open(tmp_path / "w" / "data_report.json"))
                                           ["class_counts"]["test"].values())
  assert metrics["insights"] is None and metrics["table1_temporal_mse"] is None
