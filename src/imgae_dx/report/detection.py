"""One model's detection results: threshold-free ranking, operating point, strata, maps.

No test label ever picks a threshold: the operating threshold is a percentile of *validation
normal* scores (``docs/architecture.md``, "Report"). Bootstrap seeds are keyed by stratum name
(``pooled``, ``by_view/AP``, ...), so every model is resampled alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from imgae_dx import localization, metrics, stats
from imgae_dx.config import ReportParams
from imgae_dx.report.inputs import ModelMaps
from imgae_dx.report.names import SEX_ORDER, VIEW_ORDER, age_band_labels, findings_of, ordered
from imgae_dx.report.results import (
    Boxes,
    FindingHits,
    Localization,
    ModelResult,
    OperatingPoint,
    Rates,
    Strata,
    Stratum,
)
from imgae_dx.report.sampling import boot_ci, both_classes, clusters


def _labels_scores(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return df["label"].to_numpy(), df["score"].to_numpy(dtype=np.float64)


def stratum(
    y: np.ndarray,
    s: np.ndarray,
    rp: ReportParams,
    key: str,
    thr: float | None,
    groups: np.ndarray | None = None,
) -> Stratum:
    n_abn, n_norm = int(np.sum(y == 1)), int(np.sum(y == 0))
    auroc = ci = rates = None
    if n_norm >= rp.min_stratum and n_abn >= rp.min_stratum:
        auroc, ci = metrics.auroc(y, s), boot_ci(y, s, metrics.auroc, rp, key, groups)
    if thr is not None and len(y):
        op = metrics.operating_point(y, s, thr)
        rates = Rates(op["sensitivity"] if n_abn else None, op["specificity"] if n_norm else None)
    return Stratum(n_norm, n_abn, auroc, ci, rates)


def strata(test: pd.DataFrame, rp: ReportParams, thr: float | None, unit: str) -> Strata:
    """The model's strata by view, sex, age band and finding (each finding's abnormals against
    all normals); a column missing from the scores gives no strata."""
    y, s = _labels_scores(test)
    g = clusters(test, unit)

    def by(masks: Mapping[str, np.ndarray], name: str) -> dict[str, Stratum]:
        return {
            k: stratum(y[m], s[m], rp, f"{name}/{k}", thr, None if g is None else g[m])
            for k, m in masks.items()
        }

    def values(col: str, pref: Sequence[str]) -> dict[str, np.ndarray]:
        if col not in test:
            return {}
        return {v: (test[col] == v).to_numpy() for v in ordered(test[col].tolist(), pref)}

    return Strata(
        view=by(values("view", VIEW_ORDER), "by_view"),
        sex=by(values("sex", SEX_ORDER), "by_sex"),
        age=by(_age_masks(test, rp.age_bands), "by_age"),
        finding=by(_finding_masks(test, y), "by_finding"),
    )


def _age_masks(test: pd.DataFrame, edges: Sequence[int]) -> dict[str, np.ndarray]:
    if "age" not in test:
        return {}
    age = pd.to_numeric(test["age"], errors="coerce").to_numpy(dtype=np.float64)
    labels = age_band_labels(edges)
    return {k: (age >= lo) & (age < hi) for lo, hi, k in zip(edges[:-1], edges[1:], labels)}


def _finding_masks(test: pd.DataFrame, y: np.ndarray) -> dict[str, np.ndarray]:
    if "findings" not in test:
        return {}
    sets = findings_of(test["findings"])
    found = sorted(set().union(*sets)) if sets else []
    return {
        f: (y == 0) | np.array([(f in fs) and lab == 1 for fs, lab in zip(sets, y)]) for f in found
    }


def operating_point(
    y: np.ndarray, s: np.ndarray, val: pd.DataFrame, rp: ReportParams
) -> OperatingPoint:
    """The threshold at ``report.threshold_percentile`` of the validation normals' scores and
    what it gives on the test set."""
    if not len(val):
        return OperatingPoint(percentile=rp.threshold_percentile, n_val_normal=0)
    vs = val["score"].to_numpy(dtype=np.float64)
    thr = metrics.threshold_from_normals(vs, rp.threshold_percentile)
    op = metrics.operating_point(y, s, thr)
    return OperatingPoint(
        percentile=rp.threshold_percentile,
        n_val_normal=len(vs),
        value=thr,
        val_flagged=float(np.mean(vs > thr)),
        sensitivity=op["sensitivity"],
        specificity=op["specificity"],
        precision=op["precision"],
        f1=op["f1"],
        tp=op["tp"],
        fp=op["fp"],
        tn=op["tn"],
        fn=op["fn"],
    )


def model_localization(
    mm: ModelMaps | None, test: pd.DataFrame, boxes: Boxes, rp: ReportParams
) -> Localization:
    """Hit rate, chance and pixel AUROC of the maps over test abnormals with boxes, overall
    and per boxed finding."""
    if mm is None or not boxes:
        return Localization()
    abnormal = set(test.loc[test["label"] == 1, "image"])
    idx = [i for i, im in enumerate(mm.image) if im in boxes and im in abnormal]
    # a float16 overflow must not crash the report: inf -> float32 max, nan -> 0
    amap = np.nan_to_num(np.asarray(mm.amap, dtype=np.float32), nan=0.0, neginf=0.0)
    blist = [[b for _, b in boxes[mm.image[i]]] for i in idx]
    res = localization.localization_summary(
        amap[idx] if idx else amap[:0], blist, max_pixels=rp.max_pixels, seed=rp.seed
    )
    by_f: dict[str, FindingHits] = {}
    for f in sorted({f for i in idx for f, _ in boxes[mm.image[i]]}):
        sel = [i for i in idx if any(g == f for g, _ in boxes[mm.image[i]])]
        fb = [[b for g, b in boxes[mm.image[i]] if g == f] for i in sel]
        hits = localization.localization_hits(amap[sel], fb)
        by_f[f] = FindingHits(float(hits.mean()), len(sel))
    return Localization(**res, by_finding=by_f)


_RANKING = (
    "auroc",
    "auroc_ci",
    "auroc_ci_delong",
    "auprc",
    "auprc_ci",
    "f1_max",
    "sens_at_spec",
    "spec_at_sens",
)


def _delong_ci(y: np.ndarray, s: np.ndarray, rp: ReportParams, g: np.ndarray | None):
    """DeLong's interval, or None where a class lies in fewer than two units (no variance)."""
    try:
        return stats.delong_ci(y, s, rp.ci, g)
    except stats.DegenerateDeLongError:
        return None


