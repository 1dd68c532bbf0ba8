"""The report's analysis: score tables in, typed results (:mod:`.results`) out. No file I/O.

:func:`analyze` prepares the score tables, decides the statistical unit once
(:mod:`.sampling`), and gathers the results of :mod:`.detection` (per model) and
:mod:`.comparisons` (baselines, pairs of models), the test set's composition and the training
runs. The numbers come from :mod:`imgae_dx.metrics`, :mod:`imgae_dx.stats` and
:mod:`imgae_dx.localization`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from imgae_dx.config import Params, ReportParams
from imgae_dx.report.comparisons import baseline_scores, baselines, comparisons
from imgae_dx.report.detection import model_result
from imgae_dx.report.inputs import ReportInputs
from imgae_dx.report.names import METADATA_COLUMNS, VIEW_ORDER, findings_of, ordered
from imgae_dx.report.results import (
    Analysis,
    Boxes,
    Composition,
    DataSummary,
    FindingCount,
    IssueCount,
    Scored,
    SeedSpread,
    Training,
    TrainingResult,
    ViewCount,
)
from imgae_dx.report.sampling import decide_unit
from imgae_dx.report.seeds import run_label, seed_spread
from imgae_dx.report.serialize import rounded


# ---- score tables --------------------------------------------------------------------------------
def prepare_scores(df: pd.DataFrame, arch: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(test rows sorted by image, validation normal rows) of one score table."""
    missing = {"image", "split", "label", "score"} - set(df.columns)
    if missing:
        raise ValueError(f"scores of {arch!r} lack columns {sorted(missing)}")
    df = df.copy()
    df["label"] = df["label"].astype(int)
    if not df["label"].isin((0, 1)).all():
        raise ValueError(f"scores of {arch!r}: label must be 0 or 1")
    if not np.isfinite(df["score"].to_numpy(dtype=np.float64)).all():
        raise ValueError(f"scores of {arch!r}: non-finite scores")
    for col in ("view", "sex", "findings"):
        if col in df:
            df[col] = df[col].fillna("").astype(str)
    df = df.drop(columns=absent_columns(df, present_only=True))
    test = df[df["split"] == "test"].sort_values("image", kind="mergesort").reset_index(drop=True)
    if test["image"].duplicated().any():
        raise ValueError(f"scores of {arch!r}: duplicate test images")
    val = df[(df["split"] == "val") & (df["label"] == 0)].reset_index(drop=True)
    return test, val


def absent_columns(df: pd.DataFrame, present_only: bool = False) -> list[str]:
    """The :data:`METADATA_COLUMNS` without a single value in ``df`` (``present_only``: of
    those that ``df`` has)."""
    return [
        c
        for c in METADATA_COLUMNS
        if (c in df or not present_only) and (c not in df or not has_values(df[c]))
    ]


def has_values(col: pd.Series) -> bool:
    return bool((col.dropna().astype(str).str.strip() != "").any())


def boxes_by_image(boxes: pd.DataFrame | None) -> Boxes:
    out: Boxes = {}
    if boxes is None or boxes.empty:
        return out
    for r in boxes.itertuples(index=False):
        box = (float(r.x), float(r.y), float(r.w), float(r.h))
        out.setdefault(str(r.image), []).append((str(getattr(r, "finding", "")), box))
    return out


# ---- the data -------------------------------------------------------------------------------------
def data_summary(
    source: str,
    summary: Mapping,
    ref: pd.DataFrame,
    n_val: int,
    n_prepared: Mapping[str, int] | None = None,
    issues: pd.DataFrame | None = None,
) -> DataSummary:
    """Images per split: the prepared arrays' counts (what was trained and scored), else the
    split's summary; and the data issues' counts (None without the issues files)."""
    n_prepared = n_prepared or {}
    return DataSummary(
        source=source,
        n_train=n_prepared.get("train", summary.get("n_train")),
        n_val=n_prepared.get("val", summary.get("n_val", n_val)),
        n_test_normal=int((ref["label"] == 0).sum()),
        n_test_abnormal=int((ref["label"] == 1).sum()),
        n_test_patients=int(ref["patient_id"].nunique()) if "patient_id" in ref else None,
        n_repaired=None if issues is None else _n_repaired(issues),
        n_excluded=None if issues is None else int((issues["action"] == "excluded").sum()),
    )


def _n_repaired(issues: pd.DataFrame) -> int:
    """Images with at least one repair (a JPEG in colour has two)."""
    repaired = issues[issues["action"] == "repaired"]
    return int(len(repaired[["split", "image"]].drop_duplicates()))


def issue_counts(issues: pd.DataFrame | None) -> list[IssueCount] | None:
    """Issues per stage, split, action and problem, in the order they were found."""
    if issues is None:
        return None
    keys = ["stage", "split", "action", "problem"]
    counts = issues.groupby(keys, sort=False).size()
    return [IssueCount(*k, count=int(n)) for k, n in counts.items()]


