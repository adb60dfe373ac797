"""Config building blocks shared by `configs/sedl.py` and `configs/card_fer.py`.

Every stage's schema lives here, so both pipelines and the tests agree on field
names. Variants: `tiny` (tests), `quick` (CPU, minutes), `paper` (the papers).
Durations are given as `epochs`, or as `steps` when `steps > 0` (steps win);
`sedl_jax.train.optim.resolve_steps` turns them into a number of steps.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

VARIANTS = ("tiny", "quick", "paper")


def check_variant(arg: str | None) -> str:
  variant = arg or "quick"
  if variant not in VARIANTS:
    raise ValueError(f"config argument {variant!r}: expected one of {VARIANTS}")
  return variant


def data(variant: str) -> ml_collections.ConfigDict:
  """`config.data`: which faces to read and how to size them."""
  d = ml_collections.ConfigDict()
  # synthetic | image_folder | named_folder | fer2013 | sequence_folder | manifest
  # (layouts in the README, "Your own data").
  d.name = "synthetic"
  d.path = config_dict.placeholder(str)  # dataset root, or the CSV for fer2013/manifest
  # Prepared (decoded, cropped, resized) data is cached here, keyed by content;
  # unset: $SEDL_JAX_CACHE or ~/.cache/sedl_jax/prepared.
  d.cache_dir = config_dict.placeholder(str)
  # Extra unlabelled faces for the self-supervised stages only, as 'LAYOUT:PATH'
  # strings (faces | image_folder | named_folder | sequence_folder | fer2013 |
  # manifest; a bare path is 'faces': every image and video under it).
  d.unlabelled = ()
  d.label_map = ""  # extra synonyms "raw=canonical,...", e.g. "joy=happy,pain=sad"
  d.extra_classes = ""  # classes beyond the canonical 8, e.g. "pain,boredom"
  # File names carrying ids (named_folder); the default is CK+'s S010_004_00000017.png.
  d.name_pattern = r"(?P<subject>S\d+)_(?P<sequence>\d+)_(?P<frame>\d+)"
  # Find and crop the face in each image: none (already face crops) | yunet (the
  # YuNet detector shipped with the package) | haar (OpenCV's Haar cascade) |
  # a path to a YuNet-format .onnx model. Prediction crops the way the run did.
  d.face_crop = "none"
  d.face_margin = 0.2  # widen the detected box by this fraction of its side, each way
  # auto: level the eyes from the detector's landmarks when it has them (yunet);
  # landmarks: the same, refused for haar; none: the widened box as it is.
  d.face_align = "auto"
  d.face_score = 0.6  # yunet: faces scoring below this are not faces
  d.face_nms = 0.3  # yunet: a box overlapping a higher-scoring one by this IoU is dropped
  d.face_min_size = 20  # smallest face side in pixels
  # Spread each prepared face's grey levels to a flat histogram (cv2.equalizeHist;
  # RGB: its luma). Prediction does the same for a run prepared this way.
  d.equalize = False
  d.no_face = "keep"  # when no face is found: keep (the full image) | skip
  d.video_stride = 1  # keep every k-th video frame
  d.video_fps = 0.0  # > 0: keep about this many frames per second instead (stride from the video's rate)
  d.video_max_frames = 0  # per video, 0 = all
  d.allow_outside_paths = False  # manifest: accept paths outside the manifest's folder
  d.max_pixels = 40_000_000  # larger images are skipped (read from the header, never decoded)
  # Real data without given splits: subject-disjoint (or stratified) fractions.
  d.split_fractions = (0.7, 0.15, 0.15)
  d.split_file = config_dict.placeholder(str)  # reuse a run's splits.json
  d.folds = 0  # > 1: k-fold over subjects (or items); test = fold `fold`
  d.fold = 0
  # Real sequences are cut into windows of this many frames (shorter ones are
  # skipped and counted), `sequence_stride` apart (0 = the window length).
  d.sequence_length = {"tiny": 4, "quick": 16, "paper": 16}[variant]
  d.sequence_stride = 0
  d.image_size = {"tiny": 32, "quick": 48, "paper": 224}[variant]
  d.channels = {"tiny": 1, "quick": 1, "paper": 3}[variant]
  d.seed = 0
  d.shuffle_seed = 0
  d.num_threads = 2  # grain reader threads
  # Real data whose prepared pixels exceed this many MB stay in the cache: training
  # and evaluation read them per batch (host memory flat as the data grows); smaller
  # sets are held in memory (faster). tiny (tests): 0, every real source streams.
  d.in_memory_max_mb = {"tiny": 0, "quick": 2048, "paper": 2048}[variant]
  d.prefetch = 2  # batches read ahead
  s = ml_collections.ConfigDict()
  # Many subjects with few images each: with few identities, self-supervised
  # features latch onto identity (skin, hair, background) instead of expression.
  # tiny (tests): 12 subjects, so the test split holds 2 (32 frames, 28 images).
  s.num_subjects = {"tiny": 12, "quick": 192, "paper": 480}[variant]
  s.images_per_subject = {"tiny": 14, "quick": 14, "paper": 35}[variant]
  s.sequences_per_subject = {"tiny": 2, "quick": 1, "paper": 2}[variant]
  s.sequence_length = {"tiny": 8, "quick": 24, "paper": 48}[variant]
  s.split_fractions = (0.6, 0.2, 0.2)
  s.class_weights = (1.0,) * 7  # angry, disgust, fear, happy, sad, surprise, neutral
  s.intensity_range = (0.35, 1.05)
  s.au_noise = 0.12
  # Faces fill the frame like face-detector crops, loosely aligned: raw pixels
  # suffer from the misalignment, a convolutional encoder much less.
  s.max_shift = 0.25
  s.scale_range = (1.1, 1.6)
  s.max_rotation_deg = 12.0
  s.light_strength = 0.35
  s.noise_std = 0.05
  s.occlusion_p = 0.1
  if variant == "tiny":
    # Tests check that a few dozen steps learn something: strong, clean expressions.
    s.intensity_range, s.au_noise, s.max_shift, s.max_rotation_deg = (0.8, 1.05), 0.05, 0.1, 4.0
    s.noise_std, s.occlusion_p = 0.02, 0.0
  s.mean_dwell = 3.0
  s.onset_rate = 0.55
  d.synthetic = s
  return d


def encoder(variant: str, *, cbam: bool = False) -> ml_collections.ConfigDict:
  """`config.model`: the encoder and its projection head."""
  m = ml_collections.ConfigDict()
  m.encoder = {"tiny": "resnet_tiny", "quick": "resnet18", "paper": "resnet18"}[variant]
  m.width = {"tiny": 0.125, "quick": 0.25, "paper": 1.0}[variant]
  m.stem = {"tiny": "small", "quick": "strided", "paper": "imagenet"}[variant]
  m.cbam = cbam
  m.cbam_reduction = 16
  # float32 | bfloat16 (bf16 compute; f32 parameters, optimiser state, losses and
  # BN statistics) | auto (bfloat16 on a GPU/TPU, float32 on the CPU).
  m.dtype = {"tiny": "float32", "quick": "float32", "paper": "auto"}[variant]
  m.head = "mlp"  # mlp (SEDL: 2 layers + ReLU) | mlp_bn (SimCLR v2 style)
  m.proj_hidden = {"tiny": 32, "quick": 128, "paper": 512}[variant]
  m.proj_dim = {"tiny": 16, "quick": 64, "paper": 128}[variant]
  return m


def optimizer(name: str, lr: float, *, weight_decay: float = 0.0, warmup_epochs: float = 0.0,
              schedule: str = "cosine") -> ml_collections.ConfigDict:
  o = ml_collections.ConfigDict()
  o.name = name  # adam | adamw | sgd | lars
  o.lr = lr
  o.weight_decay = weight_decay  # never applied to biases or norm parameters
  o.momentum = 0.9  # sgd / lars
  o.nesterov = False  # sgd: Nesterov momentum
  o.lars_eta = 0.001
  o.bias_lr_scale = 1.0  # lars: lr multiplier for biases / norms (Barlow Twins: 0.024)
  o.schedule = schedule  # cosine (warm-up + cosine) | constant
  o.warmup_epochs = warmup_epochs
  o.grad_clip = 0.0  # global-norm clip; 0 = off
  o.encoder_lr_scale = 1.0  # the encoder's lr x this (fine-tuning a pretrained encoder: < 1)
  return o


def view(**overrides) -> ml_collections.ConfigDict:
  """One augmentation view (SimCLR defaults with a milder crop for faces)."""
  v = ml_collections.ConfigDict(dict(
      crop_area=(0.85, 1.0), crop_aspect=(3 / 4, 4 / 3), flip_p=0.5,
      jitter_p=0.8, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1,
      gray_p=0.2, blur_p=0.5, blur_kernel_frac=0.1,
      blur_sigma=(0.1, 2.0),  # in pixels of a 224-pixel image; scaled to the image size
      noise_p=0.5, noise_std=0.05, solarize_p=0.0, solarize_threshold=0.5,
      rotate_deg=0.0,  # in-plane rotation, uniform in +-this many degrees (0 = none)
      erase_p=0.0,  # random erasing: probability of one noise-filled rectangle
      erase_area=(0.02, 0.2),  # its area, as a fraction of the image
      erase_aspect=(0.3, 3.3)))  # its height / width, log-uniform
  v.update(overrides)
  return v


def train_loop(variant: str, *, epochs_paper: int, batch: int) -> ml_collections.ConfigDict:
  """Fields every trained stage shares."""
  t = ml_collections.ConfigDict()
  t.batch_size = {"tiny": 16, "quick": 128, "paper": batch}[variant]  # global batch
  t.epochs = {"tiny": 2, "quick": 15, "paper": epochs_paper}[variant]
  t.steps = 0  # > 0 overrides epochs
  # Bounds on an epochs-given length, so a small dataset still trains enough
  # steps and a large one does not run for hours (0 = no bound; `steps` ignores them).
  t.min_steps = 0
  t.max_steps = 0
  t.log_every_steps = {"tiny": 2, "quick": 20, "paper": 100}[variant]
  t.checkpoint_every_steps = {"tiny": 4, "quick": 200, "paper": 1000}[variant]
  t.keep_checkpoints = 2
  t.seed = 0
  return t


def bound_steps(t, variant: str, quick_min: int) -> None:
  """quick: at least `quick_min` steps (what the synthetic set trains), at most 5x that;
  tiny and paper: the epochs as given."""
  if variant == "quick":
    t.min_steps, t.max_steps = quick_min, 5 * quick_min


def contrastive(variant: str) -> ml_collections.ConfigDict:
  c = train_loop(variant, epochs_paper=120, batch=256)
  # quick: ~4400 faces (images + frames), 6 epochs ~ 200 steps, about 2 minutes on 2 cores
  c.epochs = {"tiny": 2, "quick": 6, "paper": 120}[variant]
  bound_steps(c, variant, 200)
  # paper: 0.7 and Adam 5e-4. Short CPU runs with small batches learn expression much
  # better with hard negatives weighted up (0.05) and a larger step (measured, README).
  c.temperature = {"tiny": 0.2, "quick": 0.05, "paper": 0.7}[variant]
  lr = {"tiny": 5e-4, "quick": 1e-3, "paper": 5e-4}[variant]
  c.optimizer = optimizer("adam", lr, warmup_epochs={"tiny": 0, "quick": 1, "paper": 5}[variant])
  c.views = (view(), view())
  _probe_fields(c)
  return c


def _probe_fields(c) -> None:
  """Fields every self-supervised pretraining stage shares."""
  c.use_sequence_frames = True  # pretrain on train-split video frames too (unlabelled)
  # A run's workdir (or its checkpoints/contrastive|barlow) whose encoder starts
  # this stage; with epochs=0 the stage takes it as it is. "" = a fresh encoder.
  c.init_from = ""
  c.knn_k = 20
  c.knn_temperature = 0.07
  c.pixel_baseline = True  # also fit the linear probe on raw pixels, for reference


def temporal(variant: str) -> ml_collections.ConfigDict:
  t = train_loop(variant, epochs_paper=40, batch=64)
  t.batch_size = {"tiny": 4, "quick": 32, "paper": 64}[variant]
  # quick has ~120 train sequences (4 steps an epoch): more epochs, same few seconds
  t.epochs = {"tiny": 2, "quick": 100, "paper": 40}[variant]
  bound_steps(t, variant, 300)
  t.optimizer = optimizer("adam", 5e-4)
  t.layers = {"tiny": 1, "quick": 2, "paper": 4}[variant]
  t.heads = {"tiny": 2, "quick": 4, "paper": 8}[variant]
  t.width = {"tiny": 32, "quick": 128, "paper": 256}[variant]
  t.dropout = 0.1
  t.positional = "learned"  # learned | sinusoidal
  # mixture: attention-weighted average of past embeddings + update; residual: E(t) + update
  t.output = "mixture"
  t.context_length = {"tiny": 8, "quick": 24, "paper": 48}[variant]
  t.horizons = (1, 2, 4)
  return t


def behaviour(variant: str) -> ml_collections.ConfigDict:
  b = train_loop(variant, epochs_paper=40, batch=64)
  b.batch_size = {"tiny": 8, "quick": 64, "paper": 64}[variant]
  b.epochs = {"tiny": 2, "quick": 300, "paper": 40}[variant]  # quick: 1-2 steps an epoch
  bound_steps(b, variant, 300)
  b.optimizer = optimizer("adam", 1e-3)
  b.features = "static+temporal"  # static | temporal | static+temporal
  # The static features' encoder: frozen (contrastive) | finetune (the ssl_finetune
  # stage's, listed before behaviour).
  b.encoder = "frozen"
  b.hidden = {"tiny": 32, "quick": 128, "paper": 256}[variant]
  b.dropout = 0.1
  b.class_weighting = "none"  # none | balanced
  return b


def sedl_report(variant: str) -> ml_collections.ConfigDict:
  r = ml_collections.ConfigDict()
  r.baselines = ("random_forest", "kmeans", "supervised_cnn", "simclr_linear", "ssl_finetune")
  r.random_forest_features = "hog"  # hog | pixels
  r.tsne = True
  r.tsne_max_points = {"tiny": 60, "quick": 800, "paper": 2000}[variant]
  r.ngram = 3
  return r


def barlow(variant: str) -> ml_collections.ConfigDict:
  b = train_loop(variant, epochs_paper=100, batch=256)
  b.epochs = {"tiny": 2, "quick": 6, "paper": 100}[variant]
  bound_steps(b, variant, 200)
  b.projector = {"tiny": (32, 32), "quick": (256, 256, 256), "paper": (8192, 8192, 8192)}[variant]
  b.lambd = 0.0051
  b.optimizer = optimizer("lars", 0.2, weight_decay=1.5e-6,
                          warmup_epochs={"tiny": 0, "quick": 1, "paper": 10}[variant])
  b.optimizer.bias_lr_scale = 0.0048 / 0.2
  b.lr_batch_scaling = True  # lr x batch / 256, as the original
  if variant != "paper":  # small batches: Adam works better (methods.md section 4)
    b.optimizer = optimizer("adam", 1e-3, weight_decay=1e-6, warmup_epochs=b.optimizer.warmup_epochs)
    b.lr_batch_scaling = False
  b.views = (view(blur_p=1.0, solarize_p=0.0), view(blur_p=0.1, solarize_p=0.2))
  _probe_fields(b)
  return b


def classifier(variant: str, *, init: str = "barlow") -> ml_collections.ConfigDict:
  """An encoder + linear head trained with cross-entropy (stages/classifier.py)."""
  c = train_loop(variant, epochs_paper=50, batch=128)
  # quick trains on ~4400 faces (images + frames): 4 epochs ~ 140 steps, about a minute
  c.epochs = {"tiny": 2, "quick": 4, "paper": 50}[variant]
  bound_steps(c, variant, 130)
  c.mode = "finetune"  # finetune | linear
  c.init = init  # scratch | contrastive | barlow: where the encoder weights start
  c.optimizer = optimizer("adam", 1e-3, weight_decay=1e-5)
  c.class_weighting = "none"  # none | balanced (loss weights)
  c.balanced_sampling = False  # every class equally often per epoch
  c.label_smoothing = 0.0  # cross-entropy against (1 - eps) one-hot + eps / K
  # Test-time views averaged at evaluation, by CARD (its features h and prior
  # y_hat, training images included) and by prediction: none | flip | flip_crops
  # (the image, four corner crops of 90% of the side, and the mirror of each).
  c.tta = "none"
  c.use_sequence_frames = True  # also train on labelled frames of train sequences
  c.view = view(crop_area=(0.6, 1.0), jitter_p=0.5, gray_p=0.0, blur_p=0.0, noise_p=0.0)
  return c


def ssl_finetune(variant: str) -> ml_collections.ConfigDict:
  """SEDL's "SSL + fine-tune" row: the contrastive encoder fine-tuned with labels
  under a fresh linear head, the encoder at a tenth of the head's learning rate."""
  c = classifier(variant, init="contrastive")
  c.epochs = {"tiny": 1, "quick": 6, "paper": 50}[variant]
  bound_steps(c, variant, 200)
  c.optimizer.encoder_lr_scale = 0.1
  return c


