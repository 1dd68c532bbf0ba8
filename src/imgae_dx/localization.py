"""Does the anomaly map point at the pathology? Pure functions over maps and boxes.

Boxes are ``(x, y, w, h)`` in map pixel coordinates (x = column, y = row, origin at the
top-left corner of pixel (0, 0)); NIH's ``BBox_List_2017.csv`` boxes scaled to the map size.
A pixel counts as inside a box when its unit square overlaps the box with positive area, so a
box smaller than a pixel (a nodule at 64²) still marks the pixel it sits in.

- hit: the map's argmax pixel lies inside any box of its image (the "pointing game");
  its chance level is the mean fraction of the image the boxes cover.
- pixel AUROC: all pixels of the boxed images pooled, inside-box pixels as positives.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from imgae_dx.metrics import auroc

Box = tuple[float, float, float, float]


def box_mask(boxes: Sequence[Box], shape: tuple[int, int]) -> np.ndarray:
    """Boolean (H, W) mask of the pixels that overlap any of ``boxes``."""
    h, w = shape
    mask = np.zeros((h, w), dtype=bool)
    for bx, by, bw, bh in boxes:
        if not (bw > 0 and bh > 0):
            continue
        c0, c1 = max(int(np.floor(bx)), 0), min(int(np.ceil(bx + bw)), w)
        r0, r1 = max(int(np.floor(by)), 0), min(int(np.ceil(by + bh)), h)
        if c1 > c0 and r1 > r0:
            mask[r0:r1, c0:c1] = True
    return mask


def localization_hits(maps: np.ndarray, boxes: Sequence[Sequence[Box]]) -> np.ndarray:
    """Per image (N,) bool: is the argmax of ``maps[i]`` (N, H, W) inside a box of image i?"""
    maps = np.asarray(maps)
    if len(boxes) != len(maps):
        raise ValueError("one list of boxes per map is needed")
    hits = np.zeros(len(maps), dtype=bool)
    for i, (m, bxs) in enumerate(zip(maps, boxes)):
        r, c = np.unravel_index(int(np.argmax(m)), m.shape)
        hits[i] = bool(box_mask(bxs, m.shape)[r, c])
    return hits


def pixel_auroc(
    maps: np.ndarray, masks: np.ndarray, *, max_pixels: int = 500_000, seed: int = 0
) -> float:
    """AUROC of map values, inside-box pixels (positives) vs outside, pooled over images.

    With more than ``max_pixels`` pixels, a uniform subsample drawn with ``seed`` is used
    (deterministic). nan when no pixel is inside or none is outside.
    """
    values = np.asarray(maps, dtype=np.float64).ravel()
    inside = np.asarray(masks, dtype=bool).ravel()
    if values.shape != inside.shape:
        raise ValueError("maps and masks must have the same shape")
    if values.size > max_pixels:
        idx = np.sort(np.random.default_rng(seed).choice(values.size, max_pixels, replace=False))
        values, inside = values[idx], inside[idx]
    return auroc(inside.astype(int), values)


def localization_summary(
    maps: np.ndarray,
    boxes: Sequence[Sequence[Box]],
    *,
    max_pixels: int = 500_000,
    seed: int = 0,
) -> dict:
    """Hit rate, its chance level, pixel AUROC and counts over the images that have boxes."""
    maps = np.asarray(maps, dtype=np.float32)
    keep = [i for i, b in enumerate(boxes) if len(b) > 0]
    if not keep:
        return {
            "hit_rate": None,
            "chance_hit_rate": None,
            "pixel_auroc": None,
            "n_images": 0,
            "n_boxes": 0,
        }
    sub = maps[keep]
    bxs = [boxes[i] for i in keep]
    masks = np.stack([box_mask(b, sub.shape[1:]) for b in bxs])
    hits = localization_hits(sub, bxs)
    pix = pixel_auroc(sub, masks, max_pixels=max_pixels, seed=seed)
    return {
        "hit_rate": float(hits.mean()),
        "chance_hit_rate": float(masks.mean()),
        "pixel_auroc": None if np.isnan(pix) else float(pix),
        "n_images": len(keep),
        "n_boxes": int(sum(len(b) for b in bxs)),
    }
