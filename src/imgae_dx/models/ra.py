"""Reversed Autoencoder (RA): a Soft-IntroVAE with a reversed multi-scale embedding loss.

C. I. Bercea, B. Wiestler, D. Rueckert, J. A. Schnabel, "Generalizing Unsupervised Anomaly
Detection: Towards Unbiased Pathology Screening", MIDL 2023 (https://openreview.net/forum?id=8ojx-Ld3yjR).
T. Daniel, A. Tamar, "Soft-IntroVAE: Analyzing and Improving the Introspective Variational
Autoencoder", CVPR 2021 (the training scheme).

Architecture (``docs/architecture.md``, "The Reversed Autoencoder"), for an n-entry ``channels`` list and H x H input:

    encoder  x (B,1,H,H) -> Conv5x5 + BN + LeakyReLU + AvgPool        -> e_1 (B,c_1,H/2,H/2)
             -> [ResBlock(c_i -> c_{i+1}) + AvgPool] for i = 1..n-1  -> e_{i+1} (B,c_{i+1},H/2^(i+1),.)
             -> ResBlock(c_n) -> flatten -> Linear -> (mu, logvar), each (B, latent_dim)
    decoder  z -> Linear + ReLU -> (B,c_n,H/2^n,H/2^n)
             -> [ResBlock(c_i -> c_{i-1}) + nearest Upsample x2] for c in reversed(channels)
             -> ResBlock(c_1) -> Conv5x5 -> sigmoid -> x_hat (B,1,H,H)

No skip connections. e_1..e_n (after each pooling stage) are the multi-scale embeddings.

Training (one :meth:`ReversedAutoencoder.training_step`, separate Adam optimizers for encoder E
and decoder D; ``s = 1/(H W)``; rec = per-image sum of squared errors; KL summed over latents):

    E: s (beta_rec rec(x, D(z)) + beta_kl KL(x))
       + 1/4 [ exp(-2 s (beta_rec rec(x_r, D(z_r)) + beta_neg KL(x_r)))      x_r = D(z).detach()
             + exp(-2 s (beta_rec rec(x_f, D(z_f)) + beta_neg KL(x_f))) ]    x_f = D(z ~ N(0,I))
       + w_emb sum_levels [ 1/2 MSE(e_l(x), e_l(x_r)) + mean_b (1 - cos(e_l(x), e_l(x_r))) ]
    D: s (beta_rec rec(x, D(z)) + beta_kl/2 (KL(D(z)) + KL(x_f)) + gamma_r beta_rec/2 (rec(...)))

The 1/4 factor is the paper's 1/2 times the mean of the two exp-ELBO terms.

Hyperparameters of the paper / its public configuration (``configs/paper.yaml``): 128x128,
channels (64, 128, 256, 512, 512), latent 128, beta_rec 0.5, beta_kl 1, beta_neg 128,
gamma_r 1e-8, embedding weight 0.005, Adam lr 5e-5, batch 8, MultiStepLR x0.1 at epoch 100.

Deviations from the paper, and why:

* CPU-sized defaults: channels (8, 16, 32, 64) and latent 64 at the pipeline's default 64x64
  (the full pipeline must train four models on two CPU cores in minutes; one RA step runs 13
  encoder/decoder passes, and on a CPU the full-resolution layers dominate, so widths are
  halved relative to the other models). Four stages keep the paper's 4x4 bottleneck at 64x64;
  five would leave 2x2.
* ``beta_rec`` 8 instead of 0.5 in the CPU default (``params.yaml``; ``configs/paper.yaml``
  keeps 0.5). Because every term is scaled by s = 1/(H W) while the reconstruction error is
  summed over the H W pixels, the trade-off is beta_rec H W / beta_kl: the paper's 0.5 at 128x128
  equals 2 at 64x64, and 8 at 64x64 equals 2 at 128x128 -- four times the paper's weight on
  reconstruction (``docs/architecture.md``, "The Reversed Autoencoder"). With these widths the
  paper's 0.5 does not train on the synthetic chest
  phantoms: reconstructions stop depending on the input. In equivalent terms, beta_rec / beta_kl
  sets the price in squared error of one nat of latent information; 0.5 / 1 is a Gaussian decoder with
  sigma = 1 on [0, 1] images. That price is so high that the decoder's KL terms (make the
  encoder see reconstructions and samples as real) outweigh its reconstruction term, and the
  encoder wins the introspective game by collapsing the real posterior. Measured with
  ``benchmarks/ra_dynamics.py`` (batch 16, constant lr 1e-4, seed 0, validation MSE of the
  posterior mean; the mean training image scores 0.0235):

  ===========================  ==========================  =============================
  setting                      validation MSE              KL real / rec / fake (nats)
  ===========================  ==========================  =============================
  0.5 (paper), 64x64           0.031-0.045 at every        15 / 345 / 368 at step 650
                               check, steps 100-700
  0.5 (paper), 128x128         0.036 at step 50, 0.056     122 / 763 / 1628 at step 150
  (channels 8,16,32,64,64)     at step 150
  0.5, VAE steps only          0.0137 at step 600         7 (no introspection)
  2 (= 0.5 at 128x128)         0.0113 at step 300         49 / 96 / 115
  4                            0.0070 (best, step 400)     62 / 95 / 107
  8 (default)                  0.0056 at step 600         83 / 86 / 88.5
  16                           0.0054 at step 550         102 / 103 / 69
  ===========================  ==========================  =============================

  8 is the largest value tried at which the encoder still gives prior samples at least the KL of real
  images (the introspective game is balanced rather than won by either side); at 16 samples get
  less KL than data, and the RA degenerates towards a VAE with an embedding loss. The choice
  uses label-free quantities only (validation normals, KL terms), never an anomaly label.
  Whether 0.5 trains at the paper's widths over its 1,500 epochs could not be checked on a CPU.
* Learning rate and schedule are training keys (``train.*`` / ``arch.ra.lr``), not constructor
  kwargs. The public trainer passes the validation loss to ``MultiStepLR.step`` (the deprecated epoch
  argument), which in effect never reaches the milestone; we implement the schedule as written
  in the paper (``train.scheduler: multistep``).
* BatchNorm running statistics are updated only by the two passes over real data (the encoder
  on x, the decoder on z ~ q(z|x)); the other passes of a step (reconstructions, prior samples,
  the decoder update) normalise with their batch statistics exactly as in the reference, but
  leave the running averages alone. The reference accumulates them over every pass, so its
  eval-mode network normalises real images with statistics of a mixture of real images,
  reconstructions and prior samples -- not what it sees at test time. Gradients are unchanged.
* Validation objective: reconstruction MSE of the posterior mean (the public trainer uses a
  sampled reconstruction), so model selection is deterministic.
* The reference encodes the detached reconstruction twice per encoder step (once for the
  embeddings, once for its exp-ELBO); both passes give identical outputs in train mode, so we
  encode it once. Pure efficiency, same gradients.
* Numerical safety: log-variances are soft-clamped, 15 tanh(v / 15) (finite exp in float32/bf16
  without the dead gradient of a hard clamp), and the exp-ELBO exponent, mathematically <= 0,
  is clamped at 0 against rounding; it therefore cannot
  overflow, and an underflow to 0 is harmless (zero gradient). Losses are computed in float32
  under autocast. A non-finite loss raises ``FloatingPointError`` before the step.
* ``vae_warmup_steps`` (default 0, as in the RA configuration) exposes Soft-IntroVAE's plain-VAE
  warm-up phase.
* Anomaly map: the paper multiplies |CLAHE(x_hat) - CLAHE(x)| by an LPIPS saliency (SqueezeNet,
  ImageNet weights). Scoring (``default_score = "ra"``) computes it as the authors' code does
  (``score.ra_map: published``), with LPIPS only from local weight files and the download-free
  ``ssim`` saliency by default; that is decided and recorded by :mod:`imgae_dx.scoring` and
  :mod:`imgae_dx.inference`, not here. :meth:`ReversedAutoencoder.reconstruct_sampled` serves
  ``score.latent: sample`` (the authors decode a sampled latent at test time).

Training dynamics can be re-measured for any setting with ``benchmarks/ra_dynamics.py``;
``imgae-dx check-training`` (run by CI) fails when a model's selected validation loss is not
well below its untrained value or not below that of the mean training image.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from imgae_dx.models._blocks import as_channels, check_image_size
from imgae_dx.models.base import (
    AnomalyModel,
    AutocastFactory,
    batch_randn,
    kl_standard_normal,
    param_groups,
    per_image_sse,
    pixel_mse,
    reparameterize,
    soft_clamp,
)
from imgae_dx.models.registry import register_model

_SLOPE = 0.2
LOGVAR_BOUND = 15.0  # soft clamp of log-variances, see the module docstring


class ResidualBlock(nn.Module):
    """IntroVAE residual block (Huang et al., NeurIPS 2018): conv3x3-BN-LReLU-conv3x3-BN, + x.

    A 1x1 projection on the identity path when the width changes. (B, c_in, h, w) ->
    (B, c_out, h, w).
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.expand = nn.Conv2d(c_in, c_out, 1, bias=False) if c_in != c_out else None
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)

    def forward(self, x: Tensor) -> Tensor:
        identity = self.expand(x) if self.expand is not None else x
        h = F.leaky_relu(self.bn1(self.conv1(x)), _SLOPE)
        h = self.bn2(self.conv2(h))
        return F.leaky_relu(h + identity, _SLOPE)


