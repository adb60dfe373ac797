"""Real data sources on fixtures written here: every format, bad input,
synonyms, splits, the prepared-data cache and face cropping."""

import json
import os
import shutil

import cv2
import numpy as np
import pytest

import data_fixtures as fx
from sedl_jax.config import defaults
from sedl_jax.data import record_images, decode, labels, real, sources, splits, synthetic
from sedl_jax.data.face_crop import FaceCropper


@pytest.fixture(scope="module")
def faces():
  return fx.faces(num_subjects=6, size=40)


def data_cfg(tmp_path, name, path, **kw):
  d = defaults.data("tiny")
  d.name, d.path, d.cache_dir = name, str(path), str(tmp_path / "cache")
  d.image_size, d.channels = 32, 1
  for k, v in kw.items():
    d[k] = v
  return d


def load(tmp_path, name, path, **kw):
  workdir = tmp_path / "work"
  data = sources.load_dataset(data_cfg(tmp_path, name, path, **kw), workdir=str(workdir))
  report = json.load(open(workdir / "data_report.json"))
  return data, report


def test_image_folder_every_format_and_synonyms(tmp_path, faces):
  counts = fx.image_folder(str(tmp_path / "f"), faces)
  data, report = load(tmp_path, "image_folder", tmp_path / "f")
  # anger/happiness/normal/... folded into the canonical names, in canonical order.
  assert data.class_names == synthetic.EMOTIONS
  assert report["skipped_total"] == 0
  assert data.image_shape == (32, 32, 1)
  total = sum(len(data.images[s]) for s in ("train", "val", "test"))
  assert total == sum(counts.values())
  for s in ("train", "val", "test"):
    for c, n in report["class_counts"][s].items():
      idx = data.class_names.index(c) if c != "unlabelled" else -1
      assert (data.images[s].labels == idx).sum() == n
  assert report["distinct_image_sizes"] == 3
  assert "stratified" in report["split_method"]
  assert (tmp_path / "work" / "splits.json").exists()


def test_given_splits_are_kept_and_val_carved_from_train(tmp_path, faces):
  fx.image_folder(str(tmp_path / "f"), faces, with_splits=True)
  data, report = load(tmp_path, "image_folder", tmp_path / "f")
  assignment = json.load(open(tmp_path / "work" / "splits.json"))["assignment"]
  for key, split in assignment.items():
    given = key.split("/")[0]
    assert split == given or (given == "train" and split == "val"), key
  assert report["split_sizes"]["val"] > 0
  assert "val carved from train" in report["split_method"]


def test_fer2013_rows_labels_usage_and_bad_rows(tmp_path, faces):
  good = fx.fer2013_csv(str(tmp_path / "fer.csv"), faces, bad_rows=True)
  data, report = load(tmp_path, "fer2013", tmp_path / "fer.csv", image_size=48)
  assert data.class_names == labels.FER2013
  assert sum(report["split_sizes"].values()) == good
  assert report["split_method"] == "as given by the data"
  assert set(report["skipped"]) == {"wrong-length pixel row", "unknown label 9",
                                    "non-numeric pixel values"}
  # At 48x48 the prepared pixels are the CSV's pixels, row for row (NumPy reference).
  rows = open(tmp_path / "fer.csv").read().splitlines()[1:good + 1]
  train_rows = [r for r in rows if r.endswith("Training")]
  first = np.asarray(train_rows[0].split(",")[1].split(), np.uint8).reshape(48, 48, 1)
  np.testing.assert_array_equal(data.images["train"].images[0], first)
  assert data.images["train"].labels[0] == int(train_rows[0].split(",")[0])


