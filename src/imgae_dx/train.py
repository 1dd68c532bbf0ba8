"""Architecture-agnostic training loop with label-free model selection and exact resume.

The loop only talks to the :class:`~imgae_dx.models.base.AnomalyModel` interface
(``configure_optimizers``, ``training_step``, ``validation_loss``), so it trains a plain AE and
the RA's two-optimizer introspective step alike. It never sees a label: early stopping and the
choice of the returned weights use the validation loss of the validation *normals* only
(DESIGN.md section 6, "label-free model selection").

Reproducibility:
    * the shuffling of epoch ``e`` comes from a ``torch.Generator`` seeded with ``(seed, e)``;
    * ``torch``/``numpy``/``random`` are seeded from ``seed`` and deterministic algorithms are
      switched on for the duration of the call, so on CPU the same call twice gives
      bit-identical weights;
    * with ``checkpoint_path`` a resumable checkpoint (model, every optimizer, schedule position,
      RNG states of torch/CUDA/numpy/python, history, best weights, early-stopping counter) is
      written atomically after every epoch, and ``resume=True`` continues from it exactly:
      4 epochs straight and 2 epochs + crash + resume give the same weights and history.

On CUDA the step runs under bf16 autocast with channels-last tensors (no GradScaler: bf16 has
float32's exponent range); on CPU both are off.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from imgae_dx.device import (
    autocast_factory,
    describe_device,
    resolve_device,
    to_channels_last,
)
from imgae_dx.io import save_torch
from imgae_dx.models.base import AnomalyModel
from imgae_dx.progress import progress

__all__ = [
    "SCHEDULERS",
    "TIMING_COLUMNS",
    "TrainResult",
    "images_to_tensor",
    "lr_factor",
    "train_model",
    "validation_loss",
]

log = logging.getLogger(__name__)

SCHEDULERS = ("cosine", "none", "multistep")
CHECKPOINT_FORMAT = "imgae_dx.train/2"
BASE_COLUMNS = ["epoch", "train_loss", "val_loss", "lr", "seconds", "images_per_s"]
TIMING_COLUMNS = ("seconds", "images_per_s")  # wall clock: differ from run to run


@dataclass
class TrainResult:
    """What :func:`train_model` returns.

    Attributes:
        best_state_dict: CPU copy of the weights (and BN buffers) of the epoch with the lowest
            validation loss; the trained model is also left holding these weights.
        best_epoch: 1-based epoch of those weights.
        best_val_loss: their validation loss.
        initial_val_loss: validation loss of the weights before the first step (the reference
            for "trained to a loss well below its starting value").
        history: one row per epoch: epoch, train_loss, val_loss, lr, seconds, images_per_s and
            the model's own terms as ``train_<name>`` (e.g. ``train_kl``).
        device: the device trained on, in words (e.g. ``cpu (2 threads)``).
        stopped_early: whether early stopping ended the run.
        resumed_from_epoch: epochs already done in the checkpoint this run resumed from (0: none).
    """

    best_state_dict: dict[str, torch.Tensor]
    best_epoch: int
    best_val_loss: float
    initial_val_loss: float
    history: pd.DataFrame
    device: str
    stopped_early: bool = False
    resumed_from_epoch: int = 0


# ---- data ------------------------------------------------------------------------------------
def _check_images(images: np.ndarray, what: str) -> np.ndarray:
    if not isinstance(images, np.ndarray):
        raise TypeError(f"{what}: expected a numpy array (N, H, W) of uint8, got {type(images)}")
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"{what}: expected uint8 array (N, H, W), got {images.dtype} {images.shape}"
        )
    return images


def images_to_tensor(batch: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (B, H, W) -> float32 (B, 1, H, W) in [0, 1] on ``device`` (channels-last on CUDA).

    Only the batch is converted, so a data set never exists as a float copy in memory.
    """
    if isinstance(batch, np.ndarray):
        # A copy: slices of a read-only memmap cannot back a tensor (torch warns), and the
        # uint8 batch is small next to its float32 conversion below.
        batch = torch.from_numpy(np.array(batch, dtype=np.uint8, order="C", copy=True))
    x = batch.to(device, non_blocking=True).unsqueeze(1).float().div_(255.0)
    return to_channels_last(x, device)


