"""Reversed Autoencoder specifics: reversed embedding loss, two optimizers, numerical safety."""

from __future__ import annotations

import math

import pytest
import torch

from imgae_dx.models import build_model
from imgae_dx.models.ra import ReversedAutoencoder, reversed_embedding_loss

SIZE = 32


def make() -> ReversedAutoencoder:
    torch.manual_seed(0)
    return build_model("ra", image_size=SIZE, channels=(4, 8, 8), latent_dim=8)


def batch(seed: int, n: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, SIZE // 4, SIZE // 4, generator=g)
    return torch.nn.functional.interpolate(x, size=(SIZE, SIZE), mode="bilinear")


def test_architecture_follows_the_paper() -> None:
    model = make()
    x = batch(0)
    feats = model.encoder_features(x)
    # One embedding after each pooling stage, down to (B, C_n, H / 2^n, W / 2^n).
    assert [tuple(f.shape[1:]) for f in feats] == [(4, 16, 16), (8, 8, 8), (8, 4, 4)]
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in model.modules())
    paper = build_model(
        "ra", image_size=128, channels=(64, 128, 256, 512, 512), latent_dim=128
    ).encoder_features(torch.zeros(2, 1, 128, 128))
    assert tuple(paper[-1].shape[1:]) == (512, 4, 4)


def test_reversed_loss_zero_for_identical_and_positive_otherwise() -> None:
    model = make().eval()
    with torch.no_grad():
        a = model.encoder_features(batch(0))
        a2 = model.encoder_features(batch(0))
        b = model.encoder_features(batch(1))
    assert float(reversed_embedding_loss(a, a2)) < 1e-6
    assert float(reversed_embedding_loss(a, b)) > 1e-3
    with pytest.raises(ValueError):
        reversed_embedding_loss(a, b[:-1])


def test_encoder_and_decoder_have_separate_optimizers() -> None:
    model = make()
    opt_e, opt_d = model.configure_optimizers(lr=1e-3, weight_decay=0.0)
    ids_e = {id(p) for g in opt_e.param_groups for p in g["params"]}
    ids_d = {id(p) for g in opt_d.param_groups for p in g["params"]}
    assert ids_e == {id(p) for p in model.encoder.parameters()}
    assert ids_d == {id(p) for p in model.decoder.parameters()}
    assert not ids_e & ids_d and ids_e | ids_d == {id(p) for p in model.parameters()}

    x, noise = batch(0), torch.randn(8, model.latent_dim)
    model.train()
    enc0 = [p.detach().clone() for p in model.encoder.parameters()]
    dec0 = [p.detach().clone() for p in model.decoder.parameters()]

    z, _ = model.encoder_step(x, noise, opt_e)
    assert all(torch.equal(a, b) for a, b in zip(dec0, model.decoder.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(enc0, model.encoder.parameters()))

    enc1 = [p.detach().clone() for p in model.encoder.parameters()]
    model.decoder_step(x, z, noise, opt_d)
    assert all(torch.equal(a, b) for a, b in zip(enc1, model.encoder.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(dec0, model.decoder.parameters()))
    # The temporary freezing is undone.
    assert all(p.requires_grad for p in model.parameters())


def test_no_nan_over_many_steps() -> None:
    model = make()
    opts = model.configure_optimizers(lr=2e-3, weight_decay=0.0)
    model.train()
    x = batch(0, n=16)
    for step in range(25):
        logs = model.training_step(x, opts, grad_clip=10.0)
        bad = {k: v for k, v in logs.items() if not math.isfinite(v)}
        assert not bad, (step, bad)
    assert {"loss_e", "loss_d", "kl", "kl_fake", "expelbo_rec", "expelbo_fake", "emb"} <= set(logs)
    assert 0.0 <= logs["expelbo_rec"] <= 1.0 and 0.0 <= logs["expelbo_fake"] <= 1.0
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_monitoring_loss_and_eval_determinism() -> None:
    model = make()
    loss, logs = model.training_loss(batch(0))
    assert loss.ndim == 0 and math.isfinite(float(loss.detach())) and "emb" in logs
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(batch(2)), model(batch(2)))


def test_vae_warmup_then_introspection() -> None:
    torch.manual_seed(0)
    model = build_model("ra", image_size=SIZE, channels=(4, 8), latent_dim=8, vae_warmup_steps=2)
    opts = model.configure_optimizers(lr=1e-3, weight_decay=0.0)
    model.train()
    phases = ["loss_e" in model.training_step(batch(0), opts) for _ in range(3)]
    assert phases == [False, False, True]
    assert int(model.state_dict()["steps_done"]) == 3  # saved with the weights: resume-safe
