"""NIH ChestX-ray14 metadata: file formats, vocabulary and the Kaggle shard map.

Readers accept the real files (including their quirks) and the synthetic mirror alike, and
return tidy frames with snake_case columns. Writers produce the exact real formats.

Facts: Wang et al., "ChestX-ray8: Hospital-scale Chest X-ray Database and Benchmarks on
Weakly-Supervised Classification and Localization of Common Thorax Diseases", CVPR 2017;
https://nihcc.app.box.com/v/ChestXray-NIHCC and the Kaggle mirror ``nih-chest-xrays/data``.
"""

from __future__ import annotations

import bisect
import csv
import io
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from imgae_dx.errors import UserError
from imgae_dx.io import atomic_path

NO_FINDING = "No Finding"
#: The 14 labels of ``Finding Labels`` (Data_Entry_2017.csv spelling).
LABELS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Effusion",
    "Emphysema",
    "Fibrosis",
    "Hernia",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pleural_Thickening",
    "Pneumonia",
    "Pneumothorax",
)
VIEWS: tuple[str, ...] = ("PA", "AP")
SEXES: tuple[str, ...] = ("M", "F")

DATA_ENTRY = "Data_Entry_2017.csv"
BBOX_LIST = "BBox_List_2017.csv"
TRAIN_VAL_LIST = "train_val_list.txt"
TEST_LIST = "test_list.txt"
METADATA_FILES: tuple[str, ...] = (DATA_ENTRY, BBOX_LIST, TRAIN_VAL_LIST, TEST_LIST)

#: Exact header line of Data_Entry_2017.csv. The bracketed names contain commas, so a CSV
#: reader sees 11 columns: ``OriginalImage[Width``, ``Height]``, ``OriginalImagePixelSpacing[x``, ``y]``.
DATA_ENTRY_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
    "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)
DATA_ENTRY_COLUMNS: tuple[str, ...] = tuple(DATA_ENTRY_HEADER.split(","))
#: Exact header line of BBox_List_2017.csv (three trailing empty columns).
BBOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"
#: BBox_List_2017.csv spells one label differently from Data_Entry_2017.csv.
BBOX_TO_ENTRY_LABEL = {"Infiltrate": "Infiltration"}
ENTRY_TO_BBOX_LABEL = {v: k for k, v in BBOX_TO_ENTRY_LABEL.items()}

SHARDS: tuple[str, ...] = tuple(f"images_{i:03d}" for i in range(1, 13))
#: Last file (in sorted order) of each Kaggle shard ``images_00N/images/``.
SHARD_LAST: dict[str, str] = {
    "images_001": "00001335_006.png",
    "images_002": "00003923_013.png",
    "images_003": "00006585_006.png",
    "images_004": "00009232_003.png",
    "images_005": "00011558_007.png",
    "images_006": "00013774_025.png",
    "images_007": "00016051_009.png",
    "images_008": "00018387_034.png",
    "images_009": "00020945_049.png",
    "images_010": "00024717_000.png",
    "images_011": "00028173_002.png",
    "images_012": "00030805_000.png",
}
_SHARD_BOUNDS = [SHARD_LAST[s] for s in SHARDS]
N_PATIENTS = 30805

IMAGE_RE = re.compile(r"^(\d{8})_(\d{3})\.png$")


class MetadataError(UserError, ValueError):
    """A metadata file does not have the expected format; the message names file, row and field."""


#: The ``field`` of a :class:`RowIssue` that repeats an earlier row's Image Index.
DUPLICATE = "duplicate Image Index"


class RowIssue(NamedTuple):
    """A malformed row of ``Data_Entry_2017.csv``, left out by :func:`read_data_entry_lenient`."""

    line: int
    image: str  # its Image Index cell as written ("" for an empty row start)
    field: str  # what is wrong: a column name, "field count" or "duplicate Image Index"
    message: str  # one line naming file, line and field


