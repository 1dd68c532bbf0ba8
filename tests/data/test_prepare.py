from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from imgae_dx.data import nih
from imgae_dx.data.issues import ISSUE_COLUMNS
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
    done = prepare_split(manifest, raw, out, image_size=32, workers=2)
    arr = np.load(out)
    assert arr.shape == (80, 32, 32) and arr.dtype == np.uint8
    assert [int(a[0, 0]) for a in arr] == list(range(79, -1, -1))
    assert done.kept.all() and done.sizes.shape == (80, 2) and (done.sizes == 128).all()
    assert done.issues == []
    assert sorted(p.name for p in out.parent.iterdir()) == ["test.npy"]


def test_load_image_handles_rgba_and_16_bit(tmp_path):
    rgba = np.zeros((64, 64, 4), dtype=np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = 255
    p = tmp_path / "a.png"
    Image.fromarray(rgba, mode="RGBA").save(p)
    img, size, repairs = load_image(p, 16)
    assert img.shape == (16, 16) and size == (64, 64) and abs(int(img.mean()) - 200) <= 1
    assert repairs == (("not 8-bit grayscale", f"{p}: mode RGBA converted to 8-bit grayscale"),)
    a16 = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16).astype(np.uint16)
    p16 = tmp_path / "b.png"
    Image.fromarray(a16).save(p16)
    img16, _, repairs16 = load_image(p16, 16)
    assert img16.dtype == np.uint8 and img16.max() > 200 and img16.min() < 20
    assert [r[0] for r in repairs16] == ["16-bit"] and "by its maximum 65520" in repairs16[0][1]
    assert load_image(tmp_path / "a.png", 64).repairs  # a repair is said every time


#: What each bad file becomes: (action, problem, words of the reason), by manifest position.
BAD = {
    1: ("repaired", "not a PNG", "not a PNG: JPEG data (lossy compression), decoded as it is"),
    2: ("repaired", "16-bit", "16-bit (mode I;16) scaled to 8-bit by its maximum 4000"),
    3: ("repaired", "not 8-bit grayscale", "mode RGBA converted to 8-bit grayscale"),
    4: ("excluded", "undecodable", "cannot decode: image file is truncated"),
    5: ("excluded", "missing file", "missing file"),
    6: ("excluded", "undecodable", "cannot decode: cannot identify image file"),
}


def _bad_mirror(raw, n: int = 8) -> list[str]:
    """``n`` images; 1-6 are the bad files of :data:`BAD`, the others plain 8-bit PNGs of
    value 10 * position mod 256 (the repaired ones too, so the kept rows can be told apart)."""
    names = [nih.image_name(100 + i, 0) for i in range(n)]
    for i, name in enumerate(names):
        if i not in BAD:
            _write(raw, name, np.full((40, 40), (10 * i) % 256, dtype=np.uint8))
    path = [raw / nih.image_relpath(name) for name in names]
    Image.fromarray(np.full((40, 40), 10, dtype=np.uint8)).save(path[1], format="JPEG")
    _write(raw, names[2], np.full((40, 40), 4000, dtype=np.uint16))  # 255 once repaired
    _write(raw, names[3], np.full((40, 40, 4), 30, dtype=np.uint8), mode="RGBA")
    _write(raw, names[4], np.full((40, 40), 40, dtype=np.uint8))
    path[4].write_bytes(path[4].read_bytes()[:-40])  # the IDAT cut short, IEND lost
    path[6].write_bytes(b"<html>Too Many Requests</html>")  # what a failed download leaves
    return names


@pytest.mark.parametrize("workers", [1, 2])
def test_bad_images_are_repaired_or_excluded_and_listed(tmp_path, workers):
    raw = tmp_path / "raw"
    names = _bad_mirror(raw, n=8 if workers == 1 else 70)
    out = tmp_path / "prep" / "val.npy"
    done = prepare_split(
        pd.DataFrame({"image": names}), raw, out, image_size=8, workers=workers, split="val"
    )
    keep = [i for i in range(len(names)) if BAD.get(i, ("",))[0] != "excluded"]
    assert done.kept.tolist() == [i in keep for i in range(len(names))]
    arr = np.load(out)
    assert arr.shape == (len(keep), 8, 8) and done.sizes.shape == (len(keep), 2)
    expected = {0: 0, 1: 10, 2: 255, 3: 30}  # the repaired JPEG, 16-bit and RGBA images
    values = [expected.get(i, (10 * i) % 256) for i in keep]
    assert np.abs(arr[:, 4, 4].astype(int) - values).max() <= 1  # JPEG: lossy
    got = {names.index(i.image): i for i in done.issues}
    assert sorted(got) == sorted(BAD) and len(done.issues) == len(BAD)
    for pos, (action, problem, words) in BAD.items():
        issue = got[pos]
        assert (issue.stage, issue.split, issue.line) == ("prepare", "val", None)
        assert (issue.action, issue.problem) == (action, problem)
        path = raw / nih.image_relpath(names[pos])
        assert issue.reason.startswith(f"{path}: {words}") and "\n" not in issue.reason
    assert sorted(p.name for p in out.parent.iterdir()) == ["val.npy"]


