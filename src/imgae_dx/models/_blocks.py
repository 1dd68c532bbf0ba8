"""Building blocks shared by the plain AE and the VAE (Cai et al., MedIAnomaly / AE4AD 2024).

A stride-2 convolutional encoder, its mirrored transposed-convolution decoder and the MLP
bottleneck that maps the last feature map to a small latent vector and back.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

_SLOPE = 0.2  # LeakyReLU negative slope (DCGAN, Radford et al. 2016)


def as_channels(channels: Sequence[int], what: str = "channels") -> tuple[int, ...]:
    """Validate a YAML list of channel widths and return it as a tuple of ints."""
    out = tuple(int(c) for c in channels)
    if not out or any(c <= 0 for c in out):
        raise ValueError(f"{what} must be a non-empty list of positive ints, got {channels!r}")
    return out


def check_image_size(image_size: int, n_down: int, arch: str) -> int:
    """Feature-map side after ``n_down`` halvings; raises unless ``image_size`` divides evenly."""
    image_size = int(image_size)
    factor = 2**n_down
    if image_size <= 0 or image_size % factor or image_size // factor < 1:
        raise ValueError(
            f"arch.{arch}: image_size {image_size} must be a positive multiple of {factor} "
            f"({n_down} stride-2 stages)"
        )
    return image_size // factor


class ConvEncoder(nn.Module):
    """len(channels) blocks of Conv(4x4, stride 2) + BN + LeakyReLU.

    x: (B, 1, H, W) -> features: list of (B, channels[i], H / 2^(i+1), W / 2^(i+1)).
    """

    def __init__(self, channels: Sequence[int], in_channels: int = 1) -> None:
        super().__init__()
        blocks = []
        c_in = in_channels
        for c in channels:
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(c_in, c, kernel_size=4, stride=2, padding=1, bias=False),
                    nn.BatchNorm2d(c),
                    nn.LeakyReLU(_SLOPE, inplace=True),
                )
            )
            c_in = c
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = []
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        return feats


class ConvDecoder(nn.Module):
    """Mirror of :class:`ConvEncoder` with ConvTranspose(4x4, stride 2); sigmoid output.

    h: (B, channels[-1], s, s) -> x_hat: (B, out_channels, s * 2^n, s * 2^n) in [0, 1].
    """

    def __init__(self, channels: Sequence[int], out_channels: int = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        rev = list(channels)[::-1]
        for c_in, c_out in zip(rev[:-1], rev[1:]):
            layers += [
                nn.ConvTranspose2d(c_in, c_out, kernel_size=4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.LeakyReLU(_SLOPE, inplace=True),
            ]
        layers += [
            nn.ConvTranspose2d(rev[-1], out_channels, kernel_size=4, stride=2, padding=1),
            nn.Sigmoid(),
        ]
        self.net = nn.Sequential(*layers)

    def forward(self, h: Tensor) -> Tensor:
        return self.net(h)


def mlp(in_features: int, hidden_dim: int, out_features: int, dropout: float) -> nn.Sequential:
    """Linear -> BN -> LeakyReLU -> Dropout -> Linear; a single Linear when ``hidden_dim`` is 0."""
    if hidden_dim <= 0:
        return nn.Sequential(nn.Linear(in_features, out_features))
    return nn.Sequential(
        nn.Linear(in_features, hidden_dim),
        nn.BatchNorm1d(hidden_dim),
        nn.LeakyReLU(_SLOPE, inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden_dim, out_features),
    )
