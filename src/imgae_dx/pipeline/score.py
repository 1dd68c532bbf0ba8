"""DVC stage ``score@<arch>-<seed>``: anomaly scores of val and test images; ``stages/score.py``."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from imgae_dx import paths, tracking
from imgae_dx.checkpoint import load_model
from imgae_dx.config import Params
from imgae_dx.device import inference_device
from imgae_dx.errors import UserError
from imgae_dx.inference import BatchSink, ScoreMethod, make_lpips_fn, score_images, score_method
from imgae_dx.io import npz_rows, write_csv
from imgae_dx.pipeline import branch_name

SCORE_COLUMNS = ["image", "patient_id", "view", "sex", "age", "label", "findings"]


def score(params: Params, arch: str, seed: int) -> dict[str, Any]:
    """``score@<arch>-<seed>``: ``reports/scores/<arch>/seed<seed>.csv`` (val and test rows)
    and, for the test images, reconstructions and maps in ``reports/maps/<arch>/seed<seed>.npz``,
    from the model of training seed ``seed``.

    Streams: the model runs batch by batch (on the GPU when there is one) and the test maps
    go to the npz as they come (:func:`imgae_dx.io.npz_rows`), so memory does not grow with
    the number of films."""
    model, _ = load_model(paths.model(arch, seed))
    method = score_method(model, params.score)
    device = inference_device("auto")
    lpips_fn = make_lpips_fn(params.score, device) if method.saliency == "lpips" else None
    stage = branch_name("score", arch, seed)

    def split_scores(name: str, on_batch: BatchSink | None = None) -> pd.DataFrame:
        manifest, images = _split_images(name)
        out = score_images(
            model, images, method, batch_size=params.score.batch_size, device=device,
            lpips_fn=lpips_fn, desc=f"score {arch} {name}", on_batch=on_batch,
        )  # fmt: skip
        df = manifest[SCORE_COLUMNS].copy()
        df.insert(2, "split", name)
        df["score"] = out.scores
        return df

    with tracking.start_run(stage, params, run_name=stage) as run:
        run.log_params({"arch": arch, "seed": seed, "score": method.as_dict()})
        val = split_scores("val")
        with _test_maps(paths.maps(arch, seed), method) as maps:
            test = split_scores("test", maps)
        scores = pd.concat([val, test], ignore_index=True)
        write_csv(paths.scores(arch, seed), scores, float_format="%.8g")
        auroc_test = float(roc_auc_score(test["label"], test["score"]))
        run.log_metrics({"auroc_test": auroc_test})
    return {"auroc_test": auroc_test, **method.as_dict(), "n_scored": int(len(scores))}


@contextlib.contextmanager
def _test_maps(path: Path, method: ScoreMethod) -> Iterator[BatchSink]:
    """A sink that streams the test reconstructions and maps into ``path``
    (``reports/maps/<arch>/seed<k>.npz``: members image, recon, map, meta_json; written when the
    block ends without error)."""
    manifest, images = _split_images("test")
    shape = (len(images), *images.shape[1:])
    npz = npz_rows(
        path,
        image=manifest["image"].to_numpy().astype(str),
        recon=(shape, np.float16),
        map=(shape, np.float16),
        meta_json=np.array(json.dumps(method.as_dict())),
    )
    with npz as rows:

        def sink(start: int, recons: np.ndarray, maps: np.ndarray) -> None:
            rows.append("recon", recons)
            rows.append("map", maps)

        yield sink


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
