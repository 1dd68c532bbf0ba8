"""Checkpoints: the self-describing model file and the resumable state of an unfinished run.

Two kinds of file, both written atomically (:func:`imgae_dx.io.save_torch`) and read with
torch's safe unpickler (``weights_only=True``: tensors, dicts, lists, numbers, strings):

- **the model** (``models/<arch>.pt``, ``docs/architecture.md`` "Outputs"): ``arch``,
  ``model_args`` (every constructor kwarg the params set, ``image_size`` included),
  ``state_dict``, the training summary and the params used. :func:`load_model` rebuilds the
  model from the file alone, through the registry.
- **the resume state** (``models/.resume/<arch>.pt``): everything an interrupted
  :func:`imgae_dx.train.train_model` needs to continue exactly (weights, optimizers,
  schedulers, RNG states, history, best weights, early-stopping counter) plus the
  :func:`fingerprint` of what produced it. It is resumed only when the fingerprint of the new
  run equals it: same model, settings, seed, data and training code.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imgae_dx.config import LAUNCH_KEYS, TrainParams
from imgae_dx.device import bf16_autocast
from imgae_dx.errors import UserError
from imgae_dx.io import save_torch

__all__ = [
    "RESUME_FORMAT",
    "CheckpointError",
    "ResumeState",
    "fingerprint",
    "load_model",
    "load_resume",
    "model_from_checkpoint",
    "read_checkpoint",
    "save_model",
    "save_resume",
    "training_code_digest",
]

log = logging.getLogger(__name__)

RESUME_FORMAT = "imgae_dx.train/3"
MODEL_KEYS = ("arch", "model_args", "state_dict")


class CheckpointError(UserError, ValueError):
    """A checkpoint file is missing, unreadable or not an ImgAE-Dx checkpoint."""


# ---- the model file ------------------------------------------------------------------------------
def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint written by this package; a clear error names the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint (run the train stage first)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, foreign pickle, ...: torch's messages name no file
        raise CheckpointError(
            f"{path}: unreadable checkpoint ({type(e).__name__}: {(str(e).splitlines() or [''])[0]}); "
            "delete it and rerun its train stage"
        ) from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: not an ImgAE-Dx checkpoint (a {type(obj).__name__})")
    return obj


def save_model(path: str | os.PathLike, checkpoint: Mapping[str, Any]) -> None:
    """Write a model checkpoint (``arch``, ``model_args``, ``state_dict`` and any extras)."""
    missing = [k for k in MODEL_KEYS if k not in checkpoint]
    if missing:
        raise ValueError(f"a model checkpoint needs {list(MODEL_KEYS)}; missing {missing}")
    save_torch(path, dict(checkpoint))


def model_from_checkpoint(checkpoint: Mapping[str, Any], where: str = "checkpoint"):
    """Rebuild the model a checkpoint describes, weights loaded, in eval mode."""
    from imgae_dx.models import build_model

    missing = [k for k in MODEL_KEYS if k not in checkpoint]
    if missing:
        raise CheckpointError(f"{where}: not an ImgAE-Dx model checkpoint (missing {missing})")
    model = build_model(checkpoint["arch"], **dict(checkpoint["model_args"]))
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()


def load_model(path: str | os.PathLike):
    """``(model, checkpoint)`` from a model file alone: no params.yaml needed."""
    ckpt = read_checkpoint(path)
    return model_from_checkpoint(ckpt, str(path)), ckpt


# ---- what a resumable run must match ---------------------------------------------------------------
#: Modules whose code decides the trained weights: a resume state written by other code is stale.
TRAINING_CODE = ("train.py", "augment.py", "device.py", "checkpoint.py", "models/*.py")


def training_code_digest(package: str | os.PathLike | None = None) -> str:
    """Digest of the training code (the loop and every model) of the package at ``package``
    (default: this one)."""
    pkg = Path(package) if package is not None else Path(__file__).resolve().parent
    h = hashlib.sha256()
    for pattern in TRAINING_CODE:
        for f in sorted(pkg.glob(pattern)):
            h.update(f.relative_to(pkg).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def data_fingerprint(images: np.ndarray) -> list[int]:
    """Shape and a CRC of up to 64 evenly spaced images: cheap, catches a changed data set."""
    n = len(images)
    idx = np.unique(np.linspace(0, n - 1, num=min(n, 64)).astype(int)) if n else []
    crc = 0
    for i in idx:
        crc = zlib.crc32(np.ascontiguousarray(images[i]).tobytes(), crc)
    return [*images.shape, crc]


def fingerprint(
    model: torch.nn.Module,
    config: TrainParams,
    device: torch.device,
    *,
    seed: int,
    train_images: np.ndarray,
    val_images: np.ndarray,
) -> dict[str, Any]:
    """What decides a run's trajectory, as JSON-able values.

    Every training setting counts except ``resume`` (whether to resume is not what is
    resumed), ``launcher`` (N processes train what one does) and ``epochs`` where the
    schedule does not depend on it (constant, multistep): a library caller may then extend
    a finished run and it continues exactly as a longer run would (the pipeline removes the
    state of a finished run, so there it never applies).
    ``device``, ``amp`` and ``cpu_bf16`` count as what they do: the device kind trained on, and
    whether bf16 autocast was on (:func:`imgae_dx.device.bf16_autocast`).
    """
    kept = config.model_dump(exclude={"resume", *LAUNCH_KEYS})
    if config.scheduler != "cosine":
        kept.pop("epochs")
    kept["device"] = device.type
    kept["amp"] = bf16_autocast(device, config.amp, config.cpu_bf16)
    kept.pop("cpu_bf16", None)  # folded into amp: what autocast did, not how it was asked
    return _jsonable(
        {
            "model": type(model).__name__,
            "model_args": getattr(model, "model_args", {}),
            "params": [[k, list(v.shape)] for k, v in model.state_dict().items()],
            "settings": kept,
            "seed": int(seed),
            "train_data": data_fingerprint(train_images),
            "val_data": data_fingerprint(val_images),
            "code": training_code_digest(),
        }
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return repr(value)


# ---- RNG state -------------------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    """The torch, CUDA, numpy and python RNG states, as safe-unpicklable values."""
    _, key, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "key": torch.from_numpy(key.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    key = np_state["key"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", key, np_state["pos"], np_state["has_gauss"], np_state["gauss"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


# ---- the resume state ----------------------------------------------------------------------------
@dataclass
class ResumeState:
    """Where an unfinished run stands after its last completed epoch."""

    fingerprint: dict[str, Any]
    model: dict[str, torch.Tensor]
    optimizers: list[dict[str, Any]]
    schedulers: list[dict[str, Any]]  # their step counts are the optimisation steps done
    rng: dict[str, Any]
    progress: dict[str, Any]  # the training loop's record: history, best weights, counters


def save_resume(path: str | os.PathLike, state: ResumeState) -> None:
    # Field by field, not dataclasses.asdict: that would deep-copy every tensor once more.
    save_torch(
        path, {"format": RESUME_FORMAT, **{f.name: getattr(state, f.name) for f in fields(state)}}
    )


def load_resume(
    path: str | os.PathLike, expected: Mapping[str, Any], name: str = "training"
) -> ResumeState | None:
    """The resume state at ``path`` if it was written for the run ``expected`` fingerprints;
    ``None`` (with a warning saying why) when it is absent, unreadable or from another run."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        raw = read_checkpoint(path)
    except CheckpointError as e:
        log.warning("%s: %s; starting afresh", name, e)
        return None
    if raw.get("format") != RESUME_FORMAT:
        diff = ["format"]
    else:
        old = raw.get("fingerprint") or {}
        diff = sorted(k for k in set(old) | set(expected) if old.get(k) != expected.get(k))
        if diff == ["settings"]:  # name the setting
            a, b = old["settings"], expected["settings"]
            diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if diff:
        log.warning(
            "%s: checkpoint %s was written by a different run (differs in: %s); starting afresh",
            name,
            path,
            ", ".join(diff),
        )
        return None
    raw.pop("format")
    return ResumeState(**raw)
