"""Architecture-agnostic training loop with label-free model selection and exact resume.

The loop only talks to the :class:`~imgae_dx.models.base.AnomalyModel` interface
(``configure_optimizers``, ``training_step``, ``validation_loss``), so it trains a plain AE and
the RA's two-optimizer introspective step alike. It never sees a label: early stopping and the
choice of the returned weights use the validation loss of the validation *normals* only
(``docs/architecture.md``, "Protocol").

Reproducibility:
    * the shuffling of epoch ``e`` comes from a ``torch.Generator`` seeded with ``(seed, e)``;
    * ``torch``/``numpy``/``random`` are seeded from ``seed`` and deterministic algorithms are
      switched on for the duration of the call (:func:`imgae_dx.device.torch_runtime`), so on
      CPU the same call twice gives bit-identical weights;
    * with ``checkpoint_path`` the resume state (:mod:`imgae_dx.checkpoint`) is written
      atomically after every epoch, and ``config.resume`` continues from it exactly:
      4 epochs straight and 2 epochs + crash + resume give the same weights and history.

On CUDA the step runs under bf16 autocast (no GradScaler: bf16 has float32's exponent range);
on CUDA and CPU with channels-last tensors (:mod:`imgae_dx.device`).

Under ``torchrun`` (a process group joined by :func:`imgae_dx.distributed.process_group`) each
global batch is split over the processes and gradients, BatchNorm statistics, training noise
and validation losses are combined over them (:class:`imgae_dx.distributed.World`): the
weights equal a single process's up to float rounding, and only rank 0 writes the resume
state, logs and calls ``on_epoch``.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any, get_args

import numpy as np
import pandas as pd
import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler
from tqdm import tqdm

from imgae_dx import checkpoint
from imgae_dx.augment import augment_batch
from imgae_dx.config import Scheduler, TrainParams
from imgae_dx.device import (
    autocast_factory,
    bf16_autocast,
    describe_device,
    images_to_tensor,
    resolve_device,
    to_channels_last,
    torch_runtime,
)
from imgae_dx.distributed import World
from imgae_dx.models.base import AnomalyModel, batch_shard

__all__ = [
    "SCHEDULERS",
    "TIMING_COLUMNS",
    "TrainParams",
    "TrainResult",
    "images_to_tensor",
    "lr_factor",
    "train_model",
    "validation_loss",
]

log = logging.getLogger(__name__)

SCHEDULERS: tuple[str, ...] = get_args(Scheduler)
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
        device: the device trained on, in words (e.g. ``cpu (2 threads), bf16 autocast``).
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


def _check_inputs(train: np.ndarray, val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    train, val = _check_images(train, "train_images"), _check_images(val, "val_images")
    if len(train) < 2:
        raise ValueError(f"train_images: need at least 2 images, got {len(train)}")
    if len(val) < 1:
        raise ValueError("val_images: need at least 1 validation normal for model selection")
    if train.shape[1:] != val.shape[1:]:
        raise ValueError(f"train/val image sizes differ: {train.shape[1:]} vs {val.shape[1:]}")
    return train, val


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


def _epoch_batches(n: int, batch_size: int, n_batches: int, seed: int, epoch: int) -> list:
    """Index lists of epoch ``epoch``: a shuffle that is a function of (seed, epoch) only, so
    resume is exact."""
    state = np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1, dtype=np.uint64)
    gen = torch.Generator().manual_seed(int(state[0]) & 0x7FFF_FFFF_FFFF_FFFF)
    perm = torch.randperm(n, generator=gen).numpy()
    return [perm[i * batch_size : (i + 1) * batch_size] for i in range(n_batches)]


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
    cpu_bf16: bool = False,
) -> float:
    """Mean of ``model.validation_loss`` over ``images`` (uint8 (N, H, W)), in eval mode."""
    images = _check_images(images, "images")
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    return _evaluate(model, images, batch_size, dev, autocast_factory(dev, amp, cpu_bf16))


def _evaluate(
    model: AnomalyModel,
    images: np.ndarray,
    batch_size: int,
    device: torch.device,
    autocast: Callable,
    world: World | None = None,
) -> float:
    """Mean validation loss; with several processes each takes every size-th batch and the
    sums are combined, so every rank gets the same value (early stopping agrees)."""
    world = world or World(device=device)
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(images), batch_size)[world.rank :: world.size]:
            x = images_to_tensor(images[start : start + batch_size], device)
            with autocast():
                loss = model.validation_loss(x)
            total += float(loss) * x.shape[0]
            count += x.shape[0]
    total, count = world.sum([total, count])
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

    A per-step function rather than torch's ``CosineAnnealingLR``/``MultiStepLR``: those step
    per epoch and have no warm-up; :func:`make_schedulers` hands this to ``LambdaLR``.
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


def make_schedulers(
    optimizers: Sequence[torch.optim.Optimizer], config: TrainParams, steps_per_epoch: int
) -> list[LRScheduler]:
    """One ``LambdaLR`` per optimizer, stepped once per optimisation step (:func:`lr_factor`)."""

    def factor(step: int) -> float:
        return lr_factor(
            config.scheduler,
            step,
            steps_per_epoch,
            config.epochs,
            warmup_epochs=config.warmup_epochs,
            milestones=config.milestones,
            lr_gamma=config.lr_gamma,
            min_lr_ratio=config.min_lr_ratio,
        )

    return [LambdaLR(opt, factor) for opt in optimizers]


# ---- the state of a run ------------------------------------------------------------------------
def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def _cpu_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


@dataclass
class Progress:
    """What a run has done so far: the epochs' rows and the best weights. Saved whole in the
    resume state; everything else about the run (epochs done, early stop) follows from it."""

    history: list[dict[str, Any]]
    best_state: dict[str, torch.Tensor]
    best_epoch: int = 0
    best_val: float = math.inf
    bad_epochs: int = 0  # epochs since the last improvement
    initial_val: float = math.nan  # validation loss of the untrained model

    @property
    def epoch(self) -> int:
        """Epochs completed."""
        return len(self.history)

    def record(self, row: dict[str, Any], model: torch.nn.Module, min_delta: float) -> None:
        """Add an epoch's row; keep the model's weights if its validation loss is the best."""
        self.history.append(row)
        if row["val_loss"] < self.best_val - min_delta:
            self.best_val, self.best_epoch, self.bad_epochs = row["val_loss"], self.epoch, 0
            self.best_state = _cpu_state_dict(model)
        else:
            self.bad_epochs += 1

    def stopped(self, patience: int | None) -> bool:
        return patience is not None and self.bad_epochs >= patience

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class _Run:
    """The pieces one training run holds between epochs."""

    model: AnomalyModel
    config: TrainParams
    device: torch.device
    optimizers: list[torch.optim.Optimizer]
    schedulers: list[LRScheduler]
    n_batches: int
    name: str
    autocast: Callable
    progress: Progress
    world: World

    @property
    def global_step(self) -> int:
        """Optimisation steps done (the schedules step once per optimisation step)."""
        return self.schedulers[0].last_epoch

    @property
    def done(self) -> bool:
        p = self.progress
        return p.epoch >= self.config.epochs or p.stopped(self.config.patience)

    def resume_state(self, fingerprint: dict[str, Any]) -> checkpoint.ResumeState:
        return checkpoint.ResumeState(
            fingerprint=fingerprint,
            model=_cpu_state_dict(self.model),
            optimizers=[opt.state_dict() for opt in self.optimizers],
            schedulers=[s.state_dict() for s in self.schedulers],
            rng=checkpoint.rng_state(),
            progress=self.progress.as_dict(),
        )

    def restore(self, state: checkpoint.ResumeState) -> None:
        self.model.load_state_dict(state.model)
        for opt, s in zip(self.optimizers, state.optimizers, strict=True):
            opt.load_state_dict(s)
        for sched, s in zip(self.schedulers, state.schedulers, strict=True):
            sched.load_state_dict(s)
        self.progress = Progress(**state.progress)
        checkpoint.set_rng_state(state.rng)


# ---- one epoch ---------------------------------------------------------------------------------
def _train_epoch(
    run: _Run, images: np.ndarray, *, seed: int, num_workers: int
) -> tuple[dict[str, float], int, float]:
    """One pass over ``images``: (per-image mean of every logged term, images seen, last lr)."""
    cfg, dev, epoch = run.config, run.device, run.progress.epoch
    run.model.train()
    batches = _epoch_batches(len(images), cfg.batch_size, run.n_batches, seed, epoch)
    batches = run.world.shard(batches)  # this rank's slice of every global batch
    sums: dict[str, float] = {}
    seen, lr = 0, math.nan
    bar = tqdm(
        total=run.n_batches, desc=f"{run.name} {epoch + 1}/{cfg.epochs}", unit="batch",
        disable=None if run.world.is_main else True, leave=False, dynamic_ncols=True,
    )  # fmt: skip
    t0 = time.perf_counter()
    for step, batch in enumerate(_iterate(images, batches, num_workers, dev.type == "cuda")):
        batch = augment_batch(  # train.augment; validation batches never pass here
            batch.to(dev, non_blocking=True), cfg.augment, seed=seed, epoch=epoch, step=step,
            part=(run.world.rank, run.world.size),
        )  # fmt: skip
        x = images_to_tensor(batch, dev)
        lr = run.optimizers[0].param_groups[0]["lr"]
        with batch_shard(run.world.rank, run.world.size):
            logs = run.model.training_step(
                x, run.optimizers, grad_clip=cfg.grad_clip, autocast=run.autocast
            )
        if not math.isfinite(logs["loss"]):
            raise FloatingPointError(
                f"{run.name}: non-finite training loss at epoch {epoch + 1}, "
                f"step {run.global_step + 1}"
            )
        for sched in run.schedulers:
            sched.step()
        for k, v in logs.items():
            sums[k] = sums.get(k, 0.0) + float(v) * x.shape[0]
        seen += x.shape[0]
        bar.update(1)
        bar.set_postfix(
            loss=f"{sums['loss'] / seen:.4g}", img_s=f"{seen / (time.perf_counter() - t0):.0f}"
        )
    bar.close()
    *totals, seen = run.world.sum([*sums.values(), seen])  # over the global batches
    return {k: v / seen for k, v in zip(sums, totals, strict=True)}, int(seen), lr


def _epoch(run: _Run, train: np.ndarray, val: np.ndarray, seed: int, num_workers: int) -> dict:
    """Train one epoch and validate: the epoch's history row."""
    t_epoch = time.perf_counter()
    means, seen, lr = _train_epoch(run, train, seed=seed, num_workers=num_workers)
    train_seconds = time.perf_counter() - t_epoch
    val_loss = _evaluate(
        run.model, val, _val_batch_size(run.config), run.device, run.autocast, run.world
    )
    epoch = run.progress.epoch + 1
    if not math.isfinite(val_loss):
        raise FloatingPointError(f"{run.name}: non-finite validation loss at epoch {epoch}")
    row: dict[str, Any] = {
        "epoch": epoch,
        "train_loss": means["loss"],
        "val_loss": val_loss,
        "lr": lr,
        "seconds": time.perf_counter() - t_epoch,
        "images_per_s": seen / max(train_seconds, 1e-9),
    }
    row.update({f"train_{k}": means[k] for k in sorted(means) if k != "loss"})
    return row