class RowError(MetadataError):
    """One malformed data row; ``field`` says what is wrong with it."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


def image_name(patient_id: int, follow_up: int) -> str:
    return f"{patient_id:08d}_{follow_up:03d}.png"


def parse_image_name(name: str) -> tuple[int, int]:
    m = IMAGE_RE.match(name)
    if not m:
        raise ValueError(f"not an NIH image name (expected 00000001_000.png): {name!r}")
    return int(m.group(1)), int(m.group(2))


def shard_of(name: str) -> str:
    """Kaggle shard (``images_001`` … ``images_012``) holding image ``name``."""
    parse_image_name(name)
    i = bisect.bisect_left(_SHARD_BOUNDS, name)
    if i >= len(SHARDS):
        raise ValueError(f"image {name!r} sorts after the last NIH image {_SHARD_BOUNDS[-1]!r}")
    return SHARDS[i]


def image_relpath(name: str) -> str:
    """Path of an image inside the Kaggle layout: ``images_00N/images/<name>``."""
    return f"{shard_of(name)}/images/{name}"


def normalize_shards(shards: str | Iterable[str]) -> list[str]:
    """``"all"`` or a list of shard names (``images_001`` or ``1``) → sorted canonical names."""
    if isinstance(shards, str):
        if shards == "all":
            return list(SHARDS)
        shards = [shards]
    out = []
    for s in shards:
        name = f"images_{int(s):03d}" if isinstance(s, int) or str(s).isdigit() else str(s)
        if name not in SHARD_LAST:
            raise ValueError(
                f"data.shards: unknown shard {s!r} (valid: images_001 … images_012, or 'all')"
            )
        out.append(name)
    return sorted(set(out))


def parse_findings(value: str) -> list[str]:
    """``"Mass|Effusion"`` → ``["Mass", "Effusion"]``; ``"No Finding"`` → ``[]``."""
    value = value.strip()
    if value == NO_FINDING:
        return []
    return [v for v in value.split("|") if v]


def _sniff_lines(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return list(csv.reader(fh))


def _strip_trailing_empty(row: list[str], keep: int) -> list[str]:
    while len(row) > keep and row[-1].strip() == "":
        row = row[:-1]
    return row


ENTRY_COLUMNS = [
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


def read_data_entry(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``Data_Entry_2017.csv`` into the columns :data:`ENTRY_COLUMNS`
    (``image, findings, follow_up, patient_id, age, sex, view, width, height, spacing_x,
    spacing_y``).

    Tolerates a trailing empty column (the Kaggle copy has one) and ages written as ``058Y``
    (older releases). Any malformed row raises :class:`MetadataError` naming file, line and
    field; :func:`read_data_entry_lenient` leaves such rows out instead.
    """
    entries, _ = _read_data_entry(Path(path), lenient=False)
    return entries


def read_data_entry_lenient(path: str | os.PathLike) -> tuple[pd.DataFrame, list[RowIssue]]:
    """:func:`read_data_entry` that leaves malformed rows out: ``(good rows, their issues)``.

    A row is malformed when it has the wrong number of fields, an unknown label, a non-integer
    id, a bad age, sex, view or size, or repeats an Image Index (the first row is kept). Each
    issue's message is the error the strict reader raises. A missing file or a wrong header
    still raises: then nothing can be read.
    """
    return _read_data_entry(Path(path), lenient=True)


def _data_entry_rows(path: Path) -> list[tuple[int, list[str]]]:
    """The non-empty data rows of Data_Entry_2017.csv as ``(line, fields)``, header checked."""
    if not path.is_file():
        raise MetadataError(f"{path}: file not found (expected NIH {DATA_ENTRY})")
    rows = _sniff_lines(path)
    if not rows:
        raise MetadataError(f"{path}: empty file")
    header = _strip_trailing_empty([h.strip() for h in rows[0]], 11)
    if tuple(header) != DATA_ENTRY_COLUMNS:
        raise MetadataError(
            f"{path}: line 1: unexpected header {','.join(header)!r}; expected {DATA_ENTRY_HEADER!r}"
        )
    return [
        (lineno, _strip_trailing_empty(row, 11))
        for lineno, row in enumerate(rows[1:], start=2)
        if row and any(c.strip() for c in row)
    ]