class Encoder(nn.Module):
    """x (B,1,H,H) -> (mu, logvar) (B,latent), embeddings [e_1..e_n] after each pooling stage."""

    def __init__(self, channels: Sequence[int], latent_dim: int, side: int) -> None:
        super().__init__()
        c0 = channels[0]
        stages = [
            nn.Sequential(
                nn.Conv2d(1, c0, 5, padding=2, bias=False),
                nn.BatchNorm2d(c0),
                nn.LeakyReLU(_SLOPE),
                nn.AvgPool2d(2),
            )
        ]
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            stages.append(nn.Sequential(ResidualBlock(c_in, c_out), nn.AvgPool2d(2)))
        self.stages = nn.ModuleList(stages)
        self.head = ResidualBlock(channels[-1], channels[-1])
        self.fc = nn.Linear(channels[-1] * side * side, 2 * latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        embeddings = []
        h = x
        for stage in self.stages:
            h = stage(h)
            embeddings.append(h)
        h = self.head(h).flatten(1)  # (B, c_n * side * side)
        mu, logvar = self.fc(h).chunk(2, dim=1)
        return mu, soft_clamp(logvar, LOGVAR_BOUND), embeddings


class Decoder(nn.Module):
    """z (B, latent) -> x_hat (B, 1, H, H) in [0, 1]; nearest-neighbour upsampling."""

    def __init__(self, channels: Sequence[int], latent_dim: int, side: int) -> None:
        super().__init__()
        self.c_last, self.side = channels[-1], side
        self.fc = nn.Sequential(nn.Linear(latent_dim, channels[-1] * side * side), nn.ReLU())
        layers: list[nn.Module] = []
        c_in = channels[-1]
        for c_out in reversed(channels):
            layers += [ResidualBlock(c_in, c_out), nn.Upsample(scale_factor=2, mode="nearest")]
            c_in = c_out
        layers += [ResidualBlock(c_in, c_in), nn.Conv2d(c_in, 1, 5, padding=2), nn.Sigmoid()]
        self.main = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        h = self.fc(z).view(z.shape[0], self.c_last, self.side, self.side)
        return self.main(h)


def reversed_embedding_loss(real: Sequence[Tensor], rec: Sequence[Tensor]) -> Tensor:
    """Sum over levels of 0.5 * MSE + mean over the batch of (1 - cosine similarity).

    real, rec: lists of (B, C_l, H_l, W_l) embeddings of the input and of its reconstruction.
    Zero when they coincide; the cosine is taken over each flattened embedding.
    """
    if len(real) != len(rec) or not real:
        raise ValueError("reversed_embedding_loss needs two equally long, non-empty lists")
    total = real[0].new_zeros((), dtype=torch.float32)
    for a, b in zip(real, rec):
        a, b = a.float(), b.float()
        cos = F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1)  # (B,)
        total = total + 0.5 * F.mse_loss(a, b) + (1.0 - cos).mean()
    return total


