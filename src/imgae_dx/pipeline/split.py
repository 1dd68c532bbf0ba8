"""DVC stage ``split``: patient-level manifests; ``stages/split.py`` calls it."""

from __future__ import annotations

from typing import Any

import pandas as pd

from imgae_dx import paths
from imgae_dx.config import Params
from imgae_dx.data import medianomaly, nih
from imgae_dx.data import split as splitlib
from imgae_dx.data.issues import Issue, check_fraction, issues_frame
from imgae_dx.data.samples import samples_figure
from imgae_dx.io import write_csv, write_json


def split(params: Params) -> dict[str, Any]:
    """``split``: manifests, test boxes, a summary, a figure of sample images, and the
    malformed metadata rows left out (``data/split/issues.csv``; fails above
    ``data.max_bad_fraction`` of the rows, once that file is written)."""
    source = params.data.source
    if source == "medianomaly":
        sel, boxes = _listed(params)
    else:
        meta = _metadata(params.data.max_bad_fraction)
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


def _listed(params: Params) -> tuple[splitlib.Selection, pd.DataFrame]:
    """MedIAnomaly's listing (``data/raw/data.json``) split, its left-out names in
    ``data/split/issues.csv``; no boxes (the listing has none)."""
    path = paths.RAW / medianomaly.DATA_JSON
    listing, bad = medianomaly.read_listing(path)
    issues = [Issue("split", "", b.image, None, "excluded", b.problem, b.message) for b in bad]
    write_csv(paths.SPLIT_ISSUES, issues_frame(issues))
    n_names = sum(map(len, listing)) + len(bad)
    check_fraction(
        len(bad), n_names, params.data.max_bad_fraction, what=f"names of {path}",
        issues_path=paths.SPLIT_ISSUES,
    )  # fmt: skip
    boxes = pd.DataFrame(columns=["image", "finding", "x", "y", "w", "h"])
    return splitlib.select_listed(listing, params.data, params.seed), boxes


def _metadata(max_bad_fraction: float) -> splitlib.Metadata:
    """The mirror's metadata without its malformed ``Data_Entry_2017.csv`` rows, which go to
    ``data/split/issues.csv``."""
    meta, bad = splitlib.load_metadata_lenient(paths.RAW)
    write_csv(paths.SPLIT_ISSUES, issues_frame(_row_issue(r) for r in bad))
    n_rows = len(meta.entries) + len(bad)
    what = f"rows of {paths.RAW / nih.DATA_ENTRY}"
    check_fraction(len(bad), n_rows, max_bad_fraction, what=what, issues_path=paths.SPLIT_ISSUES)
    return meta


def _row_issue(row: nih.RowIssue) -> Issue:
    problem = "duplicate row" if row.field == nih.DUPLICATE else f"malformed row: {row.field}"
    return Issue("split", "", row.image, row.line, "excluded", problem, row.message)
