"""Anomaly maps and image scores: pure functions, numpy in, numpy out, no file I/O.

Every function takes a batch ``x: (B, H, W) float32 in [0, 1]`` (the input) and, where it
compares, ``x_hat: (B, H, W)`` (the reconstruction). Maps are ``(B, H, W) float32``; higher
means more anomalous. ``image_scores`` reduces a map to one number per image.

Methods (``MAP_METHODS``):

- ``sq``    squared residual (x - x̂)²
- ``abs``   absolute residual |x - x̂|
- ``ssim``  1 - SSIM map (Wang et al. 2004; Gaussian window σ = 1.5, K1 0.01, K2 0.03)
- ``clahe`` |CLAHE(x̂) - CLAHE(x)| (contrast-limited adaptive histogram equalisation first)
- ``ra``    the Reversed Autoencoder's map (Bercea et al., MIDL 2023,
  https://openreview.net/forum?id=8pvsmeBnsQ): |CLAHE(x̂) - CLAHE(x)| × saliency. The paper's
  saliency is LPIPS(x, x̂) × LPIPS(CLAHE x, CLAHE x̂); LPIPS needs ImageNet weights, so two
  download-free saliencies exist as well (``RA_SALIENCY_METHODS``) and the one used is always
  explicit (``resolve_saliency``). Two variants (``RA_MAPS``):

  - ``published`` (default), as the authors' evaluation code (github.com/ci-ber/RA,
    ``projects/23_ra_midl/DownstreamEvaluator.py``) computes it: each saliency map smoothed
    with a Gaussian of σ = 2 *before* the product, and CLAHE = scikit-image's
    ``equalize_adapthist`` with its defaults (``clahe_published``);
  - ``project``, this project's earlier map: the product smoothed once, and its own
    OpenCV-style ``clahe`` (``score.clahe_tiles`` / ``score.clahe_clip``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Literal, get_args

import numpy as np
from scipy import ndimage
from skimage import exposure

#: The anomaly maps (``score.map`` takes these, or ``auto``).
MapMethod = Literal["sq", "abs", "ssim", "clahe", "ra"]
MAP_METHODS: tuple[str, ...] = get_args(MapMethod)
#: Saliency of the "ra" map: the paper's LPIPS product, an SSIM product (no download) or the
#: model's own multi-scale encoder features (no download; needs the model's embeddings).
Saliency = Literal["ssim", "features", "lpips"]
RA_SALIENCY_METHODS: tuple[str, ...] = get_args(Saliency)
#: How the "ra" map is assembled (module docstring); ``score.ra_map`` takes these.
RaMap = Literal["published", "project"]
RA_MAPS: tuple[str, ...] = get_args(RaMap)
DEFAULT_RA_MAP: str = "published"

RA_SALIENCY_SIGMA = 2.0  # Bercea et al. 2023: saliency smoothed with a Gaussian of σ = 2

LpipsFn = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (B,H,W), (B,H,W) -> (B,H,W)

_PERCENTILE = re.compile(r"^p(\d+(?:\.\d+)?)$")


def _as_batch(x: np.ndarray, name: str = "x") -> np.ndarray:
    """(H, W) or (B, H, W) -> (B, H, W) float32."""
    a = np.asarray(x, dtype=np.float32)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"{name} must be (B, H, W) or (H, W), got shape {a.shape}")
    return a


def _pair(x: np.ndarray, x_hat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_batch(x, "x"), _as_batch(x_hat, "x_hat")
    if a.shape != b.shape:
        raise ValueError(f"x {a.shape} and x_hat {b.shape} must have the same shape")
    return a, b


def gaussian_smooth(maps: np.ndarray, sigma: float) -> np.ndarray:
    """Smooth each map of ``maps: (B, H, W)`` spatially (never across the batch)."""
    m = _as_batch(maps, "maps")
    if sigma <= 0:
        return m
    return ndimage.gaussian_filter(m, sigma=(0.0, sigma, sigma), mode="reflect").astype(np.float32)


def ssim_map(
    x: np.ndarray,
    y: np.ndarray,
    *,
    sigma: float = 1.5,
    data_range: float = 1.0,
    k1: float = 0.01,
    k2: float = 0.03,
    truncate: float = 3.5,
) -> np.ndarray:
    """Per-pixel SSIM of two batches (B, H, W) -> (B, H, W) in [-1, 1].

    Wang, Bovik, Sheikh & Simoncelli (2004), with a Gaussian window of σ = 1.5 truncated at
    3.5 σ and population (not sample) covariances, as in scikit-image's
    ``structural_similarity(gaussian_weights=True, use_sample_covariance=False)``; borders use
    symmetric reflection. Computed per image, never across the batch.

    Written here rather than taken from scikit-image because that returns one image's map per
    call; this is five scipy filters over the whole batch at once (``tests/test_scoring.py``
    checks it against scikit-image's).
    """
    a, b = _pair(x, y)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)

    def blur(v: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(
            v, sigma=(0.0, sigma, sigma), truncate=truncate, mode="reflect"
        )

    ux, uy = blur(a64), blur(b64)
    vx = blur(a64 * a64) - ux * ux
    vy = blur(b64 * b64) - uy * uy
    vxy = blur(a64 * b64) - ux * uy
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return np.clip(s, -1.0, 1.0).astype(np.float32)


def clahe(
    x: np.ndarray,
    *,
    tiles: int | tuple[int, int] = 8,
    clip_limit: float = 2.0,
    nbins: int = 256,
) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation of a batch (B, H, W) in [0, 1].

    Zuiderveld (1994), as in OpenCV's ``createCLAHE(clipLimit, tileGridSize)``: the image is
    cut into a ``tiles`` grid; each tile's histogram (``nbins`` bins) is clipped at
    ``clip_limit`` × the uniform bin height (at least one count; ``clip_limit <= 0`` disables
    clipping), the excess is spread evenly over all bins, and the tile's CDF is its intensity
    mapping. Each pixel's output interpolates bilinearly between the mappings of the four
    nearest tile centres. Returns (B, H, W) float32 in [0, 1].

    The CLAHE of the ``clahe`` map and of ``ra_map="project"`` (the published RA map uses
    scikit-image's, :func:`clahe_published`); vectorised over the batch: the histograms of
    every tile of every image are one ``bincount``.
    """
    a = _as_batch(x)
    bsz, h, w = a.shape
    ty, tx = (tiles, tiles) if isinstance(tiles, int) else tiles
    if ty < 1 or tx < 1:
        raise ValueError(f"tiles must be >= 1, got {tiles}")
    th, tw = -(-h // ty), -(-w // tx)  # tile size (ceil) so the grid covers the image
    bins = np.clip(np.floor(a * nbins), 0, nbins - 1).astype(np.int64)  # (B, H, W)
    cdf = _tile_cdfs(bins, (ty, tx), (th, tw), clip_limit, nbins)  # (B, ty, tx, nbins)
    y0, y1, wy = _neighbour_tiles(h, th, ty)
    x0, x1, wx = _neighbour_tiles(w, tw, tx)
    bi = np.arange(bsz)[:, None, None]
    y0, y1, wy = y0[None, :, None], y1[None, :, None], wy[None, :, None]
    x0, x1, wx = x0[None, None, :], x1[None, None, :], wx[None, None, :]
    out = (
        (1 - wy) * (1 - wx) * cdf[bi, y0, x0, bins]
        + (1 - wy) * wx * cdf[bi, y0, x1, bins]
        + wy * (1 - wx) * cdf[bi, y1, x0, bins]
        + wy * wx * cdf[bi, y1, x1, bins]
    )
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _tile_cdfs(
    bins: np.ndarray, grid: tuple[int, int], tile: tuple[int, int], clip_limit: float, nbins: int
) -> np.ndarray:
    """Each tile's clipped-histogram CDF: (B, ty, tx, nbins) in (0, 1], from the bin index of
    every pixel (B, H, W); all tiles of all images in one ``bincount``."""
    (bsz, h, w), (ty, tx), (th, tw) = bins.shape, grid, tile
    # Pad bottom/right by symmetric reflection so every tile is full (only used for histograms).
    ph, pw = ty * th - h, tx * tw - w
    padded = np.pad(bins, ((0, 0), (0, ph), (0, pw)), mode="symmetric") if ph or pw else bins
    tiled = padded.reshape(bsz, ty, th, tx, tw).transpose(0, 1, 3, 2, 4).reshape(bsz, ty, tx, -1)
    tile_id = np.arange(bsz * ty * tx, dtype=np.int64).reshape(bsz, ty, tx, 1) * nbins
    hist = np.bincount((tile_id + tiled).ravel(), minlength=bsz * ty * tx * nbins)
    hist = hist.reshape(bsz, ty, tx, nbins).astype(np.float64)
    area = float(th * tw)
    if clip_limit > 0:
        clip = max(clip_limit * area / nbins, 1.0)
        excess = np.maximum(hist - clip, 0.0).sum(axis=-1, keepdims=True)
        hist = np.minimum(hist, clip) + excess / nbins
    return np.cumsum(hist, axis=-1) / area


def _neighbour_tiles(n_px: int, size: int, n_tiles: int) -> tuple[np.ndarray, ...]:
    """For each pixel along one axis: the two nearest tile centres and the weight of the
    second (bilinear interpolation between tile mappings)."""
    pos = (np.arange(n_px) + 0.5) / size - 0.5  # pixel centre in tile-centre units
    lo = np.floor(pos).astype(np.int64)
    wgt = np.clip(pos - lo, 0.0, 1.0)
    return np.clip(lo, 0, n_tiles - 1), np.clip(lo + 1, 0, n_tiles - 1), wgt


def clahe_published(x: np.ndarray) -> np.ndarray:
    """CLAHE of the RA's published map: scikit-image's ``equalize_adapthist`` with its
    defaults (kernel = image side / 8, clip limit 0.01, 256 bins), one image at a time.

    ``x: (B, H, W)`` in [0, 1] -> (B, H, W) float32 in [0, 1]. ``equalize_adapthist`` first
    stretches each image's own min..max to its full 14-bit range and stretches its output to
    [0, 1] again: this per-image min–max stretch of input and reconstruction is part of the
    published map. (A constant image maps to 1.) Per image because scikit-image treats a 3-D
    array as one volume.
    """
    a = np.clip(_as_batch(x), 0.0, 1.0)
    out = np.empty_like(a)
    for i, img in enumerate(a):
        out[i] = exposure.equalize_adapthist(img)
    return out


def feature_saliency(
    feats_x: Sequence[np.ndarray], feats_x_hat: Sequence[np.ndarray], size: tuple[int, int]
) -> np.ndarray:
    """Mean over levels of 1 - cosine similarity of two embeddings, upsampled to ``size``.

    ``feats_*``: per level ``(B, C, h, w)`` (e.g. the RA encoder's outputs after each pooling
    stage for x and for x̂). Returns (B, H, W) float32 in [0, 2]. Cosine similarity over
    channels and bilinear upsampling (half-pixel centres) are torch's, in float64.
    """
    import torch
    import torch.nn.functional as F

    if len(feats_x) == 0 or len(feats_x) != len(feats_x_hat):
        raise ValueError("features must be two equally long, non-empty lists of (B, C, h, w)")
    acc = None
    for fa, fb in zip(feats_x, feats_x_hat):
        fa, fb = np.asarray(fa, np.float64), np.asarray(fb, np.float64)
        if fa.shape != fb.shape or fa.ndim != 4:
            raise ValueError(
                f"feature levels must match and be (B, C, h, w): {fa.shape}, {fb.shape}"
            )
        cos = F.cosine_similarity(torch.from_numpy(fa), torch.from_numpy(fb), dim=1, eps=1e-8)
        level = F.interpolate(
            (1.0 - cos)[:, None], size=tuple(size), mode="bilinear", align_corners=False
        )[:, 0]
        acc = level if acc is None else acc + level
    return (acc / len(feats_x)).numpy().astype(np.float32)


def resolve_saliency(
    saliency: str | None,
    *,
    features: tuple[Sequence[np.ndarray], Sequence[np.ndarray]] | None = None,
    lpips_fn: LpipsFn | None = None,
) -> str:
    """The RA saliency actually used: the requested one, else lpips > features > ssim."""
    if saliency is None:
        return "lpips" if lpips_fn is not None else "features" if features is not None else "ssim"
    if saliency not in RA_SALIENCY_METHODS:
        raise ValueError(f"saliency must be one of {RA_SALIENCY_METHODS}, got {saliency!r}")
    if saliency == "lpips" and lpips_fn is None:
        raise ValueError("saliency='lpips' needs lpips_fn (see imgae_dx.lpips.make_lpips_fn)")
    if saliency == "features" and features is None:
        raise ValueError("saliency='features' needs features=(feats_x, feats_x_hat)")
    return saliency


def _check_ra_map(ra_map: str) -> None:
    if ra_map not in RA_MAPS:
        raise ValueError(f"ra_map must be one of {RA_MAPS}, got {ra_map!r}")


def ra_clahe(x: np.ndarray, ra_map: str = DEFAULT_RA_MAP, **clahe_kwargs) -> np.ndarray:
    """The CLAHE of the ``ra`` map's variant ``ra_map``: (B, H, W) -> (B, H, W) in [0, 1]."""
    _check_ra_map(ra_map)
    return clahe_published(x) if ra_map == "published" else clahe(x, **clahe_kwargs)


def _pair_saliency(a: np.ndarray, b: np.ndarray, saliency: str, lpips_fn: LpipsFn | None):
    """The unsmoothed saliency of one pair (B, H, W): LPIPS map or clipped 1 - SSIM."""
    if saliency == "lpips":
        return _as_batch(lpips_fn(a, b), "lpips")
    return np.clip(1.0 - ssim_map(a, b), 0, None)  # the structural analogue, no weights


def ra_saliency(
    x: np.ndarray,
    x_hat: np.ndarray,
    saliency: str = "ssim",
    *,
    features: tuple[Sequence[np.ndarray], Sequence[np.ndarray]] | None = None,
    lpips_fn: LpipsFn | None = None,
    clahe_x: np.ndarray | None = None,
    clahe_x_hat: np.ndarray | None = None,
    clahe_kwargs: dict | None = None,
    ra_map: str = DEFAULT_RA_MAP,
) -> np.ndarray:
    """The RA perceptual saliency (B, H, W), Gaussian-smoothed with σ = 2 (Bercea et al.).

    ``lpips``/``ssim``: S(x, x̂) × S(CLAHE x, CLAHE x̂). ``published`` smooths each factor
    before the product (as the authors' code does), ``project`` smooths the product.
    ``features``: one map of the model's embeddings, smoothed. ``clahe_x``/``clahe_x_hat``:
    the CLAHE images when already computed (else from ``ra_map`` and ``clahe_kwargs``).
    """
    a, b = _pair(x, x_hat)
    saliency = resolve_saliency(saliency, features=features, lpips_fn=lpips_fn)
    if saliency == "features":
        return gaussian_smooth(
            feature_saliency(features[0], features[1], a.shape[1:]), RA_SALIENCY_SIGMA
        )
    ck = clahe_kwargs or {}
    ca = ra_clahe(a, ra_map, **ck) if clahe_x is None else _as_batch(clahe_x)
    cb = ra_clahe(b, ra_map, **ck) if clahe_x_hat is None else _as_batch(clahe_x_hat)
    s_raw = _pair_saliency(a, b, saliency, lpips_fn)
    s_clahe = _pair_saliency(ca, cb, saliency, lpips_fn)
    if ra_map == "published":
        return gaussian_smooth(s_raw, RA_SALIENCY_SIGMA) * gaussian_smooth(
            s_clahe, RA_SALIENCY_SIGMA
        )
    return gaussian_smooth(s_raw * s_clahe, RA_SALIENCY_SIGMA)


def anomaly_map(
    x: np.ndarray,
    x_hat: np.ndarray,
    method: str,
    *,
    smooth_sigma: float = 0.0,
    features: tuple[Sequence[np.ndarray], Sequence[np.ndarray]] | None = None,
    lpips_fn: LpipsFn | None = None,
    saliency: str | None = None,
    clahe_tiles: int | tuple[int, int] = 8,
    clahe_clip: float = 2.0,
    ra_map: str = DEFAULT_RA_MAP,
) -> np.ndarray:
    """Per-pixel anomaly map of ``x, x_hat: (B, H, W) in [0, 1]`` -> (B, H, W) float32.

    ``method`` is one of ``MAP_METHODS``. For ``"ra"``, ``saliency`` picks the saliency
    (``RA_SALIENCY_METHODS``); None means ``resolve_saliency``'s default (lpips if ``lpips_fn``
    is given, else features if ``features`` are, else ssim) — record
    ``resolve_saliency(...)`` next to the scores — and ``ra_map`` the variant (``RA_MAPS``;
    ``clahe_tiles``/``clahe_clip`` apply to the ``project`` variant and the ``clahe`` map).
    ``smooth_sigma > 0`` Gaussian-smooths the final map (per image).
    """
    a, b = _pair(x, x_hat)
    ck = {"tiles": clahe_tiles, "clip_limit": clahe_clip}
    if method == "sq":
        m = (a - b) ** 2
    elif method == "abs":
        m = np.abs(a - b)
    elif method == "ssim":
        m = 1.0 - ssim_map(a, b)
    elif method in ("clahe", "ra"):
        variant = ra_map if method == "ra" else "project"
        ca, cb = ra_clahe(a, variant, **ck), ra_clahe(b, variant, **ck)
        m = np.abs(cb - ca)
        if method == "ra":
            m = m * ra_saliency(
                a,
                b,
                resolve_saliency(saliency, features=features, lpips_fn=lpips_fn),
                features=features,
                lpips_fn=lpips_fn,
                clahe_x=ca,
                clahe_x_hat=cb,
                ra_map=ra_map,
            )
    else:
        raise ValueError(f"unknown anomaly map method {method!r}; expected one of {MAP_METHODS}")
    return gaussian_smooth(m.astype(np.float32), smooth_sigma)


def resolve_map(requested: str, model_default: str) -> str:
    """The map to compute: ``requested``, or the architecture's own (``model_default``) for
    ``auto``."""
    return model_default if requested == "auto" else requested


def parse_reduce(reduce: str) -> str | float:
    """``"mean"``, ``"max"``, or the percentile of ``"pNN"`` (e.g. ``"p99"`` -> 99.0)."""
    if reduce in ("mean", "max"):
        return reduce
    match = _PERCENTILE.match(reduce)
    if match and 0.0 <= float(match.group(1)) <= 100.0:
        return float(match.group(1))
    raise ValueError(f"expected 'mean', 'max' or a percentile 'pNN' (e.g. 'p99'), got {reduce!r}")


def image_scores(maps: np.ndarray, reduce: str = "mean") -> np.ndarray:
    """Reduce maps (B, H, W) to image scores (B,) float64: "mean", "max" or "pNN" (percentile)."""
    b = _as_batch(maps, "maps")
    m = b.reshape(b.shape[0], -1).astype(np.float64)
    how = parse_reduce(reduce)
    if how == "mean":
        return m.mean(axis=1)
    if how == "max":
        return m.max(axis=1)
    return np.percentile(m, how, axis=1)
