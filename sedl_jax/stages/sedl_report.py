"""SEDL stage 6: Table 1 with every baseline, temporal MSE, traits, insights, plots.

All Table-1 rows are scored on the same frames: every frame of every test-split
sequence (subjects never seen in training). Static rows train on every
labelled train-split face (static images and sequence frames); SEDL's
behaviour head trains on the train sequences.

Two halves: `collect` computes every number from the earlier stages' results
(`ctx.result`) and the baselines; `render` writes report.md / report.html and
the figures from those numbers. The runner writes the metrics
(`report/report.json`) and calls `render` on process 0.
"""

from __future__ import annotations

import os

import numpy as np

from sedl_jax import atomic_io, results
from sedl_jax.evaluate import baselines, classification, insights, intervals, plots, probes
from sedl_jax.evaluate.report_doc import ReportDoc
from sedl_jax.results import StageResult
from sedl_jax.stages import label_efficiency

# methods.md section 10: SEDL Table 1, on the paper's own dataset (Kaggle
# autistic children's faces, 6 emotions): accuracy %, macro precision, macro F1.
PAPER_TABLE1 = {
    "random_forest": (77.2, 0.73, 0.74),
    "kmeans": (72.5, 0.69, 0.70),
    "supervised_cnn": (81.4, 0.78, 0.79),
    "simclr_linear": (85.9, 0.81, 0.82),
    "sedl": (86.4, 0.83, 0.84),
}
PAPER_MSE = 0.012
ROW_NAMES = {
    "random_forest": "Random Forest ({features})",
    "kmeans": "K-Means ({features}, Hungarian-matched)",
    "supervised_cnn": "Supervised CNN (same encoder, from scratch)",
    "simclr_linear": "SimCLR + linear",
    "ssl_finetune": "SSL + fine-tune (contrastive encoder, not in the paper)",
    "sedl": "SEDL ({features})",
}
ROW_ORDER = ("random_forest", "kmeans", "supervised_cnn", "simclr_linear", "ssl_finetune", "sedl")
# The headline comparisons, each tested pairwise on the same test frames.
COMPARISONS = (("sedl", "simclr_linear"), ("simclr_linear", "supervised_cnn"),
               ("sedl", "supervised_cnn"), ("ssl_finetune", "supervised_cnn"))


def _hog_rows(ctx, train, test) -> dict:
  cfg, nc, seed = ctx.config.report, len(ctx.data.class_names), ctx.config.seed
  wanted = [b for b in ("random_forest", "kmeans") if b in cfg.baselines]
  if not wanted:
    return {}
  f_train = baselines.image_features(train[0], cfg.random_forest_features)
  f_test = baselines.image_features(test[0], cfg.random_forest_features)
  fits = {"random_forest": baselines.random_forest, "kmeans": baselines.kmeans_matched}
  return {b: fits[b](f_train, train[1], f_test, test[1], nc, seed=seed) for b in wanted}


def _simclr_row(ctx, test_keep) -> dict:
  data, emb = ctx.data, ctx.embeddings
  _, train_y = data.faces("train")
  x_train = emb.pooled(data, "train")[train_y >= 0]
  x_val, y_val = emb.eval_features("val"), data.eval_set("val")[1]
  x_val, y_val = x_val[y_val >= 0], y_val[y_val >= 0]
  te_y = data.eval_set("test")[1][test_keep]
  return probes.linear_probe(x_train, train_y[train_y >= 0], emb.eval_features("test")[test_keep],
                             te_y, len(data.class_names), x_val if len(x_val) else None,
                             y_val if len(y_val) else None)


