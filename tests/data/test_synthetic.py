"""The synthetic NIH-format mirror (data.source: synthetic): formats, determinism, no shortcut."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError
from sklearn.metrics import roc_auc_score

from imgae_dx.config import SyntheticParams
from imgae_dx.data import nih, split
from imgae_dx.data.samples import samples_figure
from imgae_dx.data.sources import synthetic
from imgae_dx.data.sources._phantom_people import plan_dataset

TINY = SyntheticParams(n_patients=14, image_size=64, seed=3, workers=1)


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, dict]:
    raw = tmp_path_factory.mktemp("tiny")
    return raw, synthetic.generate(raw, TINY)


def test_byte_identical_across_runs_and_workers(tiny, tmp_path):
    raw, info = tiny
    again = tmp_path / "again"
    info2 = synthetic.generate(again, TINY.model_copy(update={"workers": 2}))
    assert info2 == info
    a, b = _digest(raw), _digest(again)
    assert a == b
    assert sum(k.endswith(".png") for k in a) == info["n_images"]
    other = synthetic.generate(tmp_path / "other", TINY.model_copy(update={"seed": 4}))
    assert _digest(tmp_path / "other") != a and other["n_images"] > 0


def test_metadata_in_real_formats(tiny):
    raw, info = tiny
    lines = (raw / nih.DATA_ENTRY).read_text(encoding="utf-8").splitlines()
    assert lines[0] == nih.DATA_ENTRY_HEADER
    assert (raw / nih.BBOX_LIST).read_text(encoding="utf-8").splitlines()[0] == nih.BBOX_HEADER
    entries, tv, te, boxes = split.load_metadata(raw)
    assert len(entries) == info["n_images"] == len(tv) + len(te)
    assert entries["image"].is_monotonic_increasing
    assert set(entries["view"]) <= set(nih.VIEWS) and set(entries["sex"]) <= set(nih.SEXES)
    for f in entries["findings"]:
        assert set(nih.parse_findings(f)) <= set(nih.LABELS)
    # Follow-ups are numbered 0..n-1 per patient and the image name matches.
    for pid, g in entries.groupby("patient_id"):
        assert sorted(g["follow_up"]) == list(range(len(g)))
        assert all(nih.parse_image_name(n)[0] == pid for n in g["image"])


def test_every_abnormal_image_has_a_box_for_each_finding(tiny):
    raw, _ = tiny
    entries, _, _, boxes = split.load_metadata(raw)
    boxed = boxes.groupby("image")["finding"].apply(set).to_dict()
    size = TINY.image_size
    for r in entries.itertuples():
        found = set(nih.parse_findings(r.findings))
        assert boxed.get(r.image, set()) == found, r.image
    assert ((boxes.x >= 0) & (boxes.y >= 0) & (boxes.w > 0) & (boxes.h > 0)).all()
    assert ((boxes.x + boxes.w <= size + 0.02) & (boxes.y + boxes.h <= size + 0.02)).all()
    text = (raw / nih.BBOX_LIST).read_text(encoding="utf-8")
    assert ",Infiltration," not in text  # spelled Infiltrate, as in the real file
    assert all(line.endswith(",,,") for line in text.splitlines()[1:])


def test_images_in_their_shards_and_lists_patient_wise(tiny):
    raw, _ = tiny
    entries, tv, te, _ = split.load_metadata(raw)
    pngs = {p.name: p for p in raw.glob("images_*/images/*.png")}
    assert set(pngs) == set(entries["image"])
    for name, p in pngs.items():
        assert p.parent.parent.name == nih.shard_of(name)
        with Image.open(p) as im:
            assert im.mode == "L" and im.size == (TINY.image_size,) * 2
    pid = entries.set_index("image")["patient_id"]
    assert not set(pid[tv]) & set(pid[te])
    assert tv == sorted(tv) and te == sorted(te)


def test_ids_span_all_shards_and_label_mix():
    specs_info = plan_dataset(
        n_patients=1900, seed=0, prevalence=0.47, difficulty=0.35, test_fraction=0.2, followups=3.4
    )
    shards = {nih.shard_of(s["name"]) for s in specs_info}
    assert shards == set(nih.SHARDS)
    normal = np.mean([not s["findings"] for s in specs_info])
    assert 0.48 < normal < 0.6
    multi = np.mean([len(s["findings"]) > 1 for s in specs_info if s["findings"]])
    assert 0.2 < multi < 0.6
    n_test = len({s["patient_id"] for s in specs_info if s["test"]})
    assert n_test == 380


@pytest.mark.parametrize(
    ("key", "value"), [("prevalence", 1.5), ("n_patients", 0), ("image_size", 8)]
)
def test_bad_params_are_refused_by_the_schema(key, value):
    with pytest.raises(ValidationError, match=key):
        SyntheticParams(**{key: value})


def test_no_trivial_shortcut(tmp_path):
    """Issue #3: mean intensity, standard deviation and view alone stay near chance."""
    raw = tmp_path / "raw"
    synthetic.generate(raw, SyntheticParams(n_patients=420, image_size=64, seed=0))
    entries, tv, te, _ = split.load_metadata(raw)
    sel = split.make_split(
        entries, train_val_list=tv, test_list=te, max_test_normal=600, max_test_abnormal=600
    )
    test = sel.test
    y = test["label"].to_numpy()
    assert min((y == 0).sum(), (y == 1).sum()) >= 100
    imgs = np.stack(
        [
            np.asarray(Image.open(raw / nih.image_relpath(n)), dtype=np.float64)
            for n in test["image"]
        ]
    ).reshape(len(test), -1)
    aucs = {
        "mean": roc_auc_score(y, imgs.mean(1)),
        "std": roc_auc_score(y, imgs.std(1)),
        "view": roc_auc_score(y, (test["view"] == "AP").to_numpy()),
    }
    for name, auc in aucs.items():
        assert 0.35 <= auc <= 0.65, (name, aucs)
    assert 0.4 <= aucs["view"] <= 0.6, aucs


def test_samples_figure(tiny, tmp_path):
    raw, _ = tiny
    entries, tv, te, boxes = split.load_metadata(raw)
    entries = entries.assign(label=(entries.findings != nih.NO_FINDING).astype(int))
    out = tmp_path / "fig" / "synthetic_samples.png"
    panels = samples_figure(raw, entries, boxes, out, title="synthetic")
    assert out.is_file() and out.stat().st_size > 10_000
    kinds = [k for _, k, _ in panels]
    assert "normal" in kinds
    present = {lab for f in entries.findings for lab in nih.parse_findings(f)}
    assert set(kinds) - {"normal"} == present


def test_every_planned_image_has_a_shard():
    """With every NIH patient ID drawn, nothing sorts after 00030805_000.png (the last image)."""
    specs = plan_dataset(
        n_patients=nih.N_PATIENTS,
        seed=0,
        prevalence=0.47,
        difficulty=0.35,
        test_fraction=0.2,
        followups=3.4,
    )
    assert specs[-1]["name"] == nih.SHARD_LAST["images_012"]
    assert {nih.shard_of(s["name"]) for s in specs} == set(nih.SHARDS)
