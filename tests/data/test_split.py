from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from imgae_dx.data import nih
from imgae_dx.data.split import SplitError, check_split, make_split, summarize

FINDINGS = ["Mass", "Effusion", "Nodule|Atelectasis", "Cardiomegaly"]


def _entries(n_patients: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    pids = np.sort(rng.choice(np.arange(1, nih.N_PATIENTS + 1), n_patients, replace=False))
    rows = []
    for pid in pids:
        for fu in range(int(rng.integers(1, 5))):
            f = nih.NO_FINDING if rng.random() < 0.6 else FINDINGS[int(rng.integers(len(FINDINGS)))]
            rows.append(
                {
                    "image": nih.image_name(int(pid), fu),
                    "findings": f,
                    "follow_up": fu,
                    "patient_id": int(pid),
                    "age": int(rng.integers(20, 80)),
                    "sex": "MF"[int(rng.integers(2))],
                    "view": "PA" if rng.random() < 0.6 else "AP",
                    "width": 2500,
                    "height": 2048,
                    "spacing_x": 0.143,
                    "spacing_y": 0.143,
                }
            )
    return pd.DataFrame(rows)


def _patients(df: pd.DataFrame) -> set[int]:
    return set(df["patient_id"])


def test_random_patient_split_has_no_leakage_and_only_normals_in_train_val():
    sel = make_split(_entries(), val_fraction=0.2, test_fraction=0.3, seed=1)
    assert not _patients(sel.train) & _patients(sel.test)
    assert not _patients(sel.val) & _patients(sel.test)
    assert not _patients(sel.train) & _patients(sel.val)
    assert (sel.train["findings"] == nih.NO_FINDING).all()
    assert (sel.val["findings"] == nih.NO_FINDING).all()
    assert set(sel.test["label"]) == {0, 1}
    assert ((sel.test["findings"] != nih.NO_FINDING) == (sel.test["label"] == 1)).all()


def test_official_lists_define_test_patients():
    e = _entries()
    pids = sorted(e["patient_id"].unique())
    test_pat = set(pids[::4])
    test_list = e.loc[e["patient_id"].isin(test_pat), "image"].tolist()
    tv_list = e.loc[~e["patient_id"].isin(test_pat), "image"].tolist()
    sel = make_split(e, train_val_list=tv_list, test_list=test_list, seed=0)
    assert _patients(sel.test) <= test_pat
    assert not (_patients(sel.train) | _patients(sel.val)) & test_pat


def test_lists_sharing_a_patient_are_refused():
    e = _entries()
    pid = int(e["patient_id"].iloc[0])
    imgs = e.loc[e["patient_id"] == pid, "image"].tolist()
    with pytest.raises(SplitError, match="share"):
        make_split(e, train_val_list=imgs[:1] + ["00000000_000.png"], test_list=imgs[:1], seed=0)


def test_views_shards_and_caps():
    e = _entries(200)
    sel = make_split(
        e,
        views=["PA"],
        shards=["images_001", "images_002"],
        max_test_normal=5,
        max_test_abnormal=7,
        max_train=10,
        seed=0,
    )
    for part in sel.as_dict().values():
        assert (part["view"] == "PA").all()
        assert set(part["shard"]) <= {"images_001", "images_002"}
    assert (sel.test["label"] == 0).sum() <= 5 and (sel.test["label"] == 1).sum() <= 7
    assert len(sel.train) <= 10
    assert sel.images() == sorted(set(sel.images()))


def test_split_is_deterministic_and_seed_dependent():
    e = _entries(120)
    a = make_split(e, seed=3)
    b = make_split(e, seed=3)
    c = make_split(e, seed=4)
    pd.testing.assert_frame_equal(a.train, b.train)
    assert not a.test["image"].equals(c.test["image"]) or not a.val["image"].equals(c.val["image"])


def test_check_split_refuses_leakage_and_abnormal_training_images():
    sel = make_split(_entries(), seed=0).as_dict()
    leak = dict(sel)
    leak["val"] = pd.concat([sel["val"], sel["test"].iloc[:1].assign(findings=nih.NO_FINDING)])
    with pytest.raises(SplitError, match="patient leakage"):
        check_split(leak)
    bad = dict(sel)
    bad["train"] = sel["train"].copy()
    bad["train"].loc[bad["train"].index[0], "findings"] = "Mass"
    with pytest.raises(SplitError, match="No Finding"):
        check_split(bad)


def test_unknown_view_or_shard_is_a_clear_error():
    with pytest.raises(ValueError, match="data.views"):
        make_split(_entries(), views=["LL"])
    with pytest.raises(ValueError, match="data.shards"):
        make_split(_entries(), shards=["images_013"])


def test_summary_counts():
    sel = make_split(_entries(), seed=0)
    s = summarize(sel.as_dict(), "synthetic")
    assert s["n_train"] == len(sel.train)
    assert s["n_test_normal"] + s["n_test_abnormal"] == len(sel.test)
    assert sum(s["by_view"]["test"].values()) == len(sel.test)


def _raw_with_bad_rows(root) -> tuple[pd.DataFrame, list[str]]:
    """A mirror (metadata only) whose Data_Entry_2017.csv ends with three malformed rows:
    an unknown label, a repeated image (with other findings) and a row one field short."""
    entries = _entries(60)
    raw = root / "data/raw"
    raw.mkdir(parents=True)
    nih.write_data_entry(entries, raw / nih.DATA_ENTRY)
    first = entries.iloc[0]
    bad = [
        "00030000_000.png,Tumour,0,30000,40,F,PA,2048,2048,0.143,0.143",
        f"{first.image},Mass,{first.follow_up},{first.patient_id},40,F,AP,2048,2048,0.143,0.143",
        "00030001_000.png,No Finding,0,30001,40,F,PA,2048,2048,0.143",
    ]
    with open(raw / nih.DATA_ENTRY, "a", encoding="utf-8") as fh:
        fh.write("".join(f"{r}\n" for r in bad))
    return entries, bad


def test_split_stage_leaves_malformed_rows_out_and_lists_them(tmp_path, monkeypatch):
    from imgae_dx.data.split import load_metadata_lenient
    from imgae_dx.pipeline.split import split
    from tests.conftest import make_params

    entries, _ = _raw_with_bad_rows(tmp_path)
    monkeypatch.chdir(tmp_path)
    meta, _ = load_metadata_lenient("data/raw")  # what fetch selects from
    pd.testing.assert_frame_equal(meta.entries, entries)
    summary = split(make_params(**{"data.max_bad_fraction": 0.05}))
    issues = pd.read_csv("data/split/issues.csv", keep_default_na=False)
    n = len(entries)
    assert issues["line"].tolist() == [n + 2, n + 3, n + 4]
    assert issues["image"].tolist() == ["00030000_000.png", entries.image[0], "00030001_000.png"]
    assert issues["problem"].tolist() == [
        "malformed row: Finding Labels",
        "duplicate row",
        "malformed row: field count",
    ]
    assert set(issues["stage"]) == {"split"} and set(issues["action"]) == {"excluded"}
    assert set(issues["split"]) == {""}
    assert (
        f"data/raw/{nih.DATA_ENTRY}: line {n + 2} (00030000_000.png): Finding Labels"
        in (issues["reason"][0])
    )
    manifests = pd.concat(pd.read_csv(f"data/split/{s}.csv") for s in ("train", "val", "test"))
    assert not {"00030000_000.png", "00030001_000.png"} & set(manifests["image"])
    row = manifests[manifests["image"] == entries.image[0]]  # the first row of the image wins
    assert row[["findings", "view"]].values.tolist() == [[entries.findings[0], entries.view[0]]]
    assert summary["n_train"] + summary["n_val"] > 0


def test_split_stage_fails_above_the_limit_after_listing(tmp_path, monkeypatch):
    from imgae_dx.data.issues import BadDataError
    from imgae_dx.pipeline.split import split
    from tests.conftest import make_params

    entries, bad = _raw_with_bad_rows(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BadDataError) as e:
        split(make_params(**{"data.max_bad_fraction": 0.01}))
    n = len(entries) + len(bad)
    assert str(e.value).startswith(
        f"data/split/issues.csv: 3 of {n} rows of data/raw/{nih.DATA_ENTRY} excluded"
    )
    assert f"excluded ({300 / n:.3g} %), more than data.max_bad_fraction = 0.01" in str(e.value)
    assert "\n" not in str(e.value) and " 0.0 %" not in str(e.value)
    assert len(pd.read_csv("data/split/issues.csv")) == 3
    assert not any((tmp_path / "data/split").glob("t*.csv"))  # no manifests from bad metadata
