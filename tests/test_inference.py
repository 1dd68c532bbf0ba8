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
    }  # fmt: skip


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
