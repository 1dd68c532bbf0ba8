"""Data-parallel training over several processes (``torchrun``), one code path with one process.

``torchrun --nproc-per-node=N stages/train.py <arch>`` starts N copies of the train stage;
:func:`process_group` joins them (NCCL on CUDA, gloo on CPU) and :class:`World` is what the
training loop (:mod:`imgae_dx.train`) asks of them:

* every global batch of the single-process run is split into N equal slices, one per rank
  (:meth:`World.shard`), so N processes see exactly the batches one process would;
* gradients are averaged over ranks as each parameter's gradient is ready
  (:meth:`World.synchronized`), BatchNorm normalises with the statistics of the global batch
  (:class:`SyncBatchNorm`), and training noise is drawn for the global batch
  (:func:`imgae_dx.models.base.batch_shard`): the trained model equals the single-process one
  up to float rounding;
* validation losses are summed over ranks (:meth:`World.sum`), so early stopping and the
  choice of the best epoch agree everywhere.

Why not ``torch.nn.parallel.DistributedDataParallel``: DDP synchronises gradients only for
passes through its wrapper's ``forward`` and for a fixed set of trainable parameters. Here the
optimisation step belongs to the model (``AnomalyModel.training_step``): the RA's runs 13
encoder/decoder passes and two backward passes per step, each with the other half of the
network frozen (``requires_grad`` switched off), which DDP does not support after wrapping.
Averaging each gradient in a post-accumulate-grad hook is DDP's own mechanism without the
wrapper (and without its bucketing: one all-reduce per parameter tensor, fine for these
models' few dozen tensors). Why not ``torch.nn.SyncBatchNorm``: it refuses CPU tensors, so the
gloo path that CI tests could not use it; :class:`SyncBatchNorm` is the same computation.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from imgae_dx.config import ConfigError

__all__ = ["SyncBatchNorm", "World", "process_group"]


@dataclass(frozen=True)
class World:
    """The processes of one training run; ``World()`` is a single process."""

    rank: int = 0
    size: int = 1
    device: torch.device = torch.device("cpu")  # where collectives put their tensors

    @classmethod
    def current(cls, device: torch.device) -> World:
        """The initialised process group (see :func:`process_group`), else a single process.
        Training on CUDA with several processes, ``device`` becomes this rank's own GPU."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return cls(device=device)
        dist = torch.distributed
        if device.type == "cuda":
            device = torch.device("cuda", torch.cuda.current_device())
        return cls(rank=dist.get_rank(), size=dist.get_world_size(), device=device)

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and logs."""
        return self.rank == 0

    def shard(self, batches: Sequence[np.ndarray]) -> Sequence[np.ndarray]:
        """This rank's slice of each global batch of indices (a global batch is sorted first,
        so the slices concatenate to the batch one process would read)."""
        if self.size == 1:
            return batches
        out = []
        for batch in batches:
            if len(batch) % self.size:
                raise ConfigError(
                    f"train.batch_size: a batch of {len(batch)} images does not split evenly "
                    f"over {self.size} processes; use a multiple of {self.size}"
                )
            k = len(batch) // self.size
            out.append(np.sort(batch)[self.rank * k : (self.rank + 1) * k])
        return out

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum over ranks, in float64 (identity with one process)."""
        if self.size == 1:
            return list(values)
        t = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return t.tolist()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (pickled; for small objects and resume states)."""
        if self.size == 1:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0, device=self.device)
        return box[0]

    def broadcast_module(self, module: nn.Module) -> None:
        """Copy rank 0's parameters and buffers to every rank, in place."""
        if self.size == 1:
            return
        for t in module.state_dict().values():
            torch.distributed.broadcast(t, src=0)

    def broadcast_rng(self) -> None:
        """Rank 0's torch RNG state (CPU and this rank's CUDA device) on every rank: the ranks
        draw the global batch's noise, so their generators must agree (also after a resume)."""
        if self.size == 1:
            return
        cuda = self.device.type == "cuda"
        state = self.broadcast(
            (torch.get_rng_state(), torch.cuda.get_rng_state(self.device) if cuda else None)
        )
        torch.set_rng_state(state[0])
        if cuda:
            torch.cuda.set_rng_state(state[1], self.device)

    @contextlib.contextmanager
    def synchronized(self, model: nn.Module) -> Iterator[None]:
        """While open: gradients averaged over ranks as they are accumulated, BatchNorm over
        the global batch. Nothing changes with one process."""
        if self.size == 1:
            yield
            return
        handles = [
            p.register_post_accumulate_grad_hook(self._average_grad)
            for p in model.parameters()
            if p.requires_grad
        ]
        swapped = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        classes = [type(m) for m in swapped]
        for m in swapped:
            m.__class__ = SyncBatchNorm  # same object, parameters and state_dict keys
        try:
            yield
        finally:
            for h in handles:
                h.remove()
            for m, cls in zip(swapped, classes, strict=True):
                m.__class__ = cls

    def _average_grad(self, p: torch.Tensor) -> None:
        torch.distributed.all_reduce(p.grad)
        p.grad.div_(self.size)


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training-mode statistics are those of the batch over all ranks.

    The same computation as ``torch.nn.SyncBatchNorm`` (which refuses CPU tensors) through the
    differentiable ``torch.distributed.nn.functional.all_reduce``: its backward sums the
    gradients of every rank's loss, so the parameter gradients, averaged over ranks, are those
    of the global batch. Two-pass mean and variance in float32; running statistics as
    ``F.batch_norm`` keeps them (unbiased variance, ``momentum``; None: cumulative average).
    Eval mode: the running statistics, as plain BatchNorm.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, ...) -> (B, C, ...)
        if not self.training:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0,
                self.eps,
            )  # fmt: skip
        from torch.distributed.nn.functional import all_reduce

        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.float()
        local = torch.cat([xf.sum(dims), xf.new_tensor([x.numel() // x.shape[1]])])
        total = all_reduce(local)
        n = total[-1]
        mean = total[:-1] / n  # (C,)
        centered = xf - mean.view(shape)
        var = all_reduce(centered.pow(2).sum(dims)) / n  # (C,) biased, as used to normalise
        self._update_running(mean.detach(), var.detach() * n / (n - 1))
        y = centered * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)

    @torch.no_grad()
    def _update_running(self, mean: torch.Tensor, var: torch.Tensor) -> None:
        if not self.track_running_stats:
            return
        self.num_batches_tracked.add_(1)
        m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        self.running_mean.mul_(1.0 - m).add_(mean, alpha=m)
        self.running_var.mul_(1.0 - m).add_(var, alpha=m)


@contextlib.contextmanager
def process_group(device_spec: str) -> Iterator[None]:
    """Join the process group ``torchrun`` describes in the environment (``WORLD_SIZE``,
    ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) for the duration; nothing when
    started as a single process. NCCL when training on CUDA (each process on the GPU of its
    ``LOCAL_RANK``), gloo on CPU."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or torch.distributed.is_initialized():
        yield
        return
    from imgae_dx.device import parse_device_spec, resolve_device

    kind, index = parse_device_spec(device_spec)
    if index is not None and kind == "cuda":
        raise ConfigError(
            f"train.device: {device_spec!r} names one GPU, but under torchrun each process "
            "uses the GPU of its LOCAL_RANK; set train.device to auto or cuda"
        )
    kind = resolve_device(device_spec).type
    if kind not in ("cuda", "cpu"):
        raise ConfigError(f"train.device: {kind} cannot train with several processes; use cpu")
    if kind == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch.distributed.init_process_group("nccl" if kind == "cuda" else "gloo")
    try:
        yield
    finally:
        torch.distributed.destroy_process_group()