def _val_batch_size(config: TrainParams) -> int:
    return int(config.val_batch_size or 2 * config.batch_size)


def _log_epoch(run: _Run, row: dict[str, Any]) -> None:
    if not run.world.is_main:
        return
    log.info(
        "%s epoch %d/%d: train %.5g, val %.5g%s (%.1fs, %.0f img/s)",
        run.name, row["epoch"], run.config.epochs, row["train_loss"], row["val_loss"],
        " *" if run.progress.best_epoch == row["epoch"] else "", row["seconds"],
        row["images_per_s"],
    )  # fmt: skip


# ---- the loop ----------------------------------------------------------------------------------
def _start(
    model: AnomalyModel, config: TrainParams, world: World, n_train: int, desc: str | None
) -> _Run:
    """Model on its device (rank 0's weights on every rank), optimizers and schedules, a fresh
    run state."""
    dev = world.device
    model.to(dev)
    to_channels_last(model, dev)
    world.broadcast_module(model)
    optimizers = model.configure_optimizers(config.lr, config.weight_decay)
    n_batches = _train_batches(n_train, config.batch_size, config.max_train_batches_per_epoch)
    return _Run(
        model=model,
        config=config,
        device=dev,
        optimizers=optimizers,
        schedulers=make_schedulers(optimizers, config, n_batches),
        n_batches=n_batches,
        name=desc or getattr(model, "registry_name", "") or type(model).__name__,
        autocast=autocast_factory(dev, config.amp, config.cpu_bf16),
        progress=Progress(history=[], best_state=_cpu_state_dict(model)),
        world=world,
    )


