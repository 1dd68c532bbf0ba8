"""Uncertainty and comparisons for AUROC: DeLong, stratified bootstrap, Holm. Pure functions.

- DeLong, DeLong & Clarke-Pearson (1988), Biometrics 44:837 — nonparametric covariance of
  correlated AUROCs from the structural components (placement values), computed with the
  midrank algorithm of Sun & Xu (2014), IEEE Signal Processing Letters 21:1389.
- Stratified bootstrap: normals and abnormals are resampled separately (class sizes fixed),
  as pROC's ``boot.stratified = TRUE``; percentile intervals; one ``numpy`` Generator per call
  seeded with ``seed``, so the same seed gives the same interval.
- Cluster bootstrap (``clusters=``, e.g. patient IDs): whole clusters are resampled, so images
  of one patient, which are correlated, stay together (Field & Welsh 2007, the "cluster
  bootstrap"); clusters are stratified by whether they hold an abnormal image.
- Clustered DeLong (``clusters=`` in the DeLong functions): Obuchowski (1997), Biometrics
  53:567, "Nonparametric analysis of clustered ROC curve data". The structural components are
  summed per cluster and their variance taken over clusters, with a normal-abnormal covariance
  term for clusters holding both. With one image per cluster it is exactly DeLong's estimator;
  plain DeLong treats images as independent and is optimistic for clustered images.
- Both DeLong estimators take a variance over the independent units of each class (images, or
  clusters holding an image of that class); with fewer than two in either class it does not
  exist, and the functions raise :class:`DegenerateDeLongError` rather than return a variance
  term of 0 (a silently too-narrow interval) or NaN.
- Holm (1979) step-down adjustment for a family of p-values.

Argument order is ``(labels, scores...)`` as in :mod:`imgae_dx.metrics`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats as sps

from imgae_dx.metrics import _check, auc_pos_neg, auroc


class DegenerateDeLongError(ValueError):
    """DeLong's variance is undefined: a class has fewer than two independent units."""


def _require_two_units(n_abnormal: int, n_normal: int, unit: str) -> None:
    """Refuse a DeLong variance from fewer than two independent units per class."""
    if n_abnormal < 2 or n_normal < 2:
        raise DegenerateDeLongError(
            f"DeLong's variance needs at least 2 {unit}s holding an abnormal image and 2 "
            f"holding a normal one, got {n_abnormal} and {n_normal}: a class seen in one "
            f"{unit} has no variance to estimate; use more data or the bootstrap"
        )


def _midranks(x: np.ndarray) -> np.ndarray:
    return sps.rankdata(x, method="average", axis=-1)


