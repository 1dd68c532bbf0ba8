"""Variational autoencoder on the AE backbone (MedIAnomaly VAE baseline).

D. P. Kingma, M. Welling, "Auto-Encoding Variational Bayes", ICLR 2014; as an anomaly-detection
baseline in Y. Cai et al., "MedIAnomaly: A comparative study of anomaly detection in medical
images", arXiv:2404.04518 (2024) (AUROC 0.679 on RSNA; ``docs/architecture.md``, "Reference numbers").

Loss normalisation (so ``beta`` means the same thing at every image size):

    loss = mean_pixels (x - x_hat)^2  +  beta * KL(q(z|x) || N(0, I)) / (H * W)

Multiplying the negative ELBO of a Gaussian decoder with variance sigma^2 by 2 sigma^2 / (H W)
gives exactly this with ``beta = 2 sigma^2``; ``beta = 1`` is the ELBO with sigma^2 = 1/2, and
the default ``beta = 0.01`` corresponds to a decoder noise of sigma ~ 0.07 on [0, 1]
intensities, which keeps reconstructions sharp enough to be useful for anomaly maps while the
KL term stays active. (In the "KL weight relative to mean-pixel MSE" convention used by many
codebases this is a weight of 0.01 / 4096 ~ 2.4e-6 at 64x64.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from imgae_dx.models._blocks import ConvDecoder, ConvEncoder, as_channels, check_image_size, mlp
from imgae_dx.models.base import (
    AnomalyModel,
    kl_standard_normal,
    pixel_mse,
    reparameterize,
    soft_clamp,
)
from imgae_dx.models.registry import register_model

# Log-variances are soft-clamped to (-15, 15) (posterior std in (5e-4, 2e3), far outside any
# useful range): exp(logvar) stays finite in float32/bf16, so the KL never becomes inf/NaN.
LOGVAR_BOUND = 15.0


@register_model("vae")
class VAE(AnomalyModel):
    """Gaussian-latent VAE; decodes the posterior mean in eval mode; anomaly map = sq. residual.

    Args:
        image_size: input side H = W (from ``data.image_size``; not an ``arch.vae`` key).
        channels: widths of the stride-2 conv blocks.
        latent_dim: latent dimensionality.
        hidden_dim: MLP width between feature map and (mu, logvar) (0: a single Linear).
        dropout: dropout in the MLP bottleneck (training only).
        beta: KL weight in the per-pixel normalisation described in the module docstring.
    """

    default_score = "sq"
    has_latent = True

    def __init__(
        self,
        image_size: int = 64,
        channels: Sequence[int] = (16, 32, 64, 64),
        latent_dim: int = 16,
        hidden_dim: int = 2048,
        dropout: float = 0.0,
        beta: float = 0.01,
    ) -> None:
        super().__init__()
        if beta < 0:
            raise ValueError(f"arch.vae: beta must be >= 0, got {beta}")
        self.channels = as_channels(channels)
        self.side = check_image_size(image_size, len(self.channels), "vae")
        self.latent_dim = int(latent_dim)
        self.beta = float(beta)
        n_feat = self.channels[-1] * self.side**2
        self.encoder = ConvEncoder(self.channels)
        self.to_latent = mlp(n_feat, int(hidden_dim), 2 * self.latent_dim, float(dropout))
        self.from_latent = mlp(self.latent_dim, int(hidden_dim), n_feat, float(dropout))
        self.decoder = ConvDecoder(self.channels)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: (B, 1, H, W) -> (mu, logvar), each (B, latent_dim)."""
        h = self.encoder(x)[-1].flatten(1)
        mu, logvar = self.to_latent(h).chunk(2, dim=1)
        return mu, soft_clamp(logvar, LOGVAR_BOUND)

    def decode(self, z: Tensor) -> Tensor:
        """z: (B, latent_dim) -> x_hat: (B, 1, H, W) in [0, 1]."""
        h = self.from_latent(z).view(z.shape[0], self.channels[-1], self.side, self.side)
        return self.decoder(h)

    def forward(self, x: Tensor) -> Tensor:
        mu, logvar = self.encode(x)
        return self.decode(reparameterize(mu, logvar) if self.training else mu)

    def reconstruct_sampled(self, x: Tensor, eps: Tensor) -> Tensor:
        mu, logvar = self.encode(x)
        return self.decode(mu + eps * torch.exp(0.5 * logvar))

    def encoder_features(self, x: Tensor) -> list[Tensor]:
        return self.encoder(x)

    def _objective(self, x: Tensor, sample: bool) -> tuple[Tensor, Tensor, Tensor]:
        mu, logvar = self.encode(x)
        x_hat = self.decode(reparameterize(mu, logvar) if sample else mu)
        rec = pixel_mse(x_hat, x)
        kl = kl_standard_normal(mu, logvar).mean()  # nats per image
        loss = rec + self.beta * kl / (x.shape[-2] * x.shape[-1])
        return loss, rec, kl

    def training_loss(self, x: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Per-pixel MSE + beta * KL / (H W) with a reparameterised sample."""
        loss, rec, kl = self._objective(x, sample=True)
        return loss, {"rec": float(rec.detach()), "kl": float(kl.detach())}

    def validation_loss(self, x: Tensor) -> Tensor:
        """The same objective with z = mu (deterministic, so epochs are comparable)."""
        return self._objective(x, sample=False)[0]
