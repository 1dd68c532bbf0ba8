"""DVC stage ``train@<arch>``: fit on train normals, select on val normals; ``stages/train.py``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from imgae_dx import checkpoint, paths, tracking
from imgae_dx.config import Params
from imgae_dx.io import write_csv
from imgae_dx.models import build_model
from imgae_dx.train import TIMING_COLUMNS, TrainResult, train_model


def train(params: Params, arch: str) -> dict[str, Any]:
    """``train@<arch>``: write ``models/<arch>.pt`` and ``reports/train/<arch>.csv``.

    An interrupted run resumes from ``models/.resume/<arch>.pt`` when ``train.resume`` is on
    and that state was written by the same model, settings, seed, data and training code
    (:func:`imgae_dx.checkpoint.fingerprint`); the state is removed once the model is written,
    so a later run (say after a code change DVC noticed) trains afresh.
    """
    import torch

    margs, targs = params.model_args(arch), params.train_for(arch)
    train_x = np.load(paths.prepared("train"), mmap_mode="r")
    val_x = np.load(paths.prepared("val"), mmap_mode="r")
    torch.manual_seed(params.seed)
    model = build_model(arch, **margs)
    n_params = sum(p.numel() for p in model.parameters())
    stage = f"train@{arch}"
    with tracking.start_run(stage, params, run_name=stage) as run:
        run.log_params(
            {
                "arch": arch,
                "seed": params.seed,
                "model": margs,
                "train": targs.model_dump(),
                "n_parameters": n_params,
                "data": params.data.model_dump(include={"source", "image_size", "views", "shards"}),
            }
        )
        run.log_datasets({s: paths.prepared_manifest(s) for s in ("train", "val")})
        result = train_model(
            model,
            train_x,
            val_x,
            targs,
            seed=params.seed,
            checkpoint_path=paths.resume_checkpoint(arch),
            on_epoch=lambda row: run.log_metrics(
                {k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"])
            ),
            desc=stage,
        )
        checkpoint.save_model(paths.model(arch), _model_file(params, arch, result, n_params))
        write_csv(paths.train_curve(arch), tracked_curve(result), float_format="%.6g")
        summary = _summary(result, n_params)
        run.log_metrics({k: v for k, v in summary.items() if k != "device"})
        run.log_artifact(paths.train_curve(arch))
    paths.resume_checkpoint(arch).unlink(missing_ok=True)
    return summary


def _model_file(params: Params, arch: str, result: TrainResult, n_params: int) -> dict:
    """The content of ``models/<arch>.pt`` (``docs/architecture.md``, "Outputs")."""
    return {
        "arch": arch,
        "model_args": params.model_args(arch),
        "state_dict": result.best_state_dict,
        "best_epoch": int(result.best_epoch),
        "best_val_loss": float(result.best_val_loss),
        "initial_val_loss": float(result.initial_val_loss),
        "n_parameters": int(n_params),
        "params": {
            "seed": params.seed,
            "train": params.train_for(arch).model_dump(),
            "image_size": params.data.image_size,
        },
    }


def tracked_curve(result: TrainResult) -> pd.DataFrame:
    """The curve DVC tracks: what the seed determines, so a rerun with the same params and code
    writes the same bytes. Wall-clock columns go to MLflow and the stage's summary instead.
    Epoch 0 is the untrained model: only its validation loss exists."""
    history = result.history
    columns = [c for c in history.columns if c not in TIMING_COLUMNS]
    untrained = pd.DataFrame([{"epoch": 0, "val_loss": result.initial_val_loss}])
    return pd.concat([untrained, history], ignore_index=True)[columns]


def _summary(result: TrainResult, n_params: int) -> dict[str, Any]:
    history = result.history
    return {
        "best_epoch": int(result.best_epoch),
        "best_val_loss": float(result.best_val_loss),
        "initial_val_loss": float(result.initial_val_loss),
        "epochs_run": int(len(history)),
        "n_parameters": int(n_params),
        "first_val_loss": float(history["val_loss"].iloc[0]),
        "train_seconds": round(float(history["seconds"].sum()), 3),
        "mean_images_per_s": round(float(history["images_per_s"].mean()), 1),
        "device": str(result.device),
    }
