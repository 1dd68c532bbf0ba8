"""The report's figures (built by :mod:`imgae_dx.plots`) and ROC/PR point files.

Paths are relative to the report's output folder (``reports/`` in the pipeline), where
report.md links them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from imgae_dx import metrics, paths, plots
from imgae_dx.io import atomic_dir, save_figure
from imgae_dx.report.cells import interval
from imgae_dx.report.inputs import ModelMaps, ReportInputs
from imgae_dx.report.names import BASELINE_NAMES
from imgae_dx.report.results import Analysis, Interval

FIGURES = paths.FIGURES.relative_to(paths.REPORTS)  # figures/
PLOTS = paths.PLOT_POINTS.relative_to(paths.REPORTS)  # plots/{roc,pr}/<arch>.csv
MAX_PR_POINTS = 2000


def _thin(x: np.ndarray, y: np.ndarray, max_points: int = MAX_PR_POINTS) -> tuple:
    """At most ``max_points`` of a curve, evenly spaced by index, both ends kept."""
    if len(x) <= max_points:
        return x, y
    idx = np.unique(np.linspace(0, len(x) - 1, max_points).round().astype(int))
    return x[idx], y[idx]


def plot_points(an: Analysis) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """Per model with both classes: ROC points (collinear ones dropped) and PR points
    (recall increasing, thinned to :data:`MAX_PR_POINTS`)."""
    roc, pr = {}, {}
    for arch, t in an.scored.tests.items():
        y, s = t["label"].to_numpy(), t["score"].to_numpy(dtype=np.float64)
        if (y == 1).any() and (y == 0).any():
            fpr, tpr, _ = metrics.roc_curve(y, s, drop_intermediate=True)
            roc[arch] = pd.DataFrame({"fpr": fpr, "tpr": tpr})
            prec, rec, _ = metrics.pr_curve(y, s)
            rec, prec = _thin(rec[::-1], prec[::-1])
            pr[arch] = pd.DataFrame({"recall": rec, "precision": prec})
    return roc, pr


def write_plot_points(out: Path, roc: dict, pr: dict) -> None:
    for kind, frames in (("roc", roc), ("pr", pr)):
        with atomic_dir(out / PLOTS / kind) as tmp:
            for arch, df in frames.items():
                df.to_csv(
                    tmp / f"{arch}.csv", index=False, float_format="%.6g", lineterminator="\n"
                )


def _label(arch: str, name: str, value: float | None, ci: Interval | None) -> str:
    """The legend entry ``ae: AUROC 0.733 [0.694, 0.769]``."""
    if value is None:
        return arch
    return f"{arch}: {name} {value:.3f}" + (f" {interval(ci)}" if ci else "")


def roc_figure(an: Analysis, roc: dict[str, pd.DataFrame]) -> Figure:
    curves = [
        plots.Curve(
            df["fpr"].to_numpy(),
            df["tpr"].to_numpy(),
            _label(a, "AUROC", an.models[a].auroc, an.models[a].auroc_ci),
        )
        for a, df in roc.items()
    ]
    base = []
    for name, (y, s) in an.scored.baselines.items():
        if (y == 1).any() and (y == 0).any():
            fpr, tpr, _ = metrics.roc_curve(y, s, drop_intermediate=True)
            auroc = an.baselines[name].auroc
            base.append(plots.Curve(fpr, tpr, f"{BASELINE_NAMES[name]}: AUROC {auroc:.3f}"))
    return plots.roc_figure(curves, base)


def pr_figure(an: Analysis, pr: dict[str, pd.DataFrame]) -> Figure:
    curves = [
        plots.Curve(
            df["recall"].to_numpy(),
            df["precision"].to_numpy(),
            _label(a, "AUPRC", an.models[a].auprc, an.models[a].auprc_ci),
        )
        for a, df in pr.items()
    ]
    n_all = an.data.n_test_normal + an.data.n_test_abnormal
    return plots.pr_figure(curves, an.data.n_test_abnormal / n_all if n_all else None)


def score_dist_figure(an: Analysis) -> Figure:
    groups = {}
    for a, t in an.scored.tests.items():
        groups[a] = plots.ScoreGroups(
            val_normal=an.scored.vals[a]["score"].to_numpy(dtype=np.float64),
            test_normal=t.loc[t["label"] == 0, "score"].to_numpy(dtype=np.float64),
            test_abnormal=t.loc[t["label"] == 1, "score"].to_numpy(dtype=np.float64),
            threshold=an.models[a].threshold.value,
        )
    return plots.score_dist_figure(groups)


def _gallery_item(
    title: str, image: np.ndarray | None, mm: ModelMaps | None, j: int | None, boxes: list
) -> plots.GalleryItem:
    """One gallery cell: the input (else the reconstruction), reconstruction, map (row ``j``
    of ``mm``) and the image's boxes."""
    recon = mm.recon[j].astype(np.float32) if j is not None and mm.recon is not None else None
    amap = mm.amap[j].astype(np.float32) if j is not None else None
    if image is None:
        image = recon if recon is not None else np.zeros((2, 2), np.float32)
    return plots.GalleryItem(title=title, image=image, recon=recon, amap=amap, boxes=boxes)


def gallery_figure(an: Analysis, inputs: ReportInputs) -> Figure:
    """For each model, the ``report.gallery_n`` highest- and lowest-scored abnormal and normal
    test images."""
    n, boxes = an.params.gallery_n, an.scored.boxes
    man_idx = {}
    if inputs.test_manifest is not None and inputs.test_images is not None:
        man_idx = {im: i for i, im in enumerate(inputs.test_manifest["image"].astype(str))}

    def image(name: str) -> np.ndarray | None:
        i = man_idx.get(name)
        return inputs.test_images[i].astype(np.float32) / 255.0 if i is not None else None

    blocks: dict[str, list[plots.GalleryItem]] = {}
    for arch, test in an.scored.tests.items():
        mm = inputs.maps.get(arch)
        map_idx = {im: i for i, im in enumerate(mm.image)} if mm is not None else {}
        blocks[arch] = []
        for lab, name in ((1, "abnormal"), (0, "normal")):
            grp = test[test["label"] == lab].sort_values(["score", "image"], kind="mergesort")
            for which, sel in (("high", grp.iloc[::-1][:n]), ("low", grp.iloc[:n])):
                for r in sel.itertuples(index=False):
                    title = f"{name}, {which}\n{r.image}\ns={r.score:.3g}"
                    boxed = [b for _, b in boxes.get(r.image, [])]
                    item = _gallery_item(title, image(r.image), mm, map_idx.get(r.image), boxed)
                    blocks[arch].append(item)
    return plots.gallery_figure(blocks)


def write_figures(an: Analysis, inputs: ReportInputs, out: Path, roc: dict, pr: dict) -> None:
    """roc.png, pr.png, score_dist.png, gallery.png and train_curves.png under ``out``."""
    figures = out / FIGURES
    save_figure(roc_figure(an, roc), figures / "roc.png")
    save_figure(pr_figure(an, pr), figures / "pr.png")
    save_figure(score_dist_figure(an), figures / "score_dist.png")
    save_figure(gallery_figure(an, inputs), figures / "gallery.png")
    save_figure(plots.train_curves_figure(inputs.train_curves), figures / "train_curves.png")
