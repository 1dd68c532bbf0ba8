"""The interface every architecture implements; the training loop and scoring rely on exactly this.

An :class:`AnomalyModel` is a plain ``nn.Module`` whose constructor takes explicit, typed kwargs
with defaults (its ``arch.<name>`` params block). Model, loss and optimisation step live
together here so the training loop (:mod:`imgae_dx.train`) never knows which architecture it
trains; an architecture with an unusual update (the RA's two-optimizer introspective step)
overrides :meth:`AnomalyModel.training_step`.

Conventions (all tensor-facing methods):
    ``x``: (B, 1, H, W) float32 in [0, 1]; the reconstruction ``x_hat`` has the same shape and
    range. Losses are reduced in float32 even under bf16 autocast.
"""

from __future__ import annotations

import abc
import contextlib
import contextvars
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "AnomalyModel",
    "AutocastFactory",
    "batch_randn",
    "batch_shard",
    "current_shard",
    "kl_standard_normal",
    "param_groups",
    "per_image_sse",
    "pixel_mse",
    "reparameterize",
    "soft_clamp",
]

AutocastFactory = Callable[[], AbstractContextManager]


class AnomalyModel(nn.Module, metaclass=abc.ABCMeta):
    """Base class of the reconstruction models (ae, vae, unet, ra).

    A subclass implements :meth:`forward` and :meth:`training_loss` (abstract); the rest has
    defaults it may override.

    Class attributes:
        registry_name: the ``@register_model`` name (``ae``, ``vae``, ...).
        default_score: anomaly-map method that scoring uses when ``score.map: auto``:
            ``"sq"`` (squared residual) or ``"ra"`` (CLAHE residual x saliency).
        has_latent: True for models with a Gaussian posterior (vae, ra), which implement
            :meth:`reconstruct_sampled` and have ``latent_dim``.

    Instance attribute ``model_args`` holds the constructor kwargs (set by ``build_model``) so a
    checkpoint ``{arch, model_args, state_dict}`` can rebuild the model.
    """

    registry_name: ClassVar[str] = ""
    default_score: ClassVar[str] = "sq"
    has_latent: ClassVar[bool] = False  # a posterior q(z|x): reconstruct_sampled works

    def __init__(self) -> None:
        super().__init__()
        self.model_args: dict[str, Any] = {}

    # ---- inference -------------------------------------------------------------------------
    @abc.abstractmethod
    def forward(self, x: Tensor) -> Tensor:
        """x: (B, 1, H, W) in [0, 1] -> x_hat: (B, 1, H, W) in [0, 1].

        Deterministic in ``eval()`` mode (VAE/RA decode the posterior mean).
        """

    def reconstruct_sampled(self, x: Tensor, eps: Tensor) -> Tensor:
        """Decode z = mu + eps * sigma of q(z|x) instead of the posterior mean.

        x: (B, 1, H, W) in [0, 1]; eps: (B, latent_dim) standard normal noise, supplied by the
        caller so that the draw is reproducible (``score.latent: sample``).
        """
        raise TypeError(f"{type(self).__name__} has no latent to sample (score.latent 'sample')")

    def encoder_features(self, x: Tensor) -> list[Tensor]:
        """Multi-scale encoder embeddings of ``x``: a list of (B, C_i, H_i, W_i), fine to coarse.

        Optional; used by scoring for a download-free perceptual saliency
        (``score.saliency: features``).
        """
        raise TypeError(
            f"{type(self).__name__} does not expose encoder features "
            "(score.saliency 'features' needs a model that does, e.g. ra)"
        )

    # ---- objectives ------------------------------------------------------------------------
    @abc.abstractmethod
    def training_loss(self, x: Tensor) -> tuple[Tensor, dict[str, float]]:
        """The training objective on a batch: (scalar loss, extra terms to log as floats)."""

    def validation_loss(self, x: Tensor) -> Tensor:
        """Label-free validation objective (scalar, mean over the batch), called in eval mode.

        Used for early stopping and checkpoint choice on validation normals. Default: the
        per-pixel reconstruction MSE; subclasses document what they use instead.
        """
        return pixel_mse(self(x), x)

    # ---- optimisation ----------------------------------------------------------------------
    def configure_optimizers(self, lr: float, weight_decay: float) -> list[torch.optim.Optimizer]:
        """One AdamW over all parameters (AdamW with weight_decay 0 is Adam).

        Weight decay is not applied to biases and normalisation parameters.
        """
        return [torch.optim.AdamW(param_groups(self.parameters(), weight_decay), lr=lr)]

    def training_step(
        self,
        x: Tensor,
        optimizers: Sequence[torch.optim.Optimizer],
        *,
        grad_clip: float | None = None,
        autocast: AutocastFactory = contextlib.nullcontext,
    ) -> dict[str, float]:
        """One optimisation step on batch ``x``; returns ``{"loss": ..., **terms}`` as floats.

        Default: zero_grad, :meth:`training_loss` under ``autocast()``, backward, optional
        gradient-norm clipping, step every optimizer. Raises ``FloatingPointError`` on a
        non-finite loss before any parameter is changed.
        """
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        with autocast():
            loss, logs = self.training_loss(x)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"{type(self).__name__}: non-finite training loss {value}")
        loss.backward()
        out = {"loss": value, **logs}
        if grad_clip is not None and grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.parameters(), grad_clip)
            out["grad_norm"] = float(norm)
        for opt in optimizers:
            opt.step()
        return out


