"""The diffusion-FER report: Table 3 (accuracy, PAvPU per ablation row) with the
paper's numbers beside ours, a reliability diagram, the confusion matrix and
examples of certain vs uncertain predictions."""

from __future__ import annotations

import os

import numpy as np

from sedl_jax import results
from sedl_jax.config import ablations
from sedl_jax.evaluate import calibration, classification, intervals, plots
from sedl_jax.evaluate.report_doc import ReportDoc
from sedl_jax.results import StageResult
from sedl_jax.stages import label_efficiency


def example_grid(images, labels, vote, p_value, certain, names, path: str, count: int) -> None:
  """Most certain and least certain test predictions, side by side."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  order = np.argsort(p_value, kind="stable")
  picks = [("certain", order[:count]), ("uncertain", order[::-1][:count])]
  fig, axes = plt.subplots(2, count, figsize=(1.5 * count, 3.6), squeeze=False)
  for r, (title, idx) in enumerate(picks):
    for c in range(count):
      ax = axes[r, c]
      ax.axis("off")
      if c >= len(idx):
        continue
      i = idx[c]
      img = images[i]
      ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255)
      ok = "ok" if vote[i] == labels[i] else f"true {names[labels[i]]}"
      ax.set_title(f"{names[vote[i]]} ({ok})\np={p_value[i]:.2g}", fontsize=6,
                   color="green" if certain[i] else "red")
    axes[r, 0].text(-0.1, 0.5, title, transform=axes[r, 0].transAxes, rotation=90,
                    va="center", ha="right", fontsize=8)
  plots.save(fig, path)


def _run_dirs(ctx) -> dict[str, str]:
  """Table-3 row -> the workdir holding its `card` result."""
  if ctx.config.ablation == "all":
    return {name: os.path.join(ctx.workdir, name) for name in ablations.rows(ctx.config)}
  return {ctx.config.ablation: ctx.workdir}


def collect(ctx) -> dict:
  """Table 3's numbers (ours and the paper's) from each row's `card` result."""
  keep = ("accuracy", "accuracy_ci95", "f1_macro", "pavpu_ttest", "pavpu_ttest_ci95",
          "pavpu_threshold", "ece", "nll", "classifier_accuracy", "classifier_accuracy_ci95",
          "sample_temperature")
  metrics = {"table3": {}, "paper_table3_fer2013": {},
             "paper_affectnet_proposed": dict(zip(("accuracy", "pavpu"),
                                                  (v / 100 for v in ablations.PAPER_AFFECTNET)))}
  for name, run_dir in _run_dirs(ctx).items():
    pa, pp = ablations.PAPER_TABLE3[name]
    metrics["paper_table3_fer2013"][name] = {"accuracy": pa / 100, "pavpu": pp / 100}
    row = results.read(run_dir, "card")
    metrics["table3"][name] = ({k: row.metrics.get(k) for k in keep} if row else "not run")
  metrics["comparisons"] = _comparisons(_run_dirs(ctx))
  proposed = _run_dirs(ctx).get("proposed")
  found = results.read(proposed, "label_efficiency") if proposed else None
  metrics["label_efficiency"] = found.metrics if found else None
  return metrics


def _comparisons(run_dirs: dict) -> dict:
  """The proposed model against each ablation row, on the same test images."""
  found = {name: results.read(d, "card") for name, d in run_dirs.items()}
  out = {}
  for other in ("r18_cbam", "r18"):
    a, b = found.get("proposed"), found.get(other)
    if a is None or b is None or "groups" not in a.arrays or "groups" not in b.arrays:
      continue
    za, zb = a.arrays, b.arrays
    if not np.array_equal(za["test_index"], zb["test_index"]):
      continue  # rows scored on other images (another dataset or split): not paired
    out[f"proposed_vs_{other}"] = intervals.paired(
        ablations.DESCRIPTIONS["proposed"], ablations.DESCRIPTIONS[other],
        za["vote"] == za["labels"], zb["vote"] == zb["labels"], za["groups"])
  return out


def run(ctx) -> StageResult:
  metrics = collect(ctx)
  report_dir = results.report_dir(ctx.workdir)
  return StageResult(metrics, summary=f"[report] Table 3 written to {report_dir}/report.html",
                     render=lambda out: render(ctx, metrics, out))