def _exp_elbo(arg: Tensor) -> Tensor:
    """mean_b exp(arg_b) with arg <= 0 (clamped against rounding): never overflows."""
    return torch.exp(arg.clamp(max=0.0)).mean()


@contextlib.contextmanager
def _bn_stats_frozen(*modules: nn.Module) -> Iterator[None]:
    """Train-mode BatchNorm that normalises with batch statistics but does not update its
    running statistics (momentum 0 leaves the running averages unchanged)."""
    bns = [
        m
        for mod in modules
        for m in mod.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.momentum = 0.0
    try:
        yield
    finally:
        for bn, momentum in zip(bns, momenta):
            bn.momentum = momentum


@contextlib.contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """Temporarily set requires_grad=False on ``module``'s parameters (restored on exit)."""
    params = list(module.parameters())
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def _check_finite(value: float, what: str) -> None:
    if not math.isfinite(value):
        raise FloatingPointError(f"ra: non-finite {what} ({value})")


@register_model("ra")
class ReversedAutoencoder(AnomalyModel):
    """Reversed Autoencoder (Bercea et al., MIDL 2023); see the module docstring.

    Args:
        image_size: input side H = W (from ``data.image_size``; not an ``arch.ra`` key); must
            be a multiple of 2 ** len(channels).
        channels: encoder widths, one per pooling stage (paper: 64, 128, 256, 512, 512 at 128).
        latent_dim: latent dimensionality (paper: 128).
        beta_rec: weight of the reconstruction terms (paper: 0.5).
        beta_kl: weight of the KL of real data (paper: 1).
        beta_neg: KL weight inside the exp-ELBO of reconstructions and samples (paper: 128).
        gamma_r: weight of the decoder's reconstruction-of-fakes term (paper: 1e-8).
        embedding_weight: weight of the reversed embedding loss in the encoder loss (0.005).
        vae_warmup_steps: plain-VAE steps before the introspective game starts (Soft-IntroVAE's
            ``num_vae``; the RA configuration uses 0).
    """

    default_score = "ra"
    has_latent = True

    def __init__(
        self,
        image_size: int = 64,
        channels: Sequence[int] = (8, 16, 32, 64),
        latent_dim: int = 64,
        beta_rec: float = 0.5,
        beta_kl: float = 1.0,
        beta_neg: float = 128.0,
        gamma_r: float = 1e-8,
        embedding_weight: float = 0.005,
        vae_warmup_steps: int = 0,
    ) -> None:
        super().__init__()
        self.channels = as_channels(channels)
        side = check_image_size(image_size, len(self.channels), "ra")
        if latent_dim < 1:
            raise ValueError(f"arch.ra: latent_dim must be >= 1, got {latent_dim}")
        self.latent_dim = int(latent_dim)
        self.beta_rec, self.beta_kl = float(beta_rec), float(beta_kl)
        self.beta_neg, self.gamma_r = float(beta_neg), float(gamma_r)
        self.embedding_weight = float(embedding_weight)
        if vae_warmup_steps < 0:
            raise ValueError(f"arch.ra: vae_warmup_steps must be >= 0, got {vae_warmup_steps}")
        self.vae_warmup_steps = int(vae_warmup_steps)
        self.encoder = Encoder(self.channels, self.latent_dim, side)
        self.decoder = Decoder(self.channels, self.latent_dim, side)
        # Optimisation steps taken so far: decides warm-up vs introspection, and travels with
        # the weights so that a resumed run continues in the right phase.
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))

    # ---- inference -------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        mu, logvar, _ = self.encoder(x)
        return self.decoder(reparameterize(mu, logvar) if self.training else mu)

    def reconstruct_sampled(self, x: Tensor, eps: Tensor) -> Tensor:
        mu, logvar, _ = self.encoder(x)
        return self.decoder(mu + eps * torch.exp(0.5 * logvar))

    def encoder_features(self, x: Tensor) -> list[Tensor]:
        """Embeddings after each pooling stage: [(B, c_1, H/2, W/2), ..., (B, c_n, H/2^n, .)]."""
        return self.encoder(x)[2]

    def sample(self, n: int, device: torch.device | str | None = None) -> Tensor:
        """Decode ``n`` prior samples z ~ N(0, I): (n, 1, H, W)."""
        device = device if device is not None else next(self.parameters()).device
        return self.decoder(torch.randn(n, self.latent_dim, device=device))

    # ---- Soft-IntroVAE objectives ----------------------------------------------------------
    def _encoder_loss(self, x: Tensor, noise: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Encoder objective; returns (loss_e, z of the real batch, detached terms).

        Gradients reach the encoder only when the decoder is frozen by the caller.
        """
        scale = 1.0 / (x.shape[-2] * x.shape[-1])
        # Real data passes: the only ones that update BatchNorm running statistics.
        mu, logvar, emb_real = self.encoder(x)
        z = reparameterize(mu, logvar)
        rec = self.decoder(z)  # (B, 1, H, W)
        with _bn_stats_frozen(self.encoder, self.decoder):
            with torch.no_grad():
                fake = self.decoder(noise)  # x_f: only used detached by the encoder step
            mu_r, logvar_r, emb_rec = self.encoder(rec.detach())
            rec_rec = self.decoder(reparameterize(mu_r, logvar_r))
            mu_f, logvar_f, _ = self.encoder(fake)
            rec_fake = self.decoder(reparameterize(mu_f, logvar_f))

        loss_rec = per_image_sse(rec, x).mean()
        kl_real = kl_standard_normal(mu, logvar).mean()
        kl_rec = kl_standard_normal(mu_r, logvar_r)  # (B,)
        kl_fake = kl_standard_normal(mu_f, logvar_f)  # (B,)
        # As in the reference, the target ``rec`` is not detached here.
        sse_rec = per_image_sse(rec_rec, rec)  # (B,)
        sse_fake = per_image_sse(rec_fake, fake)  # (B,)
        elbo_rec = _exp_elbo(-2.0 * scale * (self.beta_rec * sse_rec + self.beta_neg * kl_rec))
        elbo_fake = _exp_elbo(-2.0 * scale * (self.beta_rec * sse_fake + self.beta_neg * kl_fake))
        emb = reversed_embedding_loss(emb_real, emb_rec)

        loss_real = scale * (self.beta_rec * loss_rec + self.beta_kl * kl_real)
        loss_e = loss_real + 0.25 * (elbo_rec + elbo_fake) + self.embedding_weight * emb
        terms = {
            "mse": (loss_rec * scale).detach(),
            "kl": kl_real.detach(),
            "expelbo_rec": elbo_rec.detach(),
            "expelbo_fake": elbo_fake.detach(),
            "emb": emb.detach(),
        }
        return loss_e, z.detach(), terms

    def _decoder_loss(
        self, x: Tensor, z: Tensor, noise: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Decoder objective given the (detached) latent ``z`` of the real batch.

        Gradients reach the decoder only when the encoder is frozen by the caller.
        """
        scale = 1.0 / (x.shape[-2] * x.shape[-1])
        with _bn_stats_frozen(self.encoder, self.decoder):  # see _encoder_loss
            fake = self.decoder(noise)
            rec = self.decoder(z)
            mu_r, logvar_r, _ = self.encoder(rec)
            mu_f, logvar_f, _ = self.encoder(fake)
            rec_rec = self.decoder(reparameterize(mu_r, logvar_r).detach())
            rec_fake = self.decoder(reparameterize(mu_f, logvar_f).detach())

        loss_rec = per_image_sse(rec, x).mean()
        sse_rec_rec = per_image_sse(rec_rec, rec.detach()).mean()
        sse_fake_rec = per_image_sse(rec_fake, fake.detach()).mean()
        kl_rec = kl_standard_normal(mu_r, logvar_r).mean()
        kl_fake = kl_standard_normal(mu_f, logvar_f).mean()
        loss_d = scale * (
            self.beta_rec * loss_rec
            + 0.5 * self.beta_kl * (kl_rec + kl_fake)
            + 0.5 * self.gamma_r * self.beta_rec * (sse_rec_rec + sse_fake_rec)
        )
        return loss_d, {"kl_fake": kl_fake.detach(), "kl_rec": kl_rec.detach()}

    def _update(
        self,
        trained: nn.Module,
        frozen: nn.Module,
        optimizer: torch.optim.Optimizer,
        objective: Callable[[], tuple[Tensor, dict[str, Tensor]]],
        tag: str,
        grad_clip: float | None,
        autocast: AutocastFactory,
    ) -> dict[str, float]:
        """One optimiser step of ``trained`` on ``objective()`` with ``frozen`` held fixed.

        Logs ``loss_<tag>``, the objective's terms and, when clipping, ``grad_norm_<tag>``.
        """
        optimizer.zero_grad(set_to_none=True)
        with _frozen(frozen):
            with autocast():
                loss, terms = objective()
            value = float(loss.detach())
            _check_finite(value, f"{type(trained).__name__.lower()} loss")
            loss.backward()
        logs = {f"loss_{tag}": value, **{k: float(v) for k, v in terms.items()}}
        if grad_clip is not None and grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(trained.parameters(), grad_clip)
            logs[f"grad_norm_{tag}"] = float(norm)
        optimizer.step()
        return logs

    def encoder_step(
        self,
        x: Tensor,
        noise: Tensor,
        optimizer: torch.optim.Optimizer,
        *,
        grad_clip: float | None = None,
        autocast: AutocastFactory = contextlib.nullcontext,
    ) -> tuple[Tensor, dict[str, float]]:
        """Update the encoder only; returns (z of the real batch, logged terms)."""
        latent: list[Tensor] = []

        def objective() -> tuple[Tensor, dict[str, Tensor]]:
            loss_e, z, terms = self._encoder_loss(x, noise)
            latent.append(z)
            return loss_e, terms

        logs = self._update(
            self.encoder, self.decoder, optimizer, objective, "e", grad_clip, autocast
        )
        return latent[0], logs

    def decoder_step(
        self,
        x: Tensor,
        z: Tensor,
        noise: Tensor,
        optimizer: torch.optim.Optimizer,
        *,
        grad_clip: float | None = None,
        autocast: AutocastFactory = contextlib.nullcontext,
    ) -> dict[str, float]:
        """Update the decoder only, given the real batch's latent ``z`` from the encoder step."""
        return self._update(
            self.decoder,
            self.encoder,
            optimizer,
            lambda: self._decoder_loss(x, z, noise),
            "d",
            grad_clip,
            autocast,
        )

    def configure_optimizers(self, lr: float, weight_decay: float) -> list[torch.optim.Optimizer]:
        """[encoder optimizer, decoder optimizer]: Adam (AdamW when weight_decay > 0)."""
        return [
            torch.optim.AdamW(param_groups(self.encoder.parameters(), weight_decay), lr=lr),
            torch.optim.AdamW(param_groups(self.decoder.parameters(), weight_decay), lr=lr),
        ]

    def training_step(
        self,
        x: Tensor,
        optimizers: Sequence[torch.optim.Optimizer],
        *,
        grad_clip: float | None = None,
        autocast: AutocastFactory = contextlib.nullcontext,
    ) -> dict[str, float]:
        """One introspective step: encoder update, then decoder update (Soft-IntroVAE).

        ``loss`` in the returned dict is the per-pixel MSE of the (sampled) reconstruction of
        the real batch -- comparable with the validation loss; the two adversarial objectives
        are logged as ``loss_e`` and ``loss_d``.
        """
        if len(optimizers) != 2:
            raise ValueError("ra: training_step needs [encoder optimizer, decoder optimizer]")
        opt_e, opt_d = optimizers
        if int(self.steps_done) < self.vae_warmup_steps:
            logs = self.vae_step(x, optimizers, grad_clip=grad_clip, autocast=autocast)
        else:
            noise = batch_randn((x.shape[0], self.latent_dim), device=x.device)
            z, logs_e = self.encoder_step(x, noise, opt_e, grad_clip=grad_clip, autocast=autocast)
            logs_d = self.decoder_step(x, z, noise, opt_d, grad_clip=grad_clip, autocast=autocast)
            logs = {"loss": logs_e["mse"], **logs_e, **logs_d}
        self.steps_done += 1
        return logs

    def vae_step(
        self,
        x: Tensor,
        optimizers: Sequence[torch.optim.Optimizer],
        *,
        grad_clip: float | None = None,
        autocast: AutocastFactory = contextlib.nullcontext,
    ) -> dict[str, float]:
        """A plain VAE step on encoder and decoder jointly (Soft-IntroVAE's ``num_vae`` phase):
        ``s (beta_rec rec + beta_kl KL)``; used for the first ``vae_warmup_steps`` steps."""
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        scale = 1.0 / (x.shape[-2] * x.shape[-1])
        with autocast():
            mu, logvar, _ = self.encoder(x)
            rec = self.decoder(reparameterize(mu, logvar))
            loss_rec = per_image_sse(rec, x).mean()
            kl = kl_standard_normal(mu, logvar).mean()
            loss = scale * (self.beta_rec * loss_rec + self.beta_kl * kl)
        value = float(loss.detach())
        _check_finite(value, "VAE warm-up loss")
        loss.backward()
        logs = {"loss": float(loss_rec.detach()) * scale, "mse": float(loss_rec.detach()) * scale}
        logs["kl"] = float(kl.detach())
        if grad_clip is not None and grad_clip > 0:
            logs["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.parameters(), grad_clip))
        for opt in optimizers:
            opt.step()
        return logs

    def training_loss(self, x: Tensor) -> tuple[Tensor, dict[str, float]]:
        """``loss_e + loss_d`` on one batch, for monitoring only.

        The RA is optimised by :meth:`training_step` (each objective on its own parameters);
        the gradient of this sum is *not* the training update.
        """
        noise = torch.randn(x.shape[0], self.latent_dim, device=x.device)
        loss_e, z, terms = self._encoder_loss(x, noise)
        loss_d, terms_d = self._decoder_loss(x, z, noise)
        logs = {k: float(v) for k, v in {**terms, **terms_d}.items()}
        return loss_e + loss_d, logs

    def validation_loss(self, x: Tensor) -> Tensor:
        """Per-pixel reconstruction MSE with z = mu (deterministic)."""
        return pixel_mse(self(x), x)