def test_everything_excluded_gives_an_empty_array(tmp_path):
    manifest = pd.DataFrame({"image": ["00000001_000.png"]})
    done = prepare_split(manifest, tmp_path, tmp_path / "x.npy", image_size=16)
    assert np.load(tmp_path / "x.npy").shape == (0, 16, 16) and done.sizes.shape == (0, 2)
    assert [(i.action, i.problem) for i in done.issues] == [("excluded", "missing file")]


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


def _split_dir(root) -> list[str]:
    """data/raw and data/split as the split stage leaves them: train and val of plain PNGs,
    test with the bad files of :data:`BAD` (three excluded of eight), one box per test image."""
    from imgae_dx.data.split import MANIFEST_COLUMNS

    raw, split = root / "data/raw", root / "data/split"
    test = _bad_mirror(raw)
    others = {"train": [nih.image_name(200 + i, 0) for i in range(4)]}
    others["val"] = [nih.image_name(300 + i, 0) for i in range(2)]
    for i, name in enumerate(others["train"] + others["val"]):
        _write(raw, name, np.full((40, 40), 100 + i, dtype=np.uint8))
    for name, images in {**others, "test": test}.items():
        df = pd.DataFrame({"image": images, "patient_id": range(len(images))})
        df = df.assign(follow_up=0, age=50, sex="M", view="PA", findings="Mass", label=1)
        df = df.assign(shard=[nih.shard_of(n) for n in images])[MANIFEST_COLUMNS]
        split.mkdir(parents=True, exist_ok=True)
        df.to_csv(split / f"{name}.csv", index=False)
    boxes = pd.DataFrame({"image": test, "finding": "Mass", "x": 4.0, "y": 4.0, "w": 8.0, "h": 8.0})
    boxes.to_csv(split / "boxes.csv", index=False)
    return test


def test_prepare_stage_writes_aligned_manifests_and_its_issues(tmp_path, monkeypatch):
    from imgae_dx.pipeline.prepare import prepare
    from tests.conftest import make_params

    test = _split_dir(tmp_path)
    monkeypatch.chdir(tmp_path)
    counts = prepare(make_params(**{"data.image_size": 16, "data.max_bad_fraction": 0.5}))
    assert counts == {"train": 4, "val": 2, "test": 5, "n_repaired": 3, "n_excluded": 3}
    kept = [test[i] for i in range(8) if BAD.get(i, ("",))[0] != "excluded"]
    for name in ("train", "val", "test"):
        arr = np.load(f"data/prepared/{name}.npy")
        manifest = pd.read_csv(f"data/prepared/{name}.csv")
        assert list(manifest.columns) == list(pd.read_csv(f"data/split/{name}.csv").columns)
        assert len(manifest) == len(arr)
    assert pd.read_csv("data/prepared/test.csv")["image"].tolist() == kept
    pixels = np.load("data/prepared/test.npy")[:, 8, 8].astype(int)
    assert np.abs(pixels - [0, 10, 255, 30, 70]).max() <= 1  # rows of test.csv, in its order
    assert pd.read_csv("data/prepared/boxes.csv")["image"].tolist() == kept
    issues = pd.read_csv("data/prepared/issues.csv", keep_default_na=False)
    assert list(issues.columns) == ISSUE_COLUMNS
    assert issues["image"].tolist() == [test[i] for i in sorted(BAD)]
    assert set(issues["split"]) == {"test"} and set(issues["line"]) == {""}


def test_prepare_stage_fails_above_the_limit_after_listing(tmp_path, monkeypatch):
    from imgae_dx.data.issues import BadDataError
    from imgae_dx.pipeline.prepare import prepare
    from tests.conftest import make_params

    _split_dir(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BadDataError) as e:
        prepare(make_params(**{"data.image_size": 16, "data.max_bad_fraction": 0.25}))
    msg = str(e.value)
    assert msg.startswith("data/prepared/issues.csv: 3 of 8 test images of data/split/test.csv")
    assert "excluded (37.5 %), more than data.max_bad_fraction = 0.25" in msg and "\n" not in msg
    assert len(pd.read_csv("data/prepared/issues.csv")) == len(BAD)


def test_prepare_stage_script_says_the_limit_in_one_line(tmp_path):
    import subprocess
    import sys

    import yaml

    from tests.conftest import REPO

    _split_dir(tmp_path)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["image_size"] = 16
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.run(
        [sys.executable, str(REPO / "stages/prepare.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: data/prepared/issues.csv: 3 of 8 test images")
    assert proc.stderr.count("\n") == 1 and "data.max_bad_fraction = 0.01" in proc.stderr
