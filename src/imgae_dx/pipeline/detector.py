"""DVC stage ``detector@<arch>-<seed>``: the self-contained detector file; ``stages/detector.py``.

Everything in it comes from the outputs of earlier stages: the network from
``models/<arch>/seed<k>.pt``, the score method from ``score`` (as ``score@<arch>-<k>`` resolved
it), the threshold and quantiles from the validation normals of
``reports/scores/<arch>/seed<k>.csv``, and what
it was trained on from ``data/prepared/train.csv``, ``data/split/summary.json`` and the
training films' headers in ``data/raw``.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from imgae_dx import metrics, paths
from imgae_dx.checkpoint import model_from_checkpoint, read_checkpoint
from imgae_dx.config import Params
from imgae_dx.data.prepare import image_path
from imgae_dx.detector import build_meta, normal_quantiles, save_detector
from imgae_dx.errors import UserError
from imgae_dx.inference import score_method

#: Training films whose header is read for the size range (evenly spaced over the manifest).
MAX_SIZE_SAMPLE = 2000


def detector(params: Params, arch: str, seed: int) -> dict[str, Any]:
    """``models/detectors/<arch>/seed<k>.pt``; returns its threshold and training counts."""
    ckpt = read_checkpoint(paths.model(arch, seed))
    method = score_method(model_from_checkpoint(ckpt, str(paths.model(arch, seed))), params.score)
    scores = pd.read_csv(paths.scores(arch, seed))
    val = scores[(scores["split"] == "val") & (scores["label"] == 0)]["score"].to_numpy(float)
    if not len(val):
        raise UserError(
            f"{paths.scores(arch, seed)}: no validation normals to set the threshold on"
        )
    pct = params.report.threshold_percentile
    threshold = {
        "value": metrics.threshold_from_normals(val, pct),
        "percentile": pct,
        "source": "validation normals",
        "n_val_normal": int(len(val)),
    }
    sp = params.score
    lpips = {"weights": sp.lpips_weights, "backbone_weights": sp.lpips_backbone_weights,
             "net": sp.lpips_net} if method.saliency == "lpips" else None  # fmt: skip
    size = int((ckpt.get("params") or {}).get("image_size") or params.data.image_size)
    training = {**training_data(), "seed": int(seed)}
    meta = build_meta(ckpt, size, method, threshold, normal_quantiles(val), training, lpips)
    save_detector(paths.detector(arch, seed), ckpt, meta)
    t = meta["training"]
    return {"threshold": threshold["value"], "n_images": t["n_images"], "views": t["views"]}


def training_data() -> dict[str, Any]:
    """Source, shards, views, image and patient counts and film sizes of the training split."""
    train = pd.read_csv(paths.prepared_manifest("train"))
    summary = json.loads(paths.SUMMARY.read_text(encoding="utf-8"))
    views = sorted(train["view"].dropna().astype(str).unique().tolist())
    shards = (
        sorted(train["shard"].dropna().astype(str).unique().tolist()) if "shard" in train else []
    )
    return {
        "source": summary.get("source"),
        "shards": shards,
        "views": views,
        "n_images": int(len(train)),
        "n_patients": int(train["patient_id"].nunique()),
        "film_sides": film_sides(train["image"].tolist()),
    }


def film_sides(names: list[str]) -> list[int]:
    """(smallest, largest) side in pixels over (a sample of) the training films' headers."""
    idx = np.unique(
        np.linspace(0, len(names) - 1, num=min(len(names), MAX_SIZE_SAMPLE)).astype(int)
    )
    sides = []
    for i in idx:
        with Image.open(image_path(paths.RAW, names[i])) as im:  # the header only
            sides += list(im.size)
    if not sides:
        raise UserError(f"{paths.prepared_manifest('train')}: no training films")
    return [int(min(sides)), int(max(sides))]
