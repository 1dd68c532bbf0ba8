"""Detectors on new films: reading PNG/JPEG/DICOM, bad input, predictions.csv, heatmaps,
ONNX export (every architecture matches torch) and the MLflow pyfunc model."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from imgae_dx.data.films import FilmError, read_film
from imgae_dx.data.prepare import preprocess
from imgae_dx.detector import DetectorError, load_detector
from imgae_dx.predict import open_detector, predict_films, run_predict
from tests.predict_helpers import FILM, SIZE, film_pixels, make_detector, write_dicom, write_pngs

ARCHS = ["ae", "vae", "unet", "ra"]


@pytest.fixture(scope="module")
def ae_detector(tmp_path_factory):
    return make_detector(tmp_path_factory.mktemp("det") / "ae.pt", "ae")


def _png_bytes(a: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a, mode=mode).save(buf, "PNG")
    return buf.getvalue()


# ---- reading films ---------------------------------------------------------------------------
def test_dicom_monochrome2_matches_the_png_of_its_pixels(tmp_path):
    px = film_pixels(1)[0]
    px = ((px - px.min()) * (255.0 / (px.max() - px.min())) + 0.5).astype(np.uint8)  # 0..255
    film = read_film(write_dicom(tmp_path / "a.dcm", px))
    assert film.view == "PA" and film.size == (FILM, FILM)
    np.testing.assert_array_equal(np.asarray(film.image), px)
    a = preprocess(film.image, SIZE).image
    b = preprocess(Image.fromarray(px), SIZE).image
    np.testing.assert_array_equal(a, b)


def test_dicom_monochrome1_is_inverted_and_rescale_applied(tmp_path):
    px = film_pixels(1)[0]
    plain = np.asarray(read_film(write_dicom(tmp_path / "a.dcm", px)).image, dtype=int)
    mono1 = read_film(write_dicom(tmp_path / "b.dcm", px, PhotometricInterpretation="MONOCHROME1"))
    inverted = np.asarray(mono1.image, dtype=int)
    assert np.abs(inverted - (255 - plain)).max() <= 1  # rounding of exact halves only
    assert np.corrcoef(inverted.ravel(), plain.ravel())[0, 1] < -0.999
    # Rescale slope/intercept are affine: without a window the film maps to the same pixels.
    scaled = read_film(write_dicom(tmp_path / "c.dcm", px, RescaleSlope=2, RescaleIntercept=-1000))
    np.testing.assert_array_equal(np.asarray(scaled.image, dtype=int), plain)


def test_dicom_window_clips_outside_the_window(tmp_path):
    px = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (64, 1))  # stored: px * 16
    film = read_film(write_dicom(tmp_path / "w.dcm", px, WindowCenter=2048, WindowWidth=1024))
    out = np.asarray(film.image)[0]
    stored = px[0].astype(int) * 16
    assert (out[stored <= 1536] == 0).all() and (out[stored >= 2560] == 255).all()
    inside = (stored > 1600) & (stored < 2500)
    assert (np.diff(out[inside].astype(int)) > 0).all()  # strictly rising inside the window


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"not an image at all", "not an image"),
        (_png_bytes(np.zeros((64, 64), np.uint8))[:60], "cannot decode"),
        (_png_bytes(np.dstack([np.full((64, 64), v, np.uint8) for v in (200, 20, 20)])), "colour"),
    ],
)
def test_bad_films_raise_one_line(data, expected):
    with pytest.raises(FilmError, match=expected) as e:
        read_film(data)
    assert "\n" not in str(e.value)


def test_gray_film_stored_as_rgb_is_accepted():
    g = film_pixels(1)[0]
    film = read_film(_png_bytes(np.dstack([g, g, g])))
    np.testing.assert_array_equal(
        preprocess(film.image, SIZE).image, preprocess(Image.fromarray(g), SIZE).image
    )


def test_multiframe_dicom_is_refused(tmp_path):
    px = np.concatenate([film_pixels(2)]).reshape(2 * FILM, FILM)
    p = write_dicom(tmp_path / "m.dcm", px, NumberOfFrames=2, Rows=FILM)
    with pytest.raises(FilmError, match="multi-frame DICOM \\(2 frames\\)"):
        read_film(p)


# ---- predict ---------------------------------------------------------------------------------
def test_predict_writes_one_row_per_film_with_errors_inline(ae_detector, tmp_path):
    films = tmp_path / "films"
    pngs = write_pngs(films / "nested", 3)
    write_dicom(films / "lateral.dcm", film_pixels(1)[0], ViewPosition="LL")
    write_dicom(films / "frontal", film_pixels(1, seed=3)[0])  # no suffix: found by its preamble
    (films / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    Image.fromarray(film_pixels(1)[0]).resize((FILM * 5, FILM * 5)).save(films / "huge.png")
    Image.fromarray(film_pixels(1, seed=5)[0]).save(films / "photo.jpeg", quality=95)
    df = run_predict(str(ae_detector), [str(films), str(tmp_path / "missing.png")],
                     str(tmp_path / "out"), heatmaps=True)  # fmt: skip
    written = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert list(written.columns)[:5] == [
        "path",
        "score",
        "percentile_among_normals",
        "flagged",
        "error",
    ]
    assert len(written) == 9
    err = dict(zip(written["path"].map(lambda p: p.rsplit("/", 1)[-1]), written["error"]))
    assert "view LL" in err["lateral.dcm"] and "AP/PA" in err["lateral.dcm"]
    assert "cannot decode" in err["corrupt.png"]
    assert "far from the training films" in err["huge.png"]
    assert "no such file" in err["missing.png"]
    ok = written[written["error"].isna()]
    assert len(ok) == 5 and ok["score"].gt(0).all()  # 3 PNGs, the frontal DICOM, the JPEG
    assert ok["percentile_among_normals"].between(0, 100).all()
    det = load_detector(ae_detector)
    assert (ok["flagged"] == (ok["score"] > det.threshold)).all()
    assert len(list((tmp_path / "out" / "heatmaps").glob("*.png"))) == 5
    assert df["heatmap"].notna().sum() == 5
    assert {str(p) for p in pngs} <= set(ok["path"])


def test_predict_scores_like_score_images(ae_detector, tmp_path):
    """The films' scores are score_images' on the preprocessed pixels, batch size aside."""
    from imgae_dx.inference import score_images

    pngs = write_pngs(tmp_path, 5)
    det, scorer = open_detector(ae_detector, "cpu", batch_size=2)
    df = predict_films(det, scorer, [(str(p), p, None) for p in pngs], batch_size=2)
    pix = np.stack([preprocess(Image.open(p), SIZE).image for p in pngs])
    ref = score_images(det.model, pix, det.method).scores
    np.testing.assert_allclose(df["score"].to_numpy(float), ref, rtol=0, atol=1e-9)


@pytest.mark.parametrize(
    "content", [b"", b"garbage", None], ids=["empty", "garbage", "not-a-detector"]
)
def test_unusable_detector_is_a_clear_error_before_any_work(tmp_path, content):
    import torch

    p = tmp_path / "det.pt"
    if content is None:
        torch.save({"arch": "ae"}, p)
    else:
        p.write_bytes(content)
    with pytest.raises(DetectorError) as e:
        run_predict(str(p), [str(tmp_path / "nothing-yet")], str(tmp_path / "out"))
    assert str(p) in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


# ---- ONNX ------------------------------------------------------------------------------------
ONNX_CASES = [(a, {}) for a in ARCHS] + [
    ("ra", {"saliency": "features"}),  # encoder embeddings as graph outputs
    ("ae", {"map": "abs", "smooth_sigma": 1.0, "reduce": "p99"}),  # map in graph, numpy after
]


@pytest.mark.parametrize(("arch", "score"), ONNX_CASES, ids=lambda v: str(v) if v else "default")
def test_onnx_runtime_scores_match_torch(arch, score, tmp_path):
    """For every architecture (and each way a map leaves the graph), ONNX Runtime's scores
    are PyTorch's within 1e-4, and so are the decisions."""
    from imgae_dx.export import export_onnx

    det_path = make_detector(tmp_path / f"{arch}.pt", arch, **score)
    onnx_path = export_onnx(det_path, tmp_path / f"{arch}.onnx")
    films = [(str(p), p, None) for p in write_pngs(tmp_path / "films", 6, seed=11)]
    det, scorer = open_detector(det_path, "cpu")
    odet, oscorer = open_detector(onnx_path)
    a = predict_films(det, scorer, films, batch_size=4)
    b = predict_films(odet, oscorer, films, batch_size=4)
    assert a["error"].isna().all() and b["error"].isna().all()
    np.testing.assert_allclose(b["score"], a["score"], rtol=0, atol=1e-4)
    assert odet.threshold == det.threshold
    assert (a["flagged"] == b["flagged"]).all()