def table1(ctx) -> dict:
  """Every Table-1 row's metrics on `FaceData.eval_set("test")` (labelled items);
  rows that could not run say why."""
  cfg, data = ctx.config.report, ctx.data
  te_images, te_y = data.eval_set("test")
  te_keep = te_y >= 0
  rows = _hog_rows(ctx, data.labelled_faces("train"), (te_images[te_keep], te_y[te_keep]))
  for key in ("supervised_cnn", "ssl_finetune"):
    if key in cfg.baselines:
      sup = ctx.result(key)
      rows[key] = (sup.metrics.get("test_frames", sup.metrics["test_images"]) if sup
                   else f"not run: add {key!r} to config.stages before 'report'")
  if "simclr_linear" in cfg.baselines:
    rows["simclr_linear"] = _simclr_row(ctx, te_keep)
  beh = ctx.result("behaviour")
  rows["sedl"] = beh.metrics["emotion"] if beh else "not run: add 'behaviour' to config.stages"
  groups = data.eval_groups("test")[te_keep]
  for row in rows.values():
    if isinstance(row, dict):
      intervals.with_interval(row, te_y[te_keep], groups)
  return rows


def comparisons(ctx, rows: dict) -> dict:
  """The headline pairs (`COMPARISONS`) tested item by item, grouped by subject."""
  y = ctx.data.eval_set("test")[1]
  keep = y >= 0
  groups, y = ctx.data.eval_groups("test")[keep], y[keep]
  out = {}
  for a, b in COMPARISONS:
    if isinstance(rows.get(a), dict) and isinstance(rows.get(b), dict):
      out[f"{a}_vs_{b}"] = intervals.paired(
          ROW_NAMES[a].split(" (")[0], ROW_NAMES[b].split(" (")[0],
          np.asarray(rows[a]["predicted"]) == y, np.asarray(rows[b]["predicted"]) == y, groups)
  return out


def _insights(ctx):
  """(insights of the predicted labels, of the true labels or None, behaviour arrays)."""
  beh, names = ctx.result("behaviour"), list(ctx.data.class_names)
  if ctx.data.sequences is None or beh is None:
    return None, None, None
  probs, labels, subjects = (beh.arrays[k] for k in ("probs", "labels", "subjects"))
  n = int(ctx.config.report.ngram)
  predicted = insights.sequence_insights(probs, subjects, names, n=n)
  # True-label insights need every frame labelled; else the columns say n/a.
  truth = (insights.sequence_insights(np.eye(len(names))[labels], subjects, names, n=n)
           if (labels >= 0).all() else None)
  return predicted, truth, beh.arrays


def collect(ctx) -> tuple[dict, dict]:
  """(metrics, insights) of the report, from the earlier stages and the baselines."""
  data = ctx.data
  rows = table1(ctx)
  temporal = ctx.result("temporal")
  temporal = temporal.metrics if temporal and "test_mse" in temporal.metrics else None
  h1 = temporal["test_mse"][next(iter(temporal["test_mse"]))]["model"] if temporal else None
  behaviour = ctx.result("behaviour")
  predicted, truth, _ = _insights(ctx)
  metrics = {
      "evaluated_on": ("every labelled frame of the test-split sequences"
                       if data.sequences is not None else
                       "the test-split images (the data has no sequences)"),
      "num_test_frames": int((data.eval_set("test")[1] >= 0).sum()),
      "table1": {k: (v if isinstance(v, str) else
                     {m: v[m] for m in ("accuracy", "accuracy_ci95", "precision_macro", "f1_macro")})
                 for k, v in rows.items()},
      "comparisons": comparisons(ctx, rows),
      "table1_confusion": {k: v["confusion"] for k, v in rows.items() if not isinstance(v, str)},
      "table1_temporal_mse": h1,
      "paper_table1": {k: {"accuracy": a / 100, "precision_macro": p, "f1_macro": f}
                       for k, (a, p, f) in PAPER_TABLE1.items()},
      "paper_temporal_mse": PAPER_MSE,
      "temporal": temporal,
      "traits": behaviour.metrics["traits"] if behaviour else None,
      "insights": ({"predicted": predicted["overall"],
                    "true": truth["overall"] if truth else None} if predicted else None),
      "label_efficiency": _label_efficiency(ctx),
  }
  return metrics, ({"predicted": predicted, "true": truth} if predicted else {})


def _label_efficiency(ctx) -> dict | None:
  found = ctx.result("label_efficiency")
  return found.metrics if found else None


