"""The typed results of the report's analysis: per model, stratum, comparison and training run.

:func:`imgae_dx.report.analysis.analyze` fills them with every number already rounded the way
metrics.json stores it (:func:`imgae_dx.report.serialize.rounded`), so that report.md and the
figures print exactly what metrics.json says. :mod:`imgae_dx.report.serialize` turns them into
the metrics.json dict; nothing else names a metrics.json key.

``None`` stands for a number that is undefined (one class only, a stratum below
``report.min_stratum``, an input that is missing); it becomes JSON ``null``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from imgae_dx.config import ReportParams

#: A (lower, upper) confidence interval; an end is None when no resample defined it.
Interval = tuple[float | None, float | None]
#: The NIH boxes of each test image: image -> [(finding, (x, y, w, h)), ...] in prepared pixels.
Boxes = dict[str, list[tuple[str, tuple[float, float, float, float]]]]


@dataclass(frozen=True)
class DataSummary:
    source: str | None
    n_train: int | None
    n_val: int | None
    n_test_normal: int
    n_test_abnormal: int
    n_test_patients: int | None
    n_repaired: int | None = None  # images repaired (16-bit, colour, not a PNG); None: unknown
    n_excluded: int | None = None  # metadata rows and images left out; None: unknown


@dataclass(frozen=True)
class IssueCount:
    """Repairs or exclusions of one kind (``reports/data_issues.csv`` lists each one)."""

    stage: str  # split | prepare
    split: str  # "" for metadata rows
    action: str  # repaired | excluded
    problem: str
    count: int


@dataclass(frozen=True)
class ViewCount:
    view: str
    normal: int
    abnormal: int


@dataclass(frozen=True)
class FindingCount:
    finding: str
    images: int  # test abnormal images carrying it
    boxed: int  # of those, images with an NIH box of it


@dataclass(frozen=True)
class Composition:
    """What the test set holds (the first model's test rows; every model scores the same)."""

    n_images: int
    by_view: list[ViewCount] | None  # None: the scores have no view column
    by_finding: list[FindingCount] | None  # None: the scores have no findings column

    def ap_share(self, label: int, total: int) -> float:
        """The fraction of the ``total`` test images of class ``label`` that are AP films."""
        ap = sum((v.abnormal if label else v.normal) for v in self.by_view or [] if v.view == "AP")
        return ap / total if total else float("nan")


@dataclass(frozen=True)
class Rates:
    sensitivity: float | None
    specificity: float | None


@dataclass(frozen=True)
class Stratum:
    """The stratum's normals against its abnormals."""

    n_normal: int
    n_abnormal: int
    auroc: float | None = None  # None below report.min_stratum
    auroc_ci: Interval | None = None  # bootstrap
    at_threshold: Rates | None = None  # at the model's operating threshold, when it has one


@dataclass(frozen=True)
class Strata:
    """A model's strata by column value: each maps a value (or age band) to its stratum."""

    view: dict[str, Stratum]
    sex: dict[str, Stratum]
    age: dict[str, Stratum]
    finding: dict[str, Stratum]  # each finding's abnormals against all normals


@dataclass(frozen=True)
class OperatingPoint:
    """The threshold at ``percentile`` of the validation-normal scores, applied to test."""

    percentile: float
    n_val_normal: int
    value: float | None = None  # None: no validation normals, so no threshold
    val_flagged: float | None = None  # fraction of validation normals above it
    sensitivity: float | None = None
    specificity: float | None = None
    precision: float | None = None
    f1: float | None = None
    tp: int | None = None
    fp: int | None = None
    tn: int | None = None
    fn: int | None = None


@dataclass(frozen=True)
class FindingHits:
    hit_rate: float | None
    n_images: int


@dataclass(frozen=True)
class Localization:
    """Anomaly maps against the NIH boxes of test abnormal images."""

    hit_rate: float | None = None  # the map's argmax falls in a box
    chance_hit_rate: float | None = None  # fraction of the image inside a box
    pixel_auroc: float | None = None  # pixels inside vs outside the boxes
    n_images: int = 0
    n_boxes: int = 0
    by_finding: dict[str, FindingHits] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelResult:
    """One model's image-level detection on the test set."""

    auroc: float | None
    auroc_ci: Interval | None  # bootstrap
    auroc_ci_delong: Interval | None  # None: a class in < 2 units (images or patients)
    auprc: float | None
    auprc_ci: Interval | None  # bootstrap
    f1_max: float | None
    sens_at_spec: float | None  # at report.target_specificity
    spec_at_sens: float | None  # at report.target_sensitivity
    n_normal: int
    n_abnormal: int
    threshold: OperatingPoint
    score_method: dict[str, Any]  # the meta of reports/maps/<arch>.npz (map, saliency, ...)
    strata: Strata
    localization: Localization


@dataclass(frozen=True)
class Baseline:
    """A trivial score's AUROC over the test images."""

    auroc: float | None
    auroc_ci: Interval | None
    n_normal: int
    n_abnormal: int


@dataclass(frozen=True)
class DeLongTest:
    """DeLong's test of AUROC(a) − AUROC(b) on the same images."""

    delta: float | None
    ci: Interval | None
    z: float | None
    p: float | None


@dataclass(frozen=True)
class ComparisonResult:
    a: str
    b: str
    n: int  # test images both scored
    delong: DeLongTest | None = None  # None: a class has < 2 units (images or patients)
    delta_ci: Interval | None = None  # paired bootstrap
    p_holm: float | None = None  # DeLong's p, Holm-adjusted over all pairs

    @property
    def delta_auroc(self) -> float | None:
        return self.delong.delta if self.delong is not None else None

    @property
    def p_delong(self) -> float | None:
        return self.delong.p if self.delong is not None else None


@dataclass(frozen=True)
class SeedRun:
    """One training seed's image-level detection (its own scores, not the ensemble's)."""

    seed: int
    auroc: float | None
    auroc_ci: Interval | None  # bootstrap, the same resamples as the ensemble's
    auprc: float | None
    auprc_ci: Interval | None


@dataclass(frozen=True)
class SeedSpread:
    """An architecture's seeds: each one's results and their mean ± sd (sd None for one)."""

    runs: list[SeedRun]
    auroc_mean: float | None
    auroc_sd: float | None
    auprc_mean: float | None
    auprc_sd: float | None


@dataclass(frozen=True)
class TrainingResult:
    """From ``reports/train/<arch>/seed<k>.csv``: validation loss untrained (epoch 0) and selected."""

    epochs_run: int
    best_epoch: int
    initial_val_loss: float | None
    best_val_loss: float
    best_over_initial: float | None
    best_over_reference: float | None  # >= 1: no better than the mean training image


@dataclass(frozen=True)
class Training:
    reference_val_mse: float | None  # val MSE of predicting the mean training image
    models: dict[str, TrainingResult]  # runs with a training curve, by seeds.run_label


@dataclass(frozen=True)
class Scored:
    """The score tables behind the results, for the figures (not part of metrics.json)."""

    tests: dict[str, pd.DataFrame]  # per model: test rows sorted by image
    vals: dict[str, pd.DataFrame]  # per model: validation-normal rows
    baselines: dict[str, tuple[np.ndarray, np.ndarray]]  # per baseline: (labels, scores)
    boxes: Boxes


@dataclass(frozen=True)
class Analysis:
    """Everything the report says: metrics.json, the Markdown and the figures come from it."""

    params: ReportParams
    unit: str  # "patient" or "image": the independent unit of every interval and test
    data: DataSummary
    composition: Composition
    models: dict[str, ModelResult]  # each architecture's seed ensemble (.seeds)
    baselines: dict[str, Baseline]
    comparisons: list[ComparisonResult]
    training: Training
    scored: Scored
    summary: dict = field(default_factory=dict)  # data/split/summary.json as written
    issues: list[IssueCount] | None = None  # None: the issues files are missing
    seeds: list[int] = field(default_factory=lambda: [0])  # training seeds; models: ensembles
    by_seed: dict[str, SeedSpread] = field(default_factory=dict)  # per model; {} for one seed
