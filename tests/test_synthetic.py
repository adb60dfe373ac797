import numpy as np
import pytest

from configs import sedl
from sedl_jax.data import synthetic


def _cfg(**kw):
  c = sedl.get_config("tiny")
  for k, v in kw.items():
    setattr(c.data.synthetic, k, v)
  return c.data


def test_deterministic_per_seed():
  a = synthetic.load(_cfg())
  b = synthetic.load(_cfg())
  for s in ("train", "val", "test"):
    np.testing.assert_array_equal(a.images[s].images, b.images[s].images)
    np.testing.assert_array_equal(a.sequences[s].frames, b.sequences[s].frames)
    np.testing.assert_array_equal(a.sequences[s].traits, b.sequences[s].traits)
  assert a.fingerprint == b.fingerprint
  cfg = _cfg()
  cfg.seed = 1
  c = synthetic.load(cfg)
  assert c.fingerprint != a.fingerprint
  assert not np.array_equal(c.images["train"].images, a.images["train"].images)


def test_subject_disjoint_splits():
  d = synthetic.load(_cfg(num_subjects=9))
  subj = {s: set(d.images[s].subjects.tolist()) for s in ("train", "val", "test")}
  assert all(subj.values())
  assert not subj["train"] & subj["val"]
  assert not subj["train"] & subj["test"]
  assert not subj["val"] & subj["test"]
  for s in ("train", "val", "test"):
    assert set(d.sequences[s].subjects.tolist()) <= subj[s]
  assert set().union(*subj.values()) == set(range(9))


@pytest.mark.parametrize("weights", [(1.0,) * 7, (4.0, 1.0, 1.0, 2.0, 1.0, 1.0, 4.0)])
def test_class_balance_follows_config(weights):
  d = synthetic.load(_cfg(class_weights=weights, images_per_subject=28))
  counts = np.bincount(d.images["train"].labels, minlength=7)
  expected = np.asarray(weights) / np.sum(weights)
  np.testing.assert_allclose(counts / counts.sum(), expected, atol=0.03)


def test_shapes_channels_and_range():
  cfg = _cfg()
  cfg.image_size = 40
  cfg.channels = 3
  d = synthetic.load(cfg)
  im = d.images["train"].images
  assert im.dtype == np.uint8 and im.shape[1:] == (40, 40, 3)
  assert im.std() > 10  # not blank
  seq = d.sequences["train"]
  T = cfg.synthetic.sequence_length
  assert seq.frames.shape[1:] == (T, 40, 40, 3)
  assert seq.labels.shape == (len(seq), T) and seq.traits.shape == (len(seq), 4)
  assert d.class_names == synthetic.EMOTIONS


def test_trait_labels_follow_documented_rules():
  e = {n: i for i, n in enumerate(synthetic.EMOTIONS)}
  T = 10
  # angry at level 1 for 2 of 10 frames, otherwise neutral: agitation only.
  emo = np.full((1, T), e["neutral"])
  lev = np.zeros((1, T), int)
  emo[0, 3:5] = e["angry"]
  lev[0, 3:5] = 1
  np.testing.assert_array_equal(synthetic.trait_labels(emo, lev)[0], [1, 0, 0, 0])
  # sad level 2 throughout: distress; no changes so not restless.
  emo = np.full((1, T), e["sad"])
  lev = np.full((1, T), 2)
  np.testing.assert_array_equal(synthetic.trait_labels(emo, lev)[0], [0, 1, 0, 0])
  # alternating happy / neutral each frame: engagement and restlessness.
  emo = np.where(np.arange(T) % 2 == 0, e["happy"], e["neutral"])[None]
  np.testing.assert_array_equal(synthetic.trait_labels(emo, np.zeros((1, T), int))[0], [0, 0, 1, 1])


def test_sequences_move_smoothly():
  d = synthetic.load(_cfg(sequence_length=12))
  f = d.sequences["train"].frames.astype(np.float32)
  step = np.abs(np.diff(f, axis=1)).mean()
  # consecutive frames differ far less than two random frames of different subjects
  other = np.abs(f[0, 0] - f[-1, -1]).mean()
  assert step < 0.5 * other


def test_state_path_escalates_within_emotion():
  cfg = sedl.get_config("quick").data
  gen = synthetic.SyntheticFaces(cfg.synthetic, 32, 1, 0)
  rng = np.random.default_rng(0)
  escalations = 0
  for _ in range(50):
    emo, lev = gen.state_path(0, 48, rng)
    escalations += np.sum((np.diff(emo) == 0) & (np.diff(lev) == 1))
    assert lev.min() >= 0 and lev.max() <= 2
    assert np.all(lev[emo == synthetic.NEUTRAL] == 0)
  assert escalations > 10  # paths like sad -> crying occur
