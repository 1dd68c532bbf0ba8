"""DVC stage ``train`` as an importable, testable function; ``stages/train.py`` calls it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from imgae_dx import config
from imgae_dx.io import save_torch, write_csv
from imgae_dx.pipeline.common import MODELS, PREPARED, REPORTS, RESUME


def _fingerprint(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(np.ascontiguousarray(p).tobytes())
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def _training_code(pkg: Path | None = None) -> str:
    """Digest of the sources that decide the trained weights (the loop and every model) of the
    package at ``pkg`` (default: this one), so a checkpoint written by other code is never
    resumed."""
    pkg = pkg or Path(__file__).resolve().parents[1]
    files = sorted((pkg / "models").glob("*.py")) + [pkg / "train.py", pkg / "device.py"]
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def train(params: Mapping[str, Any], arch: str) -> dict[str, Any]:
    """``train@<arch>``: fit on train normals, early-stop on val normals, write ``models/<arch>.pt``."""
    import torch

    from imgae_dx import tracking
    from imgae_dx.models import build_model
    from imgae_dx.train import TIMING_COLUMNS, train_model

    margs = config.model_args(params, arch)
    targs = config.train_args(params, arch)
    seed = int(params["seed"])
    train_x = np.load(PREPARED / "train.npy", mmap_mode="r")
    val_x = np.load(PREPARED / "val.npy", mmap_mode="r")

    # The resumable checkpoint is only trusted for the very same code, model, settings and data;
    # it exists only while a run is unfinished (removed once models/<arch>.pt is written).
    resume_path = RESUME / f"{arch}.pt"
    stamp_path = RESUME / f"{arch}.json"
    fp = _fingerprint(
        arch,
        margs,
        {k: v for k, v in targs.items() if k != "resume"},
        seed,
        np.asarray(train_x[:: max(1, len(train_x) // 64)]),
        len(train_x),
        len(val_x),
        _training_code(),
    )
    resume = bool(targs["resume"])
    if resume_path.exists():
        old = json.loads(stamp_path.read_text()) if stamp_path.exists() else {}
        if old.get("fingerprint") != fp or not resume:
            resume_path.unlink()
    RESUME.mkdir(parents=True, exist_ok=True)
    stamp_path.write_text(json.dumps({"fingerprint": fp}))

    torch.manual_seed(seed)
    model = build_model(arch, **margs)
    n_params = sum(p.numel() for p in model.parameters())
    stage = f"train@{arch}"
    with tracking.start_run(stage, params, run_name=stage) as run:
        run.log_params(
            {
                "arch": arch,
                "seed": seed,
                "model": margs,
                "train": targs,
                "n_parameters": n_params,
                "data": {k: params["data"][k] for k in ("source", "image_size", "views", "shards")},
            }
        )

        def on_epoch(row: dict[str, Any]) -> None:
            run.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))

        result = train_model(
            model,
            train_x,
            val_x,
            seed=seed,
            checkpoint_path=resume_path,
            on_epoch=on_epoch,
            desc=stage,
            **{k: v for k, v in targs.items() if k != "resume"},
            resume=resume,
        )
        ckpt = {
            "arch": arch,
            "model_args": margs,
            "state_dict": result.best_state_dict,
            "best_epoch": int(result.best_epoch),
            "best_val_loss": float(result.best_val_loss),
            "initial_val_loss": float(result.initial_val_loss),
            "n_parameters": int(n_params),
            "params": {"seed": seed, "train": targs, "image_size": params["data"]["image_size"]},
        }
        save_torch(MODELS / f"{arch}.pt", ckpt)
        history = result.history
        # The curve DVC tracks holds only what the seed determines, so a rerun with the same
        # params and code writes the same bytes; wall-clock columns (seconds, images/s) go to
        # MLflow per epoch and into the summary below. Epoch 0 is the untrained model: only
        # its validation loss exists.
        columns = [c for c in history.columns if c not in TIMING_COLUMNS]
        curve = pd.concat(
            [pd.DataFrame([{"epoch": 0, "val_loss": result.initial_val_loss}]), history],
            ignore_index=True,
        )[columns]
        write_csv(REPORTS / "train" / f"{arch}.csv", curve, float_format="%.6g")
        train_seconds = float(history["seconds"].sum())
        summary = {
            "best_epoch": int(result.best_epoch),
            "best_val_loss": float(result.best_val_loss),
            "initial_val_loss": float(result.initial_val_loss),
            "epochs_run": int(len(history)),
            "n_parameters": int(n_params),
            "first_val_loss": float(history["val_loss"].iloc[0]),
            "train_seconds": round(train_seconds, 3),
            "mean_images_per_s": round(float(history["images_per_s"].mean()), 1),
            "device": str(result.device),
        }
        run.log_metrics({k: v for k, v in summary.items() if k != "device"})
        run.log_artifact(REPORTS / "train" / f"{arch}.csv")
    # Finished: a later run (e.g. after a code change DVC noticed) must train afresh, not
    # "resume" the completed run and hand back its weights.
    resume_path.unlink(missing_ok=True)
    stamp_path.unlink(missing_ok=True)
    return summary