def _read_data_entry(path: Path, lenient: bool) -> tuple[pd.DataFrame, list[RowIssue]]:
    recs, issues, first_line = [], [], {}
    for lineno, row in _data_entry_rows(path):
        try:
            rec = _entry(path, lineno, row)
            if rec[0] in first_line:
                where, why = f"{path}: line {lineno} ({rec[0]})", f"line {first_line[rec[0]]}"
                raise RowError(f"{where}: Image Index {rec[0]!r}: duplicate of {why}", DUPLICATE)
        except RowError as e:
            if not lenient:
                raise
            issues.append(RowIssue(lineno, row[0].strip() if row else "", e.field, str(e)))
            continue
        first_line[rec[0]] = lineno
        recs.append(rec)
    return pd.DataFrame.from_records(recs, columns=ENTRY_COLUMNS), issues


def _entry(path: Path, lineno: int, row: list[str]) -> tuple:
    """One row of Data_Entry_2017.csv, checked and typed (a tuple in ENTRY_COLUMNS order)."""
    if len(row) != 11:
        raise RowError(
            f"{path}: line {lineno}: expected 11 fields, got {len(row)}: {row!r}", "field count"
        )
    name, labels, fu, pid, age, sex, view, w, h, sx, sy = (c.strip() for c in row)

    def bad(field: str, value: str, why: str) -> RowError:
        return RowError(f"{path}: line {lineno} ({name}): {field} {value!r}: {why}", field)

    try:
        p_from_name, _ = parse_image_name(name)
    except ValueError as e:
        raise bad("Image Index", name, "not an NIH image name") from e
    findings = parse_findings(labels)
    unknown = [f for f in findings if f not in LABELS]
    if labels != NO_FINDING and (unknown or not findings):
        why = f"unknown label(s) {unknown} (valid: {', '.join(LABELS)}, {NO_FINDING})"
        raise bad("Finding Labels", labels, why)
    try:
        fu_i, pid_i = int(fu), int(pid)
    except ValueError as e:
        raise bad("Follow-up #/Patient ID", f"{fu}/{pid}", "not an integer") from e
    if pid_i != p_from_name:
        raise bad("Patient ID", pid, f"does not match the image name's patient {p_from_name}")
    age_i = _age_years(age)
    if age_i is None:
        raise bad("Patient Age", age, "not an age")
    if sex not in SEXES:
        raise bad("Patient Gender", sex, "expected M or F")
    if view not in VIEWS:
        raise bad("View Position", view, "expected PA or AP")
    try:
        wi, hi, sxf, syf = int(float(w)), int(float(h)), float(sx), float(sy)
    except (ValueError, OverflowError) as e:  # OverflowError: int(float("inf"))
        raise bad("OriginalImage/PixelSpacing", f"{w},{h},{sx},{sy}", "not numeric") from e
    return (name, labels, fu_i, pid_i, age_i, sex, view, wi, hi, sxf, syf)


def _age_years(text: str) -> int | None:
    """``58``, ``058Y``, ``7M`` (months) or ``20D`` (days) in whole years; None if not an age."""
    m = re.fullmatch(r"(\d+)\s*([YMD]?)", text)
    if not m:
        return None
    return int(m.group(1)) // {"": 1, "Y": 1, "M": 12, "D": 365}[m.group(2)]


def _num(value: float) -> str:
    """Shortest text that reads back as the same float (``0.143``, ``0.194311``)."""
    return repr(float(value))


