"""Anomaly maps and image scores (imgae_dx.scoring)."""

from __future__ import annotations

import numpy as np
import pytest

from imgae_dx import scoring


@pytest.fixture
def pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.random((3, 16, 16), dtype=np.float32)
    x_hat = np.clip(x + 0.1 * rng.standard_normal(x.shape), 0, 1).astype(np.float32)
    return x, x_hat


@pytest.mark.parametrize("method", scoring.MAP_METHODS)
def test_every_method_shape_dtype_finite(pair, method):
    x, x_hat = pair
    m = scoring.anomaly_map(x, x_hat, method)
    assert m.shape == x.shape and m.dtype == np.float32
    assert np.isfinite(m).all() and (m >= 0).all()
    # a perfect reconstruction is not anomalous anywhere
    assert np.allclose(scoring.anomaly_map(x, x, method), 0.0, atol=1e-6)


def test_residuals_and_smoothing(pair):
    x, x_hat = pair
    np.testing.assert_allclose(scoring.anomaly_map(x, x_hat, "sq"), (x - x_hat) ** 2, rtol=1e-6)
    np.testing.assert_allclose(scoring.anomaly_map(x, x_hat, "abs"), np.abs(x - x_hat), rtol=1e-6)
    raw = scoring.anomaly_map(x, x_hat, "abs")
    smooth = scoring.anomaly_map(x, x_hat, "abs", smooth_sigma=1.0)
    assert smooth.std() < raw.std()
    np.testing.assert_allclose(smooth.mean(axis=(1, 2)), raw.mean(axis=(1, 2)), rtol=1e-4)
    # smoothing never mixes images of a batch
    one = scoring.anomaly_map(x[:1], x_hat[:1], "abs", smooth_sigma=1.0)
    np.testing.assert_allclose(one[0], smooth[0], rtol=1e-6)


def _ssim_brute(x: np.ndarray, y: np.ndarray, sigma=1.5, truncate=3.5) -> np.ndarray:
    """SSIM map by explicit windows (Wang et al. 2004), independent of scipy.ndimage."""
    r = int(truncate * sigma + 0.5)
    t = np.arange(-r, r + 1)
    g = np.exp(-0.5 * (t / sigma) ** 2)
    k = np.outer(g, g) / np.outer(g, g).sum()
    xp, yp = np.pad(x, r, mode="symmetric"), np.pad(y, r, mode="symmetric")
    c1, c2 = 0.01**2, 0.03**2
    out = np.zeros_like(x, dtype=np.float64)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            a, b = (
                xp[i : i + 2 * r + 1, j : j + 2 * r + 1],
                yp[i : i + 2 * r + 1, j : j + 2 * r + 1],
            )
            ux, uy = (k * a).sum(), (k * b).sum()
            vx, vy = (k * a * a).sum() - ux**2, (k * b * b).sum() - uy**2
            cxy = (k * a * b).sum() - ux * uy
            out[i, j] = ((2 * ux * uy + c1) * (2 * cxy + c2)) / (
                (ux**2 + uy**2 + c1) * (vx + vy + c2)
            )
    return out


def test_ssim_map_matches_windowed_definition(pair):
    x, x_hat = pair
    got = scoring.ssim_map(x[:1], x_hat[:1])[0]
    np.testing.assert_allclose(got, _ssim_brute(x[0].astype(np.float64), x_hat[0]), atol=2e-6)
    assert np.allclose(scoring.ssim_map(x, x), 1.0)
    np.testing.assert_allclose(scoring.ssim_map(x, x_hat), scoring.ssim_map(x_hat, x), atol=1e-6)


def test_clahe_single_tile_without_clip_is_histogram_equalisation():
    rng = np.random.default_rng(1)
    x = (rng.integers(0, 256, (1, 12, 12)) / 256.0).astype(np.float32)
    out = scoring.clahe(x, tiles=1, clip_limit=0)
    bins = np.floor(x * 256).astype(int)
    cdf = np.array([[[(bins <= b).mean() for b in row] for row in img] for img in bins])
    np.testing.assert_allclose(out, cdf, atol=1e-6)


