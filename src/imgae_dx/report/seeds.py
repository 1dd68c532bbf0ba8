"""Training seeds: the seed ensemble the report analyses, and the spread over seeds. No file I/O.

Every architecture is trained and scored once per entry of ``seeds``
(``reports/scores/<arch>/seed<k>.csv``). The report's per-model results and its comparisons are
those of the architecture's *seed ensemble*: per image, the mean of its seeds' scores (and of
their maps). All seeds of one architecture share the objective and so the unit of the score
(a reconstruction error), which makes the plain mean the natural ensemble score; with one seed
it is that seed's table itself, so a one-seed report reads exactly as before. Why the
comparisons use the ensemble rather than per-seed tests: ``docs/architecture.md``, "Seeds".

The variability that training adds is reported beside it (:func:`seed_spread`): each seed's
AUROC and AUPRC with their bootstrap intervals, and their mean ± sd over seeds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from imgae_dx import metrics
from imgae_dx.config import ReportParams
from imgae_dx.report.results import SeedRun, SeedSpread
from imgae_dx.report.sampling import boot_ci, both_classes, clusters

if TYPE_CHECKING:  # inputs builds the ensemble with this module's functions
    from imgae_dx.report.inputs import ModelMaps

KEY = ["split", "image"]  # a score row's identity: the same image may be in val and test only once


def run_label(arch: str, seed: int, seeds: Sequence[int]) -> str:
    """How the report names one training run: ``ae`` with one seed, ``ae/seed1`` with several."""
    return arch if len(seeds) == 1 else f"{arch}/seed{seed}"


def ensemble_scores(frames: Mapping[int, pd.DataFrame], arch: str) -> pd.DataFrame:
    """The score table of ``arch``'s seed ensemble: the first seed's rows, ``score`` the mean
    over seeds per (split, image). Every seed must have scored exactly the same rows."""
    seeds = list(frames)
    first = frames[seeds[0]]
    if len(seeds) == 1:
        return first
    base = first.set_index(KEY)
    total = base["score"].to_numpy(dtype=np.float64).copy()
    for k in seeds[1:]:
        other = frames[k].set_index(KEY)
        if len(other) != len(base) or not other.index.sort_values().equals(
            base.index.sort_values()
        ):
            raise ValueError(
                f"scores of {arch!r}: seed {k} scored other images than seed {seeds[0]} "
                f"(rerun `dvc repro score@{arch}-{k}`)"
            )
        total += other["score"].reindex(base.index).to_numpy(dtype=np.float64)
    out = first.copy()
    out["score"] = total / len(seeds)
    return out


def ensemble_maps(maps: Mapping[int, ModelMaps], arch: str) -> ModelMaps:
    """The seed ensemble's maps and reconstructions: per-pixel means over seeds (float32),
    rows in the first seed's order."""
    seeds = list(maps)
    first = maps[seeds[0]]
    if len(seeds) == 1:
        return first
    row = {im: i for i, im in enumerate(first.image)}
    amap = np.zeros(first.amap.shape, dtype=np.float32)
    recon = None if first.recon is None else np.zeros(first.recon.shape, dtype=np.float32)
    for k in seeds:
        mm = maps[k]
        if sorted(mm.image) != sorted(first.image):
            raise ValueError(
                f"maps of {arch!r}: seed {k} holds other images than seed {seeds[0]} "
                f"(rerun `dvc repro score@{arch}-{k}`)"
            )
        order = np.argsort([row[im] for im in mm.image])  # mm's rows in first's order
        amap += np.asarray(mm.amap, dtype=np.float32)[order]
        if recon is not None and mm.recon is not None:
            recon += np.asarray(mm.recon, dtype=np.float32)[order]
        else:  # a seed without reconstructions: the ensemble has none
            recon = None
    n = len(seeds)
    recon = None if recon is None else recon / n
    return dataclasses.replace(first, amap=amap / n, recon=recon)


def mean_sd(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof 1) of the defined values; the sd is None
    below two values, the mean None without any."""
    v = np.array([x for x in values if x is not None], dtype=np.float64)
    if not len(v):
        return None, None
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else None


def seed_run(seed: int, test: pd.DataFrame, rp: ReportParams, unit: str) -> SeedRun:
    """One seed's AUROC and AUPRC with bootstrap intervals, resampled as the ensemble's
    (same stratum keys: every seed and the ensemble see the same resamples)."""
    y, s = test["label"].to_numpy(), test["score"].to_numpy(dtype=np.float64)
    if not both_classes(y):
        return SeedRun(seed, None, None, None, None)
    g = clusters(test, unit)
    return SeedRun(
        seed=seed,
        auroc=metrics.auroc(y, s),
        auroc_ci=boot_ci(y, s, metrics.auroc, rp, "pooled", g),
        auprc=metrics.auprc(y, s),
        auprc_ci=boot_ci(y, s, metrics.auprc, rp, "pooled/auprc", g),
    )


def seed_spread(tests: Mapping[int, pd.DataFrame], rp: ReportParams, unit: str) -> SeedSpread:
    """Each seed's results (``tests``: seed -> test rows) and their mean ± sd over seeds."""
    runs = [seed_run(k, t, rp, unit) for k, t in tests.items()]
    auroc_mean, auroc_sd = mean_sd([r.auroc for r in runs])
    auprc_mean, auprc_sd = mean_sd([r.auprc for r in runs])
    return SeedSpread(runs, auroc_mean, auroc_sd, auprc_mean, auprc_sd)