def test_ckplus_names_give_subjects_sequences_and_ordered_frames(tmp_path, faces):
  n = fx.ckplus_folder(str(tmp_path / "ck"), faces)
  data, report = load(tmp_path, "named_folder", tmp_path / "ck", image_size=40, channels=3,
                      sequence_length=6)
  assert sum(report["split_sizes"].values()) == n
  assert "subject-disjoint" in report["split_method"]
  subjects = {s: set(data.images[s].subjects) for s in ("train", "val", "test")}
  assert not subjects["train"] & subjects["test"] and not subjects["train"] & subjects["val"]
  # Each window is one original sequence, frames in order: compare to the source frames.
  originals = np.concatenate([faces.sequences[s].frames for s in ("train", "val", "test")])
  got = np.concatenate([data.sequences[s].frames for s in ("train", "val", "test")])
  assert got.shape == originals.shape
  flat = {o.tobytes(): i for i, o in enumerate(originals.reshape(-1, *originals.shape[2:]))}
  for seq in got:
    idx = [flat[f.tobytes()] for f in seq]
    assert idx == list(range(idx[0], idx[0] + len(idx)))
  assert data.frames_in_images


def test_short_sequences_are_counted_and_a_too_long_window_is_a_clear_error(tmp_path, faces):
  fx.ckplus_folder(str(tmp_path / "ck"), faces)
  with pytest.raises(real.DataError, match="data.sequence_length=7"):
    load(tmp_path, "named_folder", tmp_path / "ck", sequence_length=7)
  data, report = load(tmp_path, "named_folder", tmp_path / "ck", sequence_length=3,
                      sequence_stride=3)
  assert report["sequences"]["window_length"] == 3
  assert sum(len(data.sequences[s]) for s in ("train", "val", "test")) == 2 * 12


def test_sequence_folders_and_video(tmp_path, faces):
  fx.sequence_folder(str(tmp_path / "seq"), faces)
  data, report = load(tmp_path, "sequence_folder", tmp_path / "seq", split_fractions=(0.5, 0.25, 0.25),
                      sequence_length=6, image_size=40, channels=3)
  assert sum(report["split_sizes"].values()) == 12 * 6  # 6 subjects x 2 sequences x 6 frames
  assert sum(len(data.sequences[s]) for s in ("train", "val", "test")) == 12
  assert report["skipped_total"] == 0 and report["class_counts"]["train"]["unlabelled"] == 0
  assert "subject-disjoint" in report["split_method"]
  # Folder frames carry their per-frame labels from labels.csv, in frame order.
  by_frames = {}
  for s in ("train", "val", "test"):
    for f, y in zip(data.sequences[s].frames, data.sequences[s].labels):
      by_frames[f.tobytes()] = y
  for s in ("train", "val", "test"):
    src = faces.sequences[s]
    for k in range(len(src)):
      if int(src.subjects[k]) == 0 and k % 2 == 0:
        continue  # written as a video (lossy)
      np.testing.assert_array_equal(by_frames[src.frames[k].tobytes()], src.labels[k])


def test_video_frames_decode_close_to_the_written_frames(tmp_path, faces):
  frames = faces.sequences["train"].frames[0]
  fx.write_video(str(tmp_path / "v.avi"), frames)
  got = list(decode.video_frames(str(tmp_path / "v.avi"), stride=2, max_frames=0, channels=3))
  assert [i for i, _ in got] == [0, 2, 4]
  err = np.abs(got[1][1].astype(float) - frames[2].astype(float)).mean()
  assert err < 12  # MJPG is lossy
  at_5fps = list(decode.video_frames(str(tmp_path / "v.avi"), stride=1, max_frames=0, channels=3,
                                     fps=5.0))  # written at 10 fps
  assert [i for i, _ in at_5fps] == [0, 2, 4]
  with pytest.raises(decode.BadItem, match="cannot open video"):
    (tmp_path / "broken.avi").write_bytes(b"not a video")
    list(decode.video_frames(str(tmp_path / "broken.avi"), 1, 0, 3))


