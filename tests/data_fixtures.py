"""Small real-format datasets written inside the tests (nothing committed):
synthetic faces saved as an image folder, a FER2013 CSV, a CK+-style named
folder, sequence folders, a video and a manifest."""

from __future__ import annotations

import csv
import os

import cv2
import numpy as np
from PIL import Image

from sedl_jax.config import defaults
from sedl_jax.data import synthetic

# Folder names as real datasets spell them: synonyms on purpose.
FOLDER_NAMES = {"angry": "anger", "disgust": "disgusted", "fear": "Fear", "happy": "happiness",
                "sad": "sadness", "surprise": "surprised", "neutral": "normal"}
FORMATS = (("png", "RGB"), ("jpg", "RGB"), ("bmp", "L"), ("gif", "P"), ("tiff", "RGBA"),
           ("webp", "RGB"), ("jpeg", "L"))


def faces(num_subjects: int = 6, size: int = 40, images_per_subject: int = 14,
          sequences_per_subject: int = 2, sequence_length: int = 6, seed: int = 0):
  d = defaults.data("tiny")
  d.image_size, d.channels, d.seed = size, 3, seed
  s = d.synthetic
  s.num_subjects, s.images_per_subject = num_subjects, images_per_subject
  s.sequences_per_subject, s.sequence_length = sequences_per_subject, sequence_length
  return synthetic.load(d)


def _all_images(data):
  ims = np.concatenate([data.images[s].images for s in ("train", "val", "test")])
  labels = np.concatenate([data.images[s].labels for s in ("train", "val", "test")])
  subjects = np.concatenate([data.images[s].subjects for s in ("train", "val", "test")])
  return ims, labels, subjects


def save(image: np.ndarray, path: str, mode: str = "RGB") -> None:
  im = Image.fromarray(image if image.shape[2] == 3 else image[..., 0])
  if mode == "P":
    im = im.convert("P", palette=Image.Palette.ADAPTIVE)
  elif mode != im.mode:
    im = im.convert(mode)
  im.save(path)


def image_folder(root: str, data, with_splits: bool = False) -> dict:
  """ROOT/[split/]<class>/<file>, every format and colour mode; returns counts."""
  ims, labels, subjects = _all_images(data)
  counts = {}
  for i, (im, y, subj) in enumerate(zip(ims, labels, subjects)):
    cls = FOLDER_NAMES[synthetic.EMOTIONS[y]]
    split = ""
    if with_splits:
      split = ("train", "train", "train", "test")[subj % 4]
    d = os.path.join(root, split, cls)
    os.makedirs(d, exist_ok=True)
    ext, mode = FORMATS[i % len(FORMATS)]
    # Sizes vary, as in real folders.
    side = 40 + 8 * (i % 3)
    big = cv2.resize(im, (side, side), interpolation=cv2.INTER_CUBIC)
    save(big.reshape(side, side, -1), os.path.join(d, f"img_{i:04d}.{ext}"), mode)
    counts[(split, synthetic.EMOTIONS[y])] = counts.get((split, synthetic.EMOTIONS[y]), 0) + 1
  return counts


def fer2013_csv(path: str, data, bad_rows: bool = False) -> int:
  """emotion,pixels,Usage with 48x48 grey rows; returns the number of good rows."""
  ims, labels, subjects = _all_images(data)
  usage = {0: "Training", 1: "Training", 2: "PublicTest", 3: "PrivateTest"}
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["emotion", "pixels", "Usage"])
    for im, y, subj in zip(ims, labels, subjects):
      grey = cv2.cvtColor(im, cv2.COLOR_RGB2GRAY)
      grey = cv2.resize(grey, (48, 48), interpolation=cv2.INTER_CUBIC)
      w.writerow([int(y), " ".join(map(str, grey.ravel())), usage[subj % 4]])
    if bad_rows:
      w.writerow([3, " ".join(["7"] * 100), "Training"])  # wrong length
      w.writerow([9, " ".join(["7"] * 2304), "Training"])  # unknown label
      w.writerow([2, " ".join(["x"] * 2304), "Training"])  # not numbers
  return len(ims)


