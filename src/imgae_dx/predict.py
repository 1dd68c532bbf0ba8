"""``imgae-dx predict``: score new films with a detector, one row per film.

Films are read and preprocessed exactly as ``prepare`` does (:mod:`imgae_dx.data.films`),
scored in batches by the detector's network (torch on the GPU when there is one, or ONNX
Runtime for an exported ``.onnx`` detector, :mod:`imgae_dx.export`) and turned into decisions
by the detector's threshold and validation-normal quantiles (:class:`imgae_dx.detector.Detector`).
A film that cannot be scored gets one line in ``error`` and the run goes on.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from imgae_dx.data.films import FILM_SUFFIXES, FilmError, Source, is_dicom, load_film
from imgae_dx.detector import SIZE_TOLERANCE, Detector, load_detector
from imgae_dx.errors import UserError
from imgae_dx.inference import Scores

COLUMNS = ["path", "score", "percentile_among_normals", "flagged", "error"]
#: Scores a batch of preprocessed films: ``(images (B, S, S) uint8, keep_maps) -> Scores``.
Scorer = Callable[[np.ndarray, bool], Scores]


# ---- which files -----------------------------------------------------------------------------
def collect_inputs(inputs: Sequence[str]) -> list[tuple[str, str | None]]:
    """``(path, error)`` for every film an INPUT names: a file, a folder (recursively: the
    :data:`FILM_SUFFIXES` and files with the DICOM preamble), or a glob; an INPUT that names
    nothing is one row with its error."""
    out: list[tuple[str, str | None]] = []
    for arg in inputs:
        p = Path(arg)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and _is_film(f))
            out += [(str(f), None) for f in found] or [(arg, "folder holds no PNG, JPEG or DICOM")]
        elif p.is_file():
            out.append((arg, None))
        elif glob.has_magic(arg):
            found = sorted(f for f in glob.glob(arg, recursive=True) if os.path.isfile(f))
            out += [(f, None) for f in found] or [(arg, "pattern matches no file")]
        else:
            out.append((arg, "no such file or folder"))
    return out


def _is_film(path: Path) -> bool:
    if path.suffix.lower() in FILM_SUFFIXES:
        return True
    if path.suffix:
        return False
    try:
        with open(path, "rb") as f:
            return is_dicom(f.read(132))
    except OSError:
        return False


# ---- scoring ---------------------------------------------------------------------------------
def torch_scorer(detector: Detector, device: str = "auto", batch_size: int = 128) -> Scorer:
    """Score with the detector's torch network (``device`` auto: CUDA when there is one)."""
    from imgae_dx.config import ScoreParams
    from imgae_dx.device import inference_device
    from imgae_dx.inference import make_lpips_fn, score_images

    dev = inference_device(device)
    method = detector.method
    lpips_fn = None
    if method.saliency == "lpips":
        lp = detector.meta["lpips"]
        sp = ScoreParams(
            saliency="lpips", lpips_weights=lp["weights"], lpips_net=lp["net"],
            lpips_backbone_weights=lp.get("backbone_weights"),
        )  # fmt: skip
        lpips_fn = make_lpips_fn(sp, dev)

    def score(images: np.ndarray, keep_maps: bool) -> Scores:
        return score_images(
            detector.model, images, method, batch_size=batch_size, device=dev,
            lpips_fn=lpips_fn, keep_maps=keep_maps, desc="score",
        )  # fmt: skip

    return score


def open_detector(
    path: str | os.PathLike, device: str = "auto", batch_size: int = 128
) -> tuple[Detector, Scorer]:
    """Load a ``.pt`` or ``.onnx`` detector and its scorer; a bad file is an error now."""
    det = load_detector(path)
    if Path(path).suffix.lower() == ".onnx":
        from imgae_dx.export import onnx_scorer

        return det, onnx_scorer(path, det, batch_size=batch_size)
    return det, torch_scorer(det, device, batch_size)


