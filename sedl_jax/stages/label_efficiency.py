"""Label efficiency: every method again with a fraction of the training labels.

For each fraction in `config.label_efficiency.fractions`, the training labels
are cut to that fraction (`data.label_subsets`: stratified, at least one per
class, fixed seed); val and test stay whole, so all fractions are scored on the
same test items. Rows (`config.label_efficiency.rows`):

  pixels_linear   logistic regression on raw pixels
  random_forest   Random Forest on HOG (report.random_forest_features)
  supervised_cnn  the encoder trained from scratch (config.supervised_cnn)
  ssl_linear      logistic regression on the frozen self-supervised encoder
  ssl_finetune    that encoder fine-tuned with labels (SEDL: config.ssl_finetune;
                  diffusion FER: f_phi, config.classifier)
  sedl            SEDL's behaviour heads (static + temporal features)

Trained rows at a fraction below 1 train in `workdir/label_efficiency/<fraction>/`
(checkpointed and resumed like any stage, with the run's pretrained encoder and
temporal model); at 1.0 they are the full-label stages' results when those ran.
Every accuracy carries its 95% interval (bootstrap over test subjects), and at
each fraction the self-supervised rows are tested against the supervised CNN
and the raw-pixel probe.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from sedl_jax.data import label_subsets
from sedl_jax.evaluate import baselines, intervals, probes
from sedl_jax.results import StageResult
from sedl_jax.stages import behaviour, classifier, pretrain
from sedl_jax.stages.context import Context

ROWS = ("pixels_linear", "random_forest", "supervised_cnn", "ssl_linear", "ssl_finetune", "sedl")
LABELS = {"pixels_linear": "raw pixels + linear", "random_forest": "Random Forest (HOG)",
          "supervised_cnn": "supervised CNN (scratch)", "ssl_linear": "SSL + linear",
          "ssl_finetune": "SSL + fine-tune", "sedl": "SEDL"}
# Pairs tested at every fraction: does self-supervision earn its place?
COMPARISONS = (("ssl_linear", "supervised_cnn"), ("ssl_finetune", "supervised_cnn"),
               ("ssl_linear", "pixels_linear"), ("sedl", "supervised_cnn"))


@dataclasses.dataclass(frozen=True)
class Pipeline:
  ssl_stage: str  # the self-supervised stage whose encoder the SSL rows use
  finetune_stage: str  # the config section of the SSL + fine-tune row
  scored_on_frames: bool  # SEDL scores frames of test sequences; diffusion FER static images


PIPELINES = {"sedl": Pipeline("contrastive", "ssl_finetune", True),
             "card_fer": Pipeline("barlow", "classifier", False)}


def _pipeline(ctx) -> Pipeline:
  return PIPELINES[ctx.config.pipeline]


def _scored_items(ctx, pipe: Pipeline, split: str):
  """(images, labels, groups, mask) of a split's labelled items the rows are scored
  (test) or tuned (val) on."""
  data = ctx.data
  frames = pipe.scored_on_frames and data.sequences is not None
  images, labels = data.eval_set(split) if frames else (data.images[split].images,
                                                        data.images[split].labels)
  groups = data.eval_groups(split, static=not frames)
  keep = labels >= 0
  return images[keep], labels[keep], groups[keep], keep


def _ssl_features(ctx, pipe: Pipeline, scored: dict) -> dict:
  """The self-supervised encoder's features: {"pool": training pool, "val", "test"}."""
  if pipe.ssl_stage == "contrastive":
    emb = ctx.embeddings
    frames = pipe.scored_on_frames and ctx.data.sequences is not None
    out = {s: (emb.eval_features(s) if frames else emb.images[s])[scored[s][3]]
           for s in ("val", "test")}
    out["pool"] = emb.pooled(ctx.data, "train")
    return out
  predict = pretrain.predictor(ctx, pretrain.restore(ctx, pipe.ssl_stage), pipe.ssl_stage)
  out = {s: predict(scored[s][0])[0] for s in ("val", "test")}
  out["pool"] = predict(ctx.data.faces("train")[0])[0]
  return out


