"""The self-contained detector: one file that turns films into anomaly scores and decisions.

``models/detectors/<arch>/seed<k>.pt`` (written by the ``detector@<arch>-<seed>`` stage) holds the network
(``arch``, ``model_args``, ``state_dict``, as in ``models/<arch>.pt``) and, in ``meta``, all
that scoring a new film needs (``docs/architecture.md``, "Detectors"):

- ``preprocessing``: the input size and what :func:`imgae_dx.data.prepare.preprocess` does;
- ``score_method``: the map and its settings (:class:`imgae_dx.inference.ScoreMethod`);
- ``threshold``: the operating threshold, a percentile of the validation normals' scores
  (the report's, :func:`imgae_dx.metrics.threshold_from_normals`); a film is flagged when its
  score is above it;
- ``normal_quantiles``: the validation normals' score quantiles, which turn a score into its
  percentile among normals;
- ``training``: what it was trained on (source, shards, views, counts, film sizes), its
  params and training summary.

Loading needs only this package (no params.yaml, no repository). The same ``meta`` travels
as JSON in the ONNX export (:mod:`imgae_dx.export`) and the MLflow model.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imgae_dx.checkpoint import CheckpointError, model_from_checkpoint, read_checkpoint
from imgae_dx.data.films import FilmCheck
from imgae_dx.errors import one_line
from imgae_dx.inference import ScoreMethod
from imgae_dx.io import save_torch

FORMAT = "imgae_dx.detector/1"
#: Quantile levels stored (percent): 0, 0.1, ..., 100.
QUANTILE_LEVELS = np.round(np.linspace(0.0, 100.0, 1001), 6)
#: Default of ``--size-tolerance``: a film side may be 2x outside the training films' range.
SIZE_TOLERANCE = 2.0


class DetectorError(CheckpointError):
    """A detector file that cannot be used; raised before any film is read."""


@dataclass(frozen=True)
class Detector:
    """A loaded detector: the network (torch; None for an ONNX file) and its ``meta``."""

    meta: dict[str, Any]
    model: Any = None  # AnomalyModel, eval mode

    @property
    def arch(self) -> str:
        return self.meta["arch"]

    @property
    def image_size(self) -> int:
        return int(self.meta["preprocessing"]["image_size"])

    @property
    def method(self) -> ScoreMethod:
        return ScoreMethod(**self.meta["score_method"])

    @property
    def threshold(self) -> float:
        return float(self.meta["threshold"]["value"])

    def film_check(self, size_tolerance: float = SIZE_TOLERANCE) -> FilmCheck:
        t = self.meta["training"]
        sides = tuple(int(v) for v in t["film_sides"])
        return FilmCheck(self.image_size, tuple(t["views"]), sides, float(size_tolerance))

    def percentile_among_normals(self, scores: np.ndarray) -> np.ndarray:
        """Percent of validation normals scoring at most ``scores`` (interpolated quantiles)."""
        q = self.meta["normal_quantiles"]
        return np.interp(np.asarray(scores, np.float64), q["values"], q["levels"])

    def flagged(self, scores: np.ndarray) -> np.ndarray:
        """Abnormal at the operating point: ``score > threshold`` (as the report counts)."""
        return np.asarray(scores, np.float64) > self.threshold


def normal_quantiles(val_normal_scores: np.ndarray) -> dict[str, list[float]]:
    """The validation normals' score at each of :data:`QUANTILE_LEVELS`."""
    s = np.asarray(val_normal_scores, np.float64)
    values = np.percentile(s, QUANTILE_LEVELS)
    return {"levels": QUANTILE_LEVELS.tolist(), "values": np.maximum.accumulate(values).tolist()}


