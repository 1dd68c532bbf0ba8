"""A rehearsal of the real-data run: configs/nih.yaml's structure on an NIH-format mirror.

The mirror is built from real NIH metadata rows (``tests/fixtures/nih_subset``: 116 films of 21
patients, all twelve shards, 16 boxes) written with the quirks of the files a user downloads:

- ``Data_Entry_2017.csv`` as Kaggle ships it: the header whose bracketed names hold commas
  (``OriginalImage[Width,Height]``), an empty trailing field on every line, multi-label
  ``A|B|C`` findings, spacings such as ``0.14300000000000002`` (the 2020 rows);
- ``BBox_List_2017.csv``: the header ``Bbox [x,y,w,h],,,`` and ``,,,`` after every row, CRLF
  line ends, ``Infiltrate`` where Data_Entry says ``Infiltration``, several boxes on one film,
  box coordinates in the 1024² PNG's pixels while Data_Entry gives the original size;
- ``train_val_list.txt`` / ``test_list.txt``: one name a line, patient-wise;
- the images: 1024² PNGs in the Kaggle shard folders (patient 1335 spans two shards), the
  last shard as the official ``images_12.tar.gz`` instead, and one RGBA PNG (a few NIH films
  are).

The whole pipeline then runs through ``data.source: local`` in this process with the preset's
structure (every shard, PA+AP, the official lists, no caps, all four architectures, three
seeds, two of them here) at tiny sizes, and every output is checked.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from imgae_dx import paths
from imgae_dx.config import Params, apply_overlay, read_yaml, validate
from imgae_dx.data import nih
from tests.conftest import REPO, TINY_ARCH
from tests.inprocess import run_pipeline

FIXTURE = REPO / "tests" / "fixtures" / "nih_subset"
PNG_SIDE = 1024  # NIH's PNGs; the boxes are in their pixels
ARCHIVED_SHARD = "images_012"


# ---- the mirror ----------------------------------------------------------------------------------
def _kaggle_data_entry(src: Path) -> str:
    """The 2020 rows as the Kaggle copy writes them: an empty trailing field on every line."""
    lines = src.read_text().splitlines()
    return "".join(f"{line}," + "\n" for line in lines)


def _kaggle_bbox(src: Path) -> bytes:
    """The box rows with Kaggle's ``,,,`` tails and CRLF line ends."""
    lines = src.read_text().splitlines()
    return "".join(
        line + ("" if i == 0 else ",,,") + "\r\n" for i, line in enumerate(lines)
    ).encode()


def _film(name: str, boxes: pd.DataFrame) -> np.ndarray:
    """A smooth 1024² 'chest' (from a 64² draw, so the PNG stays small); a finding's box gets
    a bright patch, so the abnormal films differ where NIH says they do."""
    rng = np.random.default_rng(int(name[:8]) * 1000 + int(name[9:12]))
    yy, xx = np.mgrid[0:64, 0:64] / 64
    small = 110 + 70 * np.exp(-(((xx - 0.5) / 0.4) ** 2 + ((yy - 0.55) / 0.45) ** 2))
    small += rng.normal(0, 6, small.shape)
    img = np.asarray(Image.fromarray(small.clip(0, 255).astype(np.uint8)).resize((1024, 1024)))
    img = img.copy()
    for b in boxes.itertuples(index=False):
        x, y, w, h = (int(v) for v in (b.x, b.y, b.w, b.h))
        img[y : y + h, x : x + w] = np.clip(img[y : y + h, x : x + w].astype(int) + 60, 0, 255)
    return img


def _test_patients(entries: pd.DataFrame, boxes: pd.DataFrame) -> set[int]:
    """Patient-wise official lists: here the patients with a boxed film are the test patients."""
    return set(entries.loc[entries["image"].isin(set(boxes["image"])), "patient_id"])


def build_mirror(root: Path) -> dict:
    """An NIH download in the Kaggle layout (last shard as an official archive) at ``root``."""
    root.mkdir(parents=True)
    (root / nih.DATA_ENTRY).write_text(_kaggle_data_entry(FIXTURE / "Data_Entry_2017_v2020.csv"))
    (root / nih.BBOX_LIST).write_bytes(_kaggle_bbox(FIXTURE / "BBox_List_2017.csv"))
    entries = nih.read_data_entry(root / nih.DATA_ENTRY)
    boxes = nih.read_bbox(root / nih.BBOX_LIST)
    test_pat = _test_patients(entries, boxes)
    is_test = entries["patient_id"].isin(test_pat)
    nih.write_image_list(entries.loc[is_test, "image"], root / nih.TEST_LIST)
    nih.write_image_list(entries.loc[~is_test, "image"], root / nih.TRAIN_VAL_LIST)
    rgba = entries.loc[entries["findings"] == nih.NO_FINDING, "image"].iloc[0]
    archive = tarfile.open(root / "images_12.tar.gz", "w:gz")
    for name in entries["image"]:
        im = Image.fromarray(_film(name, boxes[boxes["image"] == name]))
        im = im.convert("RGBA") if name == rgba else im
        buf = io.BytesIO()
        im.save(buf, format="PNG", compress_level=1)
        if nih.shard_of(name) == ARCHIVED_SHARD:
            info = tarfile.TarInfo(f"images/{name}")
            info.size = len(buf.getvalue())
            archive.addfile(info, io.BytesIO(buf.getvalue()))
        else:
            (root / nih.image_relpath(name)).parent.mkdir(parents=True, exist_ok=True)
            (root / nih.image_relpath(name)).write_bytes(buf.getvalue())
    archive.close()
    return {"entries": entries, "boxes": boxes, "test_patients": test_pat, "rgba": rgba}


