"""Regression test of the RA's training objective against an independent implementation.

``_ReferenceStep`` restates the per-batch losses of the authors' trainer (github.com/ci-ber/RA,
``projects/23_ra_midl/RA_Trainer.py``, itself Soft-IntroVAE's, Daniel & Tamar CVPR 2021) from
the paper's equations, pass for pass in that trainer's order: the encoder step encodes the
reconstruction twice (once for the embeddings, once inside its exp-ELBO) and every sample
is an explicit reparameterisation. It shares nothing with ``imgae_dx.models.ra`` but the
network (encoder and decoder modules, so the architecture is not what is under test), and it
is checked against ``ReversedAutoencoder.encoder_step`` / ``decoder_step``, the code that
trains, on one batch from the same weights and the same random draws: both losses and the
gradients of the parameters each step updates.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from imgae_dx.models import build_model

SIZE = 32
PAPER = {"beta_kl": 1.0, "beta_neg": 128.0, "gamma_r": 1e-8, "embedding_weight": 0.005}


def _sample(mu, logvar):
    std = torch.exp(0.5 * logvar)
    return mu + torch.randn_like(std) * std


def _kl(mu, logvar):
    """KL(q(z|x) || N(0, I)) per image, summed over the latent: (B,)."""
    return -0.5 * torch.sum(1 + logvar - logvar.exp() - mu**2, dim=1)


def _sse(target, output):
    """Squared error summed over each image: (B,)."""
    return ((output - target) ** 2).reshape(len(target), -1).sum(dim=1)


def _embedding_loss(real, rec):
    """Reversed embedding loss: per level, 0.5 * MSE + mean over the batch of 1 - cosine."""
    total = 0.0
    for a, b in zip(real, rec):
        cos = F.cosine_similarity(a.reshape(len(a), -1), b.reshape(len(b), -1), dim=1)
        total = total + 0.5 * ((a - b) ** 2).mean() + (1 - cos).mean()
    return total


class _ReferenceStep:
    """The two objectives of one step, written from the paper (s = 1 / (H W))."""

    def __init__(self, net, beta_rec: float, gamma_r: float) -> None:
        self.enc, self.dec, self.beta_rec, self.gamma_r = (
            net.encoder,
            net.decoder,
            beta_rec,
            gamma_r,
        )

    def _encode(self, x):
        mu, logvar, emb = self.enc(x)
        return mu, logvar, emb

    def _through(self, x):
        """Encode, sample, decode: (reconstruction, mu, logvar)."""
        mu, logvar, _ = self._encode(x)
        return self.dec(_sample(mu, logvar)), mu, logvar

    def encoder_loss(self, x, noise):
        s, br = 1.0 / (x.shape[-1] * x.shape[-2]), self.beta_rec
        fake = self.dec(noise)
        mu, logvar, emb_real = self._encode(x)
        z = _sample(mu, logvar)
        rec = self.dec(z)
        _, _, emb_rec = self._encode(rec.detach())
        rec_rec, mu_r, logvar_r = self._through(rec.detach())
        rec_fake, mu_f, logvar_f = self._through(fake.detach())
        elbo_r = torch.exp(
            -2 * s * (br * _sse(rec, rec_rec) + PAPER["beta_neg"] * _kl(mu_r, logvar_r))
        )
        elbo_f = torch.exp(
            -2 * s * (br * _sse(fake, rec_fake) + PAPER["beta_neg"] * _kl(mu_f, logvar_f))
        )
        real = s * (br * _sse(x, rec).mean() + PAPER["beta_kl"] * _kl(mu, logvar).mean())
        adversarial = 0.5 * 0.5 * (elbo_r.mean() + elbo_f.mean())  # 1/2 of the mean of two
        emb = _embedding_loss(emb_real, emb_rec)
        return real + adversarial + PAPER["embedding_weight"] * emb, z

    def decoder_loss(self, x, z, noise):
        s, br = 1.0 / (x.shape[-1] * x.shape[-2]), self.beta_rec
        fake = self.dec(noise)
        rec = self.dec(z.detach())
        mu_r, logvar_r, _ = self._encode(rec)
        z_r = _sample(mu_r, logvar_r)
        mu_f, logvar_f, _ = self._encode(fake)
        z_f = _sample(mu_f, logvar_f)
        rec_rec, rec_fake = self.dec(z_r.detach()), self.dec(z_f.detach())
        kls = _kl(mu_r, logvar_r).mean() + _kl(mu_f, logvar_f).mean()
        fakes = _sse(rec.detach(), rec_rec).mean() + _sse(fake.detach(), rec_fake).mean()
        return s * (
            br * _sse(x, rec).mean()
            + 0.5 * PAPER["beta_kl"] * kls
            + 0.5 * self.gamma_r * br * fakes
        )


def _grads(module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in module.parameters()]


def _reference_grads(loss, trained, frozen) -> list[torch.Tensor]:
    for p in frozen.parameters():
        p.requires_grad_(False)
    trained.zero_grad(set_to_none=True)
    loss.backward()
    for p in frozen.parameters():
        p.requires_grad_(True)
    return _grads(trained)


def _close(ours: list[torch.Tensor], ref: list[torch.Tensor]) -> None:
    scale = max(float(g.abs().max()) for g in ref)
    assert scale > 0
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6 * scale)


# the paper's balance, the CPU default, and gamma_r large enough for its term to show
@pytest.mark.parametrize(("beta_rec", "gamma_r"), [(0.5, 1e-8), (8.0, 1e-8), (0.5, 1.0)])
def test_one_step_matches_an_independent_implementation_of_the_reference(beta_rec, gamma_r):
    torch.manual_seed(0)
    hp = {**PAPER, "beta_rec": beta_rec, "gamma_r": gamma_r}
    model = build_model("ra", image_size=SIZE, channels=(4, 8, 8), latent_dim=8, **hp).double()
    reference = copy.deepcopy(model)
    x = torch.rand(6, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1)).double()
    x = F.avg_pool2d(x, 3, stride=1, padding=1)  # some spatial structure
    noise = torch.randn(6, 8, generator=torch.Generator().manual_seed(2)).double()
    # lr 0: the steps compute their gradients but leave the weights as they were
    opt_e = torch.optim.SGD(model.encoder.parameters(), lr=0.0)
    opt_d = torch.optim.SGD(model.decoder.parameters(), lr=0.0)
    ref = _ReferenceStep(reference, beta_rec, gamma_r)

    torch.manual_seed(3)
    z, logs_e = model.encoder_step(x, noise, opt_e)
    torch.manual_seed(3)
    loss_e, z_ref = ref.encoder_loss(x, noise)
    torch.testing.assert_close(z, z_ref.detach(), rtol=1e-12, atol=1e-12)
    assert logs_e["loss_e"] == pytest.approx(float(loss_e.detach()), rel=1e-6)
    _close(_grads(model.encoder), _reference_grads(loss_e, reference.encoder, reference.decoder))
    assert all(p.grad is None for p in model.decoder.parameters())  # the frozen half

    torch.manual_seed(4)
    logs_d = model.decoder_step(x, z, noise, opt_d)
    torch.manual_seed(4)
    loss_d = ref.decoder_loss(x, z_ref, noise)
    assert logs_d["loss_d"] == pytest.approx(float(loss_d.detach()), rel=1e-6)
    _close(_grads(model.decoder), _reference_grads(loss_d, reference.decoder, reference.encoder))
