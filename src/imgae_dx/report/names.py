"""Names, orders and wording that the tables, figures and caveats share: each defined once."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from imgae_dx.data.nih import NO_FINDING, SEXES, VIEWS

VIEW_ORDER, SEX_ORDER = VIEWS, SEXES  # the order strata are listed in
#: Per-image metadata a data set may lack entirely (MedIAnomaly's listing has none of them):
#: a column without any value is dropped from the score tables, so whatever needs it (strata,
#: the view baseline, patient-level resampling) says "not available" instead of breaking.
METADATA_COLUMNS = ("patient_id", "view", "sex", "age")

#: The trivial baselines in report order, with their display names. Their direction is fixed
#: before any label is seen (higher intensity or std = abnormal, AP = abnormal), never fitted.
BASELINE_NAMES = {
    "mean_intensity": "mean intensity",
    "std_intensity": "intensity std",
    "view_ap": "view (AP)",
}

#: How each statistical unit (``report.unit``, as decided by ``analysis.decide_unit``) is
#: resampled by the bootstrap, named in metrics.json for DeLong, and described for DeLong.
RESAMPLING = {
    "patient": "whole patients resampled, separately for patients with and without an abnormal film",
    "image": "normals and abnormals resampled separately, film by film",
}
DELONG_METHOD = {"patient": "Obuchowski 1997 (clustered)", "image": "DeLong 1988"}
DELONG_VARIANCE = {
    "patient": ", with Obuchowski's (1997) clustered variance over patients",
    "image": ", films treated as independent",
}


def age_band_labels(edges: Sequence[int]) -> list[str]:
    """[0, 30, 45, 200] -> ["0-30", "30-45", "45+"] (bands are [lo, hi); hi >= 120 is open)."""
    return [f"{lo}+" if hi >= 120 else f"{lo}-{hi}" for lo, hi in zip(edges[:-1], edges[1:])]


def findings_of(series: pd.Series) -> list[set[str]]:
    """The findings of each row of a ``findings`` column (``A|B``), "No Finding" left out."""
    return [
        {f.strip() for f in str(v).split("|") if f.strip() and f.strip() != NO_FINDING}
        for v in series
    ]


def ordered(values: Sequence[str], preferred: Sequence[str]) -> list[str]:
    """The distinct non-empty ``values``: those in ``preferred`` first, in its order, then the
    rest sorted."""
    present = [v for v in dict.fromkeys(values) if v != ""]
    return [v for v in preferred if v in present] + sorted(v for v in present if v not in preferred)