def ckplus_folder(root: str, data) -> int:
  """ROOT/<class>/S###_###_########.png from the synthetic sequences (each
  frame in the folder of its own emotion); returns the number of frames."""
  n = 0
  for split in ("train", "val", "test"):
    seqs = data.sequences[split]
    per_subject = {}
    for k in range(len(seqs)):
      subj = int(seqs.subjects[k])
      seq_no = per_subject.get(subj, 0) + 1
      per_subject[subj] = seq_no
      for t in range(seqs.frames.shape[1]):
        cls = FOLDER_NAMES[synthetic.EMOTIONS[seqs.labels[k, t]]]
        d = os.path.join(root, cls)
        os.makedirs(d, exist_ok=True)
        save(seqs.frames[k, t], os.path.join(d, f"S{subj + 10:03d}_{seq_no:03d}_{t + 1:08d}.png"))
        n += 1
  return n


def sequence_folder(root: str, data, video_subject: int | None = 0) -> None:
  """ROOT/<subject>/<sequence>/<frames> and ROOT/labels.csv (per frame; per
  sequence for the videos); one subject's even sequences as .avi files."""
  os.makedirs(root, exist_ok=True)
  rows = ["subject,sequence,frame,label"]
  for split in ("train", "val", "test"):
    seqs = data.sequences[split]
    for k in range(len(seqs)):
      subj = f"P{int(seqs.subjects[k]):02d}"
      if video_subject is not None and int(seqs.subjects[k]) == video_subject and k % 2 == 0:
        os.makedirs(os.path.join(root, subj), exist_ok=True)
        write_video(os.path.join(root, subj, f"clip{k}.avi"), seqs.frames[k])
        rows.append(f"{subj},clip{k},,{synthetic.EMOTIONS[np.bincount(seqs.labels[k]).argmax()]}")
        continue
      d = os.path.join(root, subj, f"seq{k}")
      os.makedirs(d, exist_ok=True)
      for t in range(seqs.frames.shape[1]):
        save(seqs.frames[k, t], os.path.join(d, f"frame_{t:03d}.png"))
        rows.append(f"{subj},seq{k},{t},{synthetic.EMOTIONS[seqs.labels[k, t]]}")
  with open(os.path.join(root, "labels.csv"), "w") as f:
    f.write("\n".join(rows) + "\n")


def write_video(path: str, frames: np.ndarray, fps: int = 10) -> None:
  h, w = frames.shape[1:3]
  out = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
  for f in frames:
    rgb = f if f.shape[2] == 3 else np.repeat(f, 3, axis=2)
    out.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
  out.release()


def draw_face(size: int = 120, background: int = 40) -> np.ndarray:
  """A drawn frontal face (skin oval, eyes, brows, nose, mouth) in a larger
  dark frame; OpenCV's Haar cascade finds it. RGB uint8."""
  im = np.full((size * 2, size * 2), background, np.uint8)
  c = size
  cv2.ellipse(im, (c, c), (int(size * 0.42), int(size * 0.55)), 0, 0, 360, 200, -1)
  for sx in (-1, 1):
    ex = c + sx * int(size * 0.17)
    cv2.ellipse(im, (ex, c - int(size * 0.12)), (int(size * 0.09), int(size * 0.045)), 0, 0, 360,
                50, -1)
    cv2.line(im, (ex - int(size * 0.1), c - int(size * 0.24)),
             (ex + int(size * 0.1), c - int(size * 0.24)), 60, max(2, size // 30))
  cv2.line(im, (c, c - int(size * 0.05)), (c, c + int(size * 0.12)), 150, max(2, size // 40))
  cv2.ellipse(im, (c, c + int(size * 0.27)), (int(size * 0.15), int(size * 0.05)), 0, 0, 360, 80,
              -1)
  im = cv2.GaussianBlur(im, (5, 5), 0)
  return np.repeat(im[..., None], 3, axis=2)


def face_scene(faces: int, width: int = 320, height: int = 240, shift: int = 0) -> np.ndarray:
  """A frame with `faces` (0, 1 or 2) drawn faces side by side on a dark
  background, moved right by `shift` pixels. RGB uint8 [height, width, 3]."""
  frame = np.full((height, width, 3), 40, np.uint8)
  patch = draw_face(60)  # 120 x 120, the face in the middle
  for i in range(faces):
    left = 20 + 160 * i + shift
    top = (height - patch.shape[0]) // 2
    frame[top:top + patch.shape[0], left:left + patch.shape[1]] = patch
  return frame


def face_video(path: str, faces_per_frame, fps: int = 10) -> None:
  """An MJPG video whose frame t shows faces_per_frame[t] faces, drifting right
  by a pixel a frame (so tracks must follow moving boxes)."""
  write_video(path, np.stack([face_scene(n, shift=t % 30) for t, n in enumerate(faces_per_frame)]),
              fps)
