"""DVC stage ``prepare``: uint8 arrays at ``data.image_size``; ``stages/prepare.py`` calls it."""

from __future__ import annotations

import pandas as pd

from imgae_dx import paths
from imgae_dx.config import Params
from imgae_dx.data.issues import Issue, check_fraction, issues_frame
from imgae_dx.data.prepare import prepare_split, scale_boxes
from imgae_dx.io import write_csv


def prepare(params: Params) -> dict[str, int]:
    """Decode + resize every split into ``data/prepared/<split>.npy`` and the manifest of the
    images it holds (``<split>.csv``); test boxes rescaled; repairs and exclusions listed in
    ``data/prepared/issues.csv``. Fails, once everything is written, when a split lost more
    than ``data.max_bad_fraction`` of its images."""
    size = params.data.image_size
    counts, issues, excluded = {}, [], {}
    for name in paths.SPLITS:
        manifest = pd.read_csv(paths.manifest(name))
        done = prepare_split(
            manifest, paths.RAW, paths.prepared(name), image_size=size, split=name,
            desc=f"prepare {name}",
        )  # fmt: skip
        kept = manifest[done.kept].reset_index(drop=True)
        write_csv(paths.prepared_manifest(name), kept)
        if name == "test":
            boxes = pd.read_csv(paths.SPLIT_BOXES)
            write_csv(paths.PREPARED_BOXES, scale_boxes(boxes, kept, done.sizes, size))
        counts[name] = len(kept)
        excluded[name] = (len(manifest) - len(kept), len(manifest))
        issues += done.issues
    write_csv(paths.PREPARED_ISSUES, issues_frame(issues))
    _check(excluded, params.data.max_bad_fraction)
    return counts | _issue_counts(issues)


def _check(excluded: dict[str, tuple[int, int]], limit: float) -> None:
    for name, (n_bad, n) in excluded.items():
        what = f"{name} images of {paths.manifest(name)}"
        check_fraction(n_bad, n, limit, what=what, issues_path=paths.PREPARED_ISSUES)


def _issue_counts(issues: list[Issue]) -> dict[str, int]:
    return {
        "n_repaired": len({(i.split, i.image) for i in issues if i.action == "repaired"}),
        "n_excluded": sum(i.action == "excluded" for i in issues),
    }
