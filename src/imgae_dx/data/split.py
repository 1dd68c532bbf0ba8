"""Patient-level split and the "No Finding" filter.

train = "No Finding" images of training patients; val = "No Finding" images of a held-out
fraction of the training patients (label-free model selection); test = every image of the
test patients, label 0 for "No Finding" and 1 for any finding. A patient never appears in two
splits: :func:`check_split` refuses it, and :func:`make_split` calls it before returning.

With the official lists (``train_val_list.txt``, ``test_list.txt``) present the test patients
are theirs; without them the patients are split at random (seeded) with ``test_fraction``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd

from imgae_dx.data import medianomaly, nih
from imgae_dx.errors import UserError
from imgae_dx.paths import SPLITS

if TYPE_CHECKING:
    from imgae_dx.config import DataParams

MANIFEST_COLUMNS = [
    "image",
    "patient_id",
    "follow_up",
    "age",
    "sex",
    "view",
    "findings",
    "label",
    "shard",
]


class SplitError(UserError, ValueError):
    """The split would break the protocol (a patient in two splits, an abnormal image in train...)."""


@dataclass(frozen=True)
class Selection:
    """Which images each split needs; the manifests ``train``, ``val``, ``test`` (MANIFEST_COLUMNS)."""

    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame

    def as_dict(self) -> dict[str, pd.DataFrame]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def images(self) -> list[str]:
        """Every image any split needs, sorted (what a fetcher must transfer)."""
        return sorted(set(self.train.image) | set(self.val.image) | set(self.test.image))


def _cap(df: pd.DataFrame, cap: int | None, rng: np.random.Generator) -> pd.DataFrame:
    if cap is None or len(df) <= cap:
        return df
    keep = np.sort(rng.choice(len(df), size=int(cap), replace=False))
    return df.iloc[keep]


def make_split(
    entries: pd.DataFrame,
    *,
    train_val_list: list[str] | None = None,
    test_list: list[str] | None = None,
    views: list[str] = ("PA", "AP"),
    shards: str | list[str] = "all",
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    max_train: int | None = None,
    max_val: int | None = None,
    max_test_normal: int | None = None,
    max_test_abnormal: int | None = None,
    seed: int = 0,
) -> Selection:
    """Split ``entries`` (:func:`imgae_dx.data.nih.read_data_entry` frame) by patient.

    Caps subsample images at random (seeded) within a split, after the patient assignment,
    so a cap never moves a patient between splits.
    """
    df = entries.copy()
    df["shard"] = [nih.shard_of(n) for n in df["image"]]
    df = df[df["view"].isin(list(views)) & df["shard"].isin(nih.normalize_shards(shards))]
    df["label"] = (df["findings"] != nih.NO_FINDING).astype(int)
    rng = np.random.default_rng(seed)
    train_pat, test_pat = _partition_patients(
        entries, df, train_val_list, test_list, test_fraction, rng
    )
    normals = df[(df["label"] == 0) & df["patient_id"].isin(train_pat)]
    val_pat = _val_patients(normals, val_fraction, rng)
    train = normals[~normals["patient_id"].isin(val_pat)]
    val = normals[normals["patient_id"].isin(val_pat)]
    test = df[df["patient_id"].isin(test_pat)]
    test_n = _cap(test[test["label"] == 0], max_test_normal, rng)
    test_a = _cap(test[test["label"] == 1], max_test_abnormal, rng)
    test = pd.concat([test_n, test_a])
    train = _cap(train, max_train, rng)
    val = _cap(val, max_val, rng)

    out = {}
    for name, part in (("train", train), ("val", val), ("test", test)):
        out[name] = part.sort_values("image")[MANIFEST_COLUMNS].reset_index(drop=True)
    sel = Selection(**out)
    check_split(sel.as_dict())
    return sel


def _partition_patients(
    entries: pd.DataFrame,
    df: pd.DataFrame,
    train_val_list: list[str] | None,
    test_list: list[str] | None,
    test_fraction: float,
    rng: np.random.Generator,
) -> tuple[set, set]:
    """(train+val patients, test patients): the official lists' when given, else a seeded
    patient-level split of ``df``'s patients with ``test_fraction``."""
    patients = np.array(sorted(df["patient_id"].unique()))
    if test_list is None:
        if not 0.0 < test_fraction < 1.0:  # the lists decide whether this key matters
            raise SplitError(
                f"data.test_fraction: {test_fraction} leaves no test patients, and the mirror has "
                f"no {nih.TEST_LIST} (set a fraction in (0, 1))"
            )
        perm = rng.permutation(patients)
        n_test = int(round(test_fraction * len(perm)))
        return set(perm[n_test:].tolist()), set(perm[:n_test].tolist())
    test_pat = set(entries.loc[entries["image"].isin(set(test_list)), "patient_id"])
    if train_val_list is not None:
        tv_pat = set(entries.loc[entries["image"].isin(set(train_val_list)), "patient_id"])
        both = sorted(test_pat & tv_pat)
        if both:
            raise SplitError(
                f"{nih.TEST_LIST} and {nih.TRAIN_VAL_LIST} share {len(both)} patient(s), e.g. "
                f"{both[:5]}: the official split is patient-wise; refusing to split"
            )
    return set(patients) - test_pat, test_pat