def test_clahe_properties():
    rng = np.random.default_rng(2)
    # low-contrast image: CLAHE must stretch it
    x = (0.45 + 0.05 * rng.random((2, 32, 32))).astype(np.float32)
    out = scoring.clahe(x, tiles=4, clip_limit=2.0)
    assert out.shape == x.shape and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert out.std() > 2 * x.std()
    # per image: the second image alone gives the same result
    np.testing.assert_allclose(scoring.clahe(x[1:], tiles=4), out[1:], atol=1e-7)
    # one tile: the mapping is monotone in intensity
    flat = scoring.clahe(x[:1], tiles=1, clip_limit=2.0).ravel()
    order = np.argsort(x[0].ravel(), kind="stable")
    assert (np.diff(flat[order]) >= -1e-7).all()
    # sizes not divisible by the grid are fine
    assert scoring.clahe(x[:, :30, :29], tiles=(4, 3)).shape == (2, 30, 29)


def test_ra_saliency_choices(pair):
    x, x_hat = pair
    assert scoring.resolve_saliency(None) == "ssim"
    feats = ([np.ones((3, 4, 4, 4)), np.ones((3, 8, 2, 2))],) * 2
    assert scoring.resolve_saliency(None, features=feats) == "features"
    assert scoring.resolve_saliency(None, features=feats, lpips_fn=lambda a, b: a) == "lpips"
    with pytest.raises(ValueError, match="lpips_fn"):
        scoring.anomaly_map(x, x_hat, "ra", saliency="lpips")
    with pytest.raises(ValueError, match="features"):
        scoring.anomaly_map(x, x_hat, "ra", saliency="features")
    with pytest.raises(ValueError, match="saliency"):
        scoring.anomaly_map(x, x_hat, "ra", saliency="nope")
    # identical features -> zero saliency -> zero map
    zero = scoring.anomaly_map(x, x_hat, "ra", features=feats)
    assert np.allclose(zero, 0.0, atol=1e-6)
    # a constant LPIPS map of 1 on both pairs leaves the CLAHE residual, smoothed saliency = 1
    one = lambda a, b: np.ones_like(a)  # noqa: E731
    ones = scoring.anomaly_map(x, x_hat, "ra", lpips_fn=one, ra_map="project")
    np.testing.assert_allclose(ones, scoring.anomaly_map(x, x_hat, "clahe"), atol=1e-6)
    published = scoring.anomaly_map(x, x_hat, "ra", lpips_fn=one)
    residual = np.abs(scoring.clahe_published(x_hat) - scoring.clahe_published(x))
    np.testing.assert_allclose(published, residual, atol=1e-6)
    with pytest.raises(ValueError, match="ra_map"):
        scoring.anomaly_map(x, x_hat, "ra", ra_map="paper")


def _reference_ra_map(x, x_hat, saliency_fn):
    """The published RA map written out from its description, one image at a time, with
    scikit-image's CLAHE and scipy's Gaussian filter: CLAHE each image (defaults), smooth
    each saliency map (σ = 2), multiply the CLAHE residual by both."""
    from scipy.ndimage import gaussian_filter
    from skimage.exposure import equalize_adapthist

    out = []
    for xi, hi in zip(x, x_hat):
        cx, ch = equalize_adapthist(xi), equalize_adapthist(hi)
        s1 = gaussian_filter(saliency_fn(xi, hi), sigma=2)
        s2 = gaussian_filter(saliency_fn(cx, ch), sigma=2)
        out.append(np.abs(ch - cx) * s1 * s2)
    return np.stack(out)


def _ssim_saliency(a, b):
    from skimage.metrics import structural_similarity

    _, full = structural_similarity(
        a, b, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        full=True,
    )  # fmt: skip
    return np.clip(1.0 - full, 0, None)


