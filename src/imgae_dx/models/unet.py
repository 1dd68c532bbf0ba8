"""U-Net autoencoder trained as a denoising AE with coarse noise.

O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional Networks for Biomedical Image
Segmentation", MICCAI 2015 (architecture). A. Kascenas, N. Pugeault, A. Q. O'Neil, "Denoising
autoencoders for unsupervised anomaly detection in brain MRI", MIDL 2022 (training scheme).

Why the noise: skip connections let a U-Net copy its input, so trained as a plain autoencoder it
reconstructs lesions as faithfully as healthy tissue and its residual detects nothing
(``docs/architecture.md``, "Protocol"). Kascenas et al. add *coarse* Gaussian noise -- drawn at 16x16 for 128x128
images, bilinearly upsampled, std 0.2 -- to the input and train the network to return the clean
image. Low-frequency perturbations look like blob-shaped anomalies, so the network learns to
replace "whatever does not look normal" with plausible normal anatomy; at test time it gets the
clean image and the residual highlights anomalies.

``noise_res`` is the side of the noise grid *for a 128x128 image* and scales with the input
(8x8 at 64x64, 4x4 at 32x32), so the noise has the same spatial extent relative to the anatomy
at every ``data.image_size`` -- the model is fully convolutional and does not take ``image_size``.

Facts from the public code (github.com/AntanasKascenas/DenoisingAE): U-Net with 3 poolings
(their ``depth=4`` counts conv blocks; ours counts down-sampling stages, so theirs is our
``depth=3``), widths 64-128-256-512, GroupNorm + Swish, weight-normalised convs, average-pool
down-sampling, transposed-conv up-sampling; noise 16x16 -> 128x128, std 0.2, randomly rolled,
applied on the foreground (x > 0.01) only; MSE on the foreground; Adam (AMSGrad) lr 1e-4,
weight decay 1e-5, batch 16, cosine schedule. ``configs/paper.yaml`` holds that size.

Deviations, and why: CPU-sized default widths (base 8, depth 4) so the default pipeline trains
in about a minute on two cores; BatchNorm + LeakyReLU with zero padding instead of GroupNorm +
Swish with weight-normalised, reflection-padded convs (the simpler blocks the other models use;
the denoising objective is what matters); noise and loss over the whole image, because a chest
radiograph has no empty background like a skull-stripped brain slice; optional channel dropout
on the skip connections (``skip_dropout``), the other identity-mapping remedy named in
``docs/architecture.md`` ("Protocol").
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from imgae_dx.models.base import AnomalyModel, batch_randn, current_shard, pixel_mse
from imgae_dx.models.registry import register_model

NoiseKind = Literal["coarse", "gaussian", "none"]
NOISE_KINDS: tuple[str, ...] = get_args(NoiseKind)
_SLOPE = 0.2
#: The validation objective adds noise from a generator with this fixed seed, so the value is
#: comparable from epoch to epoch and does not consume the training RNG stream.
VAL_NOISE_SEED = 0


def noise_grid(size: int, noise_res: int) -> int:
    """Side of the coarse noise grid for an input side ``size`` (``noise_res`` is for 128)."""
    return max(1, round(noise_res * size / 128))


def make_noise(
    x: Tensor,
    kind: str,
    std: float,
    noise_res: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Additive noise shaped like ``x`` (B, C, H, W), float32, on ``x.device``.

    ``coarse``: N(0, std^2) on a (grid_h, grid_w) lattice, bilinearly upsampled to (H, W) and
    circularly shifted by a random offset (one per batch).
    ``gaussian``: i.i.d. per-pixel N(0, std^2). ``none``: zeros.
    With ``generator`` (a CPU generator) the noise is drawn on the CPU and then moved, so it is
    reproducible independently of the device RNG.
    """
    b, c, h, w = x.shape
    if kind == "none" or std == 0:
        return torch.zeros_like(x, dtype=torch.float32)
    src = "cpu" if generator is not None else x.device
    if kind == "gaussian":
        n = batch_randn((b, c, h, w), generator=generator, device=src)
    elif kind == "coarse":
        gh, gw = noise_grid(h, noise_res), noise_grid(w, noise_res)
        n = batch_randn((b, c, gh, gw), generator=generator, device=src)
        n = F.interpolate(n.to(x.device), size=(h, w), mode="bilinear", align_corners=False)
        # Random circular shift, as in the reference code, so the noise lattice is not
        # aligned with the image grid.
        shift = torch.randint(0, h * w, (1,), generator=generator, device=src).item()
        n = torch.roll(n, shifts=(shift // w, shift % w), dims=(-2, -1))
    else:
        raise ValueError(f"unknown noise {kind!r} (valid: {', '.join(NOISE_KINDS)})")
    return (n * std).to(x.device)


class DoubleConv(nn.Sequential):
    """(Conv3x3 + BN + LeakyReLU) x 2; keeps the spatial size."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.LeakyReLU(_SLOPE, inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.LeakyReLU(_SLOPE, inplace=True),
        )


@register_model("unet")
class UNet(AnomalyModel):
    """U-Net denoising autoencoder; anomaly map = squared residual of the clean input.

    Args:
        depth: number of 2x down/up-sampling stages (input sides must be multiples of 2^depth).
        base_channels: width at full resolution; doubles per stage up to ``max_channels``.
        max_channels: cap on the width of the deeper stages.
        noise: training corruption: ``coarse`` (Kascenas et al.), ``gaussian`` (per pixel) or
            ``none`` (plain autoencoder; learns the identity -- for ablations only).
        noise_std: standard deviation of the noise (intensities in [0, 1]).
        noise_res: side of the coarse noise grid for a 128x128 input (scaled with the input).
        skip_dropout: channel dropout probability on the skip connections (training only).
    """

    default_score = "sq"

    def __init__(
        self,
        depth: int = 4,
        base_channels: int = 8,
        max_channels: int = 256,
        noise: NoiseKind = "coarse",
        noise_std: float = 0.2,
        noise_res: int = 16,
        skip_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if noise not in NOISE_KINDS:
            raise ValueError(f"arch.unet: noise {noise!r} is not one of {', '.join(NOISE_KINDS)}")
        if depth < 1 or base_channels < 1 or max_channels < 1:
            raise ValueError("arch.unet: depth, base_channels and max_channels must be >= 1")
        if noise_std < 0 or noise_res < 1:
            raise ValueError("arch.unet: noise_std must be >= 0 and noise_res >= 1")
        if not 0 <= skip_dropout < 1:
            raise ValueError(f"arch.unet: skip_dropout must be in [0, 1), got {skip_dropout}")
        self.depth = int(depth)
        self.noise = noise
        self.noise_std = float(noise_std)
        self.noise_res = int(noise_res)
        widths = [min(int(base_channels) * 2**i, int(max_channels)) for i in range(self.depth + 1)]
        self.widths = widths
        self.inc = DoubleConv(1, widths[0])
        self.down = nn.ModuleList(
            nn.Sequential(nn.AvgPool2d(2), DoubleConv(widths[i], widths[i + 1]))
            for i in range(self.depth)
        )
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], kernel_size=2, stride=2)
            for i in reversed(range(self.depth))
        )
        self.fuse = nn.ModuleList(
            DoubleConv(2 * widths[i], widths[i]) for i in reversed(range(self.depth))
        )
        self.skip_drop = nn.Dropout2d(float(skip_dropout))
        self.out = nn.Conv2d(widths[0], 1, kernel_size=1)

    def _check(self, x: Tensor) -> None:
        m = 2**self.depth
        if x.shape[-1] % m or x.shape[-2] % m:
            raise ValueError(
                f"unet: input {tuple(x.shape[-2:])} must be a multiple of 2^depth = {m}"
            )

    def encoder_features(self, x: Tensor) -> list[Tensor]:
        """Encoder activations per stage: [(B, w_0, H, W), (B, w_1, H/2, W/2), ...]."""
        self._check(x)
        feats = [self.inc(x)]
        for down in self.down:
            feats.append(down(feats[-1]))
        return feats

    def forward(self, x: Tensor) -> Tensor:
        feats = self.encoder_features(x)
        h = feats[-1]  # (B, w_depth, H / 2^depth, W / 2^depth)
        for up, fuse, skip in zip(self.up, self.fuse, reversed(feats[:-1])):
            h = up(h)  # (B, w_i, 2h, 2w)
            h = fuse(torch.cat([self._drop_skip(skip), h], dim=1))
        return torch.sigmoid(self.out(h))

    def _drop_skip(self, skip: Tensor) -> Tensor:
        """Channel dropout of a skip connection (B, C, h, w); on a slice of a global batch
        (:func:`~imgae_dx.models.base.batch_shard`) the masks are drawn for the global batch,
        as ``Dropout2d`` draws them, and this slice's rows kept."""
        rank, size = current_shard()
        p = self.skip_drop.p
        if size == 1 or not self.training or p == 0:
            return self.skip_drop(skip)
        b, c = skip.shape[:2]
        keep = torch.empty((size * b, c, 1, 1), dtype=skip.dtype, device=skip.device)
        keep = keep.bernoulli_(1 - p)[rank * b : (rank + 1) * b]
        return skip * keep.div_(1 - p)

    def corrupt(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x + noise of the configured kind (not clipped, as in Kascenas et al.)."""
        if self.noise == "none":
            return x
        return x + make_noise(x, self.noise, self.noise_std, self.noise_res, generator).to(x.dtype)

    def training_loss(self, x: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Denoising objective: reconstruct the clean ``x`` from the corrupted input."""
        return pixel_mse(self(self.corrupt(x)), x), {}

    def validation_loss(self, x: Tensor) -> Tensor:
        """The denoising objective with noise from a fixed-seed generator.

        Model selection on the plain reconstruction error would favour the checkpoint closest to
        the identity, which is exactly what the noise is there to prevent. Every validation batch
        of the same shape receives the same noise fields, so the value is deterministic.
        """
        gen = torch.Generator().manual_seed(VAL_NOISE_SEED)
        return pixel_mse(self(self.corrupt(x, gen)), x)
