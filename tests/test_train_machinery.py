import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import sedl
from sedl_jax.config import defaults
from sedl_jax.train import checkpoint, loop, optim
from sedl_jax.train import state as train_state
from sedl_jax.train.metrics import MetricWriter


def _params():
  return {"dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones((2,))},
          "bn": {"scale": jnp.ones((2,)), "bias": jnp.zeros((2,))}}


def test_weight_decay_skips_biases_and_norms():
  mask = optim.decay_mask(_params())
  assert mask["dense"]["kernel"] and not mask["dense"]["bias"]
  assert not mask["bn"]["scale"] and not mask["bn"]["bias"]
  for name in ("adam", "sgd", "lars"):
    cfg = defaults.optimizer(name, 0.1, weight_decay=0.5, schedule="constant")
    tx, _ = optim.make_optimizer(cfg, 10, 5)
    p = _params()
    zero = jax.tree.map(jnp.zeros_like, p)
    upd, _ = tx.update(zero, tx.init(p), p)
    # zero gradient: only decayed leaves move
    assert float(jnp.abs(upd["dense"]["kernel"]).sum()) > 0, name
    assert float(jnp.abs(upd["dense"]["bias"]).sum()) == 0, name
    assert float(jnp.abs(upd["bn"]["scale"]).sum()) == 0, name


