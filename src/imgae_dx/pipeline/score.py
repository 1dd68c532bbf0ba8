"""DVC stage ``score@<arch>-<seed>``: anomaly scores of val and test images; ``stages/score.py``."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from imgae_dx import paths, tracking
from imgae_dx.checkpoint import load_model
from imgae_dx.config import Params
from imgae_dx.device import inference_device
from imgae_dx.errors import UserError
from imgae_dx.inference import ScoreMethod, make_lpips_fn, score_images, score_method
from imgae_dx.io import write_csv, write_npz
from imgae_dx.pipeline import branch_name

SCORE_COLUMNS = ["image", "patient_id", "view", "sex", "age", "label", "findings"]


def score(params: Params, arch: str, seed: int) -> dict[str, Any]:
    """``score@<arch>-<seed>``: ``reports/scores/<arch>/seed<seed>.csv`` (val and test rows)
    and, for the test images, reconstructions and maps in ``reports/maps/<arch>/seed<seed>.npz``,
    from the model of training seed ``seed``."""
    model, _ = load_model(paths.model(arch, seed))
    method = score_method(model, params.score)
    device = inference_device("auto")
    lpips_fn = make_lpips_fn(params.score, device) if method.saliency == "lpips" else None
    stage = branch_name("score", arch, seed)
    with tracking.start_run(stage, params, run_name=stage) as run:
        run.log_params({"arch": arch, "seed": seed, "score": method.as_dict()})
        frames, test_maps = [], {}
        for name in ("val", "test"):
            manifest, images = _split_images(name)
            out = score_images(
                model, images, method, batch_size=params.score.batch_size, device=device,
                lpips_fn=lpips_fn, keep_maps=(name == "test"), desc=f"score {arch} {name}",
            )  # fmt: skip
            df = manifest[SCORE_COLUMNS].copy()
            df.insert(2, "split", name)
            df["score"] = out.scores
            frames.append(df)
            if name == "test":
                test_maps = {"image": manifest["image"].to_numpy().astype(str)}
                test_maps.update(recon=out.recons, map=out.maps)
        scores = pd.concat(frames, ignore_index=True)
        _write(arch, seed, scores, test_maps, method)
        test = scores[scores["split"] == "test"]
        auroc_test = float(roc_auc_score(test["label"], test["score"]))
        run.log_metrics({"auroc_test": auroc_test})
    return {"auroc_test": auroc_test, **method.as_dict(), "n_scored": int(len(scores))}


def _split_images(name: str) -> tuple[pd.DataFrame, np.ndarray]:
    """The prepared images of split ``name`` (memory-mapped) and the manifest of exactly those
    images (``data/prepared/<split>.csv``), checked to match."""
    manifest = pd.read_csv(paths.prepared_manifest(name))
    images = np.load(paths.prepared(name), mmap_mode="r")
    if len(images) != len(manifest):
        raise UserError(
            f"{paths.prepared(name)}: {len(images)} images but {paths.prepared_manifest(name)} "
            f"has {len(manifest)} rows: rerun `dvc repro prepare`"
        )
    return manifest, images


def _write(
    arch: str, seed: int, scores: pd.DataFrame, test_maps: dict, method: ScoreMethod
) -> None:
    write_csv(paths.scores(arch, seed), scores, float_format="%.8g")
    meta = np.array(json.dumps(method.as_dict()))
    write_npz(paths.maps(arch, seed), **test_maps, meta_json=meta)