def _table3(doc, metrics) -> None:
  table = []
  for name, row in metrics["table3"].items():
    pa, pp = ablations.PAPER_TABLE3[name]
    cells = (["not run", None, None, None, None] if isinstance(row, str) else
             [intervals.percent(row["accuracy"], row.get("accuracy_ci95")),
              intervals.percent(row["pavpu_ttest"], row.get("pavpu_ttest_ci95")),
              f"{100 * row['pavpu_threshold']:.1f}", row["ece"],
              intervals.percent(row["classifier_accuracy"], row.get("classifier_accuracy_ci95"))])
    table.append([ablations.DESCRIPTIONS[name], *cells, f"{pa:.1f}", f"{pp:.1f}"])
  doc.heading("Table 3: ablation")
  doc.table(["model", "accuracy % (95% CI)", "PAvPU % (t-test, 95% CI)", "PAvPU % (threshold)",
             "ECE", "f_phi accuracy % (95% CI)", "paper accuracy %", "paper PAvPU %"], table)
  if metrics.get("comparisons"):
    doc.para("Intervals: bootstrap over test subjects where the data names them, else over "
             "images. Paired comparisons on the same test images:")
    doc.bullets([c["verdict"] for c in metrics["comparisons"].values()])


def _figures(doc, ctx, metrics, report_dir) -> None:
  """Figures for the main row: the proposed model when present."""
  rows, names = metrics["table3"], list(ctx.data.class_names)
  main = next((n for n in ("proposed", "r18_cbam", "r18") if isinstance(rows.get(n), dict)), None)
  if main is None:
    return
  z = results.read(_run_dirs(ctx)[main], "card").arrays
  mean_p, vote, labels = z["mean_probs"], z["vote"], z["labels"]
  plots.reliability(*calibration.reliability_bins(mean_p, labels, 10),
                    os.path.join(report_dir, "reliability.png"),
                    title=f"reliability ({main}): ECE {rows[main]['ece']:.3f}")
  doc.image("reliability.png", f"Reliability diagram of {ablations.DESCRIPTIONS[main]} "
            "(mean sampled probabilities, 10 bins)")
  cm = classification.classification_metrics(labels, vote, len(names))["confusion"]
  classification.plot_confusion(cm, names, os.path.join(report_dir, "card_confusion.png"),
                                f"{main}: acc {rows[main]['accuracy']:.3f}")
  doc.image("card_confusion.png", "Confusion matrix (majority vote of the samples)")
  example_grid(ctx.data.images["test"].images[z["test_index"]], labels, vote, z["p_value"],
               z["certain"], names, os.path.join(report_dir, "certain_vs_uncertain.png"),
               int(ctx.config.report.num_examples))
  doc.image("certain_vs_uncertain.png", "Most certain (top) and least certain (bottom) test "
            "predictions; green = certain by the t-test, red = uncertain")


def render(ctx, metrics: dict, report_dir: str) -> None:
  config = ctx.config
  doc = ReportDoc("Self-supervised diffusion FER report")
  doc.para(f"Data: {ctx.data.source}; test split: {len(ctx.data.images['test'])} static images of "
           "subjects never seen in training.")
  _table3(doc, metrics)
  doc.para("The paper's columns are the paper's own numbers on FER2013 (its proposed model: "
           f"{ablations.PAPER_AFFECTNET[0]}% / {ablations.PAPER_AFFECTNET[1]}% on AffectNet), for "
           "reference; they are not comparable one-to-one with this dataset. PAvPU (t-test): "
           f"a prediction is certain when a paired t-test between the two most voted classes' "
           f"sampled probabilities gives p < {config.card.pavpu_alpha} (all samples identical: "
           f"certain). PAvPU (threshold): certain when the mean probability >= "
           f"{config.card.pavpu_threshold}.")
  if metrics.get("label_efficiency"):
    label_efficiency.render(doc, metrics["label_efficiency"], report_dir)
  _figures(doc, ctx, metrics, report_dir)
  doc.heading("Resolved config")
  doc.code(config.to_json_best_effort(indent=2, sort_keys=True))
  doc.write(report_dir)
