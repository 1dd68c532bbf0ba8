"""Where every pipeline file lives, relative to the repository root (where DVC runs the stages).

The one list of paths: stages, the report and the CLI import them from here, and ``dvc.yaml``
spells the same names (``docs/architecture.md``, "Outputs", gives each file's contract).
"""

from __future__ import annotations

import os
from pathlib import Path

CHECKED = Path("data/.checked")  # check: a fixed line, written once params.yaml passed
RAW = Path("data/raw")  # fetch: an NIH-format mirror (only fetch writes it)
CACHE = Path("data/.cache")  # fetch: verified downloads and extracted members, kept across runs
SPLIT = Path("data/split")  # split: {train,val,test}.csv, boxes.csv, summary.json, issues.csv
PREPARED = Path("data/prepared")  # prepare: {train,val,test}.{npy,csv}, boxes.csv, issues.csv
MODELS = Path("models")  # train: <arch>/seed<k>.pt
RESUME = MODELS / ".resume"  # train: <arch>/seed<k>.pt, the per-epoch state of an unfinished run
REPORTS = Path("reports")
FIGURES = REPORTS / "figures"
PLOT_POINTS = REPORTS / "plots"  # report: {roc,pr}/<arch>.csv, curve points for `dvc plots`
METRICS = REPORTS / "metrics.json"
REPORT_MD = REPORTS / "report.md"
MLFLOW_DB = Path("mlflow.db")  # the default MLflow store, under the repository root (not cwd)
SPLITS = ("train", "val", "test")  # the split names, which name their files below


def manifest(split: str) -> Path:
    """``data/split/<split>.csv``."""
    return SPLIT / f"{split}.csv"


def prepared(split: str) -> Path:
    """``data/prepared/<split>.npy``: uint8 (N, S, S), rows of :func:`prepared_manifest`."""
    return PREPARED / f"{split}.npy"


def prepared_manifest(split: str) -> Path:
    """``data/prepared/<split>.csv``: the manifest rows prepare kept, one per row of the array."""
    return PREPARED / f"{split}.csv"


SPLIT_BOXES = SPLIT / "boxes.csv"  # test boxes in original pixels
PREPARED_BOXES = PREPARED / "boxes.csv"  # the same boxes in prepared pixels
SUMMARY = SPLIT / "summary.json"
SPLIT_ISSUES = SPLIT / "issues.csv"  # split: the malformed metadata rows it left out
PREPARED_ISSUES = PREPARED / "issues.csv"  # prepare: the images it repaired or left out
DATA_ISSUES = REPORTS / "data_issues.csv"  # report: both issues files, one table


def _per_seed(folder: Path, arch: str, seed: int, suffix: str) -> Path:
    """``<folder>/<arch>/seed<seed><suffix>``: one file per (architecture, training seed)."""
    return folder / arch / f"seed{int(seed)}{suffix}"


def model(arch: str, seed: int) -> Path:
    """``models/<arch>/seed<k>.pt``: the self-describing checkpoint of training seed ``k``."""
    return _per_seed(MODELS, arch, seed, ".pt")


def resume_checkpoint(arch: str, seed: int) -> Path:
    """``models/.resume/<arch>/seed<k>.pt``: the state of an unfinished ``train@<arch>-<k>``."""
    return _per_seed(RESUME, arch, seed, ".pt")


def train_curve(arch: str, seed: int) -> Path:
    """``reports/train/<arch>/seed<k>.csv``: per-epoch curve; epoch 0 is the untrained model."""
    return _per_seed(REPORTS / "train", arch, seed, ".csv")


def scores(arch: str, seed: int) -> Path:
    """``reports/scores/<arch>/seed<k>.csv``: one row per val/test image."""
    return _per_seed(REPORTS / "scores", arch, seed, ".csv")


def maps(arch: str, seed: int) -> Path:
    """``reports/maps/<arch>/seed<k>.npz``: test reconstructions and anomaly maps (float16)."""
    return _per_seed(REPORTS / "maps", arch, seed, ".npz")


def samples_figure(source: str) -> Path:
    return FIGURES / f"{source}_samples.png"


def repo_root(start: str | os.PathLike | None = None) -> Path:
    """The repository the pipeline belongs to.

    ``dvc exp run --queue/--temp`` runs stages in a temporary copy under
    ``<repo>/.dvc/tmp/exps/...``; this returns ``<repo>`` there too, so that stores meant to be
    shared between runs (MLflow) land in one place.
    """
    p = Path(start or os.getcwd()).resolve()
    parts = p.parts
    for i in range(len(parts) - 3):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    for q in (p, *p.parents):
        if (q / "dvc.yaml").exists() or (q / ".dvc").is_dir():
            return q
    return p
