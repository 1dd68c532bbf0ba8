"""DVC stage ``score`` as an importable, testable function; ``stages/score.py`` calls it."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from imgae_dx.io import write_csv, write_npz
from imgae_dx.pipeline.common import MODELS, PREPARED, REPORTS, SPLIT


def load_checkpoint(path: str | os.PathLike):
    """Rebuild a model from its self-describing checkpoint alone."""
    import torch

    from imgae_dx.models import build_model

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    for k in ("arch", "model_args", "state_dict"):
        if k not in ckpt:
            raise ValueError(f"{path}: not an ImgAE-Dx checkpoint (missing {k!r})")
    model = build_model(ckpt["arch"], **ckpt["model_args"])
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, ckpt


def score_images(
    model,
    images: np.ndarray,
    *,
    method: str,
    saliency: str,
    smooth_sigma: float,
    reduce: str,
    batch_size: int,
    device: str = "cpu",
    lpips_fn=None,
    keep_maps: bool = False,
    desc: str = "score",
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Image scores (N,) and, with ``keep_maps``, reconstructions and maps (N, S, S) float16."""
    import torch

    from imgae_dx import scoring
    from imgae_dx.progress import progress

    n = len(images)
    scores = np.zeros(n, dtype=np.float64)
    recons = np.zeros((n,) + images.shape[1:], dtype=np.float16) if keep_maps else None
    maps = np.zeros((n,) + images.shape[1:], dtype=np.float16) if keep_maps else None
    dev = torch.device(device)
    model.to(dev)
    with torch.inference_mode():
        for i in progress(range(0, n, batch_size), desc=desc, unit="batch"):
            xb = torch.from_numpy(np.asarray(images[i : i + batch_size], dtype=np.float32) / 255.0)[
                :, None
            ].to(dev)
            xh = model(xb)
            features = None
            if method == "ra" and saliency == "features":
                fx = [f.float().cpu().numpy() for f in model.encoder_features(xb)]
                fh = [f.float().cpu().numpy() for f in model.encoder_features(xh)]
                features = (fx, fh)
            x_np = xb[:, 0].float().cpu().numpy()
            xh_np = xh[:, 0].float().cpu().numpy()
            kw: dict[str, Any] = {"smooth_sigma": smooth_sigma}
            if method == "ra":
                kw.update(saliency=saliency, features=features, lpips_fn=lpips_fn)
            m = scoring.anomaly_map(x_np, xh_np, method, **kw)
            scores[i : i + len(xb)] = scoring.image_scores(m, reduce)
            if keep_maps:
                recons[i : i + len(xb)] = xh_np.astype(np.float16)
                maps[i : i + len(xb)] = m.astype(np.float16)
    return scores, recons, maps


def score(params: Mapping[str, Any], arch: str) -> dict[str, Any]:
    """``score@<arch>``: anomaly scores of val and test images → ``reports/scores/<arch>.csv``."""
    import torch

    from imgae_dx import tracking

    sp = dict(params.get("score") or {})
    model, ckpt = load_checkpoint(MODELS / f"{arch}.pt")
    method = sp.get("map", "auto")
    if method == "auto":
        method = getattr(model, "default_score", "sq")
    saliency = sp.get("saliency", "ssim") if method == "ra" else None
    lpips_fn = None
    if method == "ra" and saliency == "lpips":
        from imgae_dx.lpips import load_lpips

        lpips_fn = load_lpips(sp["lpips_weights"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    frames = []
    stage = f"score@{arch}"
    meta = {
        "map": method,
        "saliency": saliency,
        "reduce": sp.get("reduce", "mean"),
        "smooth_sigma": float(sp.get("smooth_sigma", 0.0)),
    }
    with tracking.start_run(stage, params, run_name=stage) as run:
        run.log_params({"arch": arch, "score": meta})
        out_maps = None
        for name in ("val", "test"):
            manifest = pd.read_csv(SPLIT / f"{name}.csv")
            images = np.load(PREPARED / f"{name}.npy", mmap_mode="r")
            if len(images) != len(manifest):
                raise ValueError(
                    f"{PREPARED / (name + '.npy')}: {len(images)} images but {len(manifest)} manifest rows"
                )
            s, rec, mp = score_images(
                model,
                images,
                method=method,
                saliency=saliency or "ssim",
                smooth_sigma=meta["smooth_sigma"],
                reduce=meta["reduce"],
                batch_size=int(sp.get("batch_size", 128)),
                device=device,
                lpips_fn=lpips_fn,
                keep_maps=(name == "test"),
                desc=f"score {arch} {name}",
            )
            df = manifest[["image", "patient_id", "view", "sex", "age", "label", "findings"]].copy()
            df.insert(2, "split", name)
            df["score"] = s
            frames.append(df)
            if name == "test":
                out_maps = {
                    "image": manifest["image"].to_numpy().astype(str),
                    "recon": rec,
                    "map": mp,
                }
        scores = pd.concat(frames, ignore_index=True)
        write_csv(REPORTS / "scores" / f"{arch}.csv", scores, float_format="%.8g")
        write_npz(
            REPORTS / "maps" / f"{arch}.npz", **out_maps, meta_json=np.array(json.dumps(meta))
        )
        test = scores[scores["split"] == "test"]
        from sklearn.metrics import roc_auc_score

        auroc = float(roc_auc_score(test["label"], test["score"]))
        run.log_metrics({"auroc_test": auroc})
    return {"auroc": auroc, **meta, "n": int(len(scores))}
