"""The ``score@<arch>`` stage function on a tiny prepared data set: memory flat in the number of
test films (the maps stream to the npz, ``imgae_dx.io.npz_rows``)."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pandas as pd
import pytest

from imgae_dx import checkpoint, paths
from imgae_dx.pipeline.score import score
from tests.conftest import TINY_ARCH, make_params, phantoms_uint8, tiny_model

SIZE = 32
PARAMS = make_params(
    {"data": {"image_size": SIZE}, "score": {"batch_size": 16}, "mlflow": {"enabled": False}}
)


def _workspace(root, n_test: int) -> None:
    """A model file and prepared val (8) and test (``n_test``, half abnormal) films."""
    model = tiny_model("ae", SIZE)
    checkpoint.save_model(
        root / paths.model("ae", 0),
        {"arch": "ae", "model_args": {"image_size": SIZE, **TINY_ARCH["ae"]},
         "state_dict": model.state_dict()},
    )  # fmt: skip
    (root / paths.PREPARED).mkdir(parents=True)
    for name, n in (("val", 8), ("test", n_test)):
        np.save(root / paths.prepared(name), phantoms_uint8(n, n, SIZE))
        manifest = pd.DataFrame(
            {"image": [f"{name}{i:05d}.png" for i in range(n)], "patient_id": np.arange(n),
             "view": "PA", "sex": "F", "age": 40, "label": np.arange(n) % 2, "findings": ""}
        )  # fmt: skip
        manifest.to_csv(root / paths.prepared_manifest(name), index=False)


def _peak_bytes(root, monkeypatch) -> int:
    """Peak traced allocation (numpy arrays included) of one score stage run."""
    monkeypatch.chdir(root)
    score(PARAMS, "ae", 0)  # once first: imports and lazy initialisation are not the films' cost
    gc.collect()
    tracemalloc.start()
    try:
        summary = score(PARAMS, "ae", 0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert summary["n_scored"] == 8 + len(np.load(paths.prepared("test"), mmap_mode="r"))
    return peak


def test_score_memory_does_not_grow_with_the_test_set(tmp_path, monkeypatch):
    small, large = tmp_path / "small", tmp_path / "large"
    _workspace(small, 64)
    _workspace(large, 1024)
    peaks = [_peak_bytes(small, monkeypatch), _peak_bytes(large, monkeypatch)]
    # Holding the large set's maps and reconstructions alone is 1024 * 32² * 2 * 2 B = 4 MiB;
    # streaming, the peak is one batch's working set and grows only by the (N,) scores and
    # names (~0.1 MiB).
    held = 1024 * SIZE * SIZE * 2 * 2
    assert peaks[1] - peaks[0] < held / 4, peaks
    with np.load(large / paths.maps("ae", 0)) as z:
        assert z["map"].shape == z["recon"].shape == (1024, SIZE, SIZE)
        assert z["map"].dtype == np.float16 and np.isfinite(z["map"]).all()
        map_means = z["map"].astype(np.float64).mean(axis=(1, 2))
    scores = pd.read_csv(large / paths.scores("ae", 0))
    # The stored maps are the ones scored (score.reduce: mean), in the manifest's order.
    np.testing.assert_allclose(map_means, scores.loc[scores["split"] == "test", "score"], rtol=2e-3)


@pytest.mark.parametrize("n", [2, 17])  # one batch; a last partial batch
def test_streamed_maps_equal_the_kept_maps(tmp_path, monkeypatch, n):
    from imgae_dx.inference import score_images, score_method

    _workspace(tmp_path, n)
    monkeypatch.chdir(tmp_path)
    score(PARAMS, "ae", 0)
    model, _ = checkpoint.load_model(paths.model("ae", 0))
    kept = score_images(
        model, np.load(paths.prepared("test")), score_method(model, PARAMS.score),
        batch_size=16, keep_maps=True,
    )  # fmt: skip
    with np.load(paths.maps("ae", 0)) as z:
        assert z.files == ["image", "recon", "map", "meta_json"]
        np.testing.assert_array_equal(z["map"], kept.maps)
        np.testing.assert_array_equal(z["recon"], kept.recons)
