"""U-Net identity mapping (docs/architecture.md, "Protocol") and the coarse-noise remedy (Kascenas et al.)."""

from __future__ import annotations

import pytest
import torch

from imgae_dx.models import build_model
from imgae_dx.models.unet import make_noise, noise_grid
from tests.conftest import phantoms

SIZE = 32


def scenes(n: int, seed: int) -> torch.Tensor:
    """Chest phantoms with fine i.i.d. texture (std 0.05), which a plain autoencoder cannot
    compress away and so has to pass through its skip connections, as with real radiographs."""
    return phantoms(n, seed, SIZE, texture=0.05)


LESION = 0.45  # intensity of the inserted lesion


def with_lesion(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A bright round 'nodule' (+LESION, radius 3 px) in the left lung; returns (image, mask)."""
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    mask = ((xx - 10) ** 2 + (yy - 15) ** 2) <= 9
    return (x + LESION * mask).clamp(0, 1), mask


def lesion_residual(noise: str, train: torch.Tensor, test: torch.Tensor, mask) -> float:
    torch.manual_seed(0)
    model = build_model("unet", depth=3, base_channels=8, noise=noise, noise_std=0.2)
    (opt,) = model.configure_optimizers(lr=3e-3, weight_decay=0.0)
    model.train()
    for _ in range(150):
        model.training_step(train, [opt])
    model.eval()
    with torch.no_grad():
        x_hat = model(test)
    return float((x_hat - test).abs()[0, 0][mask].mean())


@pytest.fixture(scope="module")
def residuals() -> dict[str, float]:
    train = scenes(24, seed=0)  # a fixed batch of normals
    test, mask = with_lesion(scenes(1, seed=1))
    return {noise: lesion_residual(noise, train, test, mask) for noise in ("none", "coarse")}


def test_plain_unet_copies_the_lesion(residuals) -> None:
    # Trained as a plain autoencoder, the skips reproduce the lesion: nothing to detect.
    assert residuals["none"] < 0.2 * LESION, residuals


def test_coarse_noise_unet_does_not(residuals) -> None:
    # Trained to remove low-frequency perturbations, it replaces the lesion by normal anatomy.
    assert residuals["coarse"] > 0.5 * LESION, residuals
    assert residuals["coarse"] > 4 * residuals["none"], residuals


def test_coarse_noise_shape_and_scale() -> None:
    assert noise_grid(128, 16) == 16 and noise_grid(64, 16) == 8 and noise_grid(32, 16) == 4
    x = torch.zeros(64, 1, 32, 32)
    n = make_noise(x, "coarse", 0.2, 16, torch.Generator().manual_seed(0))
    assert n.shape == x.shape and 0.1 < float(n.std()) < 0.25
    # Low-frequency: neighbouring pixels are strongly correlated, unlike i.i.d. noise.
    corr = torch.corrcoef(torch.stack([n[..., :-1].flatten(), n[..., 1:].flatten()]))[0, 1]
    assert corr > 0.9
    same = make_noise(x, "coarse", 0.2, 16, torch.Generator().manual_seed(0))
    assert torch.equal(n, same)
    assert torch.equal(make_noise(x, "none", 0.2, 16), torch.zeros_like(x))


def test_validation_loss_is_deterministic() -> None:
    model = build_model("unet", depth=2, base_channels=4).eval()
    x = scenes(4, seed=3)
    with torch.no_grad():
        assert torch.equal(model.validation_loss(x), model.validation_loss(x))