def test_onnx_exports_the_map_only_where_it_is_a_tensor_function(tmp_path):
    import onnx

    from imgae_dx.export import export_onnx

    outputs = {}
    for arch, score in (("ae", {}), ("ra", {}), ("ra", {"saliency": "features"})):
        det = make_detector(tmp_path / f"{arch}{len(score)}.pt", arch, **score)
        proto = onnx.load(str(export_onnx(det, tmp_path / f"{arch}{len(score)}.onnx")))
        outputs[(arch, len(score))] = [o.name for o in proto.graph.output]
    assert outputs[("ae", 0)] == ["x_hat", "map"]  # sq: the whole map in the graph
    assert outputs[("ra", 0)] == ["x_hat"]  # CLAHE x SSIM saliency: numpy after the graph
    assert outputs[("ra", 1)][0] == "x_hat" and "feat_xhat_0" in outputs[("ra", 1)]


# ---- MLflow ----------------------------------------------------------------------------------
def test_mlflow_pyfunc_from_the_registry_scores_like_predict(ae_detector, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.chdir(tmp_path)  # the store's default artifact root is ./mlruns: here, not the cwd

    from imgae_dx import tracking
    from imgae_dx.mlflow_model import save_pyfunc
    from tests.conftest import make_params

    card = tmp_path / "card.md"
    card.write_text("# card\n")
    films = write_pngs(tmp_path / "films", 3)
    model_dir = save_pyfunc(tmp_path / "model", ae_detector, card, films[0].read_bytes())
    with tracking.start_run("cards", make_params(**{"mlflow.required": True})) as run:
        version = run.log_model(model_dir, "detector_ae", "imgae-dx-ae")
    assert version == "1"
    loaded = mlflow.pyfunc.load_model("models:/imgae-dx-ae/1")
    assert loaded.metadata.get_input_schema().input_names() == ["film"]
    data = [p.read_bytes() for p in films] + [b"junk"]
    got = loaded.predict(pd.DataFrame({"film": data}))
    det, scorer = open_detector(ae_detector)
    ref = predict_films(det, scorer, [(str(p), p, None) for p in films])
    np.testing.assert_array_equal(got["score"].to_numpy(float)[:3], ref["score"].to_numpy(float))
    assert list(got["flagged"][:3]) == list(ref["flagged"])
    assert got["error"].isna().tolist() == [True, True, True, False]
    client = mlflow.MlflowClient()
    arts = {a.path for a in client.list_artifacts(run.run_id, "detector_ae/artifacts")}
    assert {"detector_ae/artifacts/ae.pt", "detector_ae/artifacts/card.md"} <= arts


# ---- the command -----------------------------------------------------------------------------
def test_cli_predict_and_export(ae_detector, tmp_path, capsys, monkeypatch):
    from imgae_dx.cli import main

    monkeypatch.chdir(tmp_path)
    write_pngs(tmp_path / "films", 2)
    assert main(["export", str(ae_detector), "--format", "onnx"]) == 0
    assert (tmp_path / "models/onnx/ae.onnx").is_file()  # default: outside models/detectors
    assert main(["predict", "models/onnx/ae.onnx", "films", "nope.png", "--out", "out"]) == 0
    assert "2 films scored" in capsys.readouterr().out
    assert len(pd.read_csv(tmp_path / "out/predictions.csv")) == 3
    (tmp_path / "broken.pt").write_bytes(b"x")
    assert main(["predict", "broken.pt", "films", "--out", "out2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: broken.pt: unreadable detector file")


def test_the_readme_dicom_reads_back_as_its_png(tmp_path, monkeypatch):
    """The README's DICOM snippet, run as written: MONOCHROME1, 12 bits, its window -> the
    PNG's own pixels, so it scores as the PNG does."""
    import re

    from tests.conftest import REPO

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    snippet = next(s for s in re.findall(r"```python\n(.*?)```", readme, re.S) if "pydicom" in s)
    px = film_pixels(1)[0]
    (tmp_path / "data/raw/images_003/images").mkdir(parents=True)
    Image.fromarray(px).save(tmp_path / "data/raw/images_003/images/00000001_000.png")
    (tmp_path / "data/raw/test_list.txt").write_text("00000001_000.png\n")
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, "README.md", "exec"), {})
    film = read_film(tmp_path / "my_films/film.dcm")
    assert film.view == "PA" and 0 < px.min() and px.max() < 255  # not the full range
    np.testing.assert_array_equal(np.asarray(film.image), px)


def test_dicom_without_pixel_data_is_refused(tmp_path):
    p = write_dicom(tmp_path / "a.dcm", film_pixels(1)[0])
    import pydicom

    ds = pydicom.dcmread(p)
    del ds.PixelData
    ds.save_as(tmp_path / "report.dcm")
    (tmp_path / "junk.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    for name in ("report.dcm", "junk.dcm"):
        with pytest.raises(FilmError, match="DICOM without pixel data"):
            read_film(tmp_path / name)


def test_unusable_detectors_are_one_line_errors(ae_detector, tmp_path):
    import torch

    with pytest.raises(DetectorError, match="a folder, not a detector file"):
        load_detector(tmp_path)
    obj = torch.load(ae_detector, weights_only=True)
    obj["state_dict"] = {k: v[..., :1] if v.dim() else v for k, v in obj["state_dict"].items()}
    torch.save(obj, tmp_path / "cut.pt")
    with pytest.raises(DetectorError, match="the weights do not fit the network") as e:
        load_detector(tmp_path / "cut.pt")
    assert "\n" not in str(e.value) and len(str(e.value)) < 300
