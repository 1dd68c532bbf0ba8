"""Device selection and mixed-precision helpers.

``resolve_device("auto")`` picks CUDA, then Apple MPS, then CPU. On CUDA the training loop runs
under bf16 autocast (same exponent range as float32, so no GradScaler is needed). On CUDA and on
the CPU it trains with channels-last tensors: cuDNN picks tensor-core kernels for them, and
oneDNN's CPU convolutions skip a layout reorder per call (BENCHMARKS.md, section 1: measured
per architecture against the same loop without it). On the CPU, bf16 autocast is opt-in
(``train.cpu_bf16``) and only where the CPU computes bf16 natively (AVX512-BF16 or AMX,
:func:`cpu_bf16_native`): elsewhere oneDNN would emulate it, slower than float32. Where it
applies it trains 1.3-1.4x faster (BENCHMARKS.md, section 1) and stays bit-reproducible on the
same machine, but its metrics differ from a float32 run's (another CPU, or ``cpu_bf16: false``)
by more than rounding: :func:`bf16_autocast` decides, and the checkpoint records what it decided.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import TypeVar

import numpy as np
import torch
from torch import nn

__all__ = [
    "autocast_context",
    "autocast_factory",
    "bf16_autocast",
    "cpu_bf16_native",
    "describe_device",
    "images_to_tensor",
    "inference_device",
    "parse_device_spec",
    "resolve_device",
    "to_channels_last",
    "torch_runtime",
    "uses_channels_last",
]

_SPEC = re.compile(r"^(auto|cpu|mps|cuda)(?::(\d+))?$")

M = TypeVar("M", nn.Module, torch.Tensor)


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def parse_device_spec(spec: str) -> tuple[str, str | None]:
    """``(kind, index)`` of a ``train.device`` value; ``ValueError`` naming the key otherwise."""
    match = _SPEC.match(str(spec).strip().lower())
    if match is None:
        raise ValueError(
            f"train.device: unknown device {spec!r} (valid: auto, cpu, cuda, cuda:<index>, mps)"
        )
    return match.group(1), match.group(2)


def resolve_device(spec: str = "auto") -> torch.device:
    """Turn a params value (``auto``, ``cpu``, ``cuda``, ``cuda:1``, ``mps``) into a device.

    ``auto`` prefers CUDA, then MPS, then CPU. An explicit device that is not available raises
    ``ValueError`` (rather than silently falling back to a 100x slower CPU run).
    """
    kind, index = parse_device_spec(spec)
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if kind == "cpu":
        if index not in (None, "0"):
            raise ValueError(f"train.device: {spec!r} is not a valid CPU device (use 'cpu')")
        return torch.device("cpu")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"train.device: {spec!r} requested but CUDA is not available "
                "(torch.cuda.is_available() is False; use 'auto' or 'cpu')"
            )
        n = torch.cuda.device_count()
        i = int(index) if index is not None else 0
        if i >= n:
            raise ValueError(f"train.device: {spec!r} requested but only {n} CUDA device(s) exist")
        return torch.device("cuda", i) if index is not None else torch.device("cuda")
    # mps
    if not _mps_available():
        raise ValueError(
            f"train.device: {spec!r} requested but the MPS backend is not available "
            "(use 'auto' or 'cpu')"
        )
    if index not in (None, "0"):
        raise ValueError(f"train.device: {spec!r} is not a valid MPS device (use 'mps')")
    return torch.device("mps")


def describe_device(device: torch.device) -> str:
    """Human-readable device name for logs and reports, e.g. ``cuda:0 (NVIDIA H100)``."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(device)


def cpu_bf16_native() -> bool:
    """Whether this CPU has bf16 instructions (AVX512-BF16 or AMX tiles) for oneDNN to use."""
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def bf16_autocast(device: torch.device, amp: bool = True, cpu_bf16: bool = False) -> bool:
    """Whether training on ``device`` runs under bf16 autocast: ``train.amp`` on CUDA;
    ``train.amp`` and ``train.cpu_bf16`` on a CPU with native bf16 (:func:`cpu_bf16_native`);
    never on MPS."""
    if not amp:
        return False
    if device.type == "cuda":
        return True
    return device.type == "cpu" and cpu_bf16 and cpu_bf16_native()


