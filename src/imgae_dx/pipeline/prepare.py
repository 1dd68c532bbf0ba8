"""DVC stage ``prepare``: uint8 arrays at ``data.image_size``; ``stages/prepare.py`` calls it."""

from __future__ import annotations

import pandas as pd

from imgae_dx import paths
from imgae_dx.config import Params
from imgae_dx.data.prepare import prepare_split, scale_boxes
from imgae_dx.io import write_csv


def prepare(params: Params) -> dict[str, int]:
    """Decode + resize every split into ``data/prepared/<split>.npy``; test boxes rescaled."""
    size = params.data.image_size
    counts = {}
    for name in paths.SPLITS:
        manifest = pd.read_csv(paths.manifest(name))
        sizes = prepare_split(
            manifest, paths.RAW, paths.prepared(name), image_size=size, desc=f"prepare {name}"
        )
        counts[name] = len(manifest)
        if name == "test":
            boxes = pd.read_csv(paths.SPLIT_BOXES)
            write_csv(paths.PREPARED_BOXES, scale_boxes(boxes, manifest, sizes, size))
    return counts
