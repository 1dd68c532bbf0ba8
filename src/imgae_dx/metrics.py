"""Image-level detection metrics: pure functions of ``(labels, scores)``, no file I/O.

Conventions (as scikit-learn): ``labels`` are 0 (normal) / 1 (abnormal), ``scores`` are
higher-is-more-abnormal, and the argument order is ``(labels, scores)``. A metric that is
undefined (e.g. AUROC with one class present) returns ``nan``; the report turns it into JSON
``null``.

ROC and PR points and the average precision come from scikit-learn; AUROC has its own
implementation (:func:`auc_pos_neg`, see its docstring for why).

Threshold-free summaries (``auroc``, ``auprc``, ``f1_max``, ``sens_at_spec``,
``spec_at_sens``) sweep every threshold on the data they are given: they describe a ranking, they
are not operating points. The one operating point ImgAE-Dx reports is set by
``threshold_from_normals`` on *validation normals only*, then applied with ``operating_point``.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn import metrics as skm
from sklearn.exceptions import UndefinedMetricWarning


def _check(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} differ in length")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (normal) or 1 (abnormal)")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return y.astype(bool), s


def auc_pos_neg(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score_pos > score_neg) + ½ P(tie): the Mann-Whitney AUROC of two score groups.

    The same value as ``sklearn.metrics.roc_auc_score``, kept because the report's bootstrap
    loops call it about 10⁵ times (107,095 in the default run): on 1,200 scores one call takes
    32 µs here against 1.06 ms for ``roc_auc_score``, which validates its input and builds the
    whole ROC curve every time. A 1,000-resample interval takes 0.09 s instead of 1.1 s, the
    default report's analysis 8.6 s instead of 116 s (timeit, scikit-learn 1.9.1, 2-core CPU).
    """
    pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    ns = np.sort(neg)
    lt = np.searchsorted(ns, pos, side="left")
    le = np.searchsorted(ns, pos, side="right")
    return float((lt.sum() + 0.5 * (le - lt).sum()) / (len(pos) * len(neg)))


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (= ``sklearn.metrics.roc_auc_score``); nan with one class."""
    y, s = _check(labels, scores)
    return auc_pos_neg(s[y], s[~y])


def _counts(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative (tp, fp) at each distinct threshold, thresholds decreasing."""
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each distinct score
    tp = np.cumsum(y)[last].astype(np.float64)
    fp = (last + 1 - tp).astype(np.float64)
    return tp, fp, s[last]


def roc_curve(
    labels: np.ndarray, scores: np.ndarray, *, drop_intermediate: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) of ``sklearn.metrics.roc_curve``, from (0, 0) at threshold +inf;
    "positive" means score >= t. ``drop_intermediate`` removes collinear points (the curve, and
    its area, are unchanged). With one class only, the undefined rate is nan."""
    y, s = _check(labels, scores)
    with warnings.catch_warnings():  # one class: nan is the answer, not a warning
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return skm.roc_curve(y, s, drop_intermediate=drop_intermediate)


def pr_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) of ``sklearn.metrics.precision_recall_curve``.

    One point per distinct score, thresholds increasing, then a final (precision 1, recall 0)
    point without a threshold closes the curve.
    """
    y, s = _check(labels, scores)
    if not y.any():
        raise ValueError("pr_curve needs at least one abnormal (label 1)")
    return skm.precision_recall_curve(y, s)


def auprc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Average precision Σ (R_k − R_{k−1}) P_k; nan without an abnormal.

    Bit for bit ``sklearn.metrics.average_precision_score`` (the same curve, summed in the same
    order), computed here for the reason :func:`auc_pos_neg` is: the report's bootstrap calls
    it 4,004 times, and scikit-learn's input validation made each call 2.6 ms of which the
    curve is a tenth (BENCHMARKS.md, report stage).
    """
    y, s = _check(labels, scores)
    if not y.any():
        return float("nan")
    tp, fp, _ = _counts(y, s)  # thresholds decreasing
    precision = np.r_[(tp / (tp + fp))[::-1], 1.0]  # thresholds increasing, closed by (1, 0)
    recall = np.r_[(tp / tp[-1])[::-1], 0.0]
    return float(max(0.0, -np.sum(np.diff(recall) * precision[:-1])))


def f1_max(labels: np.ndarray, scores: np.ndarray) -> float:
    """Best F1 over all thresholds (an oracle summary: the threshold is chosen on these labels)."""
    y, s = _check(labels, scores)
    if y.sum() == 0:
        return float("nan")
    tp, fp, _ = _counts(y, s)
    fn = tp[-1] - tp
    return float(np.max(2 * tp / (2 * tp + fp + fn)))


def sens_at_spec(labels: np.ndarray, scores: np.ndarray, spec: float = 0.95) -> float:
    """Highest sensitivity over thresholds whose specificity is >= ``spec`` (empirical ROC)."""
    fpr, tpr, _ = roc_curve(labels, scores)
    if np.isnan(fpr).any() or np.isnan(tpr).any():
        return float("nan")
    ok = (1.0 - fpr) >= spec - 1e-12
    return float(tpr[ok].max())


def spec_at_sens(labels: np.ndarray, scores: np.ndarray, sens: float = 0.95) -> float:
    """Highest specificity over thresholds whose sensitivity is >= ``sens`` (empirical ROC)."""
    fpr, tpr, _ = roc_curve(labels, scores)
    if np.isnan(fpr).any() or np.isnan(tpr).any():
        return float("nan")
    ok = tpr >= sens - 1e-12
    return float((1.0 - fpr[ok]).max())


def threshold_from_normals(val_normal_scores: np.ndarray, percentile: float = 95.0) -> float:
    """Operating threshold = the ``percentile``-th percentile of *validation normal* scores.

    Takes no labels by design: no test (or abnormal) label can move it. At the 95th percentile,
    about 5 % of normals from the validation distribution are flagged.
    """
    s = np.asarray(val_normal_scores, dtype=np.float64).ravel()
    if s.size == 0:
        raise ValueError("threshold_from_normals needs at least one validation normal score")
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    return float(np.percentile(s, percentile))


def operating_point(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """Confusion counts and rates when "abnormal" means ``score > threshold``."""
    y, s = _check(labels, scores)
    pred = s > threshold
    tp = int(np.sum(pred & y))
    fp = int(np.sum(pred & ~y))
    fn = int(np.sum(~pred & y))
    tn = int(np.sum(~pred & ~y))

    def ratio(a: int, b: int) -> float:
        return a / b if b > 0 else float("nan")

    return {
        "threshold": float(threshold),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "sensitivity": ratio(tp, tp + fn),
        "specificity": ratio(tn, tn + fp),
        "precision": ratio(tp, tp + fp),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
    }
