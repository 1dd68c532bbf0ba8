"""Convolutional autoencoder with a dense bottleneck: the AE baseline of MedIAnomaly / AE4AD.

Y. Cai, W. Zhang, H. Chen, K.-T. Cheng, "MedIAnomaly: A comparative study of anomaly detection
in medical images", arXiv:2404.04518 (2024). Their AE at 64x64: four stride-2 conv blocks with
widths (16, 32, 64, 64) + BN, an MLP bottleneck (hidden 2048) to a 16-d latent code, a mirrored
decoder, trained with the l2 loss; image-level AUROC 0.675 on RSNA (``docs/architecture.md``, "Reference numbers").

Differences from their code, on purpose: LeakyReLU(0.2) instead of ReLU (as the issue asks) and
a sigmoid output so that x_hat lies in [0, 1] like the input.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from imgae_dx.models._blocks import ConvDecoder, ConvEncoder, as_channels, check_image_size, mlp
from imgae_dx.models.base import AnomalyModel, pixel_mse
from imgae_dx.models.registry import register_model


@register_model("ae")
class AE(AnomalyModel):
    """Plain autoencoder; anomaly map = squared residual.

    Args:
        image_size: input side H = W (from ``data.image_size``; not an ``arch.ae`` key).
        channels: widths of the stride-2 conv blocks; image_size must be a multiple of
            2 ** len(channels).
        latent_dim: size of the bottleneck code.
        hidden_dim: width of the MLP between feature map and code (0: a single Linear).
        dropout: dropout in the MLP bottleneck (training only).
    """

    default_score = "sq"

    def __init__(
        self,
        image_size: int = 64,
        channels: Sequence[int] = (16, 32, 64, 64),
        latent_dim: int = 16,
        hidden_dim: int = 2048,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.channels = as_channels(channels)
        self.side = check_image_size(image_size, len(self.channels), "ae")
        n_feat = self.channels[-1] * self.side**2
        self.encoder = ConvEncoder(self.channels)
        self.to_latent = mlp(n_feat, int(hidden_dim), int(latent_dim), float(dropout))
        self.from_latent = mlp(int(latent_dim), int(hidden_dim), n_feat, float(dropout))
        self.decoder = ConvDecoder(self.channels)

    def encode(self, x: Tensor) -> Tensor:
        """x: (B, 1, H, W) -> z: (B, latent_dim)."""
        h = self.encoder(x)[-1]  # (B, C, H/16, W/16) at the default depth
        return self.to_latent(h.flatten(1))

    def decode(self, z: Tensor) -> Tensor:
        """z: (B, latent_dim) -> x_hat: (B, 1, H, W) in [0, 1]."""
        h = self.from_latent(z).view(z.shape[0], self.channels[-1], self.side, self.side)
        return self.decoder(h)

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    def encoder_features(self, x: Tensor) -> list[Tensor]:
        return self.encoder(x)

    def training_loss(self, x: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Per-pixel l2 reconstruction loss."""
        return pixel_mse(self(x), x), {}

    # validation_loss: the base class's per-pixel reconstruction MSE.
