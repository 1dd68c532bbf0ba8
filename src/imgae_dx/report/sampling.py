"""The statistical unit and the bootstrap: decided once, used by every interval and test.

Every interval and test treats one unit as independent, decided once per report by
:func:`decide_unit`: the patient (cluster bootstrap, Obuchowski's clustered DeLong; films of one
patient are correlated) or, with ``report.unit: image``, the film. Resamples are seeded per
stratum name, so every model and baseline sees the same resamples (paired).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

from imgae_dx import metrics, stats
from imgae_dx.config import ReportParams
from imgae_dx.report.results import Interval


def decide_unit(rp: ReportParams, tests: Mapping[str, pd.DataFrame]) -> str:
    """``patient`` when ``report.unit`` asks for it and every score table has patient IDs;
    ``image`` (films treated as independent) otherwise: without IDs (MedIAnomaly's listing)
    the report falls back and says why (:func:`imgae_dx.report.caveats.missing_metadata`)."""
    has_ids = all("patient_id" in t for t in tests.values())
    return "patient" if rp.unit == "patient" and has_ids else "image"


def clusters(df: pd.DataFrame, unit: str) -> np.ndarray | None:
    """The cluster of each row for the bootstrap and DeLong: its patient, or None (images)."""
    return df["patient_id"].astype(str).to_numpy() if unit == "patient" else None


def seed_for(rp: ReportParams, key: str) -> int:
    """A fixed seed per stratum name: the same for every model, so resamples are paired."""
    return int(np.random.SeedSequence([rp.seed, zlib.crc32(key.encode())]).generate_state(1)[0])


def boot_ci(
    y: np.ndarray,
    s: np.ndarray,
    metric: Callable[[np.ndarray, np.ndarray], float],
    rp: ReportParams,
    key: str,
    groups: np.ndarray | None,
) -> Interval:
    """The bootstrap interval of ``metric``: B and level from ``rp``, a seed fixed per stratum
    ``key`` (so every model and baseline sees the same resamples)."""
    return stats.bootstrap_ci(
        y, s, metric, n_boot=rp.bootstrap, seed=seed_for(rp, key), ci=rp.ci, clusters=groups
    )


def paired_boot_ci(
    y: np.ndarray,
    sa: np.ndarray,
    sb: np.ndarray,
    rp: ReportParams,
    key: str,
    groups: np.ndarray | None,
) -> Interval:
    """The bootstrap interval of AUROC(sa) − AUROC(sb), both resampled with the same images."""
    return stats.paired_bootstrap_ci(
        y,
        sa,
        sb,
        metrics.auroc,
        n_boot=rp.bootstrap,
        seed=seed_for(rp, key),
        ci=rp.ci,
        clusters=groups,
    )


def both_classes(y: np.ndarray) -> bool:
    return bool((y == 1).any() and (y == 0).any())
