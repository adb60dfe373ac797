"""`config.repeats = N`: the whole run again with N training seeds, and the spread.

Seed k (0..N-1) runs in `WORKDIR/seed_<k>/` with every training seed moved by k:
`config.seed`, each stage's `seed` and `data.shuffle_seed` (initialisation,
augmentation, data order). The data itself (`data.seed`: the synthetic faces and
the splits) and the label-efficiency subsets stay fixed, so every seed is scored
on the same test items. `WORKDIR/repeats.json` and `repeats.md` then give each
accuracy (and PAvPU) as mean ± sd over the seeds, and each headline comparison
of the reports as the per-seed differences with a paired t-test across seeds.
"""

from __future__ import annotations

import math
import os

import numpy as np
from scipy import stats

from sedl_jax import atomic_io

# Result leaves summarised over seeds.
SUMMARISED = ("accuracy", "pavpu_ttest", "pavpu_threshold", "classifier_accuracy")


def seeded(config, k: int):
  """A copy of `config` with every training seed moved by k (data and splits kept)."""
  c = config.copy_and_resolve_references()
  with c.unlocked():
    c.repeats = 1
    c.seed = int(c.seed) + k
    c.data.shuffle_seed = int(c.data.shuffle_seed) + k
    for name in c.keys():
      section = c[name]
      if hasattr(section, "keys") and "seed" in section and name not in ("data", "predict",
                                                                         "label_efficiency"):
        section.seed = int(section.seed) + k
  return c


def _leaves(tree, prefix: str = ""):
  """(dotted path, value) of every summarised number in a results tree."""
  if isinstance(tree, dict):
    for key, value in tree.items():
      path = f"{prefix}{key}"
      if key in SUMMARISED and isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, float(value)
      elif isinstance(value, dict):
        yield from _leaves(value, path + ".")


def _comparisons(tree, prefix: str = ""):
  """(dotted path, difference) of every paired comparison in a results tree."""
  if isinstance(tree, dict):
    for key, value in tree.items():
      path = f"{prefix}{key}"
      if isinstance(value, dict) and "difference" in value and "p_value" in value:
        yield path, float(value["difference"])
      elif isinstance(value, dict):
        yield from _comparisons(value, path + ".")


def summarise(per_seed: list[dict]) -> dict:
  """{"metrics": path -> mean, sd, values; "comparisons": path -> mean difference,
  sd, values, paired t-test p across seeds} over the seeds' results."""
  def collect(walk):
    found: dict[str, list] = {}
    for results in per_seed:
      for path, value in walk(results):
        found.setdefault(path, []).append(value)
    return {p: v for p, v in found.items() if len(v) == len(per_seed)}

  metrics = {}
  for path, values in collect(_leaves).items():
    v = np.asarray(values)
    metrics[path] = {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                     "values": values}
  comparisons = {}
  for path, values in collect(_comparisons).items():
    v = np.asarray(values)
    sd = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    # One-sample t-test of the per-seed differences = paired t-test of the two
    # methods' accuracies across seeds.
    p = float(stats.ttest_1samp(v, 0.0).pvalue) if len(v) > 1 and sd > 0 else math.nan
    comparisons[path] = {"mean_difference": float(v.mean()), "sd": sd, "values": values,
                         "p_value": p, "significant": bool(p < 0.05) if not math.isnan(p) else False}
  return {"seeds": len(per_seed), "metrics": metrics, "comparisons": comparisons}


def markdown(summary: dict) -> str:
  lines = [f"# Repeats: {summary['seeds']} training seeds", "",
           "| result | mean | sd | per seed |", "|---|---|---|---|"]
  for path, m in summary["metrics"].items():
    lines.append(f"| {path} | {100 * m['mean']:.1f} | {100 * m['sd']:.1f} | "
                 + ", ".join(f"{100 * v:.1f}" for v in m["values"]) + " |")
  if summary["comparisons"]:
    lines += ["", "| comparison | mean difference (points) | sd | paired t-test p across seeds |",
              "|---|---|---|---|"]
    for path, c in summary["comparisons"].items():
      verdict = ("not significant" if not c["significant"] else
                 "significant")
      p = "n/a" if math.isnan(c["p_value"]) else f"{c['p_value']:.3g}"
      lines.append(f"| {path} | {100 * c['mean_difference']:+.1f} | {100 * c['sd']:.1f} | "
                   f"{p} ({verdict}) |")
  return "\n".join(lines) + "\n"


def run(config, workdir: str, run_once) -> dict:
  """Runs `run_once(config_k, workdir/seed_k)` for each seed; writes the summary."""
  import jax
  n = int(config.repeats)
  per_seed = []
  for k in range(n):
    print(f"[repeats] seed {k + 1} of {n} in {os.path.join(workdir, f'seed_{k}')}")
    per_seed.append(run_once(seeded(config, k), os.path.join(workdir, f"seed_{k}")))
  summary = summarise(per_seed)
  if jax.process_index() == 0:
    atomic_io.write_json(os.path.join(workdir, "repeats.json"), summary)
    atomic_io.write_text(os.path.join(workdir, "repeats.md"), markdown(summary))
    print(f"[repeats] mean ± sd over {n} seeds in {os.path.join(workdir, 'repeats.md')}")
  return {"repeats": summary, **{f"seed_{k}": r for k, r in enumerate(per_seed)}}
