"""A trained model over images: reconstructions, anomaly maps and image scores.

The model runs in torch (batched, on the GPU when there is one); the maps are the pure numpy
functions of :mod:`imgae_dx.scoring`. How to score comes from the ``score`` params block
(:class:`imgae_dx.config.ScoreParams`); ``map: auto`` means the architecture's own map
(``AnomalyModel.default_score``: the squared residual, or the RA's CLAHE residual x saliency).
``score.latent: sample`` reconstructs the latent models (vae, ra) from one draw of
z ~ q(z|x) per image, as the RA authors' evaluation does; the noise is drawn for all images at
once from ``score.latent_seed``, so scores do not depend on the batch size or the device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from imgae_dx import scoring
from imgae_dx.config import ScoreParams
from imgae_dx.device import images_to_tensor
from imgae_dx.models.base import AnomalyModel

__all__ = [
    "BatchSink",
    "ScoreMethod",
    "Scores",
    "latent_noise",
    "make_lpips_fn",
    "score_images",
    "score_method",
]

#: Receives each batch's ``(start, recons, maps)``, both (B, S, S) float16, in order.
BatchSink = Callable[[int, np.ndarray, np.ndarray], None]


@dataclass(frozen=True)
class ScoreMethod:
    """The scoring recipe actually used for one model (recorded next to its scores)."""

    map: str  # sq | abs | ssim | clahe | ra
    saliency: str | None  # the RA map's saliency; None for the other maps
    reduce: str
    smooth_sigma: float
    clahe_tiles: int
    clahe_clip: float
    ra_map: str | None = None  # the RA map's variant (published | project); None for the others
    latent: str | None = None  # mean | sample, for models with a latent (vae, ra); else None
    latent_seed: int | None = None  # with latent "sample"

    def as_dict(self) -> dict[str, Any]:
        """The form stored in ``reports/maps/<arch>.npz`` (``meta_json``) and metrics.json."""
        return {
            "map": self.map,
            "saliency": self.saliency,
            "reduce": self.reduce,
            "smooth_sigma": self.smooth_sigma,
            "clahe_tiles": self.clahe_tiles,
            "clahe_clip": self.clahe_clip,
            "ra_map": self.ra_map,
            "latent": self.latent,
            "latent_seed": self.latent_seed,
        }


def score_method(model: AnomalyModel, score: ScoreParams) -> ScoreMethod:
    """Resolve ``score.map: auto`` to the model's own map; saliency and variant only for the
    RA map, the latent only for models that have one."""
    method = scoring.resolve_map(score.map, type(model).default_score)
    latent = score.latent if type(model).has_latent else None
    return ScoreMethod(
        map=method,
        saliency=score.saliency if method == "ra" else None,
        reduce=score.reduce,
        smooth_sigma=float(score.smooth_sigma),
        clahe_tiles=int(score.clahe_tiles),
        clahe_clip=float(score.clahe_clip),
        ra_map=score.ra_map if method == "ra" else None,
        latent=latent,
        latent_seed=int(score.latent_seed) if latent == "sample" else None,
    )


def make_lpips_fn(score: ScoreParams, device: torch.device) -> scoring.LpipsFn:
    """The LPIPS saliency from the local weights ``score.lpips_weights`` (never downloaded)."""
    from imgae_dx.lpips import make_lpips_fn as _make

    if not score.lpips_weights:
        raise ValueError("score.saliency 'lpips' needs score.lpips_weights (a local file)")
    return _make(
        score.lpips_weights,
        net=score.lpips_net,
        backbone_weights=score.lpips_backbone_weights,
        device=str(device),
    )


@dataclass
class Scores:
    """What :func:`score_images` returns for N images of side S."""

    scores: np.ndarray  # (N,) float64, higher = more anomalous
    recons: np.ndarray | None = None  # (N, S, S) float16 in [0, 1], with keep_maps
    maps: np.ndarray | None = None  # (N, S, S) float16, with keep_maps


def score_images(
    model: AnomalyModel,
    images: np.ndarray,
    method: ScoreMethod,
    *,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
    lpips_fn: scoring.LpipsFn | None = None,
    keep_maps: bool = False,
    desc: str = "score",
    on_batch: BatchSink | None = None,
) -> Scores:
    """Image scores of ``images: (N, S, S) uint8`` and, with ``keep_maps``, the
    reconstructions and anomaly maps.

    Memory is one batch plus the (N,) scores, whatever N, unless ``keep_maps`` holds every
    map: to keep them for many images, stream them out through ``on_batch`` instead (e.g. to
    :func:`imgae_dx.io.npz_rows`).
    """
    n = len(images)
    out = Scores(scores=np.zeros(n, dtype=np.float64))
    if keep_maps:
        out.recons = np.zeros((n,) + images.shape[1:], dtype=np.float16)
        out.maps = np.zeros((n,) + images.shape[1:], dtype=np.float16)
    dev = torch.device(device)
    model.to(dev).eval()
    eps = latent_noise(model, n, method)
    with torch.inference_mode():
        for i in tqdm(range(0, n, batch_size), desc=desc, unit="batch", disable=None, leave=False):
            noise = None if eps is None else eps[i : i + batch_size]
            batch = images[i : i + batch_size]
            x, x_hat, amap = _score_batch(model, batch, method, dev, lpips_fn, noise)
            out.scores[i : i + len(x)] = scoring.image_scores(amap, method.reduce)
            if keep_maps or on_batch is not None:
                recon16, map16 = x_hat.astype(np.float16), amap.astype(np.float16)
            if keep_maps:
                out.recons[i : i + len(x)] = recon16
                out.maps[i : i + len(x)] = map16
            if on_batch is not None:
                on_batch(i, recon16, map16)
    return out


def _score_batch(
    model: AnomalyModel,
    batch: np.ndarray,
    method: ScoreMethod,
    device: torch.device,
    lpips_fn: scoring.LpipsFn | None,
    noise: torch.Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, x_hat, map) of one uint8 batch (B, S, S), each (B, S, S) float32; ``noise``
    (B, latent_dim): reconstruct from z = mu + noise * sigma instead of the posterior mean."""
    xb = images_to_tensor(batch, device)  # (B, 1, S, S) in [0, 1]
    xh = model(xb) if noise is None else model.reconstruct_sampled(xb, noise.to(device))
    xh = xh.float().clamp(0, 1)
    features = None
    if method.map == "ra" and method.saliency == "features":
        fx = [f.float().cpu().numpy() for f in model.encoder_features(xb)]
        fh = [f.float().cpu().numpy() for f in model.encoder_features(xh)]
        features = (fx, fh)
    x_np = xb[:, 0].float().cpu().numpy()
    xh_np = xh[:, 0].cpu().numpy()
    amap = scoring.anomaly_map(
        x_np,
        xh_np,
        method.map,
        smooth_sigma=method.smooth_sigma,
        saliency=method.saliency,
        features=features,
        lpips_fn=lpips_fn,
        clahe_tiles=method.clahe_tiles,
        clahe_clip=method.clahe_clip,
        ra_map=method.ra_map or scoring.DEFAULT_RA_MAP,
    )
    return x_np, xh_np, amap


def latent_noise(model: AnomalyModel, n: int, method: ScoreMethod) -> torch.Tensor | None:
    """Standard normal noise (n, latent_dim) float32 on the CPU for ``latent: sample``, one row
    per image from a generator seeded with ``latent_seed``; None for the posterior mean."""
    if method.latent != "sample":
        return None
    gen = torch.Generator().manual_seed(int(method.latent_seed or 0))
    return torch.randn(n, model.latent_dim, generator=gen)