def run(ctx) -> StageResult:
  metrics, found = collect(ctx)
  report_dir = results.report_dir(ctx.workdir)
  sedl = metrics["table1"].get("sedl")
  summary = (f"[report] SEDL acc={sedl['accuracy']:.4f}; report in {report_dir}/report.html"
             if isinstance(sedl, dict) else f"[report] written to {report_dir}/report.html")
  return StageResult(metrics, summary=summary,
                     render=lambda report_dir: render(ctx, metrics, found, report_dir))


def _row_label(ctx, key: str) -> str:
  feats = (ctx.config.behaviour.features if key == "sedl"
           else ctx.config.report.random_forest_features)
  if key == "sedl" and ctx.config.behaviour.get("encoder", "frozen") == "finetune":
    feats += ", fine-tuned encoder"
  return ROW_NAMES[key].format(features=feats)


def _render_table1(doc, ctx, metrics, report_dir) -> None:
  rows, h1 = metrics["table1"], metrics["table1_temporal_mse"]
  doc.heading("Table 1: emotion recognition")
  table_rows = []
  for key in (k for k in ROW_ORDER if k in rows):
    v = rows[key]
    pa, pp, pf = PAPER_TABLE1.get(key, (None, None, None))
    paper = [None if pa is None else f"{pa:.1f}", pp, pf, PAPER_MSE if key == "sedl" else None]
    cells = ([v, None, None, None] if isinstance(v, str) else
             [intervals.percent(v["accuracy"], v.get("accuracy_ci95")), v["precision_macro"],
              v["f1_macro"], h1 if key == "sedl" else None])
    table_rows.append([_row_label(ctx, key), *cells, *paper])
  doc.table(["method", "accuracy % (95% CI)", "precision (macro)", "F1 (macro)", "temporal MSE",
             "paper acc %", "paper precision", "paper F1", "paper MSE"], table_rows)
  if metrics.get("comparisons"):
    doc.para("Intervals: bootstrap over test subjects (frames of one subject are not "
             "independent). Paired comparisons on the same test frames:")
    doc.bullets([c["verdict"] for c in metrics["comparisons"].values()])
  doc.para("The paper's columns are the paper's own numbers on its own dataset (Kaggle "
           "autistic children's faces, 6 emotions), shown for reference; they are not "
           "comparable one-to-one with this dataset.")
  if "sedl" in metrics["table1_confusion"]:
    classification.plot_confusion(metrics["table1_confusion"]["sedl"], ctx.data.class_names,
                                  os.path.join(report_dir, "sedl_confusion.png"),
                                  f"SEDL: acc {rows['sedl']['accuracy']:.3f}")
    doc.image("sedl_confusion.png", "Confusion matrix of SEDL on the test frames")


def _render_temporal_and_traits(doc, metrics) -> None:
  if metrics["temporal"]:
    doc.heading("Temporal prediction (unit-norm embeddings)")
    doc.table(["predicting", "model MSE", "persistence MSE", "sequence-mean MSE"],
              [[f"E(t+{h})", v["model"], v["persistence"], v["sequence_mean"]]
               for h, v in metrics["temporal"]["test_mse"].items()])
  doc.heading("Behaviour traits")
  traits = metrics["traits"]
  if isinstance(traits, dict):
    doc.table(["trait", "accuracy", "F1", "AUROC", "positive rate (test)"],
              [[k, v["accuracy"], v["f1"], v["auroc"], v["positive_rate"]] for k, v in traits.items()])
  else:
    doc.para(str(traits) if traits else "behaviour stage not run")