def _sub_config(config, pipe: Pipeline, fraction: float):
  """The run's config with the trained rows' lengths capped at
  `label_efficiency.max_steps` (when > 0) below 1.0; at 1.0 (a row whose
  full-label stage did not run) the stage trains as configured."""
  cap = int(config.label_efficiency.get("max_steps", 0))
  if cap <= 0 or fraction >= 1:
    return config
  sub = config.copy_and_resolve_references()
  for section in ("supervised_cnn", pipe.finetune_stage, "behaviour"):
    if section in sub:
      st = sub[section]
      st.max_steps = min(int(st.max_steps), cap) if st.max_steps else cap
      st.min_steps = min(int(st.min_steps), cap)
      if st.steps:
        st.steps = min(int(st.steps), cap)
  return sub


def _sub_context(ctx, fraction: float, data) -> Context:
  sub = Context(config=_sub_config(ctx.config, _pipeline(ctx), fraction),
                workdir=os.path.join(ctx.workdir, "label_efficiency", f"{fraction:g}"),
                mode=ctx.mode, allow_config_change=ctx.allow_config_change,
                restore_from=ctx.workdir)
  # The sub-run shares the devices and the frozen encoder's embeddings; only
  # the training labels differ.
  sub.__dict__.update(data=data, dp=ctx.dp)
  if ctx.config.pipeline == "sedl":
    sub.__dict__["embeddings"] = ctx.embeddings
  return sub


def _trained_row(ctx, sub, row: str, pipe: Pipeline, fraction: float) -> dict | str:
  """Metrics of a trained row at a fraction (the full-label stage's own at 1.0)."""
  stage = {"supervised_cnn": "supervised_cnn", "ssl_finetune": pipe.finetune_stage,
           "sedl": "behaviour"}[row]
  if stage not in ctx.config:
    return f"not run: config.{stage} is missing"
  if row == "sedl" and ctx.config.pipeline != "sedl":
    return "not run: SEDL rows need the SEDL pipeline"
  result = ctx.result(stage) if fraction >= 1 else None
  if result is None:
    run = {"sedl": behaviour.run}.get(row, lambda c: classifier.run(c, stage))
    result = run(sub)
  m = result.metrics
  if row == "sedl":
    return m["emotion"]
  return m["test_frames"] if pipe.scored_on_frames and "test_frames" in m else m["test_images"]


def _probe(features: dict, keep, pool_y, val_y, te_y, nc: int, seed: int, fit) -> dict:
  """A probe on a feature kind: fit on the kept training faces, C tuned on val."""
  return fit(features["pool"][keep], pool_y[keep], features["test"], te_y, nc,
             features["val"] if len(val_y) else None, val_y if len(val_y) else None, seed=seed)


def _fraction_rows(ctx, pipe, fraction, rows, features, scored) -> dict:
  data = label_subsets.with_fraction(ctx.data, fraction, int(ctx.config.label_efficiency.seed))
  _, pool_y = data.faces("train")
  keep = pool_y >= 0
  val_y, te_y = scored["val"][1], scored["test"][1]
  nc, seed = len(data.class_names), int(ctx.config.seed)
  out = {"labelled_training_faces": int(keep.sum()),
         "per_class": np.bincount(pool_y[keep], minlength=nc).tolist(), "rows": {}}
  sub = _sub_context(ctx, fraction, data)
  for row in rows:
    if row in ("pixels_linear", "ssl_linear"):
      m = _probe(features[row], keep, pool_y, val_y, te_y, nc, seed, probes.linear_probe)
    elif row == "random_forest":
      hog = features[row]
      m = baselines.random_forest(hog["pool"][keep], pool_y[keep], hog["test"], te_y, nc, seed=seed)
    else:
      m = _trained_row(ctx, sub, row, pipe, fraction)
    out["rows"][row] = m
  return out


def _summarise(row, te_y, groups):
  if isinstance(row, str):
    return row
  intervals.with_interval(row, te_y, groups)
  return {k: row[k] for k in ("accuracy", "accuracy_ci95", "f1_macro")}


