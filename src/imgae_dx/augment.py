"""Training-time augmentation of uint8 batches: the RA reference's random affine + flip.

Bercea et al. (MIDL 2023; github.com/ci-ber/RA, ``data/loaders/fastmri_loader.py``) train with
``RandomAffine(10, (0.1, 0.1), (0.9, 1.1))`` then ``RandomHorizontalFlip(0.5)`` from
torchvision, on 8-bit images (``ToPILImage``), with torchvision's defaults: nearest-neighbour
interpolation, fill 0, rotation about the image centre, translations rounded to whole pixels.
:func:`augment_batch` samples the same distribution per image:

    angle ~ U(-10, 10) degrees, scale ~ U(0.9, 1.1),
    t_x = round(U(-0.1 W, 0.1 W)), t_y = round(U(-0.1 H, 0.1 H)) pixels, flip with p = 0.5

and applies it to a whole batch at once on the training device (``affine_grid`` +
``grid_sample``, nearest, zero padding, ``align_corners=False`` as torchvision's tensor path),
so a uint8 batch stays exactly uint8: nearest sampling only moves pixel values.

Hand-written rather than torchvision's or kornia's transforms: torchvision does not import in
this environment, both sample per image from the global RNG, and the loop needs the draws to
come from a generator of their own -- seeded with ``(seed, epoch, step)`` -- so that
augmentation never perturbs the model's random stream, a step's draws do not depend on the
device, and a resumed run sees the same augmented batches as an uninterrupted one.
"""

from __future__ import annotations

import math
from typing import get_args

import numpy as np
import torch
import torch.nn.functional as F

from imgae_dx.config import AugmentMode

__all__ = [
    "AUGMENTS",
    "AffineFlip",
    "AugmentMode",
    "apply_affine_flip",
    "augment_batch",
    "augment_generator",
    "sample_affine_flip",
]

#: ``train.augment``: ``off`` (none) or ``affine_flip`` (the RA reference's affine + flip).
AUGMENTS: tuple[str, ...] = get_args(AugmentMode)


class AffineFlip:
    """The reference's ranges (``RandomAffine(10, (0.1, 0.1), (0.9, 1.1))``, flip p = 0.5)."""

    degrees = 10.0
    translate = 0.1  # fraction of width (x) and height (y)
    scale = (0.9, 1.1)
    flip_p = 0.5


def augment_generator(seed: int, epoch: int, step: int) -> torch.Generator:
    """A CPU generator that is a function of ``(seed, epoch, step)`` only."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(step)]).generate_state(1, np.uint64)
    return torch.Generator().manual_seed(int(state[0]) & 0x7FFF_FFFF_FFFF_FFFF)


def sample_affine_flip(n: int, h: int, w: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Per-image parameters of ``n`` (H, W) images, drawn in a fixed order from ``gen``:
    ``angle`` (degrees), ``tx``/``ty`` (whole pixels), ``scale`` (float64) and ``flip`` (bool),
    each of shape (n,), on the CPU."""
    p = AffineFlip

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return torch.rand(n, generator=gen, dtype=torch.float64) * (hi - lo) + lo

    angle = uniform(-p.degrees, p.degrees)
    tx = torch.round(uniform(-p.translate * w, p.translate * w))
    ty = torch.round(uniform(-p.translate * h, p.translate * h))
    scale = uniform(*p.scale)
    flip = torch.rand(n, generator=gen, dtype=torch.float64) < p.flip_p
    return {"angle": angle, "tx": tx, "ty": ty, "scale": scale, "flip": flip}


def _theta(prm: dict[str, torch.Tensor], h: int, w: int) -> torch.Tensor:
    """``affine_grid``'s (B, 2, 3): output -> input in normalised coordinates.

    The forward map in pixels about the centre is ``p' = s R(a) p + t``; its inverse
    ``p = R(-a) (p' - t) / s`` is expressed in ``align_corners=False`` normalised coordinates
    (``u = p / (W/2)``, ``v = p / (H/2)``), which also makes it right for non-square images.
    """
    a = prm["angle"] * (math.pi / 180.0)
    cos, sin, s = torch.cos(a), torch.sin(a), prm["scale"]
    # inverse linear part in pixels: R(-a) / s
    m = (
        torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)
        / s[:, None, None]
    )
    half = torch.tensor([w / 2.0, h / 2.0], dtype=torch.float64)
    lin = m * half[None, None, :] / half[None, :, None]  # D^-1 M D, D = diag(W/2, H/2)
    t = torch.stack([prm["tx"], prm["ty"]], -1) / half  # (B, 2), normalised
    offset = -(lin @ t[:, :, None])  # (B, 2, 1)
    return torch.cat([lin, offset], dim=2)


def augment_batch(
    batch: torch.Tensor,
    mode: str,
    *,
    seed: int,
    epoch: int,
    step: int,
    part: tuple[int, int] = (0, 1),
) -> torch.Tensor:
    """Augment a uint8 batch ``(B, H, W)`` on its own device; ``off`` returns it unchanged.

    The draws come from :func:`augment_generator` ``(seed, epoch, step)`` on the CPU: the same
    step of the same run gets the same transforms on any device, and torch's global RNG (which
    the models' sampling uses) is left alone. ``part = (rank, size)``: ``batch`` is slice
    ``rank`` of ``size`` equal slices of the global batch (data-parallel training) and gets
    that slice's draws, so the ranks together augment exactly as one process would.
    """
    if mode == "off":
        return batch
    if mode not in AUGMENTS:
        raise ValueError(f"train.augment: {mode!r} is not one of {', '.join(AUGMENTS)}")
    if batch.dtype != torch.uint8 or batch.ndim != 3:
        raise ValueError(
            f"augment_batch: expected uint8 (B, H, W), got {batch.dtype} {tuple(batch.shape)}"
        )
    n, h, w = batch.shape
    rank, size = part
    prm = sample_affine_flip(n * size, h, w, augment_generator(seed, epoch, step))
    return apply_affine_flip(batch, {k: v[rank * n : (rank + 1) * n] for k, v in prm.items()})


def apply_affine_flip(batch: torch.Tensor, prm: dict[str, torch.Tensor]) -> torch.Tensor:
    """uint8 (B, H, W) -> uint8 (B, H, W): each image warped by its parameters of
    :func:`sample_affine_flip` (nearest, fill 0), then mirrored left-right where ``flip``."""
    n, h, w = batch.shape
    theta = _theta(prm, h, w).to(batch.device, torch.float32)
    x = batch.unsqueeze(1).float()  # (B, 1, H, W), values 0..255
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    x = F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    flip = prm["flip"].to(batch.device)[:, None, None, None]
    x = torch.where(flip, x.flip(-1), x)  # flip after the affine, as the reference's Compose
    return x.squeeze(1).round_().to(torch.uint8)  # exact: nearest only copies 0..255 values