def _val_patients(normals: pd.DataFrame, val_fraction: float, rng: np.random.Generator) -> set:
    """A seeded ``val_fraction`` of the training patients with a normal image (at least one
    when the fraction is positive and there are two such patients)."""
    normal_pat = np.array(sorted(normals["patient_id"].unique()))
    n_val = int(round(val_fraction * len(normal_pat)))
    if val_fraction > 0 and len(normal_pat) >= 2:
        n_val = max(1, n_val)
    return set(rng.permutation(normal_pat)[:n_val].tolist())


def check_split(splits: dict[str, pd.DataFrame]) -> None:
    """Raise :class:`SplitError` if an image or a patient appears in two splits or train/val
    hold an abnormal image."""
    seen: dict[int, str] = {}
    where: dict[str, str] = {}
    for name in SPLITS:
        part = splits[name]
        dup = part["image"][part["image"].duplicated()]
        if len(dup):
            raise SplitError(f"split {name!r}: image {dup.iloc[0]} listed twice")
        for pid in part["patient_id"].dropna().unique():  # no IDs (MedIAnomaly): images only
            other = seen.get(int(pid))
            if other is not None and other != name:
                raise SplitError(
                    f"patient {int(pid)} appears in both {other!r} and {name!r}: patient leakage"
                )
            seen[int(pid)] = name
        for image in part["image"]:
            if where.setdefault(image, name) != name:
                raise SplitError(f"image {image} appears in both {where[image]!r} and {name!r}")
        if name in ("train", "val"):
            bad = part[part["findings"] != nih.NO_FINDING]
            if len(bad):
                raise SplitError(
                    f"split {name!r}: image {bad['image'].iloc[0]} has findings {bad['findings'].iloc[0]!r}; "
                    "train and val hold 'No Finding' images only"
                )
    for name in SPLITS:
        if len(splits[name]) == 0:
            raise SplitError(f"split {name!r} is empty: check data.shards, data.views and the caps")


def summarize(splits: dict[str, pd.DataFrame], source: str) -> dict:
    """Counts per split, view and finding (for ``data/split/summary.json`` and the report);
    without patient IDs or views (MedIAnomaly's listing) those counts are left out."""
    test = splits["test"]
    by_finding: dict[str, int] = {}
    for f in test["findings"]:
        for lab in nih.parse_findings(f):
            by_finding[lab] = by_finding.get(lab, 0) + 1
    out: dict = {
        "source": source,
        "n_train": int(len(splits["train"])),
        "n_val": int(len(splits["val"])),
        "n_test_normal": int((test["label"] == 0).sum()),
        "n_test_abnormal": int((test["label"] == 1).sum()),
    }
    if all(part["patient_id"].notna().any() for part in splits.values()):
        out["n_patients"] = {k: int(v["patient_id"].nunique()) for k, v in splits.items()}
    if test["view"].isin(nih.VIEWS).any():
        out["by_view"] = {
            k: {v: int((part["view"] == v).sum()) for v in nih.VIEWS} for k, part in splits.items()
        }
        out["test_by_view_label"] = {
            v: {
                "normal": int(((test["view"] == v) & (test["label"] == 0)).sum()),
                "abnormal": int(((test["view"] == v) & (test["label"] == 1)).sum()),
            }
            for v in nih.VIEWS
        }
    return out | {"by_finding": dict(sorted(by_finding.items()))}