def delong_placements(
    labels: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Structural components for k score vectors at once (Sun & Xu 2014, midranks).

    ``scores``: (n,) or (k, n). Returns ``auc (k,)``, ``v10 (k, m)`` — for each abnormal, the
    fraction of normals it outranks (ties ½) — and ``v01 (k, n_normal)`` — for each normal,
    the fraction of abnormals that outrank it.
    """
    y = np.asarray(labels).ravel()
    s2 = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    for row in s2:
        _check(y, row)
    pos, neg = s2[:, y == 1], s2[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    if m == 0 or n == 0:
        raise ValueError("DeLong needs at least one normal and one abnormal")
    tx, ty = _midranks(pos), _midranks(neg)
    tz = _midranks(np.concatenate([pos, neg], axis=1))
    auc = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2.0) / (m * n)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    return auc, v10, v01


def delong_covariance(
    labels: np.ndarray, scores: np.ndarray, clusters: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """AUROCs (k,) and their covariance matrix (k, k).

    Without ``clusters``: DeLong's S10/m + S01/n. With ``clusters`` (one ID per image, e.g.
    the patient): Obuchowski's clustered estimator S10/M + S01/N + (S11 + S11ᵀ)/(M N).
    Raises :class:`DegenerateDeLongError` when either class has fewer than two images
    (without ``clusters``) or lies in fewer than two clusters (with them).
    """
    auc, v10, v01 = delong_placements(labels, scores)
    m, n = v10.shape[1], v01.shape[1]
    if clusters is None:
        _require_two_units(m, n, "image")
        s10, s01 = np.atleast_2d(np.cov(v10, ddof=1)), np.atleast_2d(np.cov(v01, ddof=1))
        return auc, s10 / m + s01 / n
    y = np.asarray(labels).ravel()
    g = np.asarray(clusters).ravel()
    if len(g) != len(y):
        raise ValueError(f"clusters has {len(g)} entries for {len(y)} labels")
    _, code = np.unique(g, return_inverse=True)
    n_clusters = int(code.max()) + 1
    cpos, cneg = code[y == 1], code[y == 0]
    m_i = np.bincount(cpos, minlength=n_clusters).astype(np.float64)  # abnormal films per cluster
    n_i = np.bincount(cneg, minlength=n_clusters).astype(np.float64)  # normal films per cluster
    # per-cluster sums of the structural components, centred: (k, n_clusters)
    d10 = np.stack([np.bincount(cpos, w, minlength=n_clusters) for w in v10]) - np.outer(auc, m_i)
    d01 = np.stack([np.bincount(cneg, w, minlength=n_clusters) for w in v01]) - np.outer(auc, n_i)
    i10, i01 = int((m_i > 0).sum()), int((n_i > 0).sum())
    _require_two_units(i10, i01, "cluster")  # hence n_clusters >= 2 below
    s10 = (d10 @ d10.T) * i10 / ((i10 - 1) * m)
    s01 = (d01 @ d01.T) * i01 / ((i01 - 1) * n)
    s11 = (d10 @ d01.T) * n_clusters / (n_clusters - 1)
    return auc, s10 / m + s01 / n + (s11 + s11.T) / (m * n)


def delong_auc_variance(
    labels: np.ndarray, scores: np.ndarray, clusters: np.ndarray | None = None
) -> tuple[float, float]:
    """(AUROC, its DeLong variance) for one score vector (= pROC's ``var(roc)``); clustered
    (Obuchowski) when ``clusters`` is given. Raises :class:`DegenerateDeLongError` as
    :func:`delong_covariance`."""
    auc, cov = delong_covariance(labels, scores, clusters)
    return float(auc[0]), float(cov[0, 0])


def delong_ci(
    labels: np.ndarray,
    scores: np.ndarray,
    ci: float = 0.95,
    clusters: np.ndarray | None = None,
) -> tuple[float, float]:
    """Normal-approximation CI of one AUROC from its DeLong variance, clipped to [0, 1].
    Raises :class:`DegenerateDeLongError` as :func:`delong_covariance`."""
    auc, var = delong_auc_variance(labels, scores, clusters)
    half = sps.norm.ppf(0.5 + ci / 2.0) * np.sqrt(var)
    return float(max(0.0, auc - half)), float(min(1.0, auc + half))


def delong_test(
    labels: np.ndarray,
    s1: np.ndarray,
    s2: np.ndarray,
    *,
    ci: float = 0.95,
    clusters: np.ndarray | None = None,
) -> dict:
    """DeLong's test for two correlated ROC curves (same images, two scores).

    Returns ``auc1, auc2, delta (= auc1 - auc2), se, z, p`` (two-sided) and ``delta_ci``
    (normal approximation). Identical curves give z = 0, p = 1 (as pROC). With ``clusters``
    the variance of the difference is Obuchowski's clustered one. Raises
    :class:`DegenerateDeLongError` as :func:`delong_covariance`.
    """
    auc, cov = delong_covariance(labels, np.vstack([np.ravel(s1), np.ravel(s2)]), clusters)
    delta = float(auc[0] - auc[1])
    var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    se = float(np.sqrt(max(var, 0.0)))
    if se > 0:
        z = delta / se
        p = float(2.0 * sps.norm.sf(abs(z)))
    else:
        z, p = (0.0, 1.0) if delta == 0 else (float(np.copysign(np.inf, delta)), 0.0)
    half = sps.norm.ppf(0.5 + ci / 2.0) * se
    return {
        "auc1": float(auc[0]),
        "auc2": float(auc[1]),
        "delta": delta,
        "se": se,
        "z": float(z),
        "p": p,
        "delta_ci": [float(delta - half), float(delta + half)],
    }


def stratified_bootstrap(
    labels: np.ndarray,
    statistic: Callable[..., float],
    *arrays: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    clusters: np.ndarray | None = None,
) -> np.ndarray:
    """``n_boot`` values of ``statistic(labels_b, *arrays_b)`` over stratified resamples.

    Without ``clusters``, normals and abnormals are drawn with replacement separately (their
    counts stay fixed). With ``clusters`` (one ID per entry, e.g. the patient), whole clusters
    are drawn with replacement instead, separately among clusters with and without an
    abnormal entry; a replicate then has a random number of entries, and one that lacks a
    class gives nan. Every array in ``arrays``
    is resampled with the same indices (paired). Deterministic for a given ``seed``.
    """
    y = np.asarray(labels).ravel()
    cols = [np.asarray(a) for a in arrays]
    for a in cols:
        if len(a) != len(y):
            raise ValueError("every array must have one entry per label")
    rng = np.random.default_rng(seed)
    draws = _entry_draws(y, rng) if clusters is None else _cluster_draws(y, clusters, rng)
    out = np.empty(n_boot, dtype=np.float64)
    n_classes = len(np.unique(y))
    for b in range(n_boot):
        idx = draws()
        yb = y[idx]
        # A replicate missing a class (possible with clusters only, when every cluster holds an
        # abnormal entry) has no AUROC: nan, which percentile_ci skips.
        complete = clusters is None or len(np.unique(yb)) == n_classes
        out[b] = statistic(yb, *(a[idx] for a in cols)) if complete else np.nan
    return out


def _entry_draws(y: np.ndarray, rng: np.random.Generator) -> Callable[[], np.ndarray]:
    """Resamples of the entries: each class drawn with replacement, its count kept."""
    groups = [np.flatnonzero(y == v) for v in np.unique(y)]

    def draw() -> np.ndarray:
        return np.concatenate([g[rng.integers(0, len(g), len(g))] for g in groups])

    return draw


def _cluster_draws(
    y: np.ndarray, clusters: np.ndarray, rng: np.random.Generator
) -> Callable[[], np.ndarray]:
    """Resamples of whole clusters, drawn with replacement separately among clusters with and
    without an abnormal entry; returns the entries of the drawn clusters, in draw order."""
    ids = np.asarray(clusters).ravel()
    if len(ids) != len(y):
        raise ValueError("clusters must have one entry per label")
    _, code = np.unique(ids, return_inverse=True)
    order = np.argsort(code, kind="stable")  # entries grouped by cluster
    size = np.bincount(code)
    start = np.cumsum(size) - size
    has_abnormal = np.bincount(code, weights=(y == 1).astype(np.float64)) > 0
    strata = [np.flatnonzero(has_abnormal == v) for v in (False, True)]
    strata = [c for c in strata if len(c)]

    def draw() -> np.ndarray:
        drawn = np.concatenate([c[rng.integers(0, len(c), len(c))] for c in strata])
        n = size[drawn]
        offset = np.repeat(start[drawn] - (np.cumsum(n) - n), n)
        return order[offset + np.arange(n.sum())]

    return draw


def percentile_ci(values: np.ndarray, ci: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap values (nan replicates ignored; nan if none is left)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(v, [50.0 * (1.0 - ci), 50.0 * (1.0 + ci)])
    return float(lo), float(hi)


def _resample_metric(
    metric: Callable[[np.ndarray, np.ndarray], float], labels: np.ndarray, *scores: np.ndarray
) -> Callable[[np.ndarray, np.ndarray], float]:
    """``metric`` for the resamples of ``labels`` and ``scores``: for :func:`auroc`, the inputs
    are checked once here and each resample skips the checks (the same value, computed by
    :func:`imgae_dx.metrics.auc_pos_neg`; a third of a call's time went to them)."""
    if metric is not auroc:
        return metric
    for s in scores:
        _check(labels, s)

    def unchecked(y: np.ndarray, s: np.ndarray) -> float:
        pos = y == 1
        return auc_pos_neg(s[pos], s[~pos])

    return unchecked


def bootstrap_ci(
    labels: np.ndarray,
    scores: np.ndarray,
    metric: Callable[[np.ndarray, np.ndarray], float] = auroc,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    clusters: np.ndarray | None = None,
) -> tuple[float, float]:
    """Stratified-bootstrap percentile CI of ``metric(labels, scores)`` (cluster bootstrap when
    ``clusters`` is given)."""
    s = np.asarray(scores, np.float64)
    metric = _resample_metric(metric, labels, s)
    vals = stratified_bootstrap(labels, metric, s, n_boot=n_boot, seed=seed, clusters=clusters)
    return percentile_ci(vals, ci)


def paired_bootstrap_ci(
    labels: np.ndarray,
    s1: np.ndarray,
    s2: np.ndarray,
    metric: Callable[[np.ndarray, np.ndarray], float] = auroc,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    clusters: np.ndarray | None = None,
) -> tuple[float, float]:
    """CI of ``metric(y, s1) - metric(y, s2)``, both scores resampled with the same images
    (whole clusters when ``clusters`` is given)."""

    a1, a2 = np.asarray(s1, np.float64), np.asarray(s2, np.float64)
    metric = _resample_metric(metric, labels, a1, a2)

    def diff(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
        return metric(y, a) - metric(y, b)

    vals = stratified_bootstrap(labels, diff, a1, a2, n_boot=n_boot, seed=seed, clusters=clusters)
    return percentile_ci(vals, ci)


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm (1979) step-down adjusted p-values, in input order; None/nan entries pass through."""
    p = np.array([np.nan if v is None else float(v) for v in pvalues], dtype=np.float64)
    ok = np.flatnonzero(np.isfinite(p))
    adj = np.full_like(p, np.nan)
    if ok.size:
        order = ok[np.argsort(p[ok], kind="mergesort")]
        k = len(order)
        stepped = np.minimum(1.0, (k - np.arange(k)) * p[order])
        adj[order] = np.maximum.accumulate(stepped)
    return [None if not np.isfinite(v) else float(v) for v in adj]
