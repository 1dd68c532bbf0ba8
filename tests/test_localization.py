"""Pointing game and pixel AUROC (imgae_dx.localization)."""

from __future__ import annotations

import numpy as np
import pytest

from imgae_dx import localization, metrics


def test_box_mask_overlap_rule():
    m = localization.box_mask([(2.0, 1.0, 3.0, 2.0)], (6, 8))
    assert m.sum() == 6 and m[1:3, 2:5].all()
    # sub-pixel box still marks the pixel it sits in; partial overlap counts
    assert localization.box_mask([(3.2, 4.1, 0.3, 0.4)], (6, 8)).sum() == 1
    assert localization.box_mask([(0.5, 0.5, 1.0, 1.0)], (6, 8)).sum() == 4
    # clipped at the border, empty boxes ignored
    assert localization.box_mask([(6.0, 4.0, 10.0, 10.0), (1, 1, 0, 3)], (6, 8)).sum() == 4


def test_hits_and_summary():
    maps = np.zeros((3, 8, 8), np.float32)
    maps[0, 2, 3] = 1.0  # inside its box
    maps[1, 7, 7] = 1.0  # outside
    maps[2, 5, 5] = 1.0  # no box: excluded
    boxes = [[(2.0, 1.0, 3.0, 3.0)], [(0.0, 0.0, 2.0, 2.0), (4.0, 4.0, 1.0, 1.0)], []]
    hits = localization.localization_hits(maps[:2], boxes[:2])
    assert hits.tolist() == [True, False]
    s = localization.localization_summary(maps, boxes)
    assert s["hit_rate"] == 0.5 and s["n_images"] == 2 and s["n_boxes"] == 3
    assert s["chance_hit_rate"] == pytest.approx((9 + 5) / 128)
    empty = localization.localization_summary(maps, [[], [], []])
    assert empty["hit_rate"] is None and empty["n_images"] == 0


def test_pixel_auroc():
    rng = np.random.default_rng(0)
    masks = np.zeros((4, 16, 16), bool)
    masks[:, 4:8, 4:8] = True
    perfect = masks.astype(np.float32) + 0.01 * rng.random(masks.shape)
    assert localization.pixel_auroc(perfect, masks) == 1.0
    noise = rng.random(masks.shape)
    exact = metrics.auroc(masks.ravel().astype(int), noise.ravel())
    assert localization.pixel_auroc(noise, masks) == pytest.approx(exact)
    # subsampling is deterministic for a seed and close to the full value
    a = localization.pixel_auroc(noise, masks, max_pixels=500, seed=1)
    assert a == localization.pixel_auroc(noise, masks, max_pixels=500, seed=1)
    assert abs(a - exact) < 0.1
