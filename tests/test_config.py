import os
import subprocess
import sys

import pytest

import conftest

from configs import card_fer, sedl
from sedl_jax.config.validate import ConfigError, validate
from sedl_jax.stages import registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _check(c, devices=1):
  validate(c, known_stages=registry.STAGES, num_devices=devices)


@pytest.mark.parametrize("variant", ["tiny", "quick", "paper"])
def test_all_variants_validate(variant):
  configs = [sedl.get_config(variant)] + [card_fer.get_config(f"{variant},ablation={ab}")
                                          for ab in ("proposed", "r18_cbam", "r18")]
  for c in configs:
    for devices in (1, 2, 4):  # every shipped batch size splits over 1, 2 or 4 devices
      _check(c, devices=devices)
  # What validation guarantees the stages: each listed stage has its section, and
  # `report` is the last stage of its pipeline.
  for c in configs:
    assert all(s in c for s in c.stages) and c.stages[-1] == "report"
  assert card_fer.get_config(f"{variant}").stages == ("report",)  # rows run as sub-runs


def test_paper_values():
  c = sedl.get_config("paper")
  assert (c.data.image_size, c.model.encoder, c.contrastive.temperature) == (224, "resnet18", 0.7)
  assert c.contrastive.optimizer.name == "adam" and c.contrastive.optimizer.lr == 5e-4
  assert (c.contrastive.epochs, c.temporal.epochs) == (120, 40)
  b = card_fer.get_config("paper")
  assert b.barlow.projector == (8192, 8192, 8192) and b.barlow.lambd == 0.0051
  assert (b.card.timesteps, b.card.beta_start, b.card.beta_end) == (1000, 1e-4, 0.02)
  assert b.model.cbam and not card_fer.get_config("paper,ablation=r18").model.cbam


def test_unknown_variant_and_ablation():
  with pytest.raises(ValueError, match="huge"):
    sedl.get_config("huge")
  with pytest.raises(ValueError, match="ablation"):
    card_fer.get_config("quick,ablation=nope")


@pytest.mark.parametrize("mutate, field", [
    (lambda c: setattr(c, "stages", ("contrastive", "dance")), "config.stages"),
    (lambda c: setattr(c.contrastive, "batch_size", 0), "config.contrastive.batch_size"),
    (lambda c: setattr(c.temporal, "batch_size", -4), "config.temporal.batch_size"),
    (lambda c: setattr(c.data, "image_size", 16), "config.data.image_size"),
    (lambda c: setattr(c.data, "channels", 2), "config.data.channels"),
    (lambda c: setattr(c.data, "name", "imagenet"), "config.data.name"),
    (lambda c: setattr(c.contrastive, "epochs", 0), "config.contrastive.epochs"),
    (lambda c: setattr(c.contrastive.optimizer, "lr", -1e-3), "config.contrastive.optimizer.lr"),
    (lambda c: setattr(c.temporal.optimizer, "lr", float("nan")), "config.temporal.optimizer.lr"),
    (lambda c: setattr(c.contrastive, "temperature", 0.0), "config.contrastive.temperature"),
    (lambda c: setattr(c.behaviour, "keep_checkpoints", 0), "config.behaviour.keep_checkpoints"),
    (lambda c: setattr(c.supervised_cnn, "log_every_steps", 0),
     "config.supervised_cnn.log_every_steps"),
    (lambda c: setattr(c.temporal, "checkpoint_every_steps", 0),
     "config.temporal.checkpoint_every_steps"),
])
def test_validation_names_the_field(mutate, field):
  c = sedl.get_config("quick")
  c.model.stem = "imagenet" if field == "config.data.image_size" else c.model.stem
  mutate(c)
  with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
    _check(c)


@pytest.mark.parametrize("field, value", [("num_samples", 0), ("timesteps", 1),
                                          ("eval_batch_size", 0), ("devices_per_process", -1)])
def test_card_sampling_fields_are_checked(field, value):
  c = card_fer.get_config("tiny,ablation=proposed")
  c.card[field] = value
  with pytest.raises(ConfigError, match=rf"config\.card\.{field}="):
    _check(c)


def test_data_path_kind_is_checked(tmp_path):
  c = sedl.get_config("tiny")
  c.data.name, c.data.path = "image_folder", str(tmp_path / "f.csv")
  (tmp_path / "f.csv").write_text("x")
  with pytest.raises(ConfigError, match=r"config\.data\.path=.*reads a folder, not a file"):
    _check(c)
  c.data.name, c.data.path = "fer2013", str(tmp_path)
  with pytest.raises(ConfigError, match=r"config\.data\.path=.*reads one file"):
    _check(c)


