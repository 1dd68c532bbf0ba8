"""A figure of sample images with their ground-truth boxes, for any NIH-format mirror.

Source-agnostic: it reads the split's test manifest, the boxes of ``BBox_List_2017.csv`` and
the PNGs of ``data/raw`` (Kaggle layout ``images_00N/images/``, or the official archives'
``images/``), so the synthetic phantom and the real NIH data are shown the same way and a
person can judge realism at a glance: normal PA and AP images first, then one or two examples
per finding present, each box drawn and labelled.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from imgae_dx.data import nih
from imgae_dx.io import save_figure

_BOX_COLOR = "#39ff14"
_OTHER_COLOR = "#ffd400"


def find_image(raw_dir: str | os.PathLike, name: str) -> Path | None:
    """Path of image ``name`` under ``raw_dir`` (Kaggle shard layout, or a flat ``images/`` as
    the official archives and MedIAnomaly have it)."""
    raw_dir = Path(raw_dir)
    sharded = [raw_dir / nih.image_relpath(name)] if nih.IMAGE_RE.match(name) else []
    candidates = [*sharded, raw_dir / "images" / name, raw_dir / name]
    for p in candidates:
        if p.is_file():
            return p
    for p in sorted(raw_dir.glob(f"images_*/images/{name}")):
        return p
    return None


def _findings(value: str) -> list[str]:
    return nih.parse_findings(str(value))


def _pick(rng: np.random.Generator, names: list[str], k: int) -> list[str]:
    if len(names) <= k:
        return names
    return sorted(rng.choice(names, size=k, replace=False).tolist())


def choose_samples(
    test_manifest: pd.DataFrame,
    boxes: pd.DataFrame,
    *,
    n_normal: int = 3,
    per_finding: int = 1,
    seed: int = 0,
) -> list[tuple[str, str, str]]:
    """Panels to show: ``(image, kind, view)`` with kind ``"normal"`` or a finding label.

    Normals: ``n_normal`` per view (or without one). Findings (NIH's in label order, then any
    other, such as MedIAnomaly's "Abnormal"; those present in the manifest):
    ``per_finding`` images each, preferring images with a box for it and no other finding.
    """
    rng = np.random.default_rng(seed)
    df = test_manifest.copy()
    df["view"] = df["view"].fillna("").astype(str) if "view" in df else ""
    df["_f"] = df["findings"].map(_findings)
    views = df.set_index("image")["view"].to_dict()
    panels: list[tuple[str, str, str]] = []
    normal = df[df["_f"].map(len) == 0]
    for view in (*nih.VIEWS, ""):
        names = sorted(normal.loc[normal["view"] == view, "image"])
        panels += [(n, "normal", view) for n in _pick(rng, names, n_normal)]
    boxed = set(zip(boxes["image"], boxes["finding"])) if len(boxes) else set()
    others = sorted({f for fs in df["_f"] for f in fs} - set(nih.LABELS))  # e.g. "Abnormal"
    for lab in (*nih.LABELS, *others):
        has = df[df["_f"].map(lambda fs, lab=lab: lab in fs)]
        if has.empty:
            continue
        with_box = has[[(n, lab) in boxed for n in has["image"]]]
        alone = with_box[with_box["_f"].map(len) == 1]
        for pool in (alone, with_box, has):
            if len(pool):
                chosen = _pick(rng, sorted(pool["image"]), per_finding)
                break
        panels += [(n, lab, views.get(n, "")) for n in chosen]
    return panels


def samples_figure(
    raw_dir: str | os.PathLike,
    test_manifest: pd.DataFrame,
    boxes: pd.DataFrame,
    out_png: str | os.PathLike,
    *,
    title: str,
    n_normal: int = 3,
    per_finding: int = 1,
    columns: int = 6,
    panel_inches: float = 3.0,
    seed: int = 0,
) -> list[tuple[str, str, str]]:
    """Write a grid of sample test images with their boxes to ``out_png``; returns the panels.

    Args:
        raw_dir: the NIH-format mirror holding the PNGs.
        test_manifest: the test split (``image, findings`` and ideally ``view``).
        boxes: ``image, finding, x, y, w, h`` in PNG pixels (``nih.read_bbox``).
        out_png: figure path (written atomically).
        title: figure title.
    """
    from matplotlib.figure import Figure

    panels = choose_samples(
        test_manifest, boxes, n_normal=n_normal, per_finding=per_finding, seed=seed
    )
    n = max(len(panels), 1)
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(cols * panel_inches, rows * (panel_inches + 0.45)))
    axes = fig.subplots(rows, cols, squeeze=False)
    by_image = {k: g for k, g in boxes.groupby("image")} if len(boxes) else {}
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, kind, view) in zip(axes.flat, panels):
        _panel(ax, find_image(raw_dir, name), name, kind, view, by_image.get(name))
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    save_figure(fig, out_png)
    return panels


def _panel(ax, path: Path | None, name: str, kind: str, view: str, boxes: pd.DataFrame | None):
    """One image with its title and, for a finding, every box of the image."""
    if path is None:
        ax.text(0.5, 0.5, f"{name}\nnot found", ha="center", va="center", transform=ax.transAxes)
        return
    with Image.open(path) as im:
        img = np.asarray(im.convert("L"))
    ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="lanczos")
    label = "No Finding" if kind == "normal" else kind
    ax.set_title(f"{label} ({view or '?'})\n{name}", fontsize=9)
    if boxes is None or kind == "normal":
        return
    for r in boxes.itertuples(index=False):
        _box(ax, r, main=r.finding == kind)


def _box(ax, r, *, main: bool) -> None:
    """A box and its label: solid green for the panel's finding, dashed yellow for others."""
    from matplotlib.patches import Rectangle

    color = _BOX_COLOR if main else _OTHER_COLOR
    ax.add_patch(
        Rectangle(
            (r.x, r.y), r.w, r.h, fill=False, lw=1.6 if main else 1.0, ec=color,
            ls="-" if main else "--",
        )
    )  # fmt: skip
    ax.text(
        r.x, max(r.y - 2, 0), r.finding, color=color, fontsize=7, va="bottom",
        bbox={"facecolor": "black", "alpha": 0.5, "pad": 0.5, "lw": 0},
    )  # fmt: skip
