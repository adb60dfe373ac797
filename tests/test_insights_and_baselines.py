"""Insights, K-Means matching, calibration and report metrics against hand-computed cases."""

import numpy as np

from sedl_jax.evaluate import baselines, calibration, classification, insights, probes
from sedl_jax.evaluate.report_doc import ReportDoc


def test_runs_and_dwell_times():
  assert insights.runs(np.array([2, 2, 0, 0, 0, 1])) == [(2, 2), (0, 3), (1, 1)]
  d = insights.dwell_times(np.array([[2, 2, 0, 0, 0, 1]]), 3)
  assert d == {0: [3], 1: [1], 2: [2]}


def test_transition_counts_ignore_self_transitions():
  m = insights.transition_counts(np.array([[0, 0, 1, 1, 2, 0], [2, 2, 2, 2, 2, 2]]), 3)
  expected = np.zeros((3, 3), int)
  expected[0, 1] = expected[1, 2] = expected[2, 0] = 1
  np.testing.assert_array_equal(m, expected)
  np.testing.assert_allclose(insights.row_normalise(np.array([[1, 3], [0, 0]])),
                             [[0.25, 0.75], [0, 0]])


def test_ngrams_over_collapsed_runs():
  names = ["neutral", "sad", "angry"]
  seqs = np.array([[0, 0, 1, 1, 2, 2], [0, 1, 1, 2, 0, 0]])
  top = insights.ngrams(seqs, 3, names)
  assert top[0] == {"pattern": "neutral -> sad -> angry", "count": 2}
  assert {"pattern": "sad -> angry -> neutral", "count": 1} in top


def test_sequence_insights_summary():
  names = ["happy", "sad"]
  probs = np.zeros((2, 4, 2))
  probs[0, :, 0] = [0.9, 0.8, 0.3, 0.2]
  probs[1, :, 0] = [0.1, 0.1, 0.1, 0.1]
  probs[..., 1] = 1 - probs[..., 0]
  out = insights.sequence_insights(probs, np.array([5, 6]), names, n=2)
  assert out["per_sequence"][0]["emotion"] == ["happy", "happy", "sad", "sad"]
  assert np.isclose(out["overall"]["transition_rate"], 1 / 6)
  assert out["overall"]["emotion_share"] == {"happy": 0.25, "sad": 0.75}
  assert out["per_sequence"][0]["valence_trend_per_frame"] < 0  # happy -> sad
  assert set(out["per_subject"]) == {"5", "6"}


def test_hungarian_match_hand_case():
  clusters = np.array([0, 0, 0, 1, 1, 2, 2, 2])
  labels = np.array([2, 2, 1, 0, 0, 1, 1, 2])
  np.testing.assert_array_equal(baselines.hungarian_match(clusters, labels, 3, 3), [2, 0, 1])
  # More clusters than classes: the extra cluster takes its majority class.
  m = baselines.hungarian_match(np.array([0, 1, 2, 2]), np.array([0, 1, 1, 1]), 3, 2)
  assert sorted(m[:3].tolist()).count(1) == 2


def test_kmeans_matched_on_separable_blobs():
  rng = np.random.default_rng(0)
  centers = rng.normal(0, 10, (3, 5))
  y = np.repeat(np.arange(3), 40)
  x = centers[y] + rng.normal(0, 0.3, (120, 5))
  out = baselines.kmeans_matched(x[::2], y[::2], x[1::2], y[1::2], 3)
  assert out["accuracy"] == 1.0


def test_hog_descriptors_are_computed_once_per_set_of_images():
  from skimage.feature import hog
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (3, 24, 24, 1), dtype=np.uint8)
  first = baselines.hog_features(images)
  np.testing.assert_array_equal(first[1], hog(images[1, ..., 0] / 255.0, orientations=9,
                                              pixels_per_cell=(4, 4), cells_per_block=(2, 2))
                                .astype(np.float32))
  assert baselines.hog_features(images.copy()) is first  # equal content: kept
  assert not first.flags.writeable  # shared, so nobody may change it
  other = images.copy()
  other[0, 0, 0, 0] ^= 1
  assert baselines.hog_features(other) is not first


def test_probes_run_with_a_few_blas_threads():
  """A probe's thin products ran 3-15x slower split over every core (probes.py)."""
  assert [probes.probe_blas_threads(c) for c in (1, 2, 7, 8, 16, 64)] == [1, 1, 1, 2, 4, 4]
  from threadpoolctl import threadpool_info
  inside = probes._limited_blas(lambda: {i["num_threads"] for i in threadpool_info()
                                         if i["user_api"] == "blas"})()
  assert inside == {probes.probe_blas_threads()}


def test_calibration_hand_case():
  probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
  labels = np.array([0, 1, 1, 1])
  assert np.isclose(calibration.nll(probs, labels), -np.mean(np.log([0.9, 0.4, 0.7, 0.8])))
  # bins of width 0.5: (0.5,1] holds all four; acc 3/4, mean conf (0.9+0.6+0.7+0.8)/4 = 0.75
  assert np.isclose(calibration.expected_calibration_error(probs, labels, bins=2), 0.0)
  # 10 bins: 0.9 right, 0.6 wrong, 0.7 right, 0.8 right -> |1-.9|+|0-.6|+|1-.7|+|1-.8| over 4
  assert np.isclose(calibration.expected_calibration_error(probs, labels, bins=10),
                    (0.1 + 0.6 + 0.3 + 0.2) / 4)