# ---- shared helpers ------------------------------------------------------------------------
def param_groups(params, weight_decay: float) -> list[dict[str, Any]]:
    """Split parameters into decayed (weights of conv/linear, ndim >= 2) and not decayed groups."""
    params = [p for p in params if p.requires_grad]
    if weight_decay <= 0:
        return [{"params": params, "weight_decay": 0.0}]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def pixel_mse(x_hat: Tensor, x: Tensor) -> Tensor:
    """Mean squared error over all pixels and the batch, in float32 (scalar)."""
    return F.mse_loss(x_hat.float(), x.float())


def per_image_sse(x_hat: Tensor, x: Tensor) -> Tensor:
    """Sum of squared errors per image in float32: (B, ...) -> (B,)."""
    return (x_hat.float() - x.float()).pow(2).flatten(1).sum(1)


def kl_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over latent dims, float32: (B, D) -> (B,)."""
    mu, logvar = mu.float(), logvar.float()
    return -0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp()).sum(1)


def reparameterize(mu: Tensor, logvar: Tensor) -> Tensor:
    """z = mu + exp(logvar / 2) * eps, eps ~ N(0, I) (Kingma & Welling, ICLR 2014)."""
    return mu + torch.exp(0.5 * logvar) * batch_randn(mu.shape, dtype=mu.dtype, device=mu.device)


#: (rank, number of ranks) of the batch slice being trained on; see :func:`batch_shard`.
_SHARD: contextvars.ContextVar[tuple[int, int]] = contextvars.ContextVar("shard", default=(0, 1))


@contextlib.contextmanager
def batch_shard(rank: int, size: int) -> Iterator[None]:
    """While open, a batch is slice ``rank`` of ``size`` equal slices of a global batch
    (data-parallel training, :mod:`imgae_dx.distributed`): :func:`batch_randn` then draws the
    global batch's noise and keeps this slice's rows."""
    token = _SHARD.set((int(rank), int(size)))
    try:
        yield
    finally:
        _SHARD.reset(token)


def current_shard() -> tuple[int, int]:
    """(rank, number of ranks) set by :func:`batch_shard`; (0, 1) outside it."""
    return _SHARD.get()


def batch_randn(
    shape: Sequence[int],
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``torch.randn(shape)`` for a batch (B, ...), the same numbers whether the global batch
    is one process's or split over ranks under :func:`batch_shard`: every rank draws the whole
    (size * B, ...) and keeps its rows, so the noise and the generator's next state equal a
    single process's (and the ranks' generators stay in step)."""
    rank, size = _SHARD.get()
    shape = tuple(shape)
    if size == 1:
        return torch.randn(shape, dtype=dtype, device=device, generator=generator)
    full = torch.randn(
        (size * shape[0], *shape[1:]), dtype=dtype, device=device, generator=generator
    )
    return full[rank * shape[0] : (rank + 1) * shape[0]]


def soft_clamp(v: Tensor, bound: float) -> Tensor:
    """Smoothly squash ``v`` into (-bound, bound): ``bound * tanh(v / bound)``.

    Used on log-variances: unlike a hard clamp it never zeroes the gradient (a posterior that
    overshoots can come back), and exp(+-bound) stays finite in float32 and bf16.
    """
    return bound * torch.tanh(v / bound)
