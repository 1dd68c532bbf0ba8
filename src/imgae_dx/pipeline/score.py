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


SCORE_DEFAULTS: dict[str, Any] = {
    "map": "auto",  # auto (the architecture's own) | sq | abs | ssim | clahe | ra
    "saliency": "ssim",  # for map "ra": ssim | features | lpips
    "smooth_sigma": 0.0,
    "reduce": "mean",  # mean | max | pNN
    "clahe_tiles": 8,
    "clahe_clip": 2.0,
    "batch_size": 128,
    "lpips_weights": None,  # local LPIPS .pth (never downloaded), for saliency "lpips"
    "lpips_backbone_weights": None,
    "lpips_net": "alex",
}


def score_args(params: Mapping[str, Any]) -> dict[str, Any]:
    """``score`` with defaults filled in; unknown keys are an error naming the key."""
    sp = dict(params.get("score") or {})
    for k in sp:
        if k not in SCORE_DEFAULTS:
            raise ValueError(
                f"params.yaml: score.{k}: unknown key (valid: {', '.join(SCORE_DEFAULTS)})"
            )
    return {**SCORE_DEFAULTS, **sp}


def score_images(
    model,
    images: np.ndarray,
    *,
    method: str,
    saliency: str | None,
    smooth_sigma: float,
    reduce: str,
    batch_size: int,
    clahe_tiles: int = 8,
    clahe_clip: float = 2.0,
    device: str = "cpu",
    lpips_fn=None,
    keep_maps: bool = False,
    desc: str = "score",
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Image scores (N,) of ``images: (N, S, S) uint8`` and, with ``keep_maps``, the
    reconstructions and anomaly maps (N, S, S) float16."""
    import torch

    from imgae_dx import scoring
    from imgae_dx.progress import progress

    n = len(images)
    scores = np.zeros(n, dtype=np.float64)
    recons = np.zeros((n,) + images.shape[1:], dtype=np.float16) if keep_maps else None
    maps = np.zeros((n,) + images.shape[1:], dtype=np.float16) if keep_maps else None
    dev = torch.device(device)
    model.to(dev).eval()
    with torch.inference_mode():
        for i in progress(range(0, n, batch_size), desc=desc, unit="batch"):
            batch = np.asarray(images[i : i + batch_size], dtype=np.float32) / 255.0
            xb = torch.from_numpy(batch)[:, None].to(dev)  # (B, 1, S, S)
            xh = model(xb).float().clamp(0, 1)
            features = None
            if method == "ra" and saliency == "features":
                fx = [f.float().cpu().numpy() for f in model.encoder_features(xb)]
                fh = [f.float().cpu().numpy() for f in model.encoder_features(xh)]
                features = (fx, fh)
            x_np = xb[:, 0].float().cpu().numpy()
            xh_np = xh[:, 0].cpu().numpy()
            m = scoring.anomaly_map(
                x_np,
                xh_np,
                method,
                smooth_sigma=smooth_sigma,
                saliency=saliency if method == "ra" else None,
                features=features,
                lpips_fn=lpips_fn,
                clahe_tiles=clahe_tiles,
                clahe_clip=clahe_clip,
            )
            scores[i : i + len(xb)] = scoring.image_scores(m, reduce)
            if keep_maps:
                recons[i : i + len(xb)] = xh_np.astype(np.float16)
                maps[i : i + len(xb)] = m.astype(np.float16)
    return scores, recons, maps


def score(params: Mapping[str, Any], arch: str) -> dict[str, Any]:
    """``score@<arch>``: anomaly scores of val and test images → ``reports/scores/<arch>.csv``
    and, for test images, reconstructions and maps → ``reports/maps/<arch>.npz``."""
    import torch

    from imgae_dx import tracking

    sp = score_args(params)
    model, _ = load_checkpoint(MODELS / f"{arch}.pt")
    method = sp["map"] if sp["map"] != "auto" else getattr(model, "default_score", "sq")
    saliency = sp["saliency"] if method == "ra" else None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    lpips_fn = None
    if saliency == "lpips":
        from imgae_dx.lpips import make_lpips_fn

        if not sp["lpips_weights"]:
            raise ValueError(
                "params.yaml: score.saliency 'lpips' needs score.lpips_weights (a local file)"
            )
        lpips_fn = make_lpips_fn(
            sp["lpips_weights"],
            net=sp["lpips_net"],
            backbone_weights=sp["lpips_backbone_weights"],
            device=device,
        )
    meta = {
        "map": method,
        "saliency": saliency,
        "reduce": sp["reduce"],
        "smooth_sigma": float(sp["smooth_sigma"]),
        "clahe_tiles": sp["clahe_tiles"],
        "clahe_clip": sp["clahe_clip"],
    }
    frames = []
    out_maps: dict[str, np.ndarray] = {}
    stage = f"score@{arch}"
    with tracking.start_run(stage, params, run_name=stage) as run:
        run.log_params({"arch": arch, "score": meta})
        for name in ("val", "test"):
            manifest = pd.read_csv(SPLIT / f"{name}.csv")
            images = np.load(PREPARED / f"{name}.npy", mmap_mode="r")
            if len(images) != len(manifest):
                raise ValueError(
                    f"{PREPARED / (name + '.npy')}: {len(images)} images but "
                    f"{SPLIT / (name + '.csv')} has {len(manifest)} rows: rerun `dvc repro prepare`"
                )
            s, rec, mp = score_images(
                model,
                images,
                method=method,
                saliency=saliency,
                smooth_sigma=meta["smooth_sigma"],
                reduce=meta["reduce"],
                batch_size=int(sp["batch_size"]),
                clahe_tiles=int(sp["clahe_tiles"]),
                clahe_clip=float(sp["clahe_clip"]),
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
    return {"auroc_test": auroc, **meta, "n_scored": int(len(scores))}