def test_class_weights_balanced():
  w = classification.class_weights(np.array([0, 0, 0, 1, -1]), 3, "balanced")
  np.testing.assert_allclose(w, [4 / 6, 4 / 2, 0.0])
  np.testing.assert_array_equal(classification.class_weights(np.array([0]), 2, "none"), [1, 1])


def test_metrics_against_hand_computed():
  m = classification.classification_metrics(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), 2)
  assert m["accuracy"] == 0.75
  assert np.isclose(m["precision_macro"], (1.0 + 2 / 3) / 2)
  assert np.isclose(m["f1_macro"], (2 / 3 + 0.8) / 2)


def test_report_doc_writes_md_and_self_contained_html(tmp_path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  plt.plot([0, 1])
  plt.savefig(tmp_path / "fig.png")
  plt.close()
  doc = ReportDoc("T")
  doc.table(["a", "b"], [["x<y", 0.12345], ["z", None]])
  doc.image("fig.png", "a figure")
  doc.write(str(tmp_path))
  md = (tmp_path / "report.md").read_text()
  assert "| x<y | 0.123 |" in md and "| z | — |" in md and "![a figure](fig.png)" in md
  html = (tmp_path / "report.html").read_text()
  assert "x&lt;y" in html and "data:image/png;base64," in html and "fig.png" not in html


def test_accuracy_interval_matches_the_binomial_normal_interval():
  """Independent items: the percentile bootstrap ~ p +- 1.96 sqrt(p(1-p)/n).
  Tolerance: the bootstrap's own Monte-Carlo error at B=2000 (a 2.5% quantile's
  standard error is about 0.2 sigma) plus one item's step 1/n."""
  from sedl_jax.evaluate import intervals
  n, p = 400, 0.7
  correct = np.arange(n) < int(p * n)
  lo, hi = intervals.accuracy_interval(correct)
  sigma = np.sqrt(p * (1 - p) / n)
  tol = 0.25 * sigma + 1 / n
  assert abs(lo - (p - 1.96 * sigma)) < tol and abs(hi - (p + 1.96 * sigma)) < tol


def test_grouped_interval_is_the_interval_of_group_means():
  """Equal-size groups: resampling groups is resampling their means (same draws
  for the same number of groups and seed), and much wider than treating the 400
  correlated items as independent."""
  from sedl_jax.evaluate import intervals
  rng = np.random.default_rng(0)
  group_acc = rng.uniform(0.2, 1.0, size=10)
  correct = (rng.uniform(size=(10, 40)) < group_acc[:, None]).astype(float)
  groups = np.repeat(np.arange(10), 40)
  grouped = intervals.accuracy_interval(correct.ravel(), groups)
  np.testing.assert_allclose(grouped, intervals.accuracy_interval(correct.mean(1)), atol=1e-12)
  flat = intervals.accuracy_interval(correct.ravel())
  assert grouped[1] - grouped[0] > 2 * (flat[1] - flat[0])


def test_paired_comparison_says_when_a_difference_is_not_significant():
  from sedl_jax.evaluate import intervals
  rng = np.random.default_rng(1)
  a = rng.uniform(size=400) < 0.6
  same = intervals.compare(a, a)
  assert same["p_value"] == 1.0 and not same["significant"]
  assert "not significant" in intervals.verdict("A", "B", same)
  # 40 items A gets right and B wrong, 4 the other way: McNemar's exact test.
  b = a.copy()
  flip_down, flip_up = np.flatnonzero(a)[:40], np.flatnonzero(~a)[:4]
  b[flip_down], b[flip_up] = False, True
  r = intervals.compare(a, b)
  assert r["test"] == "McNemar exact" and r["discordant"] == [40, 4]
  from scipy import stats
  assert r["p_value"] == stats.binomtest(40, 44, 0.5).pvalue < 0.05
  assert r["difference"] == (40 - 4) / 400 and r["significant"]
  assert "A is better" in intervals.verdict("A", "B", r)
  # The same items in 10 subjects whose differences cancel out: not significant.
  groups = np.repeat(np.arange(10), 40)
  d = np.where(np.arange(10) % 2 == 0, 1.0, -1.0)
  cancel = intervals.compare(np.repeat(d > 0, 40), np.repeat(d < 0, 40), groups)
  assert cancel["test"].startswith("group bootstrap") and not cancel["significant"]


def test_repeats_summary_tests_comparisons_across_seeds():
  from scipy import stats
  from sedl_jax import repeats
  per_seed = [{"report": {"table1": {"a": {"accuracy": acc}},
                          "comparisons": {"a_vs_b": {"difference": d, "p_value": 0.5}}}}
              for acc, d in ((0.40, 0.02), (0.44, 0.03), (0.42, 0.01))]
  s = repeats.summarise(per_seed)
  m = s["metrics"]["report.table1.a.accuracy"]
  np.testing.assert_allclose([m["mean"], m["sd"]], [0.42, 0.02])
  c = s["comparisons"]["report.comparisons.a_vs_b"]
  assert c["p_value"] == stats.ttest_1samp([0.02, 0.03, 0.01], 0.0).pvalue
  assert c["significant"] == (c["p_value"] < 0.05)