def _render_insights(doc, ctx, found, report_dir) -> None:
  names, n = list(ctx.data.class_names), ctx.config.report.ngram
  ov = found["predicted"]["overall"]
  # Without labels on every frame there is no true-label column to show.
  tv = found["true"]["overall"] if found["true"] else {
      "transition_rate": float("nan"), "emotion_share": dict.fromkeys(names, "n/a"),
      "mean_dwell_frames": dict.fromkeys(names, "n/a"), "top_ngrams": []}
  doc.heading("Insights (test sequences)")
  doc.para(f"Transition rate: {ov['transition_rate']:.3f} changes per frame predicted "
           f"({tv['transition_rate']:.3f} in the true labels); mean confidence "
           f"{ov['mean_confidence']:.3f}.")
  doc.table(["emotion", "share predicted", "share true", "mean dwell predicted (frames)",
             "mean dwell true (frames)"],
            [[c, ov["emotion_share"][c], tv["emotion_share"][c], ov["mean_dwell_frames"][c],
              tv["mean_dwell_frames"][c]] for c in names])
  k = min(max(len(ov["top_ngrams"]), len(tv["top_ngrams"])), 8)
  pad = lambda lst, i: (lst[i]["pattern"], lst[i]["count"]) if i < len(lst) else (None, None)
  doc.table([f"most frequent {n}-grams (predicted)", "count", "(true labels)", "count"],
            [[*pad(ov["top_ngrams"], i), *pad(tv["top_ngrams"], i)] for i in range(k)])
  plots.transition_heatmap(ov["transition_matrix"], names, os.path.join(report_dir, "transitions.png"))
  doc.image("transitions.png", "Transition matrix between predicted emotions (changes only)")
  doc.table(["subject", "frames", "dominant emotion", "transition rate", "mean confidence"],
            [[s, v["frames"], max(v["emotion_share"], key=v["emotion_share"].get),
              v["transition_rate"], v["mean_confidence"]]
             for s, v in found["predicted"]["per_subject"].items()])
  arrays = ctx.result("behaviour").arrays
  plots.trajectories(arrays["probs"], arrays["labels"], names,
                     os.path.join(report_dir, "trajectories.png"),
                     titles=[f"subject {s}, sequence {i}" for i, s in enumerate(arrays["subjects"])])
  doc.image("trajectories.png", "Emotion trajectories: true (grey) and predicted (red), "
            "with the prediction's confidence (blue)")


def _render_tsne(doc, ctx, report_dir) -> None:
  data, emb = ctx.data, ctx.embeddings
  y = data.eval_set("test")[1]
  what = "test frames" if data.sequences is not None else "test images"
  plots.tsne(emb.eval_features("test")[y >= 0], y[y >= 0], list(data.class_names),
             os.path.join(report_dir, "tsne.png"),
             max_points=int(ctx.config.report.tsne_max_points), seed=ctx.config.seed,
             title=f"t-SNE of encoder embeddings ({what})")
  doc.image("tsne.png", f"t-SNE of the contrastive encoder's embeddings of {what}, "
            "coloured by true emotion")


def render(ctx, metrics: dict, found: dict, report_dir: str) -> None:
  """insights.json, report.md, report.html and the figures, from the collected
  numbers (the runner calls it on process 0 only)."""
  if found:
    atomic_io.write_json(os.path.join(report_dir, "insights.json"), found)
  data = ctx.data
  names = list(data.class_names)
  doc = ReportDoc("SEDL report")
  where = (f"{metrics['num_test_frames']} labelled frames of {len(data.sequences['test'])} test "
           "sequences" if data.sequences is not None else
           f"{metrics['num_test_frames']} test images (no sequences in this data: no temporal "
           "model, static features only, no trajectories or transitions)")
  doc.para(f"Data: {data.source}, {len(names)} classes ({', '.join(names)}). Scored on {where}.")
  _render_table1(doc, ctx, metrics, report_dir)
  if metrics.get("label_efficiency"):
    label_efficiency.render(doc, metrics["label_efficiency"], report_dir)
  _render_temporal_and_traits(doc, metrics)
  if found:
    _render_insights(doc, ctx, found, report_dir)
  if ctx.config.report.tsne:
    _render_tsne(doc, ctx, report_dir)
  doc.heading("Resolved config")
  doc.code(ctx.config.to_json_best_effort(indent=2, sort_keys=True))
  doc.write(report_dir)