def test_global_batch_must_divide_device_count():
  c = sedl.get_config("tiny")
  c.contrastive.batch_size = 18
  with pytest.raises(ConfigError, match=r"contrastive\.batch_size=18.*4 devices"):
    _check(c, devices=4)


def test_missing_dataset_path(tmp_path):
  c = sedl.get_config("tiny")
  c.data.name = "image_folder"
  with pytest.raises(ConfigError, match=r"config\.data\.path is not set"):
    _check(c)
  c.data.path = str(tmp_path / "nowhere")
  with pytest.raises(ConfigError, match=r"config\.data\.path=.*nowhere.*no such file"):
    _check(c)


@pytest.mark.parametrize("field,value", [("face_crop", "dlib"), ("no_face", "drop"),
                                         ("sequence_length", 1), ("video_fps", -1.0),
                                         ("video_stride", 0), ("fold", 3)])
def test_real_data_fields_are_checked(tmp_path, field, value):
  c = sedl.get_config("tiny")
  c.data.name, c.data.path, c.data.folds = "image_folder", str(tmp_path), 3
  c.data[field] = value
  with pytest.raises(ConfigError, match=rf"config\.data\.{field}="):
    _check(c)


@pytest.mark.parametrize("flag,kernels,copies,huge", [("auto", "auto", "auto", "auto"),
                                                      ("2", "xla_default", "off", "off")])
def test_launcher_rejects_bad_input_before_compiling(tmp_path, flag, kernels, copies, huge):
  from sedl_jax import cpu_devices, cpu_kernels, huge_pages
  env = conftest.child_env()  # without the tests' kernel flag: the launcher chooses
  env["XLA_FLAGS"] = env.get("XLA_FLAGS", "").replace(cpu_kernels.EIGEN_CONVOLUTIONS, "")
  # Without the tests' huge-page tunable too: with `auto` the launcher runs itself again.
  env = huge_pages.without_ours(env)
  out = subprocess.run(
      [sys.executable, "launch.py", "--config=configs/sedl.py:tiny", f"--workdir={tmp_path}",
       "--config.stages=('contrastive','dance')", f"--cpu_devices={flag}",
       f"--cpu_conv_kernels={kernels}", f"--cpu_conv_input_copy={copies}",
       f"--host_huge_pages={huge}"],
      cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
  assert out.returncode == 2
  assert "config.stages: unknown stage 'dance'" in out.stderr
  # One XLA CPU device per usable core by default (tiny batch sizes all divide 2).
  want = (cpu_devices.largest_fitting(cpu_devices.usable_cores(), [16, 4, 8, 16])
          if flag == "auto" else 2)
  chosen = cpu_kernels.choose(kernels, env={})
  expected = cpu_kernels.in_effect({"XLA_FLAGS": chosen or ""})
  stored = "conv inputs stored" if copies == "auto" else "conv inputs not stored"
  pages = huge_pages.choose(huge, env)[1]  # what the process that runs reports
  assert (f"[devices] {want} cpu device(s) in 1 process(es); {expected}; {stored}; {pages}"
          in out.stdout), out.stdout


def test_eval_without_a_checkpoint_exits_2_naming_the_stage(tmp_path):
  out = subprocess.run(
      [sys.executable, "launch.py", "--config=configs/sedl.py:tiny", f"--workdir={tmp_path}",
       "--mode=eval", "--config.stages=('contrastive',)"],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode == 2, out.stderr[-2000:]
  assert "checkpoint error: no checkpoint in" in out.stderr
  assert "train stage 'contrastive' first" in out.stderr


def _numeric_fields(config, prefix=""):
  for key, value in config.items():
    if hasattr(value, "items"):
      yield from _numeric_fields(value, f"{prefix}{key}.")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
      yield f"{prefix}{key}", value


@pytest.mark.parametrize("make", [lambda: sedl.get_config("quick"),
                                  lambda: card_fer.get_config("quick,ablation=proposed")],
                         ids=["sedl", "card_fer"])
def test_every_numeric_field_rejects_a_bad_value_naming_it(make):
  from sedl_jax.config.validate import MAY_BE_NEGATIVE
  fields = list(_numeric_fields(make()))
  assert len(fields) > 100  # the walk reaches the nested sections
  for field, value in fields:
    bad_values = ([float("nan")] if isinstance(value, float) else []) + (
        [] if field in MAY_BE_NEGATIVE else [-1])
    for bad in bad_values:
      c = make()
      section = c
      for part in field.split(".")[:-1]:
        section = section[part]
      section[field.split(".")[-1]] = type(value)(bad) if bad == -1 else bad
      with pytest.raises(ConfigError, match=rf"config\.{field.replace('.', r'[.]')}\b"):
        _check(c)