# ---- the preset at tiny sizes --------------------------------------------------------------------
def preset_overlay() -> dict:
    return read_yaml(REPO / "configs" / "nih.yaml")


def tiny_preset(root: Path) -> Params:
    """configs/nih.yaml over params.yaml, then tiny values: 32² images, tiny models, 2 epochs
    of at most 3 batches, CPU, few resamples; its structure (source, shards, views, lists, no
    caps, four architectures) is untouched."""
    raw = apply_overlay(read_yaml(REPO / "params.yaml"), preset_overlay())
    tiny = {
        "seeds": [0, 1],  # several seeds, as the preset: the seed ensemble is reported
        "data": {"source": "local", "local": {"root": str(root)}, "image_size": 32,
                 "val_fraction": 0.25},
        "arch": {a: {**TINY_ARCH[a], "epochs": 2, "max_train_batches_per_epoch": 3,
                     "batch_size": 8} for a in ("ae", "vae", "unet", "ra")},
        "train": {"device": "cpu", "num_threads": 2, "batch_size": 8},
        "score": {"batch_size": 64},
        "report": {"bootstrap": 20, "min_stratum": 3},
        "mlflow": {"enabled": False},
    }  # fmt: skip
    tiny["arch"]["ra"].update(channels=[4, 8], milestones=[1])
    return validate(apply_overlay(raw, tiny), where="configs/nih.yaml at tiny sizes")


def test_preset_is_the_official_protocol():
    raw = read_yaml(REPO / "configs" / "nih.yaml")
    assert raw["seeds"] == [0, 1, 2]
    p = tiny_preset(Path("/nonexistent"))
    full = validate(apply_overlay(read_yaml(REPO / "params.yaml"), preset_overlay()))
    d = full.data
    assert (d.source, d.shards, d.views, d.image_size) == ("kaggle", "all", ["PA", "AP"], 128)
    assert (d.max_train, d.max_val, d.max_test_normal, d.max_test_abnormal) == (None,) * 4
    assert full.models == ["ae", "vae", "unet", "ra"] == p.models
    assert full.model_args("ra")["channels"] == [64, 128, 256, 512, 512]
    assert full.model_args("unet")["base_channels"] == 64
    assert all(full.train_for(a).max_train_batches_per_epoch is None for a in full.models)
    assert full.train.device == "cuda" and full.train.amp


# ---- the rehearsal -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    base = tmp_path_factory.mktemp("nih")
    mirror = build_mirror(base / "nih")
    params = tiny_preset(base / "nih")
    out = run_pipeline(base / "ws", params)
    return base / "ws", mirror, params, out


def test_fetch_places_every_needed_film(rehearsal):
    ws, mirror, _, out = rehearsal
    raw, entries = ws / "data" / "raw", mirror["entries"]
    test = entries[entries["patient_id"].isin(mirror["test_patients"])]
    needed = set(test["image"]) | set(
        entries.loc[~entries["patient_id"].isin(mirror["test_patients"])].query(
            "findings == 'No Finding'"
        )["image"]
    )
    assert out["fetch"]["n_images"] == len(needed)
    assert out["fetch"]["layout"] == "folders+archives"
    assert out["fetch"]["archives_read"] == ["images_12.tar.gz"]
    on_disk = {p.name for p in raw.glob("images_*/images/*.png")}
    assert on_disk == needed
    for f in nih.METADATA_FILES:
        assert (raw / f).read_bytes() == (ws.parent / "nih" / f).read_bytes()
    manifest = json.loads((raw / "fetch_manifest.json").read_text())
    assert len(manifest["files"]) == len(needed) + 4


