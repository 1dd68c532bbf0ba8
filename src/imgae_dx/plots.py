"""Report figures (matplotlib, object API, no global pyplot state). Each builder returns a
``matplotlib.figure.Figure``; save it with ``imgae_dx.io.save_figure`` (atomic, fixed metadata,
so the same inputs give the same PNG bytes)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

_COLORS = (
    "tab:blue",
    "tab:orange",
    "tab:green",
    "tab:red",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:olive",
    "tab:cyan",
)
_BASELINE_STYLE = {"color": "0.45", "lw": 1.0}
_BASELINE_DASHES = ("--", "-.", ":")


def arch_color(i: int) -> str:
    return _COLORS[i % len(_COLORS)]


@dataclass
class Curve:
    """One line: x and y coordinates and its legend label."""

    x: np.ndarray
    y: np.ndarray
    label: str


def roc_figure(curves: Sequence[Curve], baselines: Sequence[Curve] = ()) -> Figure:
    """ROC curves of all architectures on one axis; trivial baselines dashed in grey."""
    fig = Figure(figsize=(5.6, 5.2))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.75", lw=0.8, ls=":", label="chance (0.5)")
    for i, c in enumerate(baselines):
        ax.plot(c.x, c.y, ls=_BASELINE_DASHES[i % 3], label=c.label, **_BASELINE_STYLE)
    for i, c in enumerate(curves):
        ax.plot(c.x, c.y, color=arch_color(i), lw=1.8, label=c.label, drawstyle="default")
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.01),
        xlabel="1 − specificity (false positive rate)",
        ylabel="sensitivity (true positive rate)",
        title="ROC, test set",
    )
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=7.5, framealpha=0.9)
    return fig


def pr_figure(curves: Sequence[Curve], prevalence: float | None = None) -> Figure:
    """Precision-recall curves (recall on x); the prevalence line is a random ranking."""
    fig = Figure(figsize=(5.6, 5.2))
    ax = fig.add_subplot()
    if prevalence is not None:
        ax.axhline(prevalence, color="0.6", lw=0.8, ls=":", label=f"prevalence ({prevalence:.3f})")
    for i, c in enumerate(curves):
        ax.plot(c.x, c.y, color=arch_color(i), lw=1.8, label=c.label, drawstyle="steps-pre")
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.01),
        xlabel="recall (sensitivity)",
        ylabel="precision",
        title="Precision-recall, test set",
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=7.5, framealpha=0.9)
    return fig


@dataclass
class ScoreGroups:
    """Scores of one architecture by group, plus its operating threshold (val normals)."""

    val_normal: np.ndarray
    test_normal: np.ndarray
    test_abnormal: np.ndarray
    threshold: float | None = None


def score_dist_figure(groups: Mapping[str, ScoreGroups]) -> Figure:
    """Histograms (density) of normal vs abnormal test scores per architecture."""
    n = max(len(groups), 1)
    fig = Figure(figsize=(4.2 * n, 3.4))
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (arch, g) in zip(axes, groups.items()):
        allv = np.concatenate([g.val_normal, g.test_normal, g.test_abnormal]).astype(np.float64)
        lo, hi = np.percentile(allv, [0.5, 99.5]) if allv.size else (0.0, 1.0)
        if not hi > lo:
            lo, hi = lo - 0.5, hi + 0.5
        bins = np.linspace(lo, hi, 41)
        kw = {"bins": bins, "density": True}
        series = (
            (g.test_normal, "test normal", {"alpha": 0.5, "color": "tab:blue"}),
            (g.test_abnormal, "test abnormal", {"alpha": 0.5, "color": "tab:red"}),
            (g.val_normal, "val normal", {"histtype": "step", "color": "k", "lw": 1.0}),
        )
        for values, name, style in series:
            if values.size:
                ax.hist(np.clip(values, lo, hi), label=f"{name} (n={values.size})", **style, **kw)
        if g.threshold is not None:
            ax.axvline(g.threshold, color="k", ls="--", lw=1.0, label="threshold (val normals)")
        ax.set(title=arch, xlabel="anomaly score (clipped to 0.5–99.5 %)", ylabel="density")
        ax.legend(fontsize=7)
    return fig


@dataclass
class GalleryItem:
    """One example: input, reconstruction and anomaly map (H, W) in display units, its boxes."""

    title: str
    image: np.ndarray
    recon: np.ndarray | None
    amap: np.ndarray | None
    boxes: Sequence[tuple[float, float, float, float]] = field(default_factory=tuple)


def _draw_boxes(ax, boxes) -> None:
    for x, y, w, h in boxes:
        # pixel (r, c) is drawn centred on (c, r): box corners sit at -0.5 offsets
        ax.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, ec="lime", lw=1.0))


def gallery_figure(blocks: Mapping[str, Sequence[GalleryItem]]) -> Figure:
    """Rows: for each architecture, input / reconstruction / anomaly map; columns: examples.

    Anomaly maps of one architecture share one colour scale (0 to the 99th percentile of the
    displayed maps), so brighter means more anomalous across its columns.
    """
    ncol = max((len(v) for v in blocks.values()), default=1) or 1
    nblk = max(len(blocks), 1)
    fig = Figure(figsize=(1.55 * ncol + 0.6, 5.3 * nblk))
    subfigs = np.atleast_1d(fig.subfigures(nblk, 1, hspace=0.02))
    for sf, (arch, items) in zip(subfigs, blocks.items()):
        axes = sf.subplots(3, ncol, squeeze=False)
        for ax in axes.ravel():
            ax.set_axis_off()
        maps = [it.amap for it in items if it.amap is not None]
        vmax = float(np.percentile(np.concatenate([m.ravel() for m in maps]), 99)) if maps else 1.0
        vmax = vmax if vmax > 0 else 1.0
        for ci, it in enumerate(items):
            rows = [
                ("input", it.image, "gray", 0.0, 1.0),
                ("reconstruction", it.recon, "gray", 0.0, 1.0),
                ("anomaly map", it.amap, "inferno", 0.0, vmax),
            ]
            for ri, (kind, arr, cmap, vmin, vmx) in enumerate(rows):
                ax = axes[ri, ci]
                if ci == 0:
                    ax.set_axis_on()
                    ax.set_xticks([])
                    ax.set_yticks([])
                    ax.set_ylabel(kind, fontsize=8)
                if arr is None:
                    continue
                ax.imshow(arr, cmap=cmap, vmin=vmin, vmax=vmx, interpolation="nearest")
                if kind != "reconstruction":
                    _draw_boxes(ax, it.boxes)
                if ri == 0:
                    ax.set_title(it.title, fontsize=6.5)
        sf.suptitle(arch, fontsize=11, fontweight="bold")
        sf.subplots_adjust(wspace=0.05, hspace=0.08, top=0.86, bottom=0.02)
    return fig


def train_curves_figure(curves: Mapping[str, pd.DataFrame]) -> Figure:
    """Per architecture: train and validation loss per epoch; the best val epoch is marked."""
    n = max(len(curves), 1)
    fig = Figure(figsize=(4.0 * n, 3.2))
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (arch, df) in zip(axes, curves.items()):
        x = df["epoch"].to_numpy() if "epoch" in df else np.arange(1, len(df) + 1)
        plotted = []
        for col, style in (("train_loss", "-"), ("val_loss", "--")):
            if col in df and df[col].notna().any():
                v = df[col].to_numpy(dtype=np.float64)
                ax.plot(x, v, ls=style, marker=".", ms=3, label=col.replace("_", " "))
                plotted.append(v)
        if "val_loss" in df and df["val_loss"].notna().any():
            best = int(np.nanargmin(df["val_loss"].to_numpy(dtype=np.float64)))
            ax.axvline(x[best], color="0.5", ls=":", lw=1.0, label=f"best val (epoch {x[best]})")
        lo = min((np.nanmin(v) for v in plotted), default=0.0)
        hi = max((np.nanmax(v) for v in plotted), default=0.0)
        if lo > 0 and hi / lo > 20:  # losses spanning decades read better on a log axis
            ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(title=arch, xlabel="epoch", ylabel="loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def heatmap_figure(image: np.ndarray, amap: np.ndarray, title: str) -> Figure:
    """One film (S, S) uint8 with its anomaly map (S, S) over it, a colour bar and ``title``
    (``imgae-dx predict --heatmaps``)."""
    fig = Figure(figsize=(4.2, 4.6))
    ax = fig.add_subplot()
    ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    hi = float(np.max(amap)) if amap.size and np.max(amap) > 0 else 1.0
    shown = ax.imshow(amap, cmap="inferno", alpha=0.45, vmin=0.0, vmax=hi, interpolation="bilinear")
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="anomaly map")
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()
    return fig