def test_manifest_with_traits_and_missing_files(tmp_path, faces):
  root = tmp_path / "m"
  os.makedirs(root / "img")
  rows = ["path,label,subject,sequence,frame,agitation,valence"]
  seqs = faces.sequences["train"]
  for k in range(len(seqs)):
    for t in range(seqs.frames.shape[1]):
      name = f"img/s{k}_{t}.png"
      fx.save(seqs.frames[k, t], str(root / name))
      label = synthetic.EMOTIONS[seqs.labels[k, t]]
      rows.append(f"{name},{label},subj{seqs.subjects[k]},{k},{t},{int(seqs.traits[k, 0])},0.5")
  rows.append("img/missing.png,happy,subj0,0,99,0,")
  rows.append("img/s0_0.png,bored,subj0,0,98,0,")
  # Outside the manifest's folder: by `..`, by an absolute path, through a symlink.
  fx.save(seqs.frames[0, 0], str(tmp_path / "secret.png"))
  os.symlink(tmp_path / "secret.png", root / "img" / "link.png")
  for far in ("../secret.png", str(tmp_path / "secret.png"), "img/link.png"):
    rows.append(f"{far},happy,subj0,0,97,0,")
  (root / "manifest.csv").write_text("\n".join(rows) + "\n")
  data, report = load(tmp_path, "manifest", root / "manifest.csv", sequence_length=6,
                      image_size=40, channels=3, split_fractions=(0.5, 0.25, 0.25))
  assert report["trait_names"] == ["agitation"]
  assert report["skipped"]["img/missing.png: file not found"]["count"] == 1
  assert report["skipped"]["unknown label 'bored'"]["count"] == 1
  outside = [k for k in report["skipped"] if "outside the manifest's folder" in k]
  assert sum(report["skipped"][k]["count"] for k in outside) == 3
  assert report["valence"]["labelled_images"] == seqs.frames.shape[0] * seqs.frames.shape[1]
  got = np.concatenate([data.sequences[s].traits[:, 0] for s in ("train", "val", "test")])
  assert sorted(got.tolist()) == sorted(seqs.traits[:, 0].tolist())