def run(ctx) -> StageResult:
  cfg, pipe = ctx.config.label_efficiency, _pipeline(ctx)
  rows = tuple(r for r in cfg.rows if r in ROWS)
  scored = {s: _scored_items(ctx, pipe, s) for s in ("val", "test")}
  te_y, groups = scored["test"][1], scored["test"][2]
  images = {"pool": ctx.data.faces("train")[0], "val": scored["val"][0], "test": scored["test"][0]}
  features = {}
  if "pixels_linear" in rows:
    features["pixels_linear"] = {k: v.reshape(len(v), -1).astype(np.float32) / 255.0
                                 for k, v in images.items()}
  if "random_forest" in rows:
    kind = ctx.config.report.get("random_forest_features", "hog")
    features["random_forest"] = {k: baselines.image_features(v, kind) for k, v in images.items()
                                 if k != "val"}
  if "ssl_linear" in rows:
    features["ssl_linear"] = _ssl_features(ctx, pipe, scored)
  fractions = {}
  for fraction in sorted(float(f) for f in cfg.fractions):
    found = _fraction_rows(ctx, pipe, fraction, rows, features, scored)
    predicted = {r: m["predicted"] for r, m in found["rows"].items() if isinstance(m, dict)}
    found["rows"] = {r: _summarise(m, te_y, groups) for r, m in found["rows"].items()}
    found["comparisons"] = {}
    for a, b in COMPARISONS:
      if a in predicted and b in predicted:
        found["comparisons"][f"{a}_vs_{b}"] = intervals.paired(
            LABELS[a], LABELS[b], np.asarray(predicted[a]) == te_y,
            np.asarray(predicted[b]) == te_y, groups)
    fractions[f"{fraction:g}"] = found
  metrics = {"scored_on": int(len(te_y)), "rows": list(rows), "labels": LABELS,
             "fractions": fractions}
  return StageResult(metrics, summary=summary(metrics))


def summary(metrics: dict) -> str:
  lines = []
  for f, found in metrics["fractions"].items():
    accs = ", ".join(f"{LABELS[r]} {100 * m['accuracy']:.1f}" for r, m in found["rows"].items()
                     if isinstance(m, dict))
    lines.append(f"[label_efficiency] {f} of the labels ({found['labelled_training_faces']} "
                 f"faces): {accs}")
  return "\n".join(lines)


def render(doc, metrics: dict, report_dir: str) -> None:
  """The label-efficiency table, plot and significance lines, in a report."""
  from sedl_jax.evaluate import plots
  fractions, rows = metrics["fractions"], metrics["rows"]
  doc.heading("Label efficiency")
  doc.para("The same splits with a fraction of the training labels (stratified, at least one per "
           f"class); every row scored on the same {metrics['scored_on']} test items. Accuracy % "
           "with its 95% interval (bootstrap over test subjects).")
  headers = ["method"] + [f"{float(f):.0%} ({v['labelled_training_faces']} labels)"
                          for f, v in fractions.items()]
  table = []
  for r in rows:
    cells = []
    for v in fractions.values():
      m = v["rows"].get(r)
      cells.append(m if isinstance(m, str) or m is None else
                   intervals.percent(m["accuracy"], m["accuracy_ci95"]))
    table.append([LABELS[r], *cells])
  doc.table(headers, table)
  series = {LABELS[r]: [(float(f), v["rows"][r]["accuracy"], v["rows"][r]["accuracy_ci95"])
                        for f, v in fractions.items() if isinstance(v["rows"].get(r), dict)]
            for r in rows}
  plots.label_efficiency(series, os.path.join(report_dir, "label_efficiency.png"))
  doc.image("label_efficiency.png", "Test accuracy against the fraction of training labels "
            "(95% intervals)")
  lines = [f"{float(f):.0%} of the labels: {c['verdict']}" for f, v in fractions.items()
           for c in v["comparisons"].values()]
  if lines:
    doc.para("Paired comparisons on the same test items:")
    doc.bullets(lines)