class Metadata(NamedTuple):
    """The NIH metadata files of a mirror."""

    entries: pd.DataFrame  # Data_Entry_2017.csv (nih.read_data_entry)
    train_val: list[str] | None  # train_val_list.txt, if present
    test: list[str] | None  # test_list.txt, if present
    boxes: pd.DataFrame  # BBox_List_2017.csv (empty if absent)


def load_metadata(raw_dir: str | Path) -> Metadata:
    """Read the NIH metadata files of a mirror: entries, train_val list, test list, boxes.

    The two lists and the box file are optional (``None`` / empty frame when absent). A
    malformed row raises :class:`~imgae_dx.data.nih.MetadataError`.
    """
    raw_dir = Path(raw_dir)
    return _with_lists(raw_dir, nih.read_data_entry(raw_dir / nih.DATA_ENTRY))


def load_metadata_lenient(raw_dir: str | Path) -> tuple[Metadata, list[nih.RowIssue]]:
    """:func:`load_metadata` without the malformed rows of ``Data_Entry_2017.csv``, and those
    rows (:func:`~imgae_dx.data.nih.read_data_entry_lenient`): what ``fetch`` and ``split``
    read, so both select the same images."""
    raw_dir = Path(raw_dir)
    entries, issues = nih.read_data_entry_lenient(raw_dir / nih.DATA_ENTRY)
    return _with_lists(raw_dir, entries), issues


def _with_lists(raw_dir: Path, entries: pd.DataFrame) -> Metadata:
    tv = raw_dir / nih.TRAIN_VAL_LIST
    te = raw_dir / nih.TEST_LIST
    train_val = nih.read_image_list(tv) if tv.exists() else None
    test = nih.read_image_list(te) if te.exists() else None
    bb = raw_dir / nih.BBOX_LIST
    boxes = (
        nih.read_bbox(bb)
        if bb.exists()
        else pd.DataFrame(columns=["image", "finding", "x", "y", "w", "h"])
    )
    return Metadata(entries, train_val, test, boxes)


def select(metadata: Metadata, data: DataParams, seed: int) -> Selection:
    """The split the ``data`` params ask for, from a mirror's metadata."""
    return make_split(
        metadata.entries,
        train_val_list=metadata.train_val,
        test_list=metadata.test,
        views=list(data.views),
        shards=data.shards,
        val_fraction=data.val_fraction,
        test_fraction=data.test_fraction,
        max_train=data.max_train,
        max_val=data.max_val,
        max_test_normal=data.max_test_normal,
        max_test_abnormal=data.max_test_abnormal,
        seed=seed,
    )


def select_listed(listing: medianomaly.Listing, data: DataParams, seed: int) -> Selection:
    """The split of a MedIAnomaly listing that the ``data`` params ask for: its own train and
    test lists, ``val_fraction`` of the training images, the caps (``views``, ``shards`` and
    ``test_fraction`` do not apply: the listing has none of them)."""
    parts = medianomaly.split_listing(
        listing,
        val_fraction=data.val_fraction,
        max_train=data.max_train,
        max_val=data.max_val,
        max_test_normal=data.max_test_normal,
        max_test_abnormal=data.max_test_abnormal,
        seed=seed,
    )
    sel = Selection(**{k: v[MANIFEST_COLUMNS] for k, v in parts.items()})
    check_split(sel.as_dict())
    return sel


def selection_for(raw_dir: str | Path, data: DataParams, seed: int) -> Selection:
    """What ``fetch`` asks a source for: the split ``split`` will make from the metadata in
    ``raw_dir``, malformed rows left out as ``split`` leaves them out."""
    raw_dir = Path(raw_dir)
    if data.source == "medianomaly":
        listing, _ = medianomaly.read_listing(raw_dir / medianomaly.DATA_JSON)
        return select_listed(listing, data, seed)
    meta, _ = load_metadata_lenient(raw_dir)
    return select(meta, data, seed)
