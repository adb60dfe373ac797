"""SEDL on real-format data written here: a CK+-style named folder (sequences)
and an image folder (no sequences: temporal skipped, static features). The
diffusion-FER pipeline reads a FER2013 CSV in test_card_e2e."""

import json
import os
import shutil

import glob

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import data_fixtures as fx
import kill_drill as drills
from test_sedl_e2e import tiny_config
from sedl_jax import runner
from sedl_jax.config import validate
from sedl_jax.data import sources
from sedl_jax.stages import registry
from sedl_jax.train.checkpoint import CheckpointMismatch, StageCheckpoints


def _sedl_tiny():
  c = tiny_config()
  c.report.tsne = False
  return c


def ckplus_config(data_path: str, cache_dir: str):
  """SEDL on a CK+-style folder; also the kill drill's config (tests/kill_drill.py)."""
  c = _sedl_tiny()
  c.data.name, c.data.path, c.data.cache_dir = "named_folder", data_path, cache_dir
  c.data.sequence_length = 3  # the fixture's sequences have 6 frames: 2 windows each
  c.stages = ("contrastive", "temporal", "behaviour", "report")
  c.report.baselines = ("random_forest", "kmeans", "simclr_linear")
  return c


@pytest.fixture(scope="module")
def ckplus_run(tmp_path_factory):
  root = tmp_path_factory.mktemp("ckplus")
  fx.ckplus_folder(str(root / "ck"), fx.faces(num_subjects=8, size=32))
  results = runner.run(ckplus_config(str(root / "ck"), str(root / "c")), str(root / "w"))
  return root, results


def test_sedl_on_ckplus_named_folder(ckplus_run):
  root, results = ckplus_run
  metrics = json.load(open(root / "w" / "report" / "report.json"))
  assert metrics["evaluated_on"].startswith("every labelled frame")
  # Horizon 4 does not fit 3-frame windows: reported, not crashed.
  assert set(results["temporal"]["test_mse"]) == {"1", "2"}
  assert "horizons_not_evaluated" in results["temporal"]
  for key in ("random_forest", "kmeans", "simclr_linear", "sedl"):
    assert 0.0 <= metrics["table1"][key]["accuracy"] <= 1.0
  report = json.load(open(root / "w" / "data_report.json"))
  assert report["sequences"]["train"]["windows"] > 0
  assert (root / "w" / "report" / "report.html").stat().st_size > 1000


def test_sigkill_at_each_point_then_restart_equals_an_unbroken_run(ckplus_run, tmp_path):
  """SIGKILL during data preparation, mid-stage (a metrics row past the last
  checkpoint), during a checkpoint save and during the report; each time the
  same command restarts. The end state equals the unbroken fixture run's."""
  root, _ = ckplus_run
  args = [str(root / "ck"), str(tmp_path / "c")]
  drills.run(("prepare:10", "step:contrastive:6", "save:temporal:8",
              "write:report/report.md"),
             "test_real_e2e:ckplus_config", args, tmp_path / "w")
  drills.assert_same_run(tmp_path / "w", root / "w", ("contrastive", "temporal", "behaviour"))
  assert os.listdir(tmp_path / "c") == os.listdir(root / "c")  # the killed build is gone


def _unlabelled_folder(root, labelled_root):
  """Every labelled file copied (val/test ones must be dropped), new faces, a
  video of new faces and a file that is no image."""
  for i, path in enumerate(sorted(glob.glob(os.path.join(labelled_root, "*", "*")))):
    shutil.copy(path, os.path.join(root, f"copy_{i:03d}{os.path.splitext(path)[1]}"))
  new = fx.faces(num_subjects=3, size=32, seed=7).images["train"].images[:5]
  for i, im in enumerate(new):
    fx.save(im, os.path.join(root, "more", f"new_{i}.png"))
  fx.write_video(os.path.join(root, "more", "session.avi"), new[:3])
  open(os.path.join(root, "notes.txt"), "w").write("not a face")
  return len(new), 3


