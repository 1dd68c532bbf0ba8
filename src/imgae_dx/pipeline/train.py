"""DVC stage ``train@<arch>-<seed>``: fit on train normals, select on val normals; ``stages/train.py``.

The training seed (an entry of ``seeds``) seeds the initial weights, the batch order and the
model's noise; the data (``data/prepared``, from the split seeded by ``seed``) is the same for
every training seed (``docs/architecture.md``, "Seeds").
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from imgae_dx import checkpoint, paths, tracking
from imgae_dx.config import LAUNCH_KEYS, Params
from imgae_dx.distributed import World, process_group
from imgae_dx.io import write_csv
from imgae_dx.models import build_model
from imgae_dx.pipeline import branch_name
from imgae_dx.train import TIMING_COLUMNS, TrainResult, train_model


def train(params: Params, arch: str, seed: int) -> dict[str, Any]:
    """``train@<arch>-<seed>``: write ``models/<arch>/seed<seed>.pt`` and
    ``reports/train/<arch>/seed<seed>.csv``.

    An interrupted run resumes from ``models/.resume/<arch>/seed<seed>.pt`` when
    ``train.resume`` is on and that state was written by the same model, settings, seed, data
    and training code
    (:func:`imgae_dx.checkpoint.fingerprint`); the state is removed once the model is written,
    so a later run (say after a code change DVC noticed) trains afresh.

    Under ``torchrun`` (``train.launcher``) the processes join one process group and train
    together (:mod:`imgae_dx.distributed`); rank 0 alone writes files and the MLflow run.
    """
    import torch

    targs = params.train_for(arch)
    with process_group(targs.device):
        main = World.current(torch.device("cpu")).is_main
        summary = _train(params, arch, seed, main)
    if main:
        paths.resume_checkpoint(arch, seed).unlink(missing_ok=True)
    return summary


def _train(params: Params, arch: str, seed: int, main: bool) -> dict[str, Any]:
    """Train, and on rank 0 (the only process when not under torchrun) write the model, the
    curve and the MLflow run; the other ranks only train."""
    import torch

    margs, targs = params.model_args(arch), params.train_for(arch)
    train_x = np.load(paths.prepared("train"), mmap_mode="r")
    val_x = np.load(paths.prepared("val"), mmap_mode="r")
    torch.manual_seed(seed)
    model = build_model(arch, **margs)
    n_params = sum(p.numel() for p in model.parameters())
    stage = branch_name("train", arch, seed)
    tracked = tracking.start_run(stage, params, run_name=stage) if main else _no_run()
    with tracked as run:
        run.log_params(
            {
                "arch": arch,
                "seed": seed,
                "split_seed": params.seed,
                "model": margs,
                "train": targs.model_dump(),
                "n_parameters": n_params,
                "data": params.data.model_dump(include={"source", "image_size", "views", "shards"}),
            }
        )
        result = train_model(
            model,
            train_x,
            val_x,
            targs,
            seed=seed,
            checkpoint_path=paths.resume_checkpoint(arch, seed),
            on_epoch=lambda row: run.log_metrics(
                {k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"])
            ),
            desc=stage,
        )
        summary = _summary(result, n_params)
        if main:
            model_file = _model_file(params, arch, seed, result, n_params)
            checkpoint.save_model(paths.model(arch, seed), model_file)
            write_csv(paths.train_curve(arch, seed), tracked_curve(result), float_format="%.6g")
            run.log_metrics({k: v for k, v in summary.items() if k != "device"})
            run.log_artifact(paths.train_curve(arch, seed))
    return summary


@contextlib.contextmanager
def _no_run() -> Iterator[tracking.Run]:
    yield tracking.Run(None)  # an inactive run: logs nothing


def _model_file(params: Params, arch: str, seed: int, result: TrainResult, n_params: int) -> dict:
    """The content of ``models/<arch>/seed<seed>.pt`` (``docs/architecture.md``, "Outputs")."""
    return {
        "arch": arch,
        "model_args": params.model_args(arch),
        "state_dict": result.best_state_dict,
        "best_epoch": int(result.best_epoch),
        "best_val_loss": float(result.best_val_loss),
        "initial_val_loss": float(result.initial_val_loss),
        "n_parameters": int(n_params),
        "params": {
            "seed": seed,
            "split_seed": params.seed,
            "train": params.train_for(arch).model_dump(exclude=LAUNCH_KEYS),
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