class _Batches(torch.utils.data.Dataset):
    """Item ``i`` is the uint8 batch ``images[sorted(index_lists[i])]`` as a tensor.

    Indices are sorted within a batch (the loss and BatchNorm are permutation-invariant), which
    makes reads from a memory-mapped array sequential.
    """

    def __init__(self, images: np.ndarray, index_lists: Sequence[np.ndarray]) -> None:
        self.images = images
        self.index_lists = index_lists

    def __len__(self) -> int:
        return len(self.index_lists)

    def __getitem__(self, i: int) -> torch.Tensor:
        idx = np.sort(self.index_lists[i])
        return torch.from_numpy(np.ascontiguousarray(self.images[idx]))


def _iterate(
    images: np.ndarray, index_lists: Sequence[np.ndarray], num_workers: int, pin: bool
) -> Iterable[torch.Tensor]:
    ds = _Batches(images, index_lists)
    if num_workers <= 0:
        return (ds[i] for i in range(len(ds)))
    return torch.utils.data.DataLoader(
        ds, batch_size=None, shuffle=False, num_workers=num_workers, pin_memory=pin
    )


def _epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """Shuffle order of epoch ``epoch``: a function of (seed, epoch) only, so resume is exact."""
    state = np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1, dtype=np.uint64)
    gen = torch.Generator().manual_seed(int(state[0]) & 0x7FFF_FFFF_FFFF_FFFF)
    return torch.randperm(n, generator=gen).numpy()


def _train_batches(n: int, batch_size: int, cap: int | None) -> int:
    # Full batches only (drop_last): a trailing batch of one image breaks BatchNorm, and equal
    # batch sizes keep the loss scale constant. A set smaller than one batch is one batch.
    n_batches = n // batch_size if n >= batch_size else 1
    if cap is not None:
        n_batches = min(n_batches, int(cap))
    return n_batches


def validation_loss(
    model: AnomalyModel,
    images: np.ndarray,
    *,
    batch_size: int = 128,
    device: str | torch.device = "auto",
    amp: bool = True,
) -> float:
    """Mean of ``model.validation_loss`` over ``images`` (uint8 (N, H, W)), in eval mode."""
    images = _check_images(images, "images")
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    return _evaluate(model, images, batch_size, dev, autocast_factory(dev, amp))


def _evaluate(
    model: AnomalyModel,
    images: np.ndarray,
    batch_size: int,
    device: torch.device,
    autocast: Callable,
) -> float:
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = images_to_tensor(images[start : start + batch_size], device)
            with autocast():
                loss = model.validation_loss(x)
            total += float(loss) * x.shape[0]
            count += x.shape[0]
    return total / max(count, 1)


# ---- learning-rate schedule --------------------------------------------------------------------
def lr_factor(
    kind: str,
    step: int,
    steps_per_epoch: int,
    epochs: int,
    *,
    warmup_epochs: float = 0.0,
    milestones: Sequence[int] = (),
    lr_gamma: float = 0.1,
    min_lr_ratio: float = 0.0,
) -> float:
    """Multiplier of the base learning rate for optimisation step ``step`` (0-based).

    ``cosine``: linear warm-up over ``warmup_epochs``, then per-step cosine decay to
    ``min_lr_ratio`` at the end of ``epochs``. ``multistep``: ``lr_gamma`` ** (number of
    ``milestones`` <= current 0-based epoch), as ``torch.optim.lr_scheduler.MultiStepLR`` stepped
    once per epoch. ``none``: constant. Warm-up applies to all three.
    """
    if kind not in SCHEDULERS:
        raise ValueError(f"train.scheduler: {kind!r} is not one of {', '.join(SCHEDULERS)}")
    warmup = int(round(warmup_epochs * steps_per_epoch))
    total = max(1, epochs * steps_per_epoch)
    factor = 1.0
    if kind == "cosine":
        progress_ = min(1.0, max(0.0, (step - warmup) / max(1, total - warmup)))
        factor = min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress_))
    elif kind == "multistep":
        epoch = step // max(1, steps_per_epoch)
        factor = lr_gamma ** sum(1 for m in milestones if epoch >= int(m))
    if warmup > 0 and step < warmup:
        factor *= (step + 1) / warmup
    return factor


def _set_lr(optimizers: Sequence[torch.optim.Optimizer], factor: float) -> None:
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = group["initial_lr"] * factor