def format_data_entry(df: pd.DataFrame) -> str:
    """Render the tidy frame of :func:`read_data_entry` in the exact real format."""
    buf = io.StringIO()
    buf.write(DATA_ENTRY_HEADER + "\n")
    w = csv.writer(buf, lineterminator="\n")
    for r in df.itertuples(index=False):
        w.writerow(
            [
                r.image,
                r.findings,
                int(r.follow_up),
                int(r.patient_id),
                int(r.age),
                r.sex,
                r.view,
                int(r.width),
                int(r.height),
                _num(r.spacing_x),
                _num(r.spacing_y),
            ]
        )
    return buf.getvalue()


def write_data_entry(df: pd.DataFrame, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(format_data_entry(df), encoding="utf-8")


def read_bbox(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``BBox_List_2017.csv`` into ``image, finding, x, y, w, h`` (pixels of the PNG).

    ``finding`` is normalised to the Data_Entry vocabulary (``Infiltrate`` → ``Infiltration``).
    """
    path = Path(path)
    if not path.is_file():
        raise MetadataError(f"{path}: file not found (expected NIH {BBOX_LIST})")
    rows = _sniff_lines(path)
    if not rows:
        raise MetadataError(f"{path}: empty file")
    header = _strip_trailing_empty([h.strip() for h in rows[0]], 0)
    if header[:6] != ["Image Index", "Finding Label", "Bbox [x", "y", "w", "h]"]:
        raise MetadataError(
            f"{path}: line 1: unexpected header {','.join(rows[0])!r}; expected {BBOX_HEADER!r}"
        )
    recs = []
    for lineno, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        row = _strip_trailing_empty(row, 6)
        if len(row) != 6:
            raise MetadataError(
                f"{path}: line {lineno}: expected 6 fields (plus empty ones), got {row!r}"
            )
        name, label = row[0].strip(), row[1].strip()
        try:
            parse_image_name(name)
        except ValueError as e:
            raise MetadataError(
                f"{path}: line {lineno}: Image Index {name!r}: not an NIH image name"
            ) from e
        label = BBOX_TO_ENTRY_LABEL.get(label, label)
        if label not in LABELS:
            raise MetadataError(
                f"{path}: line {lineno} ({name}): Finding Label {row[1]!r}: unknown label"
            )
        try:
            x, y, w, h = (float(c) for c in row[2:6])
        except ValueError as e:
            raise MetadataError(
                f"{path}: line {lineno} ({name}): Bbox {row[2:6]!r}: not numeric"
            ) from e
        if w <= 0 or h <= 0:
            raise MetadataError(
                f"{path}: line {lineno} ({name}): Bbox w/h must be positive, got {w}, {h}"
            )
        recs.append((name, label, x, y, w, h))
    return pd.DataFrame.from_records(recs, columns=["image", "finding", "x", "y", "w", "h"])


def format_bbox(df: pd.DataFrame) -> str:
    buf = io.StringIO()
    buf.write(BBOX_HEADER + "\n")
    for r in df.itertuples(index=False):
        label = ENTRY_TO_BBOX_LABEL.get(r.finding, r.finding)
        buf.write(
            f"{r.image},{label},{float(r.x)!r},{float(r.y)!r},{float(r.w)!r},{float(r.h)!r},,,\n"
        )
    return buf.getvalue()


def write_bbox(df: pd.DataFrame, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(format_bbox(df), encoding="utf-8")


def read_image_list(path: str | os.PathLike) -> list[str]:
    """Read ``train_val_list.txt`` / ``test_list.txt`` (one image name a line)."""
    path = Path(path)
    if not path.is_file():
        raise MetadataError(f"{path}: file not found")
    names = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if not IMAGE_RE.match(line):
            raise MetadataError(f"{path}: line {lineno}: {line!r} is not an NIH image name")
        names.append(line)
    return names


def write_image_list(names: Iterable[str], path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{n}\n" for n in names), encoding="utf-8")
