"""NIH metadata readers on hand-written files in the real formats (tests/data/fixtures/nih_real).

The fixtures copy the quirks of the real files: Data_Entry_2017.csv with and without the Kaggle
copy's trailing empty column, CRLF line endings, ages as ints and old-style ``058Y``;
BBox_List_2017.csv with ``Infiltrate`` and trailing ``,,,``. The same content written by the
writers the synthetic source uses must read back identically.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from imgae_dx.data import nih

FIX = Path(__file__).parent / "fixtures" / "nih_real"


@pytest.fixture(scope="module")
def entries() -> pd.DataFrame:
    return nih.read_data_entry(FIX / nih.DATA_ENTRY)


def test_data_entry_real_format(entries):
    assert list(entries.columns) == [
        "image",
        "findings",
        "follow_up",
        "patient_id",
        "age",
        "sex",
        "view",
        "width",
        "height",
        "spacing_x",
        "spacing_y",
    ]
    assert len(entries) == 12
    r = entries.set_index("image").loc["00014716_007.png"]
    assert r.findings == "Atelectasis|Infiltration|Pneumothorax"
    assert (r.follow_up, r.patient_id, r.age, r.sex, r.view) == (7, 14716, 45, "F", "AP")
    assert (r.width, r.height, r.spacing_x) == (3056, 2544, 0.139)
    assert entries["age"].dtype.kind == "i"


def test_header_is_exact_and_has_eleven_csv_columns():
    import csv

    assert len(next(csv.reader([nih.DATA_ENTRY_HEADER]))) == 11
    first = (FIX / nih.DATA_ENTRY).read_text(encoding="utf-8").splitlines()[0]
    assert first.rstrip(",") == nih.DATA_ENTRY_HEADER


def test_quirk_variants_parse_identically(entries):
    """No trailing column + CRLF + '058Y' ages == the Kaggle copy."""
    other = nih.read_data_entry(FIX / "Data_Entry_2017_nocomma_crlf_ageY.csv")
    pd.testing.assert_frame_equal(other, entries)


def test_synthetic_writers_read_back_identically(entries, tmp_path):
    """What the synthetic source writes reads back exactly like the real-format files."""
    boxes = nih.read_bbox(FIX / nih.BBOX_LIST)
    # The writer keeps 3 decimals of the pixel spacing (the real file has a few longer ones).
    entries = entries.assign(
        spacing_x=entries.spacing_x.round(3), spacing_y=entries.spacing_y.round(3)
    )
    nih.write_data_entry(entries, tmp_path / nih.DATA_ENTRY)
    nih.write_bbox(boxes, tmp_path / nih.BBOX_LIST)
    pd.testing.assert_frame_equal(nih.read_data_entry(tmp_path / nih.DATA_ENTRY), entries)
    pd.testing.assert_frame_equal(nih.read_bbox(tmp_path / nih.BBOX_LIST), boxes)
    text = (tmp_path / nih.BBOX_LIST).read_text(encoding="utf-8").splitlines()
    assert text[0] == nih.BBOX_HEADER
    assert all(line.endswith(",,,") for line in text[1:])
    assert any(",Infiltrate," in line for line in text[1:])
    for name in (nih.TRAIN_VAL_LIST, nih.TEST_LIST):
        names = nih.read_image_list(FIX / name)
        nih.write_image_list(names, tmp_path / name)
        assert nih.read_image_list(tmp_path / name) == names


def test_writer_keeps_pixel_spacing(entries, tmp_path):
    nih.write_data_entry(entries, tmp_path / nih.DATA_ENTRY)
    pd.testing.assert_frame_equal(nih.read_data_entry(tmp_path / nih.DATA_ENTRY), entries)


def test_bbox_real_format():
    b = nih.read_bbox(FIX / nih.BBOX_LIST)
    assert list(b.columns) == ["image", "finding", "x", "y", "w", "h"]
    assert len(b) == 8
    assert "Infiltrate" not in set(b.finding) and "Infiltration" in set(b.finding)
    r = b.iloc[0]
    assert r.image == "00013118_008.png" and r.finding == "Atelectasis"
    assert r.x == pytest.approx(225.084745762712) and r.h == pytest.approx(79.1864406779661)


def test_lists_are_patient_wise(entries):
    tv, te = nih.read_image_list(FIX / nih.TRAIN_VAL_LIST), nih.read_image_list(FIX / nih.TEST_LIST)
    pid = entries.set_index("image")["patient_id"]
    assert not set(pid[tv]) & set(pid[te])
    assert sorted(tv + te) == sorted(entries.image)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


ROW = "00000001_000.png,Cardiomegaly,0,1,58,M,PA,2682,2749,0.143,0.143"


@pytest.mark.parametrize(
    ("row", "field"),
    [
        (ROW.replace("Cardiomegaly", "Cardiomegally"), "Finding Labels"),
        (ROW.replace(",58,", ",old,"), "Patient Age"),
        (ROW.replace(",M,", ",X,"), "Patient Gender"),
        (ROW.replace(",PA,", ",LL,"), "View Position"),
        (ROW.replace(",0,1,", ",0,2,"), "Patient ID"),
        (ROW.replace("00000001_000.png", "1_0.png"), "Image Index"),
        (ROW.replace("2682", "wide"), "OriginalImage"),
        (ROW + ",extra", "expected 11 fields"),
    ],
)
def test_malformed_data_entry_names_file_line_field(tmp_path, row, field):
    p = _write(
        tmp_path,
        nih.DATA_ENTRY,
        nih.DATA_ENTRY_HEADER
        + "\n"
        + ROW.replace("_000", "_001").replace(",0,1,", ",1,1,")
        + "\n"
        + row
        + "\n",
    )
    with pytest.raises(nih.MetadataError) as e:
        nih.read_data_entry(p)
    msg = str(e.value)
    assert str(p) in msg and "line 3" in msg and field in msg


MALFORMED = [  # (row, field of the issue); the good rows around them are ROW-like
    (ROW.replace("Cardiomegaly", "Cardiomegally"), "Finding Labels"),
    (ROW.replace(",58,", ",old,"), "Patient Age"),
    (ROW.replace(",M,", ",X,"), "Patient Gender"),
    (ROW.replace(",PA,", ",LL,"), "View Position"),
    (ROW.replace(",0,1,", ",zero,1,"), "Follow-up #/Patient ID"),
    (ROW.replace("00000001_000.png", "1_0.png"), "Image Index"),
    (ROW.replace("2682", "inf"), "OriginalImage/PixelSpacing"),
    (ROW + ",extra", "field count"),
    (ROW, nih.DUPLICATE),  # line 2 holds the same image
]


def test_lenient_read_keeps_good_rows_and_lists_each_bad_one(tmp_path):
    good = [ROW, ROW.replace("_000", "_001").replace(",0,1,", ",1,1,")]
    lines = [good[0], *(r for r, _ in MALFORMED), good[1]]
    p = _write(tmp_path, nih.DATA_ENTRY, "\n".join([nih.DATA_ENTRY_HEADER, *lines]) + "\n")
    entries, issues = nih.read_data_entry_lenient(p)
    assert entries["image"].tolist() == ["00000001_000.png", "00000001_001.png"]
    assert entries["age"].dtype.kind == "i"
    assert [i.line for i in issues] == list(range(3, 3 + len(MALFORMED)))
    assert [i.field for i in issues] == [f for _, f in MALFORMED]
    assert issues[5].image == "1_0.png" and issues[-1].image == "00000001_000.png"
    for issue in issues:
        assert issue.message.startswith(f"{p}: line {issue.line}")
        assert issue.field in issue.message or issue.field in ("field count", nih.DUPLICATE)
    assert "duplicate of line 2" in issues[-1].message
    # the strict reader raises the first issue's message
    with pytest.raises(nih.MetadataError) as e:
        nih.read_data_entry(p)
    assert str(e.value) == issues[0].message


def test_lenient_read_still_refuses_a_wrong_header_or_no_file(tmp_path):
    p = _write(tmp_path, nih.DATA_ENTRY, "Image Index;Finding Labels\n" + ROW + "\n")
    with pytest.raises(nih.MetadataError, match="line 1: unexpected header"):
        nih.read_data_entry_lenient(p)
    with pytest.raises(nih.MetadataError, match="file not found"):
        nih.read_data_entry_lenient(tmp_path / "nothing.csv")


def test_malformed_header_and_bbox(tmp_path):
    p = _write(tmp_path, nih.DATA_ENTRY, "Image Index,Finding Labels\n")
    with pytest.raises(nih.MetadataError, match="line 1"):
        nih.read_data_entry(p)
    b = _write(
        tmp_path, nih.BBOX_LIST, nih.BBOX_HEADER + "\n00000001_000.png,Mass,1,2,three,4,,,\n"
    )
    with pytest.raises(nih.MetadataError, match=r"line 2 .*Bbox"):
        nih.read_bbox(b)
    b = _write(tmp_path, "b2.csv", nih.BBOX_HEADER + "\n00000001_000.png,Tumour,1,2,3,4,,,\n")
    with pytest.raises(nih.MetadataError, match=r"line 2 .*Finding Label 'Tumour'"):
        nih.read_bbox(b)
    lst = _write(tmp_path, "test_list.txt", "00000001_000.png\nnot-an-image\n")
    with pytest.raises(nih.MetadataError, match=r"test_list.txt: line 2"):
        nih.read_image_list(lst)


def test_shard_of_boundaries():
    """docs/architecture.md, "NIH facts": the last file of each Kaggle shard, and the one after it."""
    assert nih.shard_of("00000001_000.png") == "images_001"
    shards = list(nih.SHARDS)
    for i, shard in enumerate(shards):
        last = nih.SHARD_LAST[shard]
        assert nih.shard_of(last) == shard
        pid, fu = nih.parse_image_name(last)
        after = nih.image_name(pid, fu + 1)
        if i + 1 < len(shards):
            assert nih.shard_of(after) == shards[i + 1], (last, after)
            assert nih.shard_of(nih.image_name(pid + 1, 0)) == shards[i + 1]
        else:
            with pytest.raises(ValueError):
                nih.shard_of(after)
    # A patient can span two shards (00001335_006 ends images_001).
    assert nih.shard_of("00001335_007.png") == "images_002"
    assert nih.image_relpath("00030805_000.png") == "images_012/images/00030805_000.png"
    with pytest.raises(ValueError):
        nih.shard_of("00000001_000.jpg")
