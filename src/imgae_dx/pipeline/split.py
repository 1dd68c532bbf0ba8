"""DVC stage ``split``: patient-level manifests; ``stages/split.py`` calls it."""

from __future__ import annotations

from typing import Any

from imgae_dx import paths
from imgae_dx.config import Params
from imgae_dx.data import split as splitlib
from imgae_dx.data.samples import samples_figure
from imgae_dx.io import write_csv, write_json


def split(params: Params) -> dict[str, Any]:
    """``split``: manifests, test boxes, a summary and a figure of sample images."""
    source = params.data.source
    meta = splitlib.load_metadata(paths.RAW)
    sel = splitlib.select(meta, params.data, params.seed)
    boxes = meta.boxes[meta.boxes["image"].isin(set(sel.test["image"]))]
    boxes = boxes.sort_values(["image", "finding"])
    for name, df in sel.as_dict().items():
        write_csv(paths.manifest(name), df)
    write_csv(paths.SPLIT_BOXES, boxes.reset_index(drop=True))
    summary = splitlib.summarize(sel.as_dict(), source)
    summary["n_test_boxes"] = int(len(boxes))
    write_json(paths.SUMMARY, summary)
    samples_figure(
        paths.RAW,
        sel.test,
        boxes,
        paths.samples_figure(source),
        title=f"{source} data: sample test images",
    )
    return summary