def label_efficiency(variant: str, rows: tuple[str, ...]) -> ml_collections.ConfigDict:
  """The same splits with a fraction of the training labels (stratified, at
  least one per class): which methods keep working with few labels."""
  c = ml_collections.ConfigDict()
  # 1.0 reuses the full-label stages' results; each smaller fraction retrains the
  # trained rows (in workdir/label_efficiency/<fraction>/, resumable).
  c.fractions = {"tiny": (0.5, 1.0), "quick": (0.01, 0.1, 1.0), "paper": (0.01, 0.1, 1.0)}[variant]
  c.rows = rows
  c.seed = 0
  # Trained rows below 1.0 train at most this many steps (0 = the stage's own
  # length): a few hundred labels need fewer steps, and quick stays quick.
  c.max_steps = {"tiny": 0, "quick": 60, "paper": 0}[variant]
  return c


def supervised_cnn(variant: str) -> ml_collections.ConfigDict:
  """SEDL Table 1's supervised CNN: the same encoder, from scratch, with labels."""
  c = classifier(variant, init="scratch")
  c.epochs = {"tiny": 1, "quick": 6, "paper": 50}[variant]
  bound_steps(c, variant, 200)
  return c


def card(variant: str) -> ml_collections.ConfigDict:
  c = train_loop(variant, epochs_paper=200, batch=256)
  # quick: ~6 steps an epoch on cached features; each step takes milliseconds
  c.epochs = {"tiny": 2, "quick": 300, "paper": 200}[variant]
  bound_steps(c, variant, 3000)
  c.timesteps = {"tiny": 50, "quick": 1000, "paper": 1000}[variant]
  c.beta_start = 1e-4
  c.beta_end = 0.02
  c.hidden = {"tiny": 32, "quick": 128, "paper": 128}[variant]
  c.optimizer = optimizer("adam", 1e-3, warmup_epochs={"tiny": 0, "quick": 1, "paper": 10}[variant])
  c.optimizer.grad_clip = 1.0
  c.ema_decay = {"tiny": 0.9, "quick": 0.999, "paper": 0.9999}[variant]
  # Train on this many devices of each process (0: all). The noise network's steps
  # are a few small matmuls: split over two CPU devices, the gradient all-reduce
  # costs more than it saves (README, Benchmarks). Sampling always uses every device.
  c.devices_per_process = 1
  c.num_samples = {"tiny": 8, "quick": 100, "paper": 100}[variant]
  c.classifier_stage = "classifier"  # the frozen f_phi (and its encoder) CARD builds on
  c.sample_temperature = 1.0  # T_s; <= 0 tunes it on training NLL
  c.tune_images = 256  # training images used to tune T_s
  c.pavpu_alpha = 0.05
  c.pavpu_threshold = 0.5  # threshold variant: certain if max prob >= this
  c.eval_batch_size = {"tiny": 8, "quick": 64, "paper": 64}[variant]
  return c


