"""Paths and helpers shared by the stages (relative to the repository root, where DVC runs them)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from imgae_dx.data import split as splitlib

RAW = Path("data/raw")
CACHE = Path("data/.cache")
SPLIT = Path("data/split")
PREPARED = Path("data/prepared")
MODELS = Path("models")
RESUME = Path("models/.resume")
REPORTS = Path("reports")


def split_kwargs(data: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """The ``make_split`` arguments from the ``data`` params block."""
    return {
        "views": list(data["views"]),
        "shards": data["shards"],
        "val_fraction": float(data["val_fraction"]),
        "test_fraction": float(data["test_fraction"]),
        "max_train": data.get("max_train"),
        "max_val": data.get("max_val"),
        "max_test_normal": data.get("max_test_normal"),
        "max_test_abnormal": data.get("max_test_abnormal"),
        "seed": int(seed),
    }


def select_split(
    metadata_dir: str | os.PathLike, data: Mapping[str, Any], seed: int
) -> splitlib.Selection:
    entries, train_val, test, _ = splitlib.load_metadata(metadata_dir)
    return splitlib.make_split(
        entries, train_val_list=train_val, test_list=test, **split_kwargs(data, seed)
    )