def build_meta(
    checkpoint: Mapping[str, Any],
    image_size: int,
    method: ScoreMethod,
    threshold: Mapping[str, Any],
    quantiles: Mapping[str, list[float]],
    training: Mapping[str, Any],
    lpips: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON-able ``meta`` of a detector; ``checkpoint`` is ``models/<arch>.pt``'s content,
    ``image_size`` the side its network was trained at."""
    from imgae_dx import __version__

    train_keys = ("best_epoch", "best_val_loss", "initial_val_loss", "n_parameters", "params")
    meta = {
        "format": FORMAT,
        "package_version": __version__,
        "arch": checkpoint["arch"],
        "model_args": dict(checkpoint["model_args"]),
        "preprocessing": preprocessing(int(image_size)),
        "score_method": method.as_dict(),
        "lpips": dict(lpips) if lpips else None,
        "threshold": dict(threshold),
        "normal_quantiles": dict(quantiles),
        "training": {**training, **{k: checkpoint[k] for k in train_keys if k in checkpoint}},
    }
    return json.loads(json.dumps(meta))  # plain JSON types only (safe to unpickle, to embed)


def preprocessing(image_size: int) -> dict[str, Any]:
    """What :func:`imgae_dx.data.prepare.preprocess` does, recorded with the detector."""
    return {
        "image_size": image_size,
        "dtype": "uint8 grayscale, scaled to [0, 1] as float32 by the network input",
        "resize": "PIL box filter (area average) to image_size x image_size",
        "colour": "grayscale stored as RGB(A)/palette: ITU-R 601-2 luma; colour pictures refused",
        "sixteen_bit_png": "scaled to 8 bits by the film's maximum",
        "dicom": "modality LUT, VOI LUT or window, MONOCHROME1 inverted, to 8 bits",
    }


def save_detector(path: str | os.PathLike, checkpoint: Mapping[str, Any], meta: dict) -> None:
    """Write ``path`` (atomic): the network of ``checkpoint`` and ``meta``."""
    obj = {
        "format": FORMAT,
        "arch": checkpoint["arch"],
        "model_args": dict(checkpoint["model_args"]),
        "state_dict": checkpoint["state_dict"],
        "meta": meta,
    }
    save_torch(path, obj)


REQUIRED_META = ("arch", "preprocessing", "score_method", "threshold", "normal_quantiles")


def check_meta(meta: Any, where: str) -> dict[str, Any]:
    """``meta`` if it is a detector's; a one-line :class:`DetectorError` naming ``where``."""
    if not isinstance(meta, Mapping) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, Mapping) else type(meta).__name__
        raise DetectorError(
            f"{where}: not an ImgAE-Dx detector (format {found!r}, expected {FORMAT!r}); "
            "use models/detectors/<arch>/seed<k>.pt, written by `dvc repro detector@<arch>-<seed>`"
        )
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise DetectorError(f"{where}: detector metadata lacks {missing}; rebuild it")
    try:
        ScoreMethod(**meta["score_method"])
    except TypeError as e:
        raise DetectorError(f"{where}: unknown score_method ({e}); rebuild the detector") from e
    return dict(meta)


def load_detector(path: str | os.PathLike) -> Detector:
    """Load a detector file (``.pt``), network and all; any problem is one line, raised now."""
    where = str(path)
    if Path(path).suffix.lower() == ".onnx":
        from imgae_dx.export import read_onnx_meta

        return Detector(read_onnx_meta(path))
    if Path(path).is_dir():
        raise DetectorError(
            f"{where}: a folder, not a detector file; give one, e.g. "
            "models/detectors/<arch>/seed<k>.pt"
        )
    try:
        obj = read_checkpoint(path)
    except CheckpointError as e:
        msg = str(e).replace("checkpoint", "detector file").replace("train stage", "detector stage")
        raise DetectorError(msg) from e
    meta = check_meta(obj.get("meta"), where)
    try:
        model = model_from_checkpoint(obj, where)
    except CheckpointError:
        raise
    except Exception as e:  # a state_dict that does not fit its model_args
        raise DetectorError(
            f"{where}: the weights do not fit the network ({one_line(e)}); rebuild it"
        ) from e
    _check_lpips(meta, where)
    return Detector(meta, model)


def _check_lpips(meta: Mapping[str, Any], where: str) -> None:
    lp = meta.get("lpips")
    if meta["score_method"].get("saliency") != "lpips":
        return
    for key in ("weights", "backbone_weights"):
        f = (lp or {}).get(key)
        if f and not Path(f).is_file():
            raise DetectorError(
                f"{where}: its LPIPS saliency needs {key} {f}, which is not here; copy that "
                "file to the same path (LPIPS weights are not stored in the detector)"
            )
