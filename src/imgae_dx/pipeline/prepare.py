"""DVC stage ``prepare`` as an importable, testable function; ``stages/prepare.py`` calls it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from imgae_dx.data import split as splitlib
from imgae_dx.io import write_csv
from imgae_dx.pipeline.common import PREPARED, RAW, SPLIT


def prepare(params: Mapping[str, Any]) -> dict[str, Any]:
    """``prepare``: decode + resize every split into ``data/prepared/<split>.npy``."""
    from imgae_dx.data.prepare import prepare_split, scale_boxes

    size = params["data"]["image_size"]
    PREPARED.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name in splitlib.SPLITS:
        manifest = pd.read_csv(SPLIT / f"{name}.csv")
        sizes = prepare_split(
            manifest, RAW, PREPARED / f"{name}.npy", image_size=size, desc=f"prepare {name}"
        )
        counts[name] = len(manifest)
        if name == "test":
            boxes = pd.read_csv(SPLIT / "boxes.csv")
            write_csv(PREPARED / "boxes.csv", scale_boxes(boxes, manifest, sizes, size))
    return counts