def _resume_or_evaluate(
    run: _Run, path: str | os.PathLike | None, fingerprint: dict, val: np.ndarray
) -> int:
    """Continue from the resume state at ``path`` if it matches; else evaluate the untrained
    model. Returns the epochs already done. Rank 0 reads the state and hands it to the
    others."""
    state = None
    if run.config.resume and path is not None and run.world.is_main:
        state = checkpoint.load_resume(path, fingerprint, run.name)
    state = run.world.broadcast(state)
    if state is not None:
        run.restore(state)
        run.world.broadcast_rng()
        if run.world.is_main:
            log.info("%s: resumed from %s after epoch %d", run.name, path, run.progress.epoch)
        return run.progress.epoch
    # The untrained model's validation loss; evaluating draws no random numbers that training
    # would see (forked RNG), so the trained weights do not depend on it.
    with torch.random.fork_rng(devices=[run.device] if run.device.type == "cuda" else []):
        run.progress.initial_val = _evaluate(
            run.model, val, _val_batch_size(run.config), run.device, run.autocast, run.world
        )
    return 0


def train_model(
    model: AnomalyModel,
    train_images: np.ndarray,
    val_images: np.ndarray,
    config: TrainParams | None = None,
    *,
    seed: int = 0,
    checkpoint_path: str | os.PathLike | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    num_workers: int = 0,
    deterministic: bool = True,
    desc: str | None = None,
) -> TrainResult:
    """Train ``model`` on uint8 images and select the epoch with the lowest validation loss.

    Args:
        model: an :class:`AnomalyModel` (e.g. from ``build_model``); trained in place and left
            holding the best weights, in eval mode, on the device.
        train_images, val_images: uint8 arrays (N, H, W) (a memmap is fine). The validation set
            holds normals only; its loss drives early stopping and checkpoint choice.
        config: the ``train`` settings (:class:`~imgae_dx.config.TrainParams`: epochs, batch
            size, lr, patience, schedule, device, resume ...); default: its defaults.
        seed: seeds shuffling, initial RNG state and the model's stochastic parts.
        checkpoint_path: where to write the per-epoch resume state (``None``: don't); with
            ``config.resume`` a matching state there is continued.
        on_epoch: called after each epoch (and after its checkpoint is written) with the
            epoch's history row, e.g. to log to MLflow (on rank 0 only).
        num_workers: DataLoader workers for batch assembly (0: in the main process).
        deterministic: deterministic algorithms during the call.
        desc: progress-bar and log label (default: the model's registry name).
    """
    config = config if config is not None else TrainParams()
    train_images, val_images = _check_inputs(train_images, val_images)
    world = World.current(resolve_device(config.device))
    dev = world.device
    with torch_runtime(dev, num_threads=config.num_threads, deterministic=deterministic):
        _seed_everything(seed)
        run = _start(model, config, world, len(train_images), desc)
        fingerprint = checkpoint.fingerprint(
            model, config, dev, seed=seed, train_images=train_images, val_images=val_images
        )
        resumed_from = _resume_or_evaluate(run, checkpoint_path, fingerprint, val_images)
        with world.synchronized(model):
            while not run.done:
                row = _epoch(run, train_images, val_images, seed, num_workers)
                run.progress.record(row, model, config.min_delta)
                _log_epoch(run, row)
                if world.is_main and checkpoint_path is not None:
                    checkpoint.save_resume(checkpoint_path, run.resume_state(fingerprint))
                if world.is_main and on_epoch is not None:
                    on_epoch(dict(row))
        return _result(run, resumed_from)


def _result(run: _Run, resumed_from: int) -> TrainResult:
    p, patience = run.progress, run.config.patience
    if p.best_epoch == 0:
        raise RuntimeError(f"{run.name}: no epoch was trained (epochs={run.config.epochs})")
    if p.stopped(patience):
        log.info("%s: early stop after %d epochs without improvement", run.name, p.bad_epochs)
    run.model.load_state_dict(p.best_state)
    run.model.eval()
    frame = pd.DataFrame(p.history)
    frame = frame[BASE_COLUMNS + [c for c in frame.columns if c not in BASE_COLUMNS]]
    return TrainResult(
        best_state_dict=p.best_state,
        best_epoch=p.best_epoch,
        best_val_loss=p.best_val,
        initial_val_loss=p.initial_val,
        history=frame,
        device=describe_device(run.device)
        + (
            ", bf16 autocast"
            if bf16_autocast(run.device, run.config.amp, run.config.cpu_bf16)
            else ""
        ),
        stopped_early=p.stopped(patience),
        resumed_from_epoch=resumed_from,
    )