def _ranking(
    y: np.ndarray, s: np.ndarray, rp: ReportParams, g: np.ndarray | None
) -> dict[str, Any]:
    """The threshold-free summaries of :class:`ModelResult` (each None with one class only)."""
    if not both_classes(y):
        return dict.fromkeys(_RANKING)
    return {
        "auroc": metrics.auroc(y, s),
        "auroc_ci": boot_ci(y, s, metrics.auroc, rp, "pooled", g),
        "auroc_ci_delong": _delong_ci(y, s, rp, g),
        "auprc": metrics.auprc(y, s),
        "auprc_ci": boot_ci(y, s, metrics.auprc, rp, "pooled/auprc", g),
        "f1_max": metrics.f1_max(y, s),
        "sens_at_spec": metrics.sens_at_spec(y, s, rp.target_specificity),
        "spec_at_sens": metrics.spec_at_sens(y, s, rp.target_sensitivity),
    }


def model_result(
    test: pd.DataFrame,
    val: pd.DataFrame,
    mm: ModelMaps | None,
    boxes: Boxes,
    rp: ReportParams,
    unit: str,
) -> ModelResult:
    y, s = _labels_scores(test)
    threshold = operating_point(y, s, val, rp)
    return ModelResult(
        **_ranking(y, s, rp, clusters(test, unit)),
        n_normal=int((y == 0).sum()),
        n_abnormal=int((y == 1).sum()),
        threshold=threshold,
        score_method=dict(mm.meta) if mm is not None else {},
        strata=strata(test, rp, threshold.value, unit),
        localization=model_localization(mm, test, boxes, rp),
    )
