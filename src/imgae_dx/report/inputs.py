"""Gathering the report's inputs: the outputs of the split, prepare, train and score stages.

Every path comes from :mod:`imgae_dx.paths`, relative to the repository ``root``. Only the score
tables are required; a missing optional input leaves its table or figure "not available". The
test images and their manifest are prepare's (``data/prepared/test.{npy,csv}``), so they hold
exactly the images that were scored. Each architecture was scored once per training seed;
``scores`` and ``maps`` hold its seed ensemble (:mod:`.seeds`), ``seed_scores`` each seed's table.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from imgae_dx import paths
from imgae_dx.data.issues import read_issues
from imgae_dx.errors import UserError
from imgae_dx.report.seeds import ensemble_maps, ensemble_scores, run_label


@dataclass
class ModelMaps:
    """Contents of ``reports/maps/<arch>/seed<k>.npz`` (test rows, in the scores' order)."""

    image: np.ndarray  # (N,) str
    amap: np.ndarray  # (N, S, S) anomaly maps
    recon: np.ndarray | None = None  # (N, S, S) reconstructions in [0, 1]
    meta: dict = field(default_factory=dict)


@dataclass
class ReportInputs:
    scores: dict[str, pd.DataFrame]  # per model: its seed ensemble's table
    maps: dict[str, ModelMaps] = field(default_factory=dict)
    test_manifest: pd.DataFrame | None = None
    test_images: np.ndarray | None = None  # (N, S, S) uint8, rows of test_manifest
    boxes: pd.DataFrame | None = None  # image, finding, x, y, w, h in S-pixel coordinates
    train_curves: dict[str, pd.DataFrame] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    reference_val_mse: float | None = None  # val MSE of predicting the mean training image
    n_prepared: dict[str, int] = field(default_factory=dict)  # images per prepared array
    issues: pd.DataFrame | None = None  # split's then prepare's issues; None: a file missing
    seed_scores: dict[str, dict[int, pd.DataFrame]] = field(default_factory=dict)  # model, seed
    seeds: list[int] = field(default_factory=lambda: [0])


def mean_image_val_mse(train: np.ndarray, val: np.ndarray, chunk: int = 1024) -> float:
    """Per-pixel MSE on ``val`` of the mean training image (uint8 arrays, scaled to [0, 1]).

    The reference a reconstruction model must beat: one that does worse has learned less than
    the average training image. Chunked, so a memory-mapped training set is never loaded whole.
    """
    if len(train) == 0 or len(val) == 0:
        raise ValueError("mean_image_val_mse: empty training or validation set")
    total = np.zeros(train.shape[1:], dtype=np.float64)
    for i in range(0, len(train), chunk):
        total += np.asarray(train[i : i + chunk], dtype=np.float64).sum(axis=0)
    mean = total / (255.0 * len(train))
    err = 0.0
    for i in range(0, len(val), chunk):
        v = np.asarray(val[i : i + chunk], dtype=np.float64) / 255.0
        err += float(((v - mean) ** 2).sum())
    return err / (len(val) * mean.size)


def load_maps(path: str | os.PathLike) -> ModelMaps:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta_json"][()])) if "meta_json" in z.files else {}
        recon = z["recon"] if "recon" in z.files else None
        return ModelMaps(image=z["image"].astype(str), amap=z["map"], recon=recon, meta=meta)


def _read_ids_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"image": str, "patient_id": str})


def _test_set(root: Path) -> tuple[pd.DataFrame | None, np.ndarray | None]:
    """The prepared test manifest and, when both exist, the prepared test images in its row
    order."""
    if not (root / paths.prepared_manifest("test")).is_file():
        return None, None
    manifest = _read_ids_csv(root / paths.prepared_manifest("test"))
    if not (root / paths.prepared("test")).is_file():
        return manifest, None
    images = np.load(root / paths.prepared("test"), allow_pickle=False)
    if len(images) != len(manifest):
        raise UserError(
            f"{paths.prepared('test')} has {len(images)} images, "
            f"{paths.prepared_manifest('test')} {len(manifest)} rows: rerun `dvc repro prepare`"
        )
    return manifest, images


def _reference_val_mse(root: Path) -> float | None:
    train, val = root / paths.prepared("train"), root / paths.prepared("val")
    if not (train.is_file() and val.is_file()):
        return None
    return mean_image_val_mse(np.load(train, mmap_mode="r"), np.load(val, mmap_mode="r"))


def _prepared_counts(root: Path) -> dict[str, int]:
    """Images per prepared array (``data/prepared/<split>.npy`` that exist), from the headers."""
    return {
        name: len(np.load(root / paths.prepared(name), mmap_mode="r"))
        for name in paths.SPLITS
        if (root / paths.prepared(name)).is_file()
    }


def _issues(root: Path) -> pd.DataFrame | None:
    """The issues of split then prepare, one table; None unless both files exist."""
    files = [root / paths.SPLIT_ISSUES, root / paths.PREPARED_ISSUES]
    if not all(f.is_file() for f in files):
        return None
    return pd.concat([read_issues(f) for f in files], ignore_index=True)


def _seed_scores(root: Path, arch: str, seeds: Sequence[int]) -> dict[int, pd.DataFrame]:
    out = {}
    for k in seeds:
        p = root / paths.scores(arch, k)
        if not p.is_file():
            raise FileNotFoundError(
                f"scores of model {arch!r}, seed {k} not found: {p} (run score@{arch}-{k})"
            )
        out[k] = _read_ids_csv(p)
    return out


def _ensemble_maps(root: Path, arch: str, seeds: Sequence[int]) -> ModelMaps | None:
    """The seed ensemble of ``arch``'s maps; None unless every seed's maps file exists."""
    files = {k: root / paths.maps(arch, k) for k in seeds}
    if not all(f.is_file() for f in files.values()):
        return None
    return ensemble_maps({k: load_maps(f) for k, f in files.items()}, arch)


def load_inputs(
    root: str | os.PathLike, models: Sequence[str], seeds: Sequence[int] = (0,)
) -> ReportInputs:
    """Read every report input under ``root`` for each model and training seed; only the score
    CSVs are required."""
    root, seeds = Path(root), list(seeds)
    seed_scores, scores, maps, curves = {}, {}, {}, {}
    for arch in models:
        seed_scores[arch] = _seed_scores(root, arch, seeds)
        scores[arch] = ensemble_scores(seed_scores[arch], arch)
        if (mm := _ensemble_maps(root, arch, seeds)) is not None:
            maps[arch] = mm
        for k in seeds:
            if (root / paths.train_curve(arch, k)).is_file():
                curves[run_label(arch, k, seeds)] = pd.read_csv(root / paths.train_curve(arch, k))
    manifest, images = _test_set(root)
    boxes = None
    if (root / paths.PREPARED_BOXES).is_file():
        boxes = pd.read_csv(root / paths.PREPARED_BOXES, dtype={"image": str, "finding": str})
    summary = {}
    if (root / paths.SUMMARY).is_file():
        summary = json.loads((root / paths.SUMMARY).read_text())
    return ReportInputs(
        scores, maps, manifest, images, boxes, curves, summary, _reference_val_mse(root),
        _prepared_counts(root), _issues(root), seed_scores, seeds,
    )  # fmt: skip
