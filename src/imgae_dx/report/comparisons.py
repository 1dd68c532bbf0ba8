"""What the models are measured against: trivial baselines and each other.

The baselines' direction is fixed before any label is seen (:data:`.names.BASELINE_NAMES`);
pairs of models are compared on the same test images by DeLong's test (clustered over
patients when the unit is the patient) and a paired bootstrap, with Holm's adjustment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
import pandas as pd

from imgae_dx import metrics, stats
from imgae_dx.config import ReportParams
from imgae_dx.report.inputs import ReportInputs
from imgae_dx.report.names import BASELINE_NAMES, NO_FINDING
from imgae_dx.report.results import Baseline, ComparisonResult, DeLongTest
from imgae_dx.report.sampling import boot_ci, both_classes, clusters, paired_boot_ci


# ---- baselines -----------------------------------------------------------------------------------
def _baseline_features(inputs: ReportInputs, test_images: Sequence[str]) -> pd.DataFrame | None:
    """Per test image: label, view, mean and std intensity (from the prepared arrays)."""
    man, imgs = inputs.test_manifest, inputs.test_images
    if man is None or imgs is None:
        return None
    df = man[["image"]].copy()
    if "label" in man:
        df["label"] = man["label"].astype(int)
    else:
        df["label"] = (man["findings"].astype(str) != NO_FINDING).astype(int)
    df["view"] = man["view"].fillna("").astype(str) if "view" in man else ""
    mean, std = np.empty(len(imgs)), np.empty(len(imgs))
    for i in range(0, len(imgs), 1024):  # chunks: the full NIH test set is 25k images
        px = np.asarray(imgs[i : i + 1024], dtype=np.float64).reshape(-1, imgs[0].size) / 255.0
        mean[i : i + 1024], std[i : i + 1024] = px.mean(axis=1), px.std(axis=1)
    df["mean_intensity"], df["std_intensity"] = mean, std
    wanted = set(test_images)
    df = df[df["image"].isin(wanted)] if wanted else df
    return df.sort_values("image", kind="mergesort").reset_index(drop=True)


def baseline_scores(
    inputs: ReportInputs, ref: pd.DataFrame
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], pd.DataFrame]:
    """Each available baseline's (labels, scores), and the rows they are aligned with: the
    prepared test images when present (all three), else the scores (view only)."""
    feats = _baseline_features(inputs, ref["image"].tolist())
    if feats is not None and len(feats):
        y = feats["label"].to_numpy()
        out = {
            "mean_intensity": (y, feats["mean_intensity"].to_numpy()),
            "std_intensity": (y, feats["std_intensity"].to_numpy()),
        }
        if "view" in ref:  # the data has views (MedIAnomaly's listing has none)
            out["view_ap"] = (y, (feats["view"] == "AP").to_numpy(dtype=np.float64))
        return out, feats
    if "view" in ref:
        return {
            "view_ap": (ref["label"].to_numpy(), (ref["view"] == "AP").to_numpy(np.float64))
        }, ref
    return {}, ref


def baselines(
    scores: Mapping[str, tuple[np.ndarray, np.ndarray]],
    rows: pd.DataFrame,
    ref: pd.DataFrame,
    rp: ReportParams,
    unit: str,
) -> dict[str, Baseline]:
    """Trivial references (:data:`~imgae_dx.report.names.BASELINE_NAMES`), never fitted."""
    g = clusters(ref, unit)
    if g is not None:  # the patients of ``rows``, which may be ordered unlike ``ref``
        g = rows["image"].map(dict(zip(ref["image"], g))).to_numpy()
    out = {}
    for name in BASELINE_NAMES:
        if name not in scores:
            out[name] = Baseline(None, None, 0, 0)
            continue
        y, s = scores[name]
        both = both_classes(y)
        out[name] = Baseline(
            auroc=metrics.auroc(y, s) if both else None,
            auroc_ci=boot_ci(y, s, metrics.auroc, rp, "pooled", g) if both else None,
            n_normal=int((y == 0).sum()),
            n_abnormal=int((y == 1).sum()),
        )
    return out


# ---- comparisons ---------------------------------------------------------------------------------
def compare(
    a: str, b: str, tests: Mapping[str, pd.DataFrame], rp: ReportParams, unit: str
) -> ComparisonResult:
    """ΔAUROC of ``a`` − ``b`` on the test images both scored: DeLong's test and the paired
    bootstrap interval (Holm's adjustment comes later, over all pairs)."""
    cols = ["image", "label", "score"] + (["patient_id"] if unit == "patient" else [])
    m = tests[a][cols].merge(
        tests[b][["image", "label", "score"]], on="image", suffixes=("_a", "_b")
    )
    if (m["label_a"] != m["label_b"]).any():
        raise ValueError(f"{a} and {b} disagree on test labels")
    y = m["label_a"].to_numpy()
    sa, sb = m["score_a"].to_numpy(dtype=np.float64), m["score_b"].to_numpy(dtype=np.float64)
    if not both_classes(y):
        return ComparisonResult(a, b, len(y))
    g = clusters(m, unit)
    # the resamples of the pooled AUROC intervals, so the three intervals are paired
    boot = paired_boot_ci(y, sa, sb, rp, "pooled", g)
    try:
        t = stats.delong_test(y, sa, sb, ci=rp.ci, clusters=g)
    except stats.DegenerateDeLongError:  # a class in one unit: no test, the bootstrap stays
        return ComparisonResult(a, b, len(y), None, boot)
    return ComparisonResult(
        a, b, len(y), DeLongTest(t["delta"], tuple(t["delta_ci"]), t["z"], t["p"]), boot
    )


def comparisons(
    tests: Mapping[str, pd.DataFrame], models: Sequence[str], rp: ReportParams, unit: str
) -> list[ComparisonResult]:
    """Every pair of models in ``models`` order, with Holm's adjustment over the pairs."""
    pairs = [compare(a, b, tests, rp, unit) for i, a in enumerate(models) for b in models[i + 1 :]]
    adjusted = stats.holm([c.p_delong for c in pairs])
    return [replace(c, p_holm=p) if c.delong is not None else c for c, p in zip(pairs, adjusted)]
