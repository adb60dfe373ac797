"""End-to-end behaviour of the contrastive stage on the tiny config (CPU)."""

import json
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import sedl
from sedl_jax import finished, runner
from sedl_jax.stages.context import Context
from sedl_jax.train import checkpoint


def tiny_config():
  c = sedl.get_config("tiny")
  c.stages = ("contrastive",)
  c.contrastive.steps = 6
  c.contrastive.log_every_steps = 2
  c.contrastive.checkpoint_every_steps = 2
  c.contrastive.keep_checkpoints = 5
  c.contrastive.use_sequence_frames = False  # 3 steps an epoch: epochs end at 3 and 6
  return c


def _final_params(workdir):
  ck = checkpoint.StageCheckpoints(str(workdir), "contrastive")
  step = ck.latest_step()
  out = ck.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  ck.close()
  return step, out["state"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("uninterrupted")
  results = runner.run(tiny_config(), str(workdir))
  return workdir, results


def test_run_writes_metrics_checkpoints_and_report(finished_run):
  workdir, results = finished_run
  lines = [json.loads(l) for l in open(workdir / "metrics.jsonl")]
  assert {"loss", "lr", "grad_norm", "param_norm", "update_norm", "images_per_s", "ntxent",
          "probe_acc"} <= set(lines[0])
  assert any("online_probe_val_acc" in l for l in lines)
  assert list((workdir / "tb").iterdir())
  saved = json.load(open(workdir / "report" / "contrastive.json"))
  assert saved["linear_probe"]["num_examples"] == sum(map(sum, saved["linear_probe"]["confusion"]))
  assert 0.0 <= saved["knn"]["accuracy"] <= 1.0
  assert (workdir / "report" / "contrastive_linear_probe_confusion.png").stat().st_size > 1000
  meta = checkpoint.StageCheckpoints(str(workdir), "contrastive").read_meta()
  assert meta["class_names"][0] == "angry" and meta["image_size"] == 32 and meta["channels"] == 1
  assert meta["model"]["encoder"] == "resnet_tiny" and meta["data_fingerprint"]
  assert json.load(open(workdir / "config.json"))["contrastive"]["steps"] == 6


# A crash mid-stage, then resume, equal to an unbroken run: the kill drills of
# test_real_e2e and test_card_e2e (SIGKILL at four points of whole pipelines).


def test_a_restart_reads_finished_stages_back_unless_something_changed(finished_run, tmp_path,
                                                                       capsys):
  ref_dir, results = finished_run
  shutil.copytree(ref_dir, tmp_path, dirs_exist_ok=True)
  capsys.readouterr()
  again = runner.run(tiny_config(), str(tmp_path))
  assert again == json.loads(json.dumps(results, default=str))
  assert "[runner] contrastive: finished earlier" in capsys.readouterr().out
  runner.run(tiny_config(), str(tmp_path), mode="eval")  # --mode=eval recomputes
  assert "finished earlier" not in capsys.readouterr().out
  # Any config value, or another checkpoint (a retrained model), gives another key.
  ctx = Context(config=tiny_config(), workdir=str(tmp_path))
  key = finished.key(ctx, "contrastive")
  assert finished.matches(str(tmp_path), "contrastive", key)
  c = tiny_config()
  c.contrastive.knn_k += 1
  assert finished.key(Context(config=c, workdir=str(tmp_path)), "contrastive") != key
  step, state = _final_params(tmp_path)
  with checkpoint.StageCheckpoints(str(tmp_path), "contrastive", keep=5) as ck:
    ck.save(step + 1, state, {"params": state["params"]}, ck.read_meta())
  assert finished.key(ctx, "contrastive") != key


def test_resuming_with_changed_training_fields_is_refused_naming_them(finished_run, tmp_path):
  ref_dir, _ = finished_run
  shutil.copytree(ref_dir / "checkpoints", tmp_path / "checkpoints")
  c = tiny_config()
  c.contrastive.steps = 8  # longer, and another learning rate: not the run it resumes
  c.contrastive.optimizer.lr = 1e-3
  with pytest.raises(checkpoint.TrainingChanged) as e:
    runner.run(c, str(tmp_path))
  assert "config.contrastive.steps: checkpoint has 6, config has 8" in str(e.value)
  assert "config.contrastive.optimizer.lr" in str(e.value) and "--allow_config_change" in str(e.value)
  assert checkpoint.TrainingChanged.__mro__[1] is checkpoint.CheckpointMismatch  # exit 2


def test_eval_mode_reproduces_saved_probe_metrics(finished_run):
  workdir, _ = finished_run
  saved = json.load(open(workdir / "report" / "contrastive.json"))
  again = runner.run(tiny_config(), str(workdir), mode="eval")["contrastive"]
  for probe in ("linear_probe", "knn"):
    for key in ("accuracy", "precision_macro", "f1_macro", "confusion"):
      assert again[probe][key] == saved[probe][key], (probe, key)
  assert again["step"] == 6


def test_restoring_for_use_builds_no_training_state(finished_run, monkeypatch):
  """Only the inference variables are read: no optimiser, no TrainState."""
  workdir, _ = finished_run
  from sedl_jax.stages import pretrain
  from sedl_jax.stages.context import Context
  from sedl_jax.train import optim, state as train_state

  def forbidden(*a, **k):
    raise AssertionError("restoring a model for use built training state")

  monkeypatch.setattr(optim, "make_optimizer", forbidden)
  monkeypatch.setattr(train_state, "create", forbidden)
  trained = pretrain.restore(Context(tiny_config(), str(workdir)), "contrastive")
  step, full = _final_params(workdir)
  assert trained.step == step == 6
  for x, y in zip(jax.tree.leaves(trained.variables["params"]), jax.tree.leaves(full["params"])):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert trained.meta["input_shapes"] == [[[1, 32, 32, 1], "float32"]]


def test_eval_without_checkpoint_fails_clearly(tmp_path):
  with pytest.raises(checkpoint.MissingCheckpoint,
                     match="no checkpoint.*train stage 'contrastive' first"):
    runner.run(tiny_config(), str(tmp_path), mode="eval")


def test_restore_into_other_width_names_the_field(finished_run):
  workdir, _ = finished_run
  c = tiny_config()
  c.model.width = 0.25
  with pytest.raises(checkpoint.CheckpointMismatch, match=r"config\.model\.width: checkpoint has 0\.125"):
    runner.run(c, str(workdir), mode="eval")


def test_repeats_run_each_seed_and_give_mean_and_sd(finished_run, tmp_path):
  """Seed 0 of a repeated run is the plain run (same seeds, same result); seed 1
  moves every training seed but keeps the data and splits; repeats.json holds the
  mean and sd of the two (NumPy reference)."""
  _, plain = finished_run
  c = tiny_config()
  c.repeats = 2
  c.contrastive.pixel_baseline = False  # not a training field: seed 0 still equals the plain run
  out = runner.run(c, str(tmp_path))
  s0, s1 = out["seed_0"]["contrastive"], out["seed_1"]["contrastive"]
  assert s0["linear_probe"]["accuracy"] == plain["contrastive"]["linear_probe"]["accuracy"]
  assert s0["test_subjects"] == s1["test_subjects"]  # same splits
  cfg1 = json.load(open(tmp_path / "seed_1" / "config.json"))
  assert (cfg1["seed"], cfg1["contrastive"]["seed"], cfg1["data"]["shuffle_seed"],
          cfg1["data"]["seed"]) == (1, 1, 1, 0)
  summary = json.load(open(tmp_path / "repeats.json"))
  m = summary["metrics"]["contrastive.linear_probe.accuracy"]
  values = [s0["linear_probe"]["accuracy"], s1["linear_probe"]["accuracy"]]
  np.testing.assert_allclose([m["mean"], m["sd"]], [np.mean(values), np.std(values, ddof=1)])
  assert "contrastive.linear_probe.accuracy" in (tmp_path / "repeats.md").read_text()