def autocast_context(
    device: torch.device, enabled: bool = True, cpu_bf16: bool = False
) -> AbstractContextManager:
    """bf16 autocast where :func:`bf16_autocast` says so (``enabled`` is ``train.amp``);
    a ``nullcontext`` anywhere else.

    Losses should still be reduced in float32 (``x_hat.float()``); the models in
    :mod:`imgae_dx.models` do so.
    """
    if bf16_autocast(device, enabled, cpu_bf16):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def autocast_factory(
    device: torch.device, enabled: bool = True, cpu_bf16: bool = False
) -> Callable[[], AbstractContextManager]:
    """A zero-argument callable returning a fresh :func:`autocast_context` each call.

    Training steps that run several forward passes (the RA's encoder and decoder updates)
    enter it more than once, so they receive a factory rather than a context manager.
    """

    def factory() -> AbstractContextManager:
        return autocast_context(device, enabled, cpu_bf16)

    return factory


def uses_channels_last(device: torch.device) -> bool:
    """Channels-last pays off for cuDNN and oneDNN (CPU) convolutions; MPS is left as is."""
    return device.type in ("cuda", "cpu")


def to_channels_last(obj: M, device: torch.device) -> M:
    """Convert a module (in place) or a 4-D tensor to channels-last memory format on CUDA/CPU.

    A no-op on other devices and for tensors that are not 4-D.
    """
    if not uses_channels_last(device):
        return obj
    if isinstance(obj, torch.Tensor):
        return obj.contiguous(memory_format=torch.channels_last) if obj.dim() == 4 else obj
    return obj.to(memory_format=torch.channels_last)


def inference_device(spec: str = "auto") -> torch.device:
    """The device to score on: CUDA when there is one, else the CPU.

    Unlike training, ``auto`` skips MPS here: scoring moves every batch back to numpy for the
    anomaly maps, and CPU results must stay reproducible.
    """
    dev = resolve_device(spec)
    return dev if dev.type == "cuda" else torch.device("cpu")


@contextlib.contextmanager
def torch_runtime(
    device: torch.device, *, num_threads: int | None = None, deterministic: bool = True
) -> Iterator[None]:
    """Torch's process-wide settings for one training run, restored on exit.

    ``num_threads``: ``torch.set_num_threads`` (``None``: leave as is). On a CPU shared with
    other jobs, 1 avoids OpenMP threads spin-waiting on each other, which can slow training by
    an order of magnitude. ``deterministic``: deterministic algorithms (warn-only, so an op
    without a deterministic kernel warns instead of failing) and no cuDNN autotuning; on CUDA
    also the cuBLAS workspace setting that deterministic GEMMs need.
    """
    if num_threads is not None and num_threads < 1:
        raise ValueError(f"train.num_threads must be >= 1 or null, got {num_threads}")
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_bench = torch.backends.cudnn.benchmark
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
    if deterministic:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
        torch.backends.cudnn.benchmark = prev_bench
        torch.set_num_threads(prev_threads)


def images_to_tensor(batch: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (B, H, W) -> float32 (B, 1, H, W) in [0, 1] on ``device`` (channels-last on CUDA/CPU).

    Only the batch is converted, so a data set never exists as a float copy in memory.
    """
    if isinstance(batch, np.ndarray):
        # A copy: slices of a read-only memmap cannot back a tensor (torch warns), and the
        # uint8 batch is small next to its float32 conversion below.
        batch = torch.from_numpy(np.array(batch, dtype=np.uint8, order="C", copy=True))
    x = batch.to(device, non_blocking=True).unsqueeze(1).float().div_(255.0)
    return to_channels_last(x, device)