def predict() -> ml_collections.ConfigDict:
  """`--predict.*`: how `--mode=predict` reads inputs and what it writes."""
  p = ml_collections.ConfigDict()
  # yunet (shipped with the package) | haar (OpenCV's cascade) | a YuNet-format
  # .onnx path | none: inputs are face crops already
  p.face = "yunet"
  p.face_margin = -1.0  # widen detected boxes by this fraction; < 0: the run's data.face_margin
  # run: the run's data.face_align (a run prepared without detection: auto) |
  # auto | landmarks | none (see data.face_align)
  p.face_align = "run"
  p.face_score = 0.6  # yunet: faces scoring below this are not faces
  p.face_nms = 0.3  # yunet: overlapping boxes above this IoU are merged into the best
  p.min_face = 20  # smallest face side in pixels the detector reports
  # Live inputs (camera:N, rtsp://, http://): frames.csv gets the rows of every
  # this many frames as they are predicted (SEDL's temporal context restarts there).
  p.live_chunk_frames = 50
  p.live_max_frames = 0  # live inputs: stop after this many frames (0 = until the stream ends or Ctrl-C)
  p.max_faces = 4  # faces per frame, largest first
  p.track_iou = 0.3  # a box continues a track when it overlaps its last box this much
  p.track_max_gap = 10  # frames a track may go unseen and still continue
  p.fps = 0.0  # videos: > 0 keeps about this many frames per second; 0 = every frame
  p.folder_fps = 0.0  # folders of frames: > 0 gives them a clock (time_s); 0 = none
  p.batch_size = 256  # faces per device batch (fixed shape, the last one padded)
  p.workers = 2  # host threads detecting and cropping faces ahead of the model
  p.forecast = True  # SEDL runs with a temporal model: forecasts and surprise (the costly part)
  p.horizons = ()  # SEDL forecast horizons in frames; () = the run's temporal.horizons
  p.card_samples = 0  # CARD samples per face; 0 = the run's card.num_samples
  p.abstain = "ttest"  # CARD: ttest (paired t-test p < the run's pavpu_alpha) | threshold
  p.smooth = "none"  # none | hmm: Viterbi over per-frame probabilities (emotion_smoothed)
  p.hmm_stay = 0.9  # hmm without training transitions: probability of keeping a label
  p.ngram = 3  # n of the emotion n-grams in summary.json
  p.save_embeddings = False  # also write embeddings.npz (per face row)
  p.timeline = True  # write timeline.html
  p.seed = 0  # CARD sampling
  return p