# ---- the test set --------------------------------------------------------------------------------
def _view_counts(ref: pd.DataFrame) -> list[ViewCount]:
    counts = []
    for v in ordered(ref["view"].tolist(), VIEW_ORDER):
        nn = int(((ref["view"] == v) & (ref["label"] == 0)).sum())
        na = int(((ref["view"] == v) & (ref["label"] == 1)).sum())
        counts.append(ViewCount(v, nn, na))
    return counts


def _finding_counts(ref: pd.DataFrame, boxes: Boxes) -> list[FindingCount]:
    counts: dict[str, int] = {}
    for fs in findings_of(ref["findings"]):
        for f in fs:
            counts[f] = counts.get(f, 0) + 1
    abn = ref[ref["label"] == 1]
    boxed: dict[str, int] = {}
    for im, fs in zip(abn["image"], findings_of(abn["findings"])):
        box_f = {g for g, _ in boxes.get(im, [])}
        for f in fs:
            # NIH's box list spells Infiltration "Infiltrate"
            if f in box_f or (f == "Infiltration" and "Infiltrate" in box_f):
                boxed[f] = boxed.get(f, 0) + 1
    return [FindingCount(f, counts[f], boxed.get(f, 0)) for f in sorted(counts)]


def composition(ref: pd.DataFrame, boxes: Boxes) -> Composition:
    """Test images by view and by finding (the first model's rows; every model scores the same)."""
    return Composition(
        n_images=len(ref),
        by_view=_view_counts(ref) if "view" in ref else None,
        by_finding=_finding_counts(ref, boxes) if "findings" in ref else None,
    )


# ---- training ------------------------------------------------------------------------------------
def training_result(df: pd.DataFrame | None, reference: float | None) -> TrainingResult | None:
    """Validation loss before training (epoch 0), at the selected epoch, and their ratios;
    None without a usable curve."""
    if df is None or "val_loss" not in df or not df["val_loss"].notna().any():
        return None
    val = df["val_loss"].to_numpy(dtype=np.float64)
    epochs = df["epoch"].to_numpy() if "epoch" in df else np.arange(1, len(df) + 1)
    trained = epochs > 0
    if not trained.any():
        return None
    best_i = int(np.nanargmin(np.where(trained, val, np.inf)))
    initial = float(val[~trained][0]) if (~trained).any() else None
    best = float(val[best_i])
    return TrainingResult(
        epochs_run=int(trained.sum()),
        best_epoch=int(epochs[best_i]),
        initial_val_loss=initial,
        best_val_loss=best,
        best_over_initial=best / initial if initial else None,
        best_over_reference=best / reference if reference else None,
    )


def training(inputs: ReportInputs, models: Sequence[str]) -> Training:
    """Every training run (model and seed, :func:`.seeds.run_label`) with a usable curve."""
    ref = inputs.reference_val_mse
    labels = [run_label(a, k, inputs.seeds) for a in models for k in inputs.seeds]
    runs = {a: training_result(inputs.train_curves.get(a), ref) for a in labels}
    return Training(ref, {a: r for a, r in runs.items() if r is not None})


def by_seed(
    inputs: ReportInputs, models: Sequence[str], rp: ReportParams, unit: str
) -> dict[str, SeedSpread]:
    """Each model's seeds and their mean ± sd; empty with one seed (the ensemble is the seed)."""
    if len(inputs.seeds) < 2:
        return {}
    out = {}
    for arch in models:
        tests = {k: prepare_scores(df, arch)[0] for k, df in inputs.seed_scores[arch].items()}
        out[arch] = seed_spread(tests, rp, unit)
    return out


# ---- everything ----------------------------------------------------------------------------------
def analyze(inputs: ReportInputs, params: Params) -> Analysis:
    """The typed results of the report, numbers rounded as metrics.json stores them."""
    rp, models = params.report, list(params.models)
    missing = [m for m in models if m not in inputs.scores]
    if missing:
        raise ValueError(f"models {missing} have no scores")
    tests, vals = {}, {}
    for arch in models:
        tests[arch], vals[arch] = prepare_scores(inputs.scores[arch], arch)
    unit = decide_unit(rp, tests)
    boxes = boxes_by_image(inputs.boxes)
    ref = tests[models[0]]
    base_scores, base_rows = baseline_scores(inputs, ref)
    summary = inputs.summary or {}
    n_val = len(vals[models[0]])
    data = data_summary(params.data.source, summary, ref, n_val, inputs.n_prepared, inputs.issues)
    per_model = {
        a: model_result(tests[a], vals[a], inputs.maps.get(a), boxes, rp, unit) for a in models
    }
    return Analysis(
        params=rp,
        unit=unit,
        data=rounded(data),
        composition=composition(ref, boxes),
        models=rounded(per_model),
        baselines=rounded(baselines(base_scores, base_rows, ref, rp, unit)),
        comparisons=rounded(comparisons(tests, models, rp, unit)),
        training=rounded(training(inputs, models)),
        scored=Scored(tests, vals, base_scores, boxes),
        summary=dict(summary),
        issues=issue_counts(inputs.issues),
        seeds=list(inputs.seeds),
        by_seed=rounded(by_seed(inputs, models, rp, unit)),
    )