def test_salted_folder_data_report(tmp_path, faces):
  root = tmp_path / "f"
  fx.image_folder(str(root), faces)
  some_png = sorted((root / "happiness").glob("*.png"))[0]
  raw = some_png.read_bytes()
  (root / "happiness" / "truncated.png").write_bytes(raw[: len(raw) // 2])
  (root / "anger" / "empty.jpg").write_bytes(b"")
  (root / "anger" / "notes.txt").write_text("not an image")
  (root / "anger" / "garbage.png").write_bytes(b"\x89PNG garbage")
  os.makedirs(root / "boredom")
  fx.save(faces.images["train"].images[0], str(root / "boredom" / "b.png"))
  os.makedirs(root / "contempt")  # an empty class folder
  (root / "loose.png").write_bytes(raw)
  data, report = load(tmp_path, "image_folder", root)
  skipped = report["skipped"]
  assert skipped["unreadable image"]["count"] == 1
  assert "truncated.png" in skipped["unreadable image"]["first"][0]
  assert skipped["empty file"]["count"] == 1
  assert skipped["not an image file"]["count"] == 1
  assert skipped["not a readable image"]["count"] == 1
  assert skipped["unknown label 'boredom'"]["count"] == 1
  assert skipped["empty class folder"]["count"] == 1
  assert skipped["not inside a class folder"]["count"] == 1
  assert report["skipped_total"] == 7
  assert "contempt" not in data.class_names and "boredom" not in data.class_names


def test_oversized_images_and_decompression_bombs_are_skipped_items(tmp_path, faces, monkeypatch):
  from PIL import Image
  root = tmp_path / "f"
  fx.image_folder(str(root), faces)
  fx.save(np.zeros((100, 100, 3), np.uint8), str(root / "happiness" / "huge.png"))
  _, report = load(tmp_path, "image_folder", root, max_pixels=5000)  # the faces have 1,600
  (reason,) = [r for r in report["skipped"] if "max_pixels" in r]
  assert report["skipped"][reason]["count"] == 1 and "huge.png" in report["skipped"][reason]["first"][0]
  assert "100 x 100 = 10000 pixels" in reason
  # PIL's own bomb check (past 2 x MAX_IMAGE_PIXELS) is a skipped item too, not a crash.
  monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
  raw = (root / "happiness" / "huge.png").read_bytes()
  with pytest.raises(decode.BadItem, match="decompression bomb"):
    decode.decode_image_bytes(raw, 1, max_pixels=0)


def test_duplicates_across_splits_are_reported(tmp_path, faces):
  root = tmp_path / "f"
  fx.image_folder(str(root), faces, with_splits=True)
  src = sorted((root / "train" / "happiness").iterdir())[0]
  shutil.copy(src, root / "test" / "happiness" / ("copy" + src.suffix))
  _, report = load(tmp_path, "image_folder", root)
  assert report["duplicates"]["across_splits"] == 1
  assert "copy" in " ".join(report["duplicates"]["first"][0])


def test_extra_classes_and_label_map(tmp_path, faces):
  root = tmp_path / "f"
  fx.image_folder(str(root), faces)
  os.rename(root / "surprised", root / "pain")
  data, _ = load(tmp_path, "image_folder", root, extra_classes="pain", label_map="normal=sad")
  assert data.class_names == ("angry", "disgust", "fear", "happy", "sad", "pain")
  assert data.label_map["overrides"] == {"normal": "sad"}
  with pytest.raises(ValueError, match="data.label_map.*'boring' is not a class"):
    labels.LabelMap.from_config(data_cfg(tmp_path, "image_folder", root, label_map="x=boring"))


def test_empty_dataset_and_empty_split_are_clear_errors(tmp_path, faces):
  os.makedirs(tmp_path / "e" / "happy")
  (tmp_path / "e" / "happy" / "a.png").write_bytes(b"")
  with pytest.raises(real.DataError, match="no usable images"):
    load(tmp_path, "image_folder", tmp_path / "e")
  os.makedirs(tmp_path / "one" / "happy")
  fx.save(faces.images["train"].images[0], str(tmp_path / "one" / "happy" / "a.png"))
  with pytest.raises(real.DataError, match=r"split\(s\) \['val', 'test'\] are empty"):
    load(tmp_path, "image_folder", tmp_path / "one")


def test_cache_is_reused_and_rebuilt_when_a_file_changes(tmp_path, faces):
  root = tmp_path / "f"
  fx.image_folder(str(root), faces)
  first, r1 = load(tmp_path, "image_folder", root)
  second, r2 = load(tmp_path, "image_folder", root, in_memory_max_mb=64)
  assert (r1["cache"], r2["cache"]) == ("built", "reused")
  assert r1["cache_entry"] == r2["cache_entry"] and first.fingerprint == second.fingerprint
  # The tiny config streams pixels from the cache; under the memory limit they are
  # loaded. Same data either way, through every access the stages use.
  assert (r1["images_in"], r2["images_in"]) == ("cache (read per batch)", "memory")
  lazy, loaded = first.images["test"].images, second.images["test"].images
  assert record_images.is_lazy(lazy) and isinstance(loaded, np.ndarray)
  assert lazy.shape == loaded.shape and lazy.dtype == loaded.dtype
  np.testing.assert_array_equal(lazy, loaded)
  np.testing.assert_array_equal(lazy[3], loaded[3])
  np.testing.assert_array_equal(lazy[2:5], loaded[2:5])
  pick = np.asarray([4, 0, 4])
  np.testing.assert_array_equal(lazy[pick][1:], loaded[pick][1:])
  for split in ("train", "test"):
    a, b = first.faces(split), second.faces(split)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
  first_test = np.asarray(first.images["test"].images)  # its pixels, before the entry is rebuilt
  entries = [p for p in os.listdir(tmp_path / "cache") if "incomplete" not in p]
  assert len(entries) == 1
  # A damaged entry is deleted and rebuilt once; a killed build's folder is removed.
  entry = r1["cache_entry"]
  for name in os.listdir(entry):
    for dirpath, _, files in os.walk(os.path.join(entry, name)):
      for f in files:
        if "array_record" in f:
          open(os.path.join(dirpath, f), "r+b").truncate(10)
  os.makedirs(entry + ".incomplete-999999999")  # no such process
  rebuilt, r5 = load(tmp_path, "image_folder", root)
  assert r5["cache"] == "built" and r5["cache_entry"] == entry
  assert not os.path.exists(entry + ".incomplete-999999999")
  np.testing.assert_array_equal(rebuilt.images["test"].images, first_test)
  victim = sorted((root / "happiness").iterdir())[0]
  fx.save(np.zeros((40, 40, 3), np.uint8), str(victim))
  third, r3 = load(tmp_path, "image_folder", root)
  assert r3["cache"] == "built" and r3["cache_entry"] != r1["cache_entry"]
  # A changed preparation setting is a different entry too.
  _, r4 = load(tmp_path, "image_folder", root, image_size=24)
  assert r4["cache"] == "built"


@pytest.mark.parametrize("detector,extra", [("haar", {}), ("yunet", {}),
                                             ("yunet", {"equalize": True})])
def test_face_crop_on_a_drawn_face_vs_a_blank_image(tmp_path, detector, extra):
  face = fx.draw_face(120)
  cropper = FaceCropper(margin=0.1, detector=detector)
  top, left, bottom, right = cropper.box(face)
  assert top < 120 < bottom and left < 120 < right  # the face centre is inside
  assert 90 < bottom - top < 240
  assert cropper(np.full_like(face, 128)) is None
  root = tmp_path / "photos"
  os.makedirs(root / "happy")
  os.makedirs(root / "sad")
  for i in range(3):
    fx.save(face, str(root / "happy" / f"face{i}.png"))
    fx.save(np.full_like(face, 90 + i), str(root / "sad" / f"blank{i}.png"))
  data, keep = load(tmp_path, "image_folder", root, face_crop=detector, face_margin=0.2,
                    split_fractions=(0.34, 0.33, 0.33), **extra)
  assert keep["face_crop"] == {"face_found": 3, "no_face_kept_full_image": 3}
  assert sum(keep["split_sizes"].values()) == 6
  # The prepared face is the cropper's crop (aligned from YuNet's landmarks,
  # the widened box for Haar), sized (and equalised) as prediction sizes it.
  crop = FaceCropper(0.2, detector=detector)(face, 32)
  want = decode.model_input(crop, 32, 1, equalize=extra.get("equalize", False))
  prepared = np.concatenate([data.images[s].images for s in ("train", "val", "test")])
  assert sum(np.array_equal(p, want) for p in prepared) == 3
  with pytest.raises(real.DataError, match="empty"):  # 3 faces cannot fill 3 splits of 1.0/0/0
    load(tmp_path, "image_folder", root, face_crop=detector, no_face="skip",
         split_fractions=(1.0, 0.0, 0.0))
  skipped_report = json.load(open(tmp_path / "work" / "data_report.json"))
  assert skipped_report["face_crop"] == {"face_found": 3, "no_face_skipped": 3}
  assert skipped_report["skipped"]["no face found"]["count"] == 3


def test_subject_disjoint_stratified_allocation_and_kfold():
  rng = np.random.default_rng(0)
  subjects = np.repeat([f"s{i}" for i in range(30)], 10)
  y = rng.integers(0, 4, len(subjects))
  keys = np.asarray([f"k{i}" for i in range(len(y))], object)
  split_of, method = splits.assign(keys, y, subjects, [""] * len(y), fractions=(0.6, 0.2, 0.2),
                                   seed=1)
  assert "subject-disjoint" in method
  for s in set(subjects):
    assert len(set(split_of[subjects == s])) == 1
  share = {s: (split_of == s).mean() for s in ("train", "val", "test")}
  assert abs(share["train"] - 0.6) < 0.1 and abs(share["test"] - 0.2) < 0.1
  for c in range(4):  # class mix follows the split sizes
    frac = (split_of[y == c] == "train").mean()
    assert abs(frac - share["train"]) < 0.15
  again, _ = splits.assign(keys, y, subjects, [""] * len(y), fractions=(0.6, 0.2, 0.2), seed=1)
  np.testing.assert_array_equal(split_of, again)
  tests = []
  for fold in range(5):
    out, m = splits.assign(keys, y, subjects, [""] * len(y), fractions=(0.6, 0.2, 0.2), seed=1,
                           folds=5, fold=fold)
    assert "5-fold" in m and (out == "val").any()
    tests.append(out == "test")
  np.testing.assert_array_equal(np.sum(tests, axis=0), 1)  # every item tested exactly once


def test_split_file_is_reused(tmp_path, faces):
  root = tmp_path / "f"
  fx.image_folder(str(root), faces)
  first, _ = load(tmp_path, "image_folder", root, seed=3)
  saved = tmp_path / "saved_splits.json"
  shutil.copy(tmp_path / "work" / "splits.json", saved)
  again, report = load(tmp_path, "image_folder", root, seed=99, split_file=str(saved))
  assert report["split_method"].startswith("read from")
  for s in ("train", "val", "test"):
    np.testing.assert_array_equal(first.images[s].images, again.images[s].images)


def test_decode_modes_to_grey_and_rgb(tmp_path):
  rgba = np.zeros((10, 12, 4), np.uint8)
  rgba[..., 0] = 255
  rgba[..., 3] = 0  # fully transparent: shown as white
  from PIL import Image
  Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
  out = decode.decode_image_bytes((tmp_path / "a.png").read_bytes(), 3)
  assert out.shape == (10, 12, 3) and (out == 255).all()
  grey16 = (np.arange(120).reshape(10, 12) * 500).astype(np.uint16)
  Image.fromarray(grey16).save(tmp_path / "b.tif")
  out = decode.decode_image_bytes((tmp_path / "b.tif").read_bytes(), 1)
  assert out.shape == (10, 12, 1) and out.min() == 0 and out.max() == 255
  sq = decode.resize(decode.square(np.zeros((10, 12, 3), np.uint8)), 32)
  assert sq.shape == (32, 32, 3)
  with pytest.raises(decode.BadItem, match="empty file"):
    decode.decode_image_bytes(b"", 3)
  ref = cv2.resize(np.arange(64, dtype=np.uint8).reshape(8, 8), (4, 4), interpolation=cv2.INTER_AREA)
  np.testing.assert_array_equal(decode.resize(np.arange(64, dtype=np.uint8).reshape(8, 8, 1), 4)[..., 0],
                                np.asarray(ref))


def test_unlabelled_sources_are_named_layout_colon_path_and_checked(tmp_path):
  from sedl_jax.data import unlabelled
  (tmp_path / "v").mkdir()
  (tmp_path / "fer.csv").write_text("emotion,pixels,Usage\n")
  assert unlabelled.parse(f"{tmp_path}/v") == ("faces", f"{tmp_path}/v")
  assert unlabelled.parse(f"fer2013:{tmp_path}/fer.csv") == ("fer2013", f"{tmp_path}/fer.csv")
  unlabelled.check((f"{tmp_path}/v", f"fer2013:{tmp_path}/fer.csv"))
  for bad, says in ((f"{tmp_path}/v", "expected a tuple"),
                    ((f"faces:{tmp_path}/nope",), "no such file"),
                    ((f"fer2013:{tmp_path}/v",), "reads one file"),
                    ((f"image_folder:{tmp_path}/fer.csv",), "reads a folder")):
    with pytest.raises(ValueError, match=says):
      unlabelled.check(bad)


def test_an_opencv_error_inside_a_video_is_a_skipped_item(tmp_path, faces, monkeypatch):
  """cv2.error (a corrupt stream inside a readable container) and MemoryError cost
  one item, counted with its reason; the rest of the folder is prepared."""
  root = tmp_path / "f"
  fx.image_folder(str(root), faces)
  fx.write_video(str(root / "happiness" / "clip.avi"), faces.images["train"].images[:3])
  real_frames = decode.video_frames

  def broken(path, *a, **k):
    yield from real_frames(path, *a, **k)
    raise cv2.error("OpenCV(4.x) error: (-215:Assertion failed) !_src.empty()")

  monkeypatch.setattr(decode, "video_frames", broken)
  from sedl_jax.data import prepare, scan
  cfg = defaults.data("tiny")
  cfg.name, cfg.path, cfg.cache_dir = "image_folder", str(root), str(tmp_path / "c")
  sc = scan.faces(str(root))
  arrays, report, _ = prepare.prepare(sc, cfg, str(root))
  (reason,) = [r for r in report["skipped"] if r.startswith("OpenCV error while decoding")]
  assert "clip.avi" in report["skipped"][reason]["first"][0]
  assert report["images_prepared"] == len(sc.items) - 1
