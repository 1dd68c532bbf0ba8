"""The pipeline's detectors on the films of data/raw: `imgae-dx predict` reproduces the score
stage, the model cards and the MLflow registry are written (in a copy of the session's tiny
reproduced workspace: every architecture, through `cards`)."""

from __future__ import annotations

import json
import sqlite3
import sys

import numpy as np
import pandas as pd
import pytest

from tests.conftest import TINY_RUN, copy_workspace, run_checked

MODELS = ["ae", "ra"]  # one residual map, one CLAHE x saliency map
ONNX_MODELS = ["ae", "vae", "unet", "ra"]  # every architecture, for the ONNX parity


@pytest.fixture(scope="module")
def repro(tiny_reproduced, tmp_path_factory):
    src, env, _ = tiny_reproduced
    assert TINY_RUN["models"] == ONNX_MODELS
    ws = tmp_path_factory.mktemp("repo")
    return ws, copy_workspace(src, ws, env)


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("arch", MODELS)
def test_predict_on_the_test_films_reproduces_the_score_stage(repro, arch):
    from imgae_dx.data.prepare import image_path

    ws, env = repro
    test = pd.read_csv(ws / "data/prepared/test.csv")
    films = [str(image_path("data/raw", n)) for n in test["image"]]
    cmd = [sys.executable, "-m", "imgae_dx.cli", "predict", f"models/detectors/{arch}/seed0.pt"]
    run_checked(cmd + films + ["--out", f"out_{arch}", "--device", "cpu"], ws, env)
    got = pd.read_csv(ws / f"out_{arch}/predictions.csv")
    assert got["error"].isna().all(), got["error"].dropna().head().tolist()
    scores = pd.read_csv(ws / f"reports/scores/{arch}/seed0.csv")
    ref = scores[scores["split"] == "test"].set_index("image")["score"]
    names = got["path"].map(lambda p: p.rsplit("/", 1)[-1])
    np.testing.assert_allclose(got["score"], ref.loc[names].to_numpy(), rtol=0, atol=1e-6)
    thr = json.loads((ws / "reports/metrics.json").read_text())["models"][arch]["threshold"]
    det_thr = got.loc[got["flagged"], "score"].min()
    assert det_thr > thr["value"] - 1e-6
    flagged_rate = got["flagged"].mean()
    assert flagged_rate == pytest.approx(
        (thr["tp"] + thr["fp"]) / (thr["tp"] + thr["fp"] + thr["tn"] + thr["fn"]), abs=1e-9
    )


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_model_cards_and_registered_models(repro):
    ws, env = repro
    metrics = json.loads((ws / "reports/metrics.json").read_text())
    for arch in MODELS:
        card = (ws / f"reports/model_cards/{arch}.md").read_text()
        assert "not a medical device" in card
        assert f"{metrics['models'][arch]['auroc']:.3f}" in card
        assert "## Known limitations" in card and "Labels are noisy" in card
        assert "PA" in card and "AP" in card
    db = env["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///")
    with sqlite3.connect(db) as con:
        names = {r[0] for r in con.execute("select name from registered_models")}
        aliases = {
            (n, a) for n, a in con.execute("select name, alias from registered_model_aliases")
        }
    assert {f"imgae-dx-{a}" for a in ONNX_MODELS} <= names
    assert {(f"imgae-dx-{a}", "seed0") for a in ONNX_MODELS} <= aliases


def _ulp_shift(det, images: np.ndarray, draws: int = 3) -> float:
    """How far the torch path's own scores move when its x̂ moves by one float32 ulp (each
    pixel up or down at random, ``draws`` seeded draws): the largest |Δscore| over films."""
    import torch

    from imgae_dx import scoring
    from imgae_dx.inference import _score_batch, method_map

    m = det.method
    with torch.inference_mode():
        x, xh, amap = _score_batch(det.model.cpu().eval(), images, m, torch.device("cpu"), None)
    base = scoring.image_scores(amap, m.reduce)
    rng, shift = np.random.default_rng(0), 0.0
    for _ in range(draws):
        away = np.where(rng.random(xh.shape) < 0.5, -1.0, 2.0).astype(np.float32)
        moved = np.clip(np.nextafter(xh, away), 0, 1)
        got = scoring.image_scores(method_map(x, moved, m), m.reduce)
        shift = max(shift, float(np.abs(got - base).max()))
    return shift


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("arch", ONNX_MODELS)
def test_onnx_export_of_a_trained_detector_scores_like_torch(repro, arch):
    """ONNX Runtime scores the films as torch does, within 1e-4, for every map continuous in x̂.

    The published RA map is not: scikit-image's CLAHE rounds x̂ to 16 bits, then to 2^14
    levels in 256 bins, so where ONNX Runtime's x̂ differs from torch's by one float32 ulp (as
    conv kernels do; no session option or exporter removes it, docs/architecture.md), a pixel
    on a bin edge moves to the next bin and the score by up to ~1e-3 relative. The test
    measures that on torch's own path (x̂ moved by ±1 ulp) and holds ONNX Runtime to it."""
    from imgae_dx.predict import open_detector

    ws, env = repro
    films = sorted(str(p) for p in (ws / "data/raw").glob("images_00[12]/images/*.png"))[:40]
    det = f"models/detectors/{arch}/seed0.pt"
    cli = [sys.executable, "-m", "imgae_dx.cli"]
    run_checked([*cli, "export", det, "--out", f"{arch}.onnx"], ws, env)
    run_checked([*cli, "predict", det, *films, "--out", f"t_{arch}", "--device", "cpu"], ws, env)
    run_checked([*cli, "predict", f"{arch}.onnx", *films, "--out", f"o_{arch}"], ws, env)
    a = pd.read_csv(ws / f"t_{arch}/predictions.csv")
    b = pd.read_csv(ws / f"o_{arch}/predictions.csv")
    assert a["error"].isna().all() and len(a) == len(films)

    images = np.load(ws / "data/prepared/test.npy")  # every test film, in process
    detector, torch_scores = open_detector(ws / det, device="cpu")
    _, ort_scores = open_detector(ws / f"{arch}.onnx")
    ref = torch_scores(images, False).scores
    ort_dev = float(np.abs(ort_scores(images, False).scores - ref).max())
    shift = _ulp_shift(detector, images)
    if arch != "ra":
        assert shift < 1e-6  # continuous in x̂: float noise stays float noise
        np.testing.assert_allclose(b["score"], a["score"], rtol=0, atol=1e-4)
        assert ort_dev <= 1e-4
    else:
        assert shift > 1e-4  # the map's own sensitivity exceeds the 1e-4 target
        assert ort_dev <= 3 * shift  # ... and ONNX Runtime stays within it
        np.testing.assert_allclose(b["score"], a["score"], rtol=0, atol=3 * shift)
