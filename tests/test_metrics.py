"""Detection metrics (imgae_dx.metrics) against scikit-learn."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from imgae_dx import metrics


def _data(seed: int, n: int = 200, ties: bool = True):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = rng.normal(0, 1, n) + 0.8 * y
    if ties:
        s = np.round(s, 1)  # many tied scores
    return y, s


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_auprc_match_sklearn(seed):
    y, s = _data(seed)
    assert metrics.auroc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert metrics.auprc(y, s) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)


@pytest.mark.parametrize("ties", [False, True])
def test_auprc_is_sklearns_bit_for_bit(ties):
    """The hand-rolled average precision sums the same curve in the same order: equal, not
    close (the report's intervals must not move when it replaces scikit-learn's)."""
    for seed in range(20):
        y, s = _data(seed, ties=ties)
        assert metrics.auprc(y, s) == skm.average_precision_score(y, s)
    y = np.array([0, 1, 1, 0, 1])
    s = np.array([2.0, 2.0, 2.0, 1.0, 0.0])  # one tie across the classes at the top
    assert metrics.auprc(y, s) == skm.average_precision_score(y, s)


@pytest.mark.parametrize("drop", [False, True])
def test_roc_curve_matches_sklearn(drop):
    y, s = _data(3)
    fpr, tpr, thr = metrics.roc_curve(y, s, drop_intermediate=drop)
    efpr, etpr, ethr = skm.roc_curve(y, s, drop_intermediate=drop)
    np.testing.assert_allclose(fpr, efpr)
    np.testing.assert_allclose(tpr, etpr)
    np.testing.assert_allclose(thr[1:], ethr[1:])
    assert np.trapezoid(tpr, fpr) == pytest.approx(metrics.auroc(y, s))


def test_curves_with_one_class_are_nan_without_warnings():
    y, s = np.zeros(5, int), np.arange(5.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fpr, tpr, _ = metrics.roc_curve(y, s)
        assert np.isnan(tpr).all() and not np.isnan(fpr).any()
        fpr, tpr, _ = metrics.roc_curve(1 - y, s)
        assert np.isnan(fpr).all() and not np.isnan(tpr).any()
    with pytest.raises(ValueError, match="abnormal"):
        metrics.pr_curve(y, s)


def test_pr_curve_matches_sklearn():
    y, s = _data(4)
    p, r, t = metrics.pr_curve(y, s)
    ep, er, et = skm.precision_recall_curve(y, s)
    np.testing.assert_allclose(p, ep)
    np.testing.assert_allclose(r, er)
    np.testing.assert_allclose(t, et)


@pytest.mark.parametrize("seed", [5, 6])
def test_f1_max_matches_sklearn(seed):
    y, s = _data(seed)
    best = max(skm.f1_score(y, (s >= t).astype(int)) for t in np.unique(s))
    assert metrics.f1_max(y, s) == pytest.approx(best, abs=1e-12)


@pytest.mark.parametrize("seed", [7, 8])
def test_sens_spec_at_target_from_sklearn_roc(seed):
    y, s = _data(seed, ties=False)
    fpr, tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
    assert metrics.sens_at_spec(y, s, 0.95) == pytest.approx(tpr[1 - fpr >= 0.95].max())
    assert metrics.spec_at_sens(y, s, 0.95) == pytest.approx((1 - fpr[tpr >= 0.95]).max())
    assert metrics.sens_at_spec(y, s, 0.8) >= metrics.sens_at_spec(y, s, 0.95)


def test_operating_point_matches_sklearn_confusion():
    y, s = _data(9)
    op = metrics.operating_point(y, s, 0.4)
    pred = (s > 0.4).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred).ravel()
    assert (op["tp"], op["fp"], op["tn"], op["fn"]) == (tp, fp, tn, fn)
    assert op["sensitivity"] == pytest.approx(skm.recall_score(y, pred))
    assert op["specificity"] == pytest.approx(tn / (tn + fp))
    assert op["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert op["f1"] == pytest.approx(skm.f1_score(y, pred))


def test_threshold_depends_on_validation_normals_only():
    rng = np.random.default_rng(10)
    val_normals = rng.normal(0, 1, 300)
    y, s = _data(11)
    thr = metrics.threshold_from_normals(val_normals, 95)
    assert thr == pytest.approx(np.percentile(val_normals, 95))
    # shuffling or flipping every test label cannot move the threshold (it never sees them) ...
    for y_alt in (rng.permutation(y), 1 - y, np.zeros_like(y)):
        assert metrics.threshold_from_normals(val_normals, 95) == thr
        assert metrics.operating_point(y_alt, s, thr)["threshold"] == thr
    # ... and about 5 % of the validation normals lie above it
    assert np.mean(val_normals > thr) == pytest.approx(0.05, abs=0.005)
    with pytest.raises(ValueError):
        metrics.threshold_from_normals([], 95)


def test_undefined_metrics_are_nan_and_inputs_checked():
    y, s = np.zeros(5, int), np.arange(5.0)
    assert np.isnan(metrics.auroc(y, s)) and np.isnan(metrics.auprc(y, s))
    assert np.isnan(metrics.f1_max(y, s)) and np.isnan(metrics.sens_at_spec(y, s))
    assert np.isnan(metrics.operating_point(y, s, 2)["sensitivity"])
    with pytest.raises(ValueError, match="labels"):
        metrics.auroc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="finite"):
        metrics.auroc([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError, match="length"):
        metrics.auroc([0, 1, 1], [0.1, 0.2])