# ---- RNG and checkpoint state --------------------------------------------------------------------
def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def _rng_state() -> dict[str, Any]:
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


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_state["key"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["gauss"],
        )
    )
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def _cpu_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _data_fingerprint(images: np.ndarray) -> list[int]:
    """Shape and a CRC of up to 64 evenly spaced images: cheap, catches a changed data set."""
    n = len(images)
    idx = np.unique(np.linspace(0, n - 1, num=min(n, 64)).astype(int)) if n else []
    crc = 0
    for i in idx:
        crc = zlib.crc32(np.ascontiguousarray(images[i]).tobytes(), crc)
    return [*images.shape, crc]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return repr(value)


def _fingerprint_diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def _load_checkpoint(path: Path) -> dict[str, Any]:
    # Our own file: plain tensors, dicts, lists, tuples and numbers, so the safe unpickler works.
    return torch.load(path, map_location="cpu", weights_only=True)


# ---- the loop ----------------------------------------------------------------------------------
def train_model(
    model: AnomalyModel,
    train_images: np.ndarray,
    val_images: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float = 0.0,
    patience: int | None = None,
    min_delta: float = 0.0,
    grad_clip: float | None = None,
    scheduler: str = "cosine",
    warmup_epochs: float = 0.0,
    milestones: Sequence[int] = (),
    lr_gamma: float = 0.1,
    min_lr_ratio: float = 0.0,
    device: str = "auto",
    amp: bool = True,
    seed: int = 0,
    num_workers: int = 0,
    checkpoint_path: str | os.PathLike | None = None,
    resume: bool = False,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    max_train_batches_per_epoch: int | None = None,
    val_batch_size: int | None = None,
    deterministic: bool = True,
    num_threads: int | None = None,
    desc: str | None = None,
) -> TrainResult:
    """Train ``model`` on uint8 images and select the epoch with the lowest validation loss.

    Args:
        model: an :class:`AnomalyModel` (e.g. from ``build_model``); trained in place and left
            holding the best weights, in eval mode, on ``device``.
        train_images, val_images: uint8 arrays (N, H, W) (a memmap is fine). The validation set
            holds normals only; its loss drives early stopping and checkpoint choice.
        epochs: maximum number of epochs.
        batch_size: training batch size (full batches; the remainder rotates through epochs).
        lr, weight_decay: passed to ``model.configure_optimizers``.
        patience: stop after this many epochs without a validation improvement larger than
            ``min_delta`` (``None``: never stop early).
        grad_clip: max gradient norm (``None`` or 0: no clipping).
        scheduler: ``cosine`` (per step, after ``warmup_epochs``, down to ``min_lr_ratio``),
            ``multistep`` (x ``lr_gamma`` at each epoch in ``milestones``) or ``none``.
        device: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` | ``mps``.
        amp: bf16 autocast on CUDA (ignored elsewhere).
        seed: seeds shuffling, initial RNG state and the model's stochastic parts.
        num_workers: DataLoader workers for batch assembly (0: in the main process).
        checkpoint_path: where to write the per-epoch resumable checkpoint (``None``: don't).
        resume: continue from ``checkpoint_path`` if it exists and was written by the same
            configuration (``epochs`` and ``patience`` may differ); otherwise start afresh.
        on_epoch: called after each epoch (and after its checkpoint is written) with the
            epoch's history row, e.g. to log to MLflow.
        max_train_batches_per_epoch: cap on the batches per epoch (quick runs, tests).
        val_batch_size: validation batch size (default ``2 * batch_size``).
        deterministic: ``torch.use_deterministic_algorithms`` (warn-only) during the call.
        num_threads: ``torch.set_num_threads`` during the call (``None``: leave as is). On a
            CPU shared with other jobs, 1 avoids OpenMP threads spin-waiting on each other,
            which can slow training by an order of magnitude.
        desc: progress-bar label (default: the model's registry name).

    Returns:
        :class:`TrainResult`.
    """
    train_images = _check_images(train_images, "train_images")
    val_images = _check_images(val_images, "val_images")
    if len(train_images) < 2:
        raise ValueError(f"train_images: need at least 2 images, got {len(train_images)}")
    if len(val_images) < 1:
        raise ValueError("val_images: need at least 1 validation normal for model selection")
    if train_images.shape[1:] != val_images.shape[1:]:
        raise ValueError(
            f"train/val image sizes differ: {train_images.shape[1:]} vs {val_images.shape[1:]}"
        )
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1 (got {epochs}, {batch_size})")
    if scheduler not in SCHEDULERS:
        raise ValueError(f"train.scheduler: {scheduler!r} is not one of {', '.join(SCHEDULERS)}")
    if patience is not None and patience < 1:
        raise ValueError(f"train.patience must be >= 1 or null, got {patience}")

    dev = resolve_device(device)
    ckpt_path = Path(checkpoint_path) if checkpoint_path is not None else None
    name = desc or getattr(model, "registry_name", "") or type(model).__name__
    batch_size = int(batch_size)
    n_batches = _train_batches(len(train_images), batch_size, max_train_batches_per_epoch)
    val_bs = int(val_batch_size or 2 * batch_size)
    autocast = autocast_factory(dev, amp)

    if num_threads is not None and num_threads < 1:
        raise ValueError(f"train.num_threads must be >= 1 or null, got {num_threads}")
    prev_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_bench = torch.backends.cudnn.benchmark
    if deterministic:
        if dev.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    try:
        _seed_everything(seed)
        model.to(dev)
        to_channels_last(model, dev)
        optimizers = model.configure_optimizers(lr, weight_decay)
        for opt in optimizers:
            for group in opt.param_groups:
                group.setdefault("initial_lr", group["lr"])

        fingerprint = _jsonable(
            {
                "model": type(model).__name__,
                "model_args": getattr(model, "model_args", {}),
                "params": [[k, list(v.shape)] for k, v in model.state_dict().items()],
                "batch_size": batch_size,
                "lr": float(lr),
                "weight_decay": float(weight_decay),
                "grad_clip": grad_clip,
                "scheduler": scheduler,
                "warmup_epochs": float(warmup_epochs),
                "milestones": [int(m) for m in milestones],
                "lr_gamma": float(lr_gamma),
                "min_lr_ratio": float(min_lr_ratio),
                "seed": int(seed),
                "amp": bool(amp),
                "max_train_batches_per_epoch": max_train_batches_per_epoch,
                "train_data": _data_fingerprint(train_images),
                "val_data": _data_fingerprint(val_images),
            }
        )

        history: list[dict[str, Any]] = []
        best_state = _cpu_state_dict(model)
        best_epoch, best_val = 0, math.inf
        bad_epochs, start_epoch, global_step = 0, 0, 0
        stopped_early = False

        if resume and ckpt_path is not None and ckpt_path.exists():
            ckpt = _load_checkpoint(ckpt_path)
            diff = (
                ["format"]
                if ckpt.get("format") != CHECKPOINT_FORMAT
                else _fingerprint_diff(ckpt["fingerprint"], fingerprint)
            )
            if diff:
                log.warning(
                    "%s: checkpoint %s was written by a different configuration (differs in: %s); "
                    "starting afresh",
                    name,
                    ckpt_path,
                    ", ".join(diff),
                )
            else:
                model.load_state_dict(ckpt["model"])
                for opt, state in zip(optimizers, ckpt["optimizers"], strict=True):
                    opt.load_state_dict(state)
                history = list(ckpt["history"])
                best_state = ckpt["best"]["state_dict"]
                best_epoch, best_val = int(ckpt["best"]["epoch"]), float(ckpt["best"]["val_loss"])
                bad_epochs = int(ckpt["epochs_without_improvement"])
                start_epoch, global_step = int(ckpt["epoch"]), int(ckpt["global_step"])
                stopped_early = bool(ckpt["stopped_early"])
                initial_val = float(ckpt["initial_val_loss"])
                _set_rng_state(ckpt["rng"])
                if scheduler == "cosine" and int(ckpt["epochs"]) != epochs:
                    log.warning(
                        "%s: resuming a cosine schedule planned for %d epochs with epochs=%d; "
                        "the learning rate follows the new length from here on",
                        name,
                        int(ckpt["epochs"]),
                        epochs,
                    )
                log.info("%s: resumed from %s after epoch %d", name, ckpt_path, start_epoch)
        resumed_from = start_epoch
        if start_epoch == 0:
            # The untrained model's validation loss; evaluating draws no random numbers that
            # training would see (forked RNG), so the trained weights do not depend on it.
            with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
                initial_val = _evaluate(model, val_images, val_bs, dev, autocast)

        for epoch in range(start_epoch, epochs):
            if stopped_early:
                break
            t_epoch = time.perf_counter()
            model.train()
            perm = _epoch_permutation(len(train_images), seed, epoch)
            index_lists = [perm[i * batch_size : (i + 1) * batch_size] for i in range(n_batches)]
            sums: dict[str, float] = {}
            seen = 0
            bar = progress(total=n_batches, desc=f"{name} {epoch + 1}/{epochs}", unit="batch")
            t_train = time.perf_counter()
            for batch in _iterate(train_images, index_lists, num_workers, dev.type == "cuda"):
                factor = lr_factor(
                    scheduler,
                    global_step,
                    n_batches,
                    epochs,
                    warmup_epochs=warmup_epochs,
                    milestones=milestones,
                    lr_gamma=lr_gamma,
                    min_lr_ratio=min_lr_ratio,
                )
                _set_lr(optimizers, factor)
                x = images_to_tensor(batch, dev)
                logs = model.training_step(x, optimizers, grad_clip=grad_clip, autocast=autocast)
                if not math.isfinite(logs["loss"]):
                    raise FloatingPointError(
                        f"{name}: non-finite training loss at epoch {epoch + 1}, "
                        f"step {global_step + 1}"
                    )
                b = x.shape[0]
                for k, v in logs.items():
                    sums[k] = sums.get(k, 0.0) + float(v) * b
                seen += b
                global_step += 1
                bar.update(1)
                bar.set_postfix(
                    loss=f"{sums['loss'] / seen:.4g}",
                    img_s=f"{seen / max(time.perf_counter() - t_train, 1e-9):.0f}",
                )
            bar.close()
            train_seconds = time.perf_counter() - t_train

            val = _evaluate(model, val_images, val_bs, dev, autocast)
            if not math.isfinite(val):
                raise FloatingPointError(f"{name}: non-finite validation loss at epoch {epoch + 1}")
            row: dict[str, Any] = {
                "epoch": epoch + 1,
                "train_loss": sums["loss"] / seen,
                "val_loss": val,
                "lr": optimizers[0].param_groups[0]["lr"],
                "seconds": time.perf_counter() - t_epoch,
                "images_per_s": seen / max(train_seconds, 1e-9),
            }
            for k in sorted(sums):
                if k != "loss":
                    row[f"train_{k}"] = sums[k] / seen
            history.append(row)

            if val < best_val - min_delta:
                best_val, best_epoch, bad_epochs = val, epoch + 1, 0
                best_state = _cpu_state_dict(model)
            else:
                bad_epochs += 1
            stopped_early = patience is not None and bad_epochs >= patience
            log.info(
                "%s epoch %d/%d: train %.5g, val %.5g%s (%.1fs, %.0f img/s)",
                name,
                epoch + 1,
                epochs,
                row["train_loss"],
                val,
                " *" if best_epoch == epoch + 1 else "",
                row["seconds"],
                row["images_per_s"],
            )

            if ckpt_path is not None:
                save_torch(
                    ckpt_path,
                    {
                        "format": CHECKPOINT_FORMAT,
                        "fingerprint": fingerprint,
                        "epoch": epoch + 1,
                        "epochs": epochs,
                        "global_step": global_step,
                        "model": _cpu_state_dict(model),
                        "optimizers": [opt.state_dict() for opt in optimizers],
                        "rng": _rng_state(),
                        "history": history,
                        "best": {
                            "state_dict": best_state,
                            "epoch": best_epoch,
                            "val_loss": best_val,
                        },
                        "epochs_without_improvement": bad_epochs,
                        "stopped_early": stopped_early,
                        "initial_val_loss": initial_val,
                    },
                )
            if on_epoch is not None:
                on_epoch(dict(row))
            if stopped_early:
                log.info("%s: early stop after %d epochs without improvement", name, bad_epochs)
                break

        if best_epoch == 0:
            raise RuntimeError(f"{name}: no epoch was trained (epochs={epochs})")
        model.load_state_dict(best_state)
        model.eval()
        frame = pd.DataFrame(history)
        extra_cols = [c for c in frame.columns if c not in BASE_COLUMNS]
        frame = frame[BASE_COLUMNS + extra_cols]
        return TrainResult(
            best_state_dict=best_state,
            best_epoch=best_epoch,
            best_val_loss=best_val,
            initial_val_loss=initial_val,
            history=frame,
            device=describe_device(dev),
            stopped_early=stopped_early,
            resumed_from_epoch=resumed_from,
        )
    finally:
        if deterministic:
            torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
            torch.backends.cudnn.benchmark = prev_bench
        torch.set_num_threads(prev_threads)