def _smooth_phantoms(n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth blobs (a CLAHE of white noise is noise) and a reconstruction that misses one."""
    yy, xx = np.mgrid[:size, :size] / size
    rng = np.random.default_rng(1)
    x, x_hat = [], []
    for _ in range(n):
        cy, cx = rng.uniform(0.3, 0.7, 2)
        body = 0.2 + 0.6 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.08)
        lesion = 0.3 * np.exp(-((yy - 0.3) ** 2 + (xx - 0.6) ** 2) / 0.004)
        x.append(np.clip(body + lesion + 0.02 * rng.standard_normal(body.shape), 0, 1))
        x_hat.append(np.clip(body + 0.01 * rng.standard_normal(body.shape), 0, 1))
    return np.asarray(x, np.float32), np.asarray(x_hat, np.float32)


@pytest.mark.parametrize("saliency", ["ssim", "lpips"])
def test_published_ra_map_matches_scikit_image(saliency):
    x, x_hat = _smooth_phantoms(3, 48)
    # lpips: any per-pixel distance stands in for the network here (its wiring is under test)
    dist = lambda a, b: np.abs(a - b) ** 0.5  # noqa: E731
    fn = _ssim_saliency if saliency == "ssim" else dist
    lpips_fn = None if saliency == "ssim" else (lambda a, b: np.stack(list(map(dist, a, b))))
    ours = scoring.anomaly_map(x, x_hat, "ra", saliency=saliency, lpips_fn=lpips_fn)
    ref = _reference_ra_map(x.astype(np.float64), x_hat.astype(np.float64), fn)
    np.testing.assert_allclose(ours, ref, atol=2e-5 * ref.max(), rtol=1e-4)
    # per-map smoothing then product is not the project's product then smoothing
    project = scoring.anomaly_map(x, x_hat, "ra", saliency=saliency, lpips_fn=lpips_fn,
                                  ra_map="project")  # fmt: skip
    assert not np.allclose(ours, project, atol=1e-3 * ref.max())
    # the lesion the reconstruction misses scores higher than the rest of the image
    assert (ours[:, 12:18, 26:32].mean(axis=(1, 2)) > 1.5 * ours.mean(axis=(1, 2))).all()


def test_published_clahe_is_scikit_images_per_image_and_stretched():
    from skimage.exposure import equalize_adapthist

    x, _ = _smooth_phantoms(2, 64)
    out = scoring.clahe_published(x)
    assert out.shape == x.shape and out.dtype == np.float32
    for i in range(len(x)):
        np.testing.assert_allclose(out[i], equalize_adapthist(x[i]), atol=1e-6)
    # the per-image min-max stretch: a contrast change leaves the CLAHE (up to 14-bit
    # rounding), unlike the project's own CLAHE
    dim = 0.3 + 0.4 * x
    assert np.abs(scoring.clahe_published(dim) - out).mean() < 0.005
    assert np.abs(scoring.clahe(dim) - scoring.clahe(x)).mean() > 0.02


def test_feature_saliency_upsamples_and_averages():
    a = np.zeros((1, 2, 2, 2))
    a[0, 0] = 1.0
    b = a.copy()
    b[0, :, 0, 0] = (0.0, 1.0)  # orthogonal at one coarse cell: 1 - cos = 1
    sal = scoring.feature_saliency([a], [b], (8, 8))
    assert sal.shape == (1, 8, 8)
    assert sal[0, 0, 0] == pytest.approx(1.0) and sal[0, -1, -1] == pytest.approx(0.0, abs=1e-6)


def test_image_scores(pair):
    x, x_hat = pair
    maps = scoring.anomaly_map(x, x_hat, "sq")
    flat = maps.reshape(3, -1).astype(np.float64)
    np.testing.assert_allclose(scoring.image_scores(maps), flat.mean(1), rtol=1e-6)
    np.testing.assert_allclose(scoring.image_scores(maps, "max"), flat.max(1))
    np.testing.assert_allclose(scoring.image_scores(maps, "p99"), np.percentile(flat, 99, axis=1))
    np.testing.assert_allclose(
        scoring.image_scores(maps, "p99.5"), np.percentile(flat, 99.5, axis=1)
    )
    for bad in ("median", "p101", "p"):
        with pytest.raises(ValueError):
            scoring.image_scores(maps, bad)
    with pytest.raises(ValueError, match="unknown"):
        scoring.anomaly_map(x, x_hat, "l3")


# ---------------------------------------------------------------- LPIPS from local files only


def _random_lpips_state(net: str = "alex") -> dict:
    import torch

    from imgae_dx import lpips

    torch.manual_seed(0)
    state = lpips.LPIPS(net).state_dict()
    # trained LPIPS lin weights are non-negative, so distances are too
    return {
        k: v.abs() if k.startswith("lin") else v.clone()
        for k, v in state.items()
        if k not in ("shift", "scale")
    }


def test_lpips_loads_full_state_dict_and_maps(tmp_path):
    import torch

    from imgae_dx import lpips

    state = _random_lpips_state()
    # the lpips package's layout: scaling_layer buffers + net.sliceK.* + linK.model.1.weight
    full = {**state, "scaling_layer.shift": torch.zeros(1, 3, 1, 1)}
    torch.save(full, tmp_path / "lpips_alex_full.pth")
    fn = lpips.make_lpips_fn(tmp_path / "lpips_alex_full.pth")
    rng = np.random.default_rng(0)
    x = rng.random((2, 32, 32), dtype=np.float32)
    y = np.clip(x + 0.2 * rng.standard_normal(x.shape), 0, 1).astype(np.float32)
    d = fn(x, y)
    assert d.shape == (2, 32, 32) and d.dtype == np.float32 and np.isfinite(d).all()
    assert (d >= 0).all() and d.mean() > 0
    assert np.allclose(fn(x, x), 0.0, atol=1e-6)
    m = scoring.anomaly_map(x, y, "ra", lpips_fn=fn)
    assert m.shape == x.shape and np.isfinite(m).all()


@pytest.mark.parametrize("net", ["alex", "squeeze"])
def test_lpips_split_files_match_full(tmp_path, net):
    import torch

    from imgae_dx import lpips

    state = _random_lpips_state(net)
    lin = {k: v for k, v in state.items() if k.startswith("lin")}
    # torchvision layout of the backbone: features.I.weight, features.I.squeeze.weight, ...
    backbone = {
        "features." + ".".join(k.split(".")[2:]): v
        for k, v in state.items()
        if k.startswith("net.")
    }
    backbone["classifier.1.weight"] = torch.zeros(1)  # torchvision's head: ignored
    torch.save(lin, tmp_path / f"{net}.pth")
    torch.save(backbone, tmp_path / "backbone.pth")
    torch.save(state, tmp_path / "full.pth")
    kw = {"net": net}
    a = lpips.load_lpips(tmp_path / f"{net}.pth", backbone_weights=tmp_path / "backbone.pth", **kw)
    b = lpips.load_lpips(tmp_path / "full.pth", **kw)
    x, y = torch.rand(2, 1, 40, 40), torch.rand(2, 1, 40, 40)
    with torch.no_grad():
        d = a(x, y)
        assert d.shape == (2, 40, 40) and (d > 0).all() and torch.allclose(d, b(x, y))
        assert torch.allclose(a(x, x), torch.zeros(2, 40, 40), atol=1e-6)
    assert len([k for k in lin if k.startswith("lin")]) == (7 if net == "squeeze" else 5)
    with pytest.raises(ValueError, match="backbone"):
        lpips.load_lpips(tmp_path / f"{net}.pth", **kw)  # lin layers alone are not enough


def test_lpips_missing_file_is_a_clear_error(tmp_path):
    from imgae_dx import lpips

    with pytest.raises(FileNotFoundError, match="never downloads"):
        lpips.make_lpips_fn(tmp_path / "nope.pth")


def test_ssim_map_matches_scikit_image():
    from skimage.metrics import structural_similarity

    x, x_hat = _smooth_phantoms(2, 40)
    ours = scoring.ssim_map(x, x_hat)
    for i in range(len(x)):
        _, ref = structural_similarity(
            x[i].astype(np.float64), x_hat[i].astype(np.float64), data_range=1.0,
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True,
        )  # fmt: skip
        np.testing.assert_allclose(ours[i], ref, atol=1e-5)