def predict_films(
    detector: Detector,
    scorer: Scorer,
    films: Iterable[tuple[str, Source | None, str | None]],
    *,
    batch_size: int = 128,
    size_tolerance: float = SIZE_TOLERANCE,
    heatmap_dir: str | os.PathLike | None = None,
    total: int | None = None,
) -> pd.DataFrame:
    """One row per ``(name, source, error)`` in :data:`COLUMNS` order (plus ``heatmap`` with
    ``heatmap_dir``); a film with an error (given, or found reading it) is not scored."""
    check = detector.film_check(size_tolerance)
    rows: list[dict] = []
    batch: list[tuple[int, np.ndarray]] = []
    bar = tqdm(total=total, desc="predict", unit="film", disable=None, leave=False)
    for name, source, error in films:
        row = {"path": name, "score": np.nan, "percentile_among_normals": np.nan}
        rows.append(row | {"flagged": pd.NA, "error": error})
        if error is None:
            try:
                batch.append((len(rows) - 1, load_film(source, check).image))
            except FilmError as e:
                rows[-1]["error"] = str(e)
        if len(batch) >= batch_size:
            _score(detector, scorer, batch, rows, heatmap_dir)
            batch = []
        bar.update(1)
    if batch:
        _score(detector, scorer, batch, rows, heatmap_dir)
    bar.close()
    out = pd.DataFrame(rows, columns=COLUMNS + (["heatmap"] if heatmap_dir else []))
    out["flagged"] = out["flagged"].astype("boolean")
    return out


def _score(det: Detector, scorer: Scorer, batch: list, rows: list[dict], heatmap_dir) -> None:
    idx = [i for i, _ in batch]
    images = np.stack([img for _, img in batch])  # (B, S, S) uint8
    out = scorer(images, heatmap_dir is not None)
    pct = det.percentile_among_normals(out.scores)
    flags = det.flagged(out.scores)
    for k, i in enumerate(idx):
        rows[i].update(
            score=float(out.scores[k]),
            percentile_among_normals=float(pct[k]),
            flagged=bool(flags[k]),
        )
        if heatmap_dir is not None:
            rows[i]["heatmap"] = _heatmap(det, rows[i], images[k], out.maps[k], i, heatmap_dir)


def _heatmap(det: Detector, row: dict, image: np.ndarray, amap: np.ndarray, i: int, out_dir) -> str:
    """``<out_dir>/<i>_<stem>.png``: the film with its anomaly map over it."""
    from imgae_dx.io import save_figure
    from imgae_dx.plots import heatmap_figure

    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(row["path"]).stem)[:80]
    path = Path(out_dir) / f"{i:05d}_{stem}.png"
    verdict = "flagged" if row["flagged"] else "not flagged"
    title = (
        f"{Path(row['path']).name}\nscore {row['score']:.4g} (threshold {det.threshold:.4g}, "
        f"percentile {row['percentile_among_normals']:.1f} among normals): {verdict}"
    )
    save_figure(heatmap_figure(image, amap.astype(np.float32), title), path)
    return str(path)


# ---- the command -----------------------------------------------------------------------------
def run_predict(
    detector_path: str,
    inputs: Sequence[str],
    out_dir: str,
    *,
    heatmaps: bool = False,
    batch_size: int = 64,
    device: str = "auto",
    size_tolerance: float = SIZE_TOLERANCE,
) -> pd.DataFrame:
    """``imgae-dx predict``: ``<out_dir>/predictions.csv`` (and ``heatmaps/``)."""
    from imgae_dx.io import write_csv

    det, scorer = open_detector(detector_path, device, batch_size)  # fails before any film
    found = collect_inputs(inputs)
    if not any(err is None for _, err in found):
        raise UserError(f"no film to score in {' '.join(inputs)}: {found[0][1] if found else ''}")
    out = Path(out_dir)
    hm = out / "heatmaps" if heatmaps else None
    if hm is not None:
        hm.mkdir(parents=True, exist_ok=True)
    films = ((p, p if err is None else None, err) for p, err in found)
    df = predict_films(
        det, scorer, films, batch_size=batch_size, size_tolerance=size_tolerance,
        heatmap_dir=hm, total=len(found),
    )  # fmt: skip
    write_csv(out / "predictions.csv", df, float_format="%.10g")
    return df
