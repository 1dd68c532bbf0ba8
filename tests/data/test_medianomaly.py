"""``data.source: medianomaly``: MedIAnomaly's layout read, split, fetched and run end to end.

The fake has their exact layout (``<root>/data.json`` with ``train["0"]``, ``test["0"]``,
``test["1"]``, and PNGs under ``<root>/images/``: github.com/caiyu6666/MedIAnomaly,
``reconstruction/dataloaders/dataload.py``, ``MedAD``), with their kind of names (RSNA's are
patient UUIDs, VinDr-CXR's hex digests) and an unlabelled pool under ``train`` that their
loader ignores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from imgae_dx import paths
from imgae_dx.config import ConfigError, load_params
from imgae_dx.data import medianomaly
from imgae_dx.data import split as splitlib
from imgae_dx.data.sources import medianomaly as source
from imgae_dx.errors import UserError
from tests.conftest import REPO, TINY_ARCH, make_params
from tests.inprocess import run_pipeline


def _name(kind: str, i: int) -> str:
    rng = np.random.default_rng([i, len(kind)])
    return "".join(f"{b:02x}" for b in rng.integers(0, 256, 16)) + ".png"  # VinDr-like


def _image(i: int, abnormal: bool, size: int) -> np.ndarray:
    """A smooth 'chest' with per-image noise; abnormal images carry a bright blob."""
    rng = np.random.default_rng(i)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = 120 + 60 * np.exp(-(((xx - 0.5) / 0.35) ** 2 + ((yy - 0.5) / 0.45) ** 2))
    img = img + rng.normal(0, 4, img.shape)
    if abnormal:
        cx, cy = rng.uniform(0.3, 0.7, 2)
        img = img + 90 * np.exp(-(((xx - cx) / 0.08) ** 2 + ((yy - cy) / 0.08) ** 2))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_layout(
    root: Path, n_train: int = 40, n_normal: int = 12, n_abnormal: int = 12, size: int = 48
) -> dict:
    """A MedIAnomaly dataset folder: data.json and images/ (PNG, 8-bit grayscale)."""
    (root / "images").mkdir(parents=True)
    lists = {
        "train": [_name("train", i) for i in range(n_train)],
        "normal": [_name("normal", i) for i in range(n_normal)],
        "abnormal": [_name("abnormal", i) for i in range(n_abnormal)],
    }
    k = 0
    for kind, names in lists.items():
        for n in names:
            Image.fromarray(_image(k, kind == "abnormal", size)).save(root / "images" / n)
            k += 1
    data = {
        "train": {"0": lists["train"], "unlabeled": {"0": [], "1": []}},
        "test": {"0": lists["normal"], "1": lists["abnormal"]},
    }
    (root / "data.json").write_text(json.dumps(data))
    return data


# ---- the listing ---------------------------------------------------------------------------------
def test_read_listing_keeps_their_lists_in_order(tmp_path):
    data = make_layout(tmp_path, n_train=5, n_normal=3, n_abnormal=2, size=16)
    listing, issues = medianomaly.read_listing(tmp_path / "data.json")
    assert listing.train == data["train"]["0"]
    assert listing.test_normal == data["test"]["0"]
    assert listing.test_abnormal == data["test"]["1"]
    assert issues == []


def test_read_listing_leaves_out_repeats_and_paths(tmp_path):
    d = {"train": {"0": ["a.png", "a.png", "../x.png"]}, "test": {"0": ["a.png"], "1": ["b.png"]}}
    (tmp_path / "data.json").write_text(json.dumps(d))
    listing, issues = medianomaly.read_listing(tmp_path / "data.json")
    assert listing == medianomaly.Listing(["a.png"], [], ["b.png"])
    assert [(i.image, i.problem) for i in issues] == [
        ("a.png", "duplicate listing"),
        ("../x.png", "bad name"),
        ("a.png", "duplicate listing"),  # a training image never reaches the test set
    ]
    assert 'test["0"]' in issues[2].message and 'train["0"]' in issues[2].message


@pytest.mark.parametrize(
    "text, where",
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"test": {"0": [], "1": []}}), "no 'train' mapping"),
        (json.dumps({"train": {"0": []}, "test": {"0": []}}), 'test["1"]'),
        (json.dumps({"train": {"0": [1, 2]}, "test": {"0": [], "1": []}}), 'train["0"]'),
    ],
)
def test_read_listing_names_what_is_wrong(tmp_path, text, where):
    (tmp_path / "data.json").write_text(text)
    with pytest.raises(medianomaly.ListingError, match="data.json") as e:
        medianomaly.read_listing(tmp_path / "data.json")
    assert where in str(e.value) and "\n" not in str(e.value)


def test_split_carves_validation_from_training_seeded(tmp_path):
    make_layout(tmp_path, n_train=40, n_normal=12, n_abnormal=10, size=16)
    listing, _ = medianomaly.read_listing(tmp_path / "data.json")
    data = make_params(**{"data.source": "medianomaly", "data.val_fraction": 0.25}).data
    sel = splitlib.select_listed(listing, data.model_copy(update={"max_test_normal": None}), 0)
    assert (len(sel.train), len(sel.val)) == (30, 10)
    assert set(sel.train.image) | set(sel.val.image) == set(listing.train)
    assert not set(sel.train.image) & set(sel.val.image)
    assert sel.test["label"].tolist().count(1) == 10 and len(sel.test) == 22
    assert (sel.test.set_index("image").loc[listing.test_abnormal, "findings"] == "Abnormal").all()
    assert sel.train["patient_id"].isna().all() and (sel.train["view"] == "").all()
    again = splitlib.select_listed(listing, data, 0)
    other = splitlib.select_listed(listing, data, 1)
    assert again.val.image.tolist() == sel.val.image.tolist()
    assert other.val.image.tolist() != sel.val.image.tolist()
    capped = splitlib.select_listed(listing, data.model_copy(update={"max_train": 7}), 0)
    assert len(capped.train) == 7 and set(capped.train.image) <= set(sel.train.image)


def test_summary_leaves_out_what_the_data_lacks(tmp_path):
    make_layout(tmp_path, n_train=10, n_normal=4, n_abnormal=4, size=16)
    listing, _ = medianomaly.read_listing(tmp_path / "data.json")
    data = make_params(**{"data.source": "medianomaly"}).data
    summary = splitlib.summarize(splitlib.select_listed(listing, data, 0).as_dict(), "medianomaly")
    assert "n_patients" not in summary and "by_view" not in summary
    assert summary["by_finding"] == {"Abnormal": 4}


# ---- the source ----------------------------------------------------------------------------------
def test_fetch_links_the_listing_and_the_selected_images(tmp_path):
    root, raw = tmp_path / "RSNA", tmp_path / "raw"
    make_layout(root, n_train=6, n_normal=2, n_abnormal=2, size=16)
    want = sorted(p.name for p in (root / "images").iterdir())[:5]
    params = make_params(**{"data.medianomaly.root": str(root)}).data.medianomaly
    info = source.fetch(raw, params, select=lambda d: want)
    assert (raw / "data.json").read_bytes() == (root / "data.json").read_bytes()
    assert sorted(p.name for p in (raw / "images").iterdir()) == want
    assert info["n_images"] == 5 and sum(info["placed"].values()) == 6
    manifest = json.loads((raw / "fetch_manifest.json").read_text())
    assert len(manifest["files"]) == 6 and all(f["crc32"] for f in manifest["files"])


def test_fetch_and_check_name_what_is_missing(tmp_path):
    root = tmp_path / "VinCXR"
    make_layout(root, n_train=3, n_normal=1, n_abnormal=1, size=16)
    params = make_params(**{"data.medianomaly.root": str(root)}).data.medianomaly
    with pytest.raises(UserError, match="not under .*images.*gone.png"):
        source.fetch(tmp_path / "raw", params, select=lambda d: ["gone.png"])
    (root / "data.json").unlink()
    with pytest.raises(UserError, match="has no data.json"):
        source.check_root(str(root))
    with pytest.raises(UserError, match="data.medianomaly.root is not set"):
        source.check_root(None)


@pytest.mark.parametrize("preset", ["medianomaly_rsna", "medianomaly_vindr"])
def test_presets_are_valid_overlays(preset, tmp_path):
    """Each preset validates over params.yaml, with the published protocol."""
    p = load_params(REPO / "params.yaml", overlay=REPO / "configs" / f"{preset}.yaml")
    assert p.seeds == [0, 1, 2]
    assert p.data.source == "medianomaly" and p.data.image_size == 64 and p.models == ["ae"]
    assert p.model_args("ae") == {
        "channels": [16, 32, 64, 64], "latent_dim": 16, "hidden_dim": 1024, "dropout": 0.0,
        "image_size": 64,
    }  # fmt: skip
    t = p.train_for("ae")
    assert (t.epochs, t.batch_size, t.lr, t.scheduler, t.patience) == (250, 64, 1e-3, "none", None)
    assert p.data.max_test_normal is None and p.data.max_test_abnormal is None


def test_check_stage_refuses_a_root_without_the_layout(tmp_path, monkeypatch):
    from imgae_dx.pipeline.check import check

    monkeypatch.chdir(tmp_path)
    params = make_params(**{"data.source": "medianomaly", "data.medianomaly.root": str(tmp_path)})
    with pytest.raises(
        ConfigError, match="params.yaml: data.medianomaly.root: .* has no data.json"
    ):
        check(params)


# ---- the whole pipeline --------------------------------------------------------------------------
def _tiny_preset(root: Path):
    """The preset at tiny sizes: 32² images, a tiny AE, two short epochs, few resamples."""
    p = load_params(REPO / "params.yaml")  # the preset's structure, then tiny values
    overlay = {
        "data": {
            "source": "medianomaly", "medianomaly": {"root": str(root)}, "image_size": 32,
            "val_fraction": 0.2, "max_test_normal": None, "max_test_abnormal": None,
            "max_bad_fraction": 0.05,
        },
        "models": ["ae"],
        "arch": {"ae": {**TINY_ARCH["ae"], "epochs": 2}},
        "train": {"batch_size": 8, "scheduler": "none", "patience": None, "num_threads": 2},
        "score": {"map": "sq", "reduce": "mean"},
        "report": {"bootstrap": 30},
        "mlflow": {"enabled": False},
    }  # fmt: skip
    assert p.report.unit == "patient"  # what the fallback below is about
    return make_params(overlay)


def test_whole_pipeline_on_medianomaly_layout(tmp_path):
    root = tmp_path / "MedIAnomaly-Data" / "RSNA"
    make_layout(root, n_train=40, n_normal=12, n_abnormal=12, size=48)
    data = json.loads((root / "data.json").read_text())
    data["test"]["1"].append(data["train"]["0"][0])  # a repeat: left out and listed
    (root / "data.json").write_text(json.dumps(data))
    ws = tmp_path / "ws"
    out = run_pipeline(ws, _tiny_preset(root))
    raw = ws / "data" / "raw"
    assert sorted(p.name for p in (raw / "images").iterdir()) == sorted(
        data["train"]["0"] + data["test"]["0"] + data["test"]["1"][:-1]
    )
    assert out["split"]["n_train"] + out["split"]["n_val"] == 40
    assert (out["split"]["n_test_normal"], out["split"]["n_test_abnormal"]) == (12, 12)
    issues = pd.read_csv(ws / "data" / "split" / "issues.csv")
    assert issues[["image", "action", "problem"]].values.tolist() == [
        [data["train"]["0"][0], "excluded", "duplicate listing"]
    ]
    assert out["prepare"]["test"] == 24 and out["prepare"]["n_excluded"] == 0
    assert np.load(ws / "data" / "prepared" / "test.npy").shape == (24, 32, 32)
    assert (ws / "reports" / "figures" / "medianomaly_samples.png").stat().st_size > 0
    _check_report(ws)


def _check_report(ws: Path) -> None:
    m = json.loads((ws / "reports" / "metrics.json").read_text())
    assert m["data"]["n_test_normal"] == 12 and m["data"]["n_test_patients"] is None
    assert m["bootstrap"]["unit"] == "image" and m["delong"]["unit"] == "image"
    assert 0.0 <= m["models"]["ae"]["auroc"] <= 1.0
    ae = m["models"]["ae"]
    assert ae["by_view"] == {} and ae["by_sex"] == {} and ae["by_age"] == {}
    assert list(ae["by_finding"]) == ["Abnormal"]
    assert m["baselines"]["view_ap"]["auroc"] is None
    assert m["baselines"]["mean_intensity"]["auroc"] is not None
    md = (ws / "reports" / "report.md").read_text()
    assert "**The data has no patient ID, view, sex or age.**" in md
    assert "_not available: the data has no view (section 9)_" in md
    assert "`report.unit: patient` fell back to `image`" in md
    assert "MedIAnomaly's benchmark split" in md and "Labels are noisy" not in md
    assert '"higher = abnormal", decided' in md  # no view baseline to describe
    scores = pd.read_csv(ws / paths.scores("ae", 0))
    assert scores["patient_id"].isna().all() and len(scores) == 24 + 8
