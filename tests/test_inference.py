"""Scoring a trained model over images: the recipe resolved, batching, maps kept on request."""

from __future__ import annotations

import numpy as np
import pytest

from imgae_dx.config import ScoreParams
from imgae_dx.inference import score_images, score_method
from tests.conftest import phantoms_uint8, tiny_model


def test_auto_resolves_to_the_architectures_own_map():
    assert score_method(tiny_model("ae"), ScoreParams()).map == "sq"
    ra = score_method(tiny_model("ra"), ScoreParams(saliency="features"))
    assert (ra.map, ra.saliency) == ("ra", "features")
    forced = score_method(tiny_model("ra"), ScoreParams(map="ssim", reduce="p99"))
    assert (forced.map, forced.saliency, forced.reduce) == ("ssim", None, "p99")
    assert forced.as_dict() == {
        "map": "ssim", "saliency": None, "reduce": "p99",
        "smooth_sigma": 0.0, "clahe_tiles": 8, "clahe_clip": 2.0,
        "ra_map": None, "latent": "mean", "latent_seed": None,
    }  # fmt: skip
    assert (ra.ra_map, ra.latent) == ("published", "mean")
    project = score_method(tiny_model("ra"), ScoreParams(ra_map="project", latent="sample"))
    assert (project.ra_map, project.latent, project.latent_seed) == ("project", "sample", 0)
    # a model without a latent records none, whatever score.latent says
    ae = score_method(tiny_model("ae"), ScoreParams(latent="sample"))
    assert (ae.ra_map, ae.latent, ae.latent_seed) == (None, None, None)


@pytest.mark.parametrize("name", ["vae", "ra"])
def test_sampled_latent_is_seeded_and_batch_size_independent(name):
    images = phantoms_uint8(7, seed=5, size=32)
    model = tiny_model(name)

    def run(seed: int, batch_size: int, latent: str = "sample"):
        params = ScoreParams(map="sq", latent=latent, latent_seed=seed)
        method = score_method(model, params)
        return score_images(model, images, method, batch_size=batch_size).scores

    again = run(0, 7)
    np.testing.assert_allclose(run(0, 3), again, rtol=1e-5)
    assert not np.allclose(run(1, 7), again, rtol=1e-3)
    assert not np.allclose(run(0, 7, latent="mean"), again, rtol=1e-3)


@pytest.mark.parametrize("name", ["ae", "ra"])
def test_scores_do_not_depend_on_the_batch_size(name):
    images = phantoms_uint8(10, seed=4, size=32)
    model = tiny_model(name)
    method = score_method(model, ScoreParams(saliency="features"))
    whole = score_images(model, images, method, batch_size=10, keep_maps=True)
    pieces = score_images(model, images, method, batch_size=3)
    np.testing.assert_allclose(whole.scores, pieces.scores, rtol=1e-5)
    assert pieces.maps is None and pieces.recons is None
    assert whole.maps.shape == whole.recons.shape == images.shape
    assert whole.maps.dtype == np.float16 and np.isfinite(whole.scores).all()
    # The image score is the map's reduction.
    np.testing.assert_allclose(
        whole.maps.astype(np.float64).mean(axis=(1, 2)), whole.scores, rtol=2e-3
    )
