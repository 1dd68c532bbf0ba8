"""DVC stage ``split`` as an importable, testable function; ``stages/split.py`` calls it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from imgae_dx.data import split as splitlib
from imgae_dx.io import write_csv, write_json
from imgae_dx.pipeline.common import RAW, REPORTS, SPLIT, select_split


def split(params: Mapping[str, Any]) -> dict[str, Any]:
    """``split``: manifests, test boxes, a summary and a figure of sample images."""
    data = params["data"]
    sel = select_split(RAW, data, params["seed"])
    splits = sel.as_dict()
    _, _, _, boxes = splitlib.load_metadata(RAW)
    boxes = boxes[boxes["image"].isin(set(sel.test["image"]))].sort_values(["image", "finding"])
    for name, df in splits.items():
        write_csv(SPLIT / f"{name}.csv", df)
    write_csv(SPLIT / "boxes.csv", boxes.reset_index(drop=True))
    summary = splitlib.summarize(splits, data["source"])
    summary["n_test_boxes"] = int(len(boxes))
    write_json(SPLIT / "summary.json", summary)
    from imgae_dx.data.samples import samples_figure

    samples_figure(
        RAW,
        sel.test,
        boxes,
        REPORTS / "figures" / f"{data['source']}_samples.png",
        title=f"{data['source']} data: sample test images",
    )
    return summary