def _encoder_params(workdir, stage="contrastive"):
  with StageCheckpoints(str(workdir), stage) as ckpt:
    step = ckpt.latest_step()
    out = ckpt.manager.restore(step, args=ocp.args.Composite(model=ocp.args.StandardRestore()))
  return step, out["model"]["params"]["encoder"]


def test_sedl_on_image_folder_without_sequences(tmp_path):
  fx.image_folder(str(tmp_path / "f"), fx.faces(num_subjects=6, size=32))
  os.makedirs(tmp_path / "u" / "more")
  num_new, video_frames = _unlabelled_folder(str(tmp_path / "u"), str(tmp_path / "f"))
  c = _sedl_tiny()
  c.stages = ("contrastive", "temporal", "behaviour", "report")
  c.report.baselines = ("random_forest", "simclr_linear")
  c.data.name, c.data.path, c.data.cache_dir = "image_folder", str(tmp_path / "f"), str(tmp_path / "c")
  c.data.unlabelled = (f"faces:{tmp_path / 'u'}",)
  results = runner.run(c, str(tmp_path / "w"))
  assert "no sequences" in results["temporal"]["skipped"]
  assert results["behaviour"]["features"] == "static"
  metrics = json.load(open(tmp_path / "w" / "report" / "report.json"))
  assert metrics["evaluated_on"].startswith("the test-split images")
  report = json.load(open(tmp_path / "w" / "data_report.json"))
  assert metrics["num_test_frames"] == sum(report["class_counts"]["test"].values())
  assert metrics["insights"] is None and metrics["table1_temporal_mse"] is None

  # data.unlabelled: every copy of a val/test image dropped, the rest used, by
  # the self-supervised stage only.
  sizes, (u,) = report["split_sizes"], report["unlabelled"]["sources"]
  assert u["dropped_equal_to_a_val_or_test_image"] == sizes["val"] + sizes["test"]
  assert u["used"] == sizes["train"] + num_new + video_frames
  assert u["skipped_total"] == 1 and "notes.txt" in json.dumps(u["skipped"])
  data = sources.load_dataset(c.data)
  held_out = {im.tobytes() for s in ("val", "test") for im in data.images[s].images}
  assert not any(im.tobytes() in held_out for im in data.unlabelled)
  pretrain_x, pretrain_y = data.faces("train", unlabelled=True)
  assert len(pretrain_x) == sizes["train"] + u["used"] and (pretrain_y == -1).sum() == u["used"]
  assert len(data.faces("train")[0]) == sizes["train"]  # supervised pools: labelled data only

  # init_from with epochs=0: the other run's encoder as it is; same features,
  # so the same frozen-feature probe numbers.
  c2 = _sedl_tiny()
  c2.data = c.data
  c2.stages = ("contrastive",)
  c2.contrastive.init_from = str(tmp_path / "w")
  c2.contrastive.steps = c2.contrastive.epochs = 0
  c2.contrastive.pixel_baseline = False
  results2 = runner.run(c2, str(tmp_path / "w2"))
  step0, started = _encoder_params(tmp_path / "w2")
  _, source = _encoder_params(tmp_path / "w")
  assert step0 == 0
  for a, b in zip(jax.tree.leaves(started), jax.tree.leaves(source), strict=True):
    np.testing.assert_array_equal(a, b)
  for probe in ("linear_probe", "knn"):
    assert results2["contrastive"][probe]["accuracy"] == results["contrastive"][probe]["accuracy"]
  with StageCheckpoints(str(tmp_path / "w2"), "contrastive") as ckpt:
    assert ckpt.read_meta()["init_from"]["step"] == results["contrastive"]["step"]
  # A checkpoint whose encoder does not fit: refused before anything compiles.
  c2.model.width = 0.25
  with pytest.raises(CheckpointMismatch, match="config.model.width"):
    validate.validate(c2, known_stages=registry.STAGES, num_devices=1)
  c2.contrastive.init_from = str(tmp_path / "f")
  with pytest.raises(validate.ConfigError, match="init_from"):
    validate.validate(c2, known_stages=registry.STAGES, num_devices=1)