def test_split_follows_the_official_lists_patient_wise(rehearsal):
    ws, mirror, _, out = rehearsal
    split = {n: pd.read_csv(ws / "data" / "split" / f"{n}.csv") for n in ("train", "val", "test")}
    test_pat = mirror["test_patients"]
    assert set(split["test"]["patient_id"]) == test_pat
    assert not (set(split["train"]["patient_id"]) | set(split["val"]["patient_id"])) & test_pat
    assert not set(split["train"]["patient_id"]) & set(split["val"]["patient_id"])
    assert (split["train"]["findings"] == "No Finding").all()
    assert (split["val"]["findings"] == "No Finding").all() and len(split["val"]) > 0
    assert set(split["test"]["view"]) == {"PA", "AP"}
    entries = mirror["entries"]
    n_test = int(entries["patient_id"].isin(test_pat).sum())
    assert out["split"]["n_test_normal"] + out["split"]["n_test_abnormal"] == n_test
    assert len(pd.read_csv(ws / "data" / "split" / "issues.csv")) == 0
    boxes = pd.read_csv(ws / "data" / "split" / "boxes.csv")
    assert len(boxes) == len(mirror["boxes"]) == 16
    assert "Infiltration" in set(boxes["finding"]) and "Infiltrate" not in set(boxes["finding"])
    summary = json.loads((ws / "data" / "split" / "summary.json").read_text())
    assert summary["n_patients"]["test"] == len(test_pat)
    assert (ws / "reports" / "figures" / "local_samples.png").stat().st_size > 0


def test_prepare_repairs_the_rgba_film_and_scales_the_boxes(rehearsal):
    ws, mirror, params, out = rehearsal
    prep = ws / "data" / "prepared"
    for name in ("train", "val", "test"):
        arr = np.load(prep / f"{name}.npy")
        man = pd.read_csv(prep / f"{name}.csv")
        assert arr.shape == (len(man), 32, 32) and arr.dtype == np.uint8
        assert out["prepare"][name] == len(man)
    issues = pd.read_csv(prep / "issues.csv")
    assert issues[["image", "action", "problem"]].values.tolist() == [
        [mirror["rgba"], "repaired", "not 8-bit grayscale"]
    ]
    boxes = pd.read_csv(prep / "boxes.csv").sort_values(["image", "finding", "x"])
    orig = pd.read_csv(ws / "data" / "split" / "boxes.csv").sort_values(["image", "finding", "x"])
    scale = params.data.image_size / PNG_SIDE
    np.testing.assert_allclose(boxes[["x", "y", "w", "h"]], orig[["x", "y", "w", "h"]] * scale)


def test_train_and_score_every_architecture(rehearsal):
    ws, _, params, out = rehearsal
    n_val = len(pd.read_csv(ws / "data" / "prepared" / "val.csv"))
    n_test = len(pd.read_csv(ws / "data" / "prepared" / "test.csv"))
    assert params.seeds == [0, 1]
    for arch in params.models:
        weights = []
        for seed in params.seeds:
            assert (ws / paths.model(arch, seed)).stat().st_size > 0
            curve = pd.read_csv(ws / paths.train_curve(arch, seed))
            assert curve["epoch"].tolist() == [0, 1, 2] and np.isfinite(curve["val_loss"]).all()
            scores = pd.read_csv(ws / paths.scores(arch, seed))
            assert len(scores) == n_val + n_test and np.isfinite(scores["score"]).all()
            assert scores["patient_id"].notna().all() and set(scores["view"]) == {"PA", "AP"}
            with np.load(ws / paths.maps(arch, seed)) as z:
                assert z["map"].shape == (n_test, 32, 32)
            assert out[f"score@{arch}-{seed}"]["n_scored"] == n_val + n_test
            weights.append(scores["score"].to_numpy())
        assert not np.array_equal(*weights), f"{arch}: the two seeds trained the same model"
    resume = ws / paths.RESUME
    assert not resume.exists() or not any(resume.rglob("*.pt"))


def test_report_covers_every_model_stratum_and_box(rehearsal):
    ws, mirror, params, _ = rehearsal
    m = json.loads((ws / "reports" / "metrics.json").read_text())
    assert set(m["models"]) == set(params.models)
    assert m["bootstrap"]["unit"] == "patient"
    assert m["data"]["n_test_patients"] == len(mirror["test_patients"])
    for arch, r in m["models"].items():
        assert 0.0 <= r["auroc"] <= 1.0, arch
        assert set(r["by_view"]) == {"PA", "AP"} and set(r["by_sex"]) == {"M", "F"}
        assert r["by_age"] and "Infiltration" in r["by_finding"]
        assert r["localization"]["n_images"] > 0
    assert m["baselines"]["view_ap"]["auroc"] is not None
    assert len(m["comparisons"]) == 6
    assert m["seeds"]["seeds"] == [0, 1]
    for arch in params.models:
        assert set(m["seeds"]["models"][arch]["per_seed"]) == {"0", "1"}
    md = (ws / "reports" / "report.md").read_text()
    for section in ("## 1. Setup", "## 4. Subgroups", "## 5.", "## 9. Caveats"):
        assert section in md
    assert "Source **local**" in md and "Labels are noisy" in md
    issues = pd.read_csv(ws / "reports" / "data_issues.csv")
    assert issues["image"].tolist() == [mirror["rgba"]]
    for fig in ("roc", "pr", "score_dist", "gallery", "train_curves"):
        assert (ws / "reports" / "figures" / f"{fig}.png").stat().st_size > 0
    for arch in params.models:
        assert (ws / paths.PLOT_POINTS / "roc" / f"{arch}.csv").is_file()
