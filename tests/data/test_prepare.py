from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from imgae_dx.data import nih
from imgae_dx.data.prepare import load_image, prepare_split, scale_boxes


def _write(raw, name, arr, mode=None):
    p = raw / nih.image_relpath(name)
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode=mode).save(p) if mode else Image.fromarray(arr).save(p)
    return p


def test_prepare_split_keeps_manifest_order_and_resizes(tmp_path):
    raw = tmp_path / "raw"
    names = [nih.image_name(i + 1, k) for k, i in enumerate(range(80))]
    for i, n in enumerate(names):
        _write(raw, n, np.full((128, 128), i, dtype=np.uint8))
    manifest = pd.DataFrame({"image": names[::-1]})
    out = tmp_path / "prep" / "test.npy"
    sizes = prepare_split(manifest, raw, out, image_size=32, workers=2)
    arr = np.load(out)
    assert arr.shape == (80, 32, 32) and arr.dtype == np.uint8
    assert [int(a[0, 0]) for a in arr] == list(range(79, -1, -1))
    assert (sizes == 128).all()
    assert sorted(p.name for p in out.parent.iterdir()) == ["test.npy"]


def test_load_image_handles_rgba_and_16_bit(tmp_path):
    rgba = np.zeros((64, 64, 4), dtype=np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = 255
    p = tmp_path / "a.png"
    Image.fromarray(rgba, mode="RGBA").save(p)
    img, size = load_image(p, 16)
    assert img.shape == (16, 16) and size == (64, 64) and abs(int(img.mean()) - 200) <= 1
    a16 = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16).astype(np.uint16)
    p16 = tmp_path / "b.png"
    Image.fromarray(a16).save(p16)
    img16, _ = load_image(p16, 16)
    assert img16.dtype == np.uint8 and img16.max() > 200 and img16.min() < 20


def test_missing_image_is_named(tmp_path):
    manifest = pd.DataFrame({"image": ["00000001_000.png"]})
    with pytest.raises(FileNotFoundError, match="00000001_000.png"):
        prepare_split(manifest, tmp_path, tmp_path / "x.npy", image_size=16)
    assert not (tmp_path / "x.npy").exists()


def test_scale_boxes_to_prepared_pixels():
    boxes = pd.DataFrame(
        {
            "image": ["a.png", "b.png"],
            "finding": ["Mass", "Nodule"],
            "x": [100.0, 10.0],
            "y": [200.0, 20.0],
            "w": [50.0, 5.0],
            "h": [25.0, 5.0],
        }
    )
    manifest = pd.DataFrame({"image": ["a.png"]})
    out = scale_boxes(boxes, manifest, np.array([[1000, 500]]), 100)
    assert len(out) == 1
    assert out.iloc[0][["x", "y", "w", "h"]].tolist() == [10.0, 40.0, 5.0, 5.0]
