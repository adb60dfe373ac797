"""SEDL stage 6: Table 1 with every baseline, temporal MSE, traits, insights, plots.

All Table-1 rows are scored on the same frames: every frame of every test-split
sequence (subjects never seen in training). Static rows train on every
labelled train-split face (static images and sequence frames); SEDL's
behaviour head trains on the train sequences. Writes `workdir/report/`
metrics.json, insights.json, report.md, report.html and the PNG figures.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from sedl_jax.evaluate import baselines, classification, insights, plots, probes
from sedl_jax.evaluate.report_doc import ReportDoc
from sedl_jax.stages import embeddings as embeddings_lib

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
    "sedl": "SEDL ({features})",
}


def _read_json(path: str):
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def table1(ctx, report_dir: str) -> dict:
  """Every Table-1 row's metrics on the test set (`embeddings.eval_set`: the
  test frames, or the test images when there are no sequences); rows that
  could not run say why."""
  cfg, data = ctx.config.report, ctx.data
  nc = len(data.class_names)
  # Sequence frames join the static train images unless they are among them already.
  extra_frames = data.sequences is not None and not data.frames_in_images
  tr_frames, tr_frame_y = embeddings_lib.eval_set(data, "train")
  te_frames, te_y = embeddings_lib.eval_set(data, "test")
  te_keep = te_y >= 0
  te_frames, te_y = te_frames[te_keep], te_y[te_keep]
  train_images = np.concatenate([data.images["train"].images] + ([tr_frames] if extra_frames else []))
  train_y = np.concatenate([data.images["train"].labels] + ([tr_frame_y] if extra_frames else []))
  keep = train_y >= 0
  rows = {}
  feats_kind = cfg.random_forest_features
  if "random_forest" in cfg.baselines or "kmeans" in cfg.baselines:
    f_train = baselines.image_features(train_images[keep], feats_kind)
    f_test = baselines.image_features(te_frames, feats_kind)
    if "random_forest" in cfg.baselines:
      rows["random_forest"] = baselines.random_forest(f_train, train_y[keep], f_test, te_y, nc,
                                                      seed=ctx.config.seed)
    if "kmeans" in cfg.baselines:
      rows["kmeans"] = baselines.kmeans_matched(f_train, train_y[keep], f_test, te_y, nc,
                                                seed=ctx.config.seed)
  if "supervised_cnn" in cfg.baselines:
    sup = _read_json(os.path.join(report_dir, "supervised_cnn.json"))
    rows["supervised_cnn"] = (sup.get("test_frames", sup["test_images"]) if sup else
                              "not run: add 'supervised_cnn' to config.stages before 'report'")
  if "simclr_linear" in cfg.baselines:
    emb = embeddings_lib.load(ctx)
    x_train = np.concatenate([emb.images["train"]] +
                             ([emb.eval_features("train")] if extra_frames else []))[keep]
    x_val, y_val = emb.eval_features("val"), embeddings_lib.eval_set(data, "val")[1]
    x_val, y_val = x_val[y_val >= 0], y_val[y_val >= 0]
    rows["simclr_linear"] = probes.linear_probe(x_train, train_y[keep],
                                                emb.eval_features("test")[te_keep], te_y, nc,
                                                x_val if len(x_val) else None,
                                                y_val if len(y_val) else None)
  beh = _read_json(os.path.join(report_dir, "behaviour.json"))
  rows["sedl"] = beh["emotion"] if beh else "not run: add 'behaviour' to config.stages"
  return rows


def _row_label(key: str, ctx) -> str:
  feats = (ctx.config.behaviour.features if key == "sedl"
           else ctx.config.report.random_forest_features)
  return ROW_NAMES[key].format(features=feats)


def run(ctx) -> dict:
  config, data = ctx.config, ctx.data
  report_dir = os.path.join(ctx.workdir, "report")
  os.makedirs(report_dir, exist_ok=True)
  names = list(data.class_names)
  rows = table1(ctx, report_dir)
  temporal_res = _read_json(os.path.join(report_dir, "temporal.json"))
  behaviour_res = _read_json(os.path.join(report_dir, "behaviour.json"))
  h1 = None
  if temporal_res:
    first = next(iter(temporal_res["test_mse"]))
    h1 = temporal_res["test_mse"][first]["model"]

  pred_path = os.path.join(report_dir, "behaviour_test_predictions.npz")
  insight = None
  if data.sequences is not None and os.path.exists(pred_path):
    with np.load(pred_path) as z:
      probs, labels, subjects = z["probs"], z["labels"], z["subjects"]
    insight = insights.sequence_insights(probs, subjects, names, n=int(config.report.ngram))
    # True-label insights need every frame labelled; else the columns say n/a.
    truth = (insights.sequence_insights(np.eye(len(names))[labels], subjects, names,
                                        n=int(config.report.ngram))
             if (labels >= 0).all() else None)

  num_test = int((embeddings_lib.eval_set(data, "test")[1] >= 0).sum())
  metrics = {
      "evaluated_on": ("every labelled frame of the test-split sequences"
                       if data.sequences is not None else
                       "the test-split images (the data has no sequences)"),
      "num_test_frames": num_test,
      "table1": {k: (v if isinstance(v, str) else
                     {m: v[m] for m in ("accuracy", "precision_macro", "f1_macro")})
                 for k, v in rows.items()},
      "table1_temporal_mse": h1,
      "paper_table1": {k: {"accuracy": a / 100, "precision_macro": p, "f1_macro": f}
                       for k, (a, p, f) in PAPER_TABLE1.items()},
      "paper_temporal_mse": PAPER_MSE,
      "temporal": temporal_res,
      "traits": behaviour_res["traits"] if behaviour_res else None,
      "insights": ({"predicted": insight["overall"],
                    "true": truth["overall"] if truth else None} if insight else None),
  }
  if jax.process_index() != 0:
    return metrics
  with open(os.path.join(report_dir, "metrics.json"), "w") as f:
    json.dump(metrics, f, indent=2)
  if insight:
    with open(os.path.join(report_dir, "insights.json"), "w") as f:
      json.dump({"predicted": insight, "true": truth}, f)

  doc = ReportDoc("SEDL report")
  where = (f"{metrics['num_test_frames']} labelled frames of {len(data.sequences['test'])} test "
           "sequences" if data.sequences is not None else
           f"{metrics['num_test_frames']} test images (no sequences in this data: no temporal "
           "model, static features only, no trajectories or transitions)")
  doc.para(f"Data: {data.source}, {len(names)} classes ({', '.join(names)}). Scored on {where}.")
  doc.heading("Table 1: emotion recognition")
  table_rows = []
  for key in ("random_forest", "kmeans", "supervised_cnn", "simclr_linear", "sedl"):
    if key not in rows:
      continue
    v = rows[key]
    pa, pp, pf = PAPER_TABLE1[key]
    paper = [f"{pa:.1f}", pp, pf, PAPER_MSE if key == "sedl" else None]
    if isinstance(v, str):
      table_rows.append([_row_label(key, ctx), v, None, None, None, *paper])
    else:
      table_rows.append([_row_label(key, ctx), f"{100 * v['accuracy']:.1f}", v["precision_macro"],
                         v["f1_macro"], h1 if key == "sedl" else None, *paper])
  doc.table(["method", "accuracy %", "precision (macro)", "F1 (macro)", "temporal MSE",
             "paper acc %", "paper precision", "paper F1", "paper MSE"], table_rows)
  doc.para("The paper's columns are the paper's own numbers on its own dataset (Kaggle "
           "autistic children's faces, 6 emotions), shown for reference; they are not "
           "comparable one-to-one with this dataset.")
  if isinstance(rows.get("sedl"), dict):
    classification.plot_confusion(rows["sedl"]["confusion"], names,
                                  os.path.join(report_dir, "sedl_confusion.png"),
                                  f"SEDL: acc {rows['sedl']['accuracy']:.3f}")
    doc.image("sedl_confusion.png", "Confusion matrix of SEDL on the test frames")

  if temporal_res:
    doc.heading("Temporal prediction (unit-norm embeddings)")
    doc.table(["predicting", "model MSE", "persistence MSE", "sequence-mean MSE"],
              [[f"E(t+{h})", v["model"], v["persistence"], v["sequence_mean"]]
               for h, v in temporal_res["test_mse"].items()])
  doc.heading("Behaviour traits")
  traits = metrics["traits"]
  if isinstance(traits, dict):
    doc.table(["trait", "accuracy", "F1", "AUROC", "positive rate (test)"],
              [[k, v["accuracy"], v["f1"], v["auroc"], v["positive_rate"]] for k, v in traits.items()])
  else:
    doc.para(str(traits) if traits else "behaviour stage not run")

  if insight:
    doc.heading("Insights (test sequences)")
    ov = insight["overall"]
    # Without labels on every frame there is no true-label column to show.
    tv = truth["overall"] if truth else {
        "transition_rate": float("nan"), "emotion_share": dict.fromkeys(names, "n/a"),
        "mean_dwell_frames": dict.fromkeys(names, "n/a"), "top_ngrams": []}
    doc.para(f"Transition rate: {ov['transition_rate']:.3f} changes per frame predicted "
             f"({tv['transition_rate']:.3f} in the true labels); mean confidence "
             f"{ov['mean_confidence']:.3f}.")
    doc.table(["emotion", "share predicted", "share true", "mean dwell predicted (frames)",
               "mean dwell true (frames)"],
              [[n, ov["emotion_share"][n], tv["emotion_share"][n], ov["mean_dwell_frames"][n],
                tv["mean_dwell_frames"][n]] for n in names])
    k = max(len(ov["top_ngrams"]), len(tv["top_ngrams"]))
    pad = lambda lst, i: (lst[i]["pattern"], lst[i]["count"]) if i < len(lst) else (None, None)
    doc.table([f"most frequent {config.report.ngram}-grams (predicted)", "count",
               "(true labels)", "count"],
              [[*pad(ov["top_ngrams"], i), *pad(tv["top_ngrams"], i)] for i in range(min(k, 8))])
    plots.transition_heatmap(ov["transition_matrix"], names,
                             os.path.join(report_dir, "transitions.png"))
    doc.image("transitions.png", "Transition matrix between predicted emotions (changes only)")
    doc.table(["subject", "frames", "dominant emotion", "transition rate", "mean confidence"],
              [[s, v["frames"], max(v["emotion_share"], key=v["emotion_share"].get),
                v["transition_rate"], v["mean_confidence"]]
               for s, v in insight["per_subject"].items()])
    plots.trajectories(probs, labels, names, os.path.join(report_dir, "trajectories.png"),
                       titles=[f"subject {s}, sequence {i}" for i, s in enumerate(subjects)])
    doc.image("trajectories.png", "Emotion trajectories: true (grey) and predicted (red), "
              "with the prediction's confidence (blue)")
  if config.report.tsne:
    emb = embeddings_lib.load(ctx)
    y = embeddings_lib.eval_set(data, "test")[1]
    what = "test frames" if data.sequences is not None else "test images"
    plots.tsne(emb.eval_features("test")[y >= 0], y[y >= 0], names,
               os.path.join(report_dir, "tsne.png"), max_points=int(config.report.tsne_max_points),
               seed=ctx.config.seed, title=f"t-SNE of encoder embeddings ({what})")
    doc.image("tsne.png", f"t-SNE of the contrastive encoder's embeddings of {what}, "
              "coloured by true emotion")
  doc.heading("Resolved config")
  doc.code(config.to_json_best_effort(indent=2, sort_keys=True))
  doc.write(report_dir)
  sedl = rows.get("sedl")
  if isinstance(sedl, dict):
    print(f"[report] SEDL acc={sedl['accuracy']:.4f}; report in {report_dir}/report.html")
  return metrics