def test_a_small_stage_takes_the_first_devices_of_every_process():
  from types import SimpleNamespace
  from sedl_jax.train.mesh import first_per_process
  # Two processes of three devices, in mesh order (process-major, as jax.devices()).
  devices = [SimpleNamespace(id=i, process_index=i // 3) for i in range(6)]
  ids = lambda k: [d.id for d in first_per_process(devices, k)]
  assert ids(1) == [0, 3] and ids(2) == [0, 1, 3, 4]
  assert ids(0) == ids(3) == ids(7) == list(range(6))


def test_warmup_cosine_schedule_and_steps():
  cfg = defaults.optimizer("adam", 1.0, warmup_epochs=1)
  _, sched = optim.make_optimizer(cfg, total_steps=20, steps_per_epoch=5)
  assert float(sched(0)) == 0.0
  np.testing.assert_allclose(float(sched(5)), 1.0, rtol=1e-6)
  assert float(sched(19)) < 0.05
  c = sedl.get_config("tiny").contrastive
  c.epochs, c.steps = 3, 0
  assert optim.resolve_steps(c, 100, 16) == (18, 6)
  c.steps = 7
  assert optim.resolve_steps(c, 100, 16) == (7, 6)
  # quick bounds an epochs-given length: a 1,000-image set trains as many steps
  # as the synthetic set's minimum, a huge one at most 5x that; `steps` wins.
  q = sedl.get_config("quick").contrastive
  assert (q.min_steps, q.max_steps) == (200, 1000)
  assert optim.resolve_steps(q, 1000, 128) == (200, 7)
  assert optim.resolve_steps(q, 4400, 128) == (204, 34)
  assert optim.resolve_steps(q, 290_000, 128) == (1000, 2265)
  assert "raised to min_steps=200" in optim.describe_length(q, 1000, 128)
  q.epochs = 0  # no training (a stage that only takes a pretrained model)
  assert optim.resolve_steps(q, 1000, 128)[0] == 0
  q.steps = 50
  assert optim.resolve_steps(q, 290_000, 128) == (50, 2265)


def _toy(tmp_path, nan_at=None):
  """A 1-parameter regression trained by the shared loop."""
  tx = optax.sgd(0.3)  # w -> 3 with contraction 0.4 per step
  st = train_state.create({"params": {"w": jnp.zeros(())}}, tx, jax.random.PRNGKey(0))

  def loss_fn(params, bs, batch, rng):
    loss = jnp.mean((params["w"] - batch["y"]) ** 2)
    if nan_at is not None:
      loss = jnp.where(batch["step"][0] >= nan_at, jnp.nan, loss)
    return loss, (bs, {})

  step = jax.jit(train_state.make_train_step(loss_fn, tx, optax.constant_schedule(0.3)))

  def batches(start):
    s = start
    while True:
      s += 1
      yield {"y": jnp.full((4,), 3.0), "step": jnp.full((4,), s)}

  ck = checkpoint.StageCheckpoints(str(tmp_path), "toy", keep=3)
  spec = loop.LoopSpec("toy", total_steps=10, steps_per_epoch=5, examples_per_step=4,
                       log_every=1, checkpoint_every=2)
  return spec, st, step, batches, ck


def test_loop_trains_and_checkpoints(tmp_path):
  spec, st, step, batches, ck = _toy(tmp_path)
  w = MetricWriter(str(tmp_path))
  st = loop.train(spec, st, step, batches, ck, {"stage": "toy"}, w)
  w.close()
  assert int(st.step) == 10 and abs(float(st.params["w"]) - 3.0) < 0.1
  assert ck.latest_step() == 10
  lines = open(tmp_path / "metrics.jsonl").read().splitlines()
  assert len(lines) == 10 and '"grad_norm"' in lines[0] and '"images_per_s"' in lines[0]


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  spec, st, step, batches, ck = _toy(tmp_path, nan_at=7)
  w = MetricWriter(str(tmp_path))
  with pytest.raises(loop.NonFiniteLoss, match=r"loss is nan at step 7.*last good checkpoint \(step 6\)"):
    loop.train(spec, st, step, batches, ck, {"stage": "toy"}, w)
  w.close()
  assert ck.latest_step() == 6
  restored = ck.restore_state(st, {})
  assert np.isfinite(float(restored.params["w"])) and ck.read_meta()["step"] == 6


def test_restore_into_different_model_names_the_field(tmp_path):
  ck = checkpoint.StageCheckpoints(str(tmp_path), "s")
  st = train_state.create({"params": {"w": jnp.zeros(())}}, optax.sgd(0.1), jax.random.PRNGKey(0))
  ck.save(1, st, {"params": st.params}, {"model": {"width": 0.25, "cbam": False}, "image_size": 32})
  with pytest.raises(checkpoint.CheckpointMismatch, match=r"config\.model\.width: checkpoint has 0\.25, config has 0\.5"):
    ck.restore_state(st, {"model": {"width": 0.5, "cbam": False}, "image_size": 32})
  with pytest.raises(checkpoint.CheckpointMismatch, match="image_size"):
    ck.restore_model({"params": st.params}, {"model": {"width": 0.25, "cbam": False}, "image_size": 48})


def test_restore_with_other_class_names_fails(tmp_path):
  """A head's outputs mean the classes it was trained on, in that order."""
  ck = checkpoint.StageCheckpoints(str(tmp_path), "s")
  st = train_state.create({"params": {"w": jnp.zeros(())}}, optax.sgd(0.1), jax.random.PRNGKey(0))
  ck.save(1, st, {"params": st.params}, {"class_names": ["angry", "happy"], "num_classes": 2})
  ck.restore_state(st, {"class_names": ["angry", "happy"], "num_classes": 2})
  with pytest.raises(checkpoint.CheckpointMismatch, match=r"class_names: checkpoint has \['angry', 'happy'\]"):
    ck.restore_model({"params": st.params}, {"class_names": ["happy", "angry"], "num_classes": 2})


def test_ema_warms_up_then_decays_at_the_configured_rate():
  """decay_t = min(d, (1 + t) / (10 + t)): 0.1 at step 0, d once (1 + t)/(10 + t) > d."""
  loss_fn = lambda p, bs, batch, rng: (jnp.sum((p["w"] - 1.0) ** 2), (bs, {}))
  tx = optax.sgd(0.1)
  params = {"w": jnp.zeros(3)}
  st = train_state.create({"params": params}, tx, jax.random.PRNGKey(0), ema=True)
  step = jax.jit(train_state.make_train_step(loss_fn, tx, optax.constant_schedule(0.1),
                                             ema_decay=0.9))
  st1, _ = step(st, {})
  # one SGD step: w = 0 - 0.1 * 2 * (0 - 1) = 0.2; ema = 0.1 * 0 + 0.9 * 0.2
  np.testing.assert_allclose(st1.params["w"], 0.2, rtol=1e-6)
  np.testing.assert_allclose(st1.ema_params["w"], 0.9 * 0.2, rtol=1e-6)
  st = st1
  for _ in range(200):
    prev_ema = st.ema_params["w"]
    st, _ = step(st, {})
  np.testing.assert_allclose(st.ema_params["w"], 0.9 * prev_ema + 0.1 * st.params["w"], rtol=1e-5)


def test_encoder_lr_scale_scales_only_the_encoders_updates():
  """Adam's update is invariant to the gradient's scale, so the chained scaling
  is exactly lr x scale for the encoder and lr for the head."""
  cfg = defaults.optimizer("adam", 0.1, schedule="constant")
  params = {"encoder": {"w": jnp.ones((2, 2))}, "head": {"w": jnp.ones((2, 2))}}
  grads = {"encoder": {"w": jnp.full((2, 2), 0.5)}, "head": {"w": jnp.full((2, 2), 0.5)}}
  plain, _ = optim.make_optimizer(cfg, total_steps=10, steps_per_epoch=5)
  cfg.encoder_lr_scale = 0.1
  scaled, _ = optim.make_optimizer(cfg, total_steps=10, steps_per_epoch=5)
  u_plain, _ = plain.update(grads, plain.init(params), params)
  u_scaled, _ = scaled.update(grads, scaled.init(params), params)
  np.testing.assert_allclose(u_scaled["encoder"]["w"], 0.1 * u_plain["encoder"]["w"], rtol=1e-6)
  np.testing.assert_array_equal(u_scaled["head"]["w"], u_plain["head"]["w"])


def test_label_fractions_are_stratified_with_one_per_class_at_least():
  from sedl_jax.data import label_subsets
  labels = np.array([0] * 50 + [1] * 10 + [2] * 2 + [-1] * 5)
  keep = label_subsets.stratified_keep(labels, 0.1, seed=0)
  assert [int(keep[labels == c].sum()) for c in (0, 1, 2)] == [5, 1, 1]
  assert not keep[labels == -1].any()
  again = label_subsets.stratified_keep(labels, 0.1, seed=0)
  np.testing.assert_array_equal(keep, again)  # a fixed seed, the same labels
  assert label_subsets.stratified_keep(labels, 1.0, seed=0).sum() == 62


def test_label_efficiency_caps_only_its_own_retraining():
  from sedl_jax.stages import label_efficiency
  c = sedl.get_config("quick")
  sub = label_efficiency._sub_config(c, label_efficiency.PIPELINES["sedl"], 0.1)
  # At 1.0 a row without its full-label stage trains as configured, uncapped.
  assert label_efficiency._sub_config(c, label_efficiency.PIPELINES["sedl"], 1.0) is c
  for section in ("supervised_cnn", "ssl_finetune", "behaviour"):
    assert (sub[section].min_steps, sub[section].max_steps) == (60, 60)
    assert c[section].min_steps > 60  # the run's own config is untouched
  assert sub.contrastive.to_dict() == c.contrastive.to_dict()


def test_a_failure_on_process_0_stops_every_process_with_its_message(monkeypatch):
  """Data preparation across processes: process 0 prepares while the others wait
  in a broadcast; its error reaches them (no hang). Simulated in one process."""
  from jax.experimental import multihost_utils
  from sedl_jax.data import real
  from sedl_jax.train import mesh
  sent = {}

  def broadcast(x):  # process 0's array is what every process receives
    sent.setdefault("from_0", np.asarray(x))
    return sent["from_0"]

  monkeypatch.setattr(multihost_utils, "broadcast_one_to_all", broadcast)
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(jax, "process_index", lambda: 0)

  def fails():
    raise ValueError("/data/x.csv: no usable images")

  with pytest.raises(ValueError, match="no usable images"):  # process 0: its own error
    mesh.lead_then_all("preparing /data/x.csv", fails, real.DataError)
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  with pytest.raises(real.DataError, match="process 0 failed while preparing /data/x.csv: "
                                           "ValueError: /data/x.csv: no usable images"):
    mesh.lead_then_all("preparing /data/x.csv", lambda: None, real.DataError)
  sent.clear()
  monkeypatch.setattr(jax, "process_index", lambda: 0)
  assert mesh.lead_then_all("x", lambda: 7) == 7  # success: the result, no error anywhere
  assert not bytes(sent["from_0"]).strip(b"\0")


def test_a_killed_save_is_gone_when_the_stage_opens_and_two_openers_do_not_race(tmp_path):
  """A save killed before its rename leaves `<step>.orbax-checkpoint-tmp`. It is
  removed before the manager opens (not in a background thread: two managers on
  one stage raced to delete it and the loser's next save failed)."""
  st = train_state.create({"params": {"w": jnp.zeros(())}}, optax.sgd(0.1), jax.random.PRNGKey(0))
  with checkpoint.StageCheckpoints(str(tmp_path), "s") as ck:
    ck.save(1, st, {"params": st.params}, {})
  folder = tmp_path / "checkpoints" / "s"
  for step in range(2, 40):
    unfinished = folder / f"{step}{checkpoint.UNFINISHED_SUFFIX}" / "state"
    unfinished.mkdir(parents=True)
    (unfinished / "part").write_bytes(b"x" * 100)
  reader = checkpoint.StageCheckpoints(str(tmp_path), "s")
  assert not list(folder.glob("*" + checkpoint.UNFINISHED_SUFFIX + "*"))
  writer = checkpoint.StageCheckpoints(str(tmp_path), "s")
  writer.save(2, st, {"params": st.params}, {})
  assert reader.read_meta(1)["step"] == 1 and writer.latest_step() == 2
  reader.close(); writer.close()


def test_initialisation_compiled_at_llvm_level_1_gives_the_same_parameters():
  """stage.INIT_COMPILER_OPTIONS compiles a model's initialisation faster on the
  CPU; the parameters must be bitwise those of XLA's default level (2)."""
  from sedl_jax.stages import pretrain
  from sedl_jax.train import stage as stage_lib
  spec = pretrain.make_model_spec(sedl.get_config("tiny"), 7, (16, 16, 1))
  rng = jax.random.PRNGKey(3)
  lowered = jax.jit(lambda r: spec.model.init(r, *spec.example_inputs(), train=False)).lower(rng)
  default = lowered.compile(compiler_options={"xla_backend_optimization_level": 2})(rng)
  chex.assert_trees_all_equal(stage_lib.init_variables_of(spec, rng), default)
