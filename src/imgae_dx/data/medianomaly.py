"""MedIAnomaly's chest X-ray anomaly-detection splits (RSNA, VinDr-CXR): the listing and the split.

Cai, Zhang, Chen, Cheng, "MedIAnomaly: A comparative study of anomaly detection in medical
images" (arXiv:2404.04518); the preprocessed data are on Zenodo (record 12677223:
``RSNA.tar.gz``, ``VinCXR.tar.gz``). The layout, as their loader reads it
(github.com/caiyu6666/MedIAnomaly, ``reconstruction/dataloaders/dataload.py``, class ``MedAD``)::

    <root>/data.json     {"train": {"0": [names]}, "test": {"0": [names], "1": [names]}}
    <root>/images/<name>

``"0"`` lists normal images, ``"1"`` abnormal ones; their training reads ``train["0"]`` only
(other keys under ``train``, such as an unlabelled pool, are not used here either) and their
test set is ``test["0"]`` + ``test["1"]``. Published protocol: RSNA 3,851 training normals,
1,000 + 1,000 test images; VinDr-CXR 4,000 and 1,000 + 1,000; 64² inputs.

The listing names images only: there are no patients, views, sexes or ages, so the manifests
leave those columns empty, validation normals are a seeded ``val_fraction`` of the training
*images*, and the report says what it cannot stratify (``docs/real-data.md``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from imgae_dx.data import nih
from imgae_dx.errors import UserError

DATA_JSON = "data.json"
IMAGES = "images"
#: The ``findings`` value of an abnormal image: the listing gives a label, not a finding.
ABNORMAL = "Abnormal"
#: Where each part of the split is listed in data.json: (split key, label key, label).
PARTS: tuple[tuple[str, str, int], ...] = (("train", "0", 0), ("test", "0", 0), ("test", "1", 1))


class ListingError(UserError, ValueError):
    """data.json cannot be read as MedIAnomaly's listing; the message names the key."""


class Listing(NamedTuple):
    """The image names of each part of data.json, each listed once."""

    train: list[str]  # train["0"]: training normals
    test_normal: list[str]  # test["0"]
    test_abnormal: list[str]  # test["1"]


class ListingIssue(NamedTuple):
    """A name of data.json left out (listed twice, or not a plain file name)."""

    image: str
    problem: str  # a short category: "duplicate listing" | "bad name"
    message: str  # one line naming the file, the key and what was done


def _where(path: Path, split: str, label: str) -> str:
    return f'{path}: {split}["{label}"]'


def _names(raw: Any, path: Path, split: str, label: str) -> list[str]:
    """One list of data.json, checked to be a list of strings."""
    if not isinstance(raw, dict) or split not in raw or not isinstance(raw[split], dict):
        raise ListingError(f"{path}: no {split!r} mapping (expected MedIAnomaly's data.json)")
    names = raw[split].get(label)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ListingError(f"{_where(path, split, label)}: expected a list of image file names")
    return names


def _bad_name(name: str) -> str | None:
    """Why ``name`` is not a plain file name under images/ (None when it is)."""
    if not name.strip() or name != name.strip():
        return "empty or padded with spaces"
    if "/" in name or "\\" in name or name.startswith("."):
        return "not a plain file name (a path, or hidden)"
    return None


def read_listing(path: str | os.PathLike) -> tuple[Listing, list[ListingIssue]]:
    """Read ``data.json``: the three lists, and the names left out of them.

    A name listed a second time (in the same list or another) keeps its first place, in the
    order train, test normal, test abnormal, so a training image never reaches the test set;
    a name that is not a plain file name is left out. Unreadable JSON or a missing list
    raises :class:`ListingError`.
    """
    path = Path(path)
    if not path.is_file():
        raise ListingError(f"{path}: not found (MedIAnomaly's data.json belongs in the root)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ListingError(f"{path}: not valid JSON: {e}") from None
    first: dict[str, str] = {}
    parts: list[list[str]] = []
    issues: list[ListingIssue] = []
    for split, label, _ in PARTS:
        where, kept = _where(path, split, label), []
        for name in _names(raw, path, split, label):
            why = _bad_name(name)
            if why is None and name in first:
                why = f"listed before in {first[name]}"
            if why is not None:
                problem = "duplicate listing" if name in first else "bad name"
                issues.append(ListingIssue(name, problem, f"{where}: {name!r}: {why}; left out"))
                continue
            first[name] = f'{split}["{label}"]'
            kept.append(name)
        parts.append(kept)
    return Listing(*parts), issues


def _frame(names: list[str], label: int) -> pd.DataFrame:
    """Manifest rows (``split.MANIFEST_COLUMNS``) of images without patient, view, sex or age."""
    n = len(names)
    return pd.DataFrame(
        {
            "image": names,
            "patient_id": pd.array([pd.NA] * n, dtype="Int64"),
            "follow_up": pd.array([pd.NA] * n, dtype="Int64"),
            "age": pd.array([pd.NA] * n, dtype="Int64"),
            "sex": [""] * n,
            "view": [""] * n,
            "findings": [ABNORMAL if label else nih.NO_FINDING] * n,
            "label": [label] * n,
            "shard": [""] * n,  # no shard folder: the image is raw_dir/images/<name>
        }
    )


def split_listing(
    listing: Listing,
    *,
    val_fraction: float,
    max_train: int | None = None,
    max_val: int | None = None,
    max_test_normal: int | None = None,
    max_test_abnormal: int | None = None,
    seed: int = 0,
) -> dict[str, pd.DataFrame]:
    """train, val and test manifests from the listing: a seeded ``val_fraction`` of the
    training normals (at least one when the fraction is positive and there are two) is
    validation; caps subsample each part at random (seeded), as for NIH."""
    rng = np.random.default_rng(seed)
    train = sorted(listing.train)
    n_val = int(round(val_fraction * len(train)))
    if val_fraction > 0 and len(train) >= 2:
        n_val = max(1, n_val)
    val_set = set(rng.permutation(train)[:n_val].tolist())
    parts = {
        "train": _cap([n for n in train if n not in val_set], max_train, rng),
        "val": _cap(sorted(val_set), max_val, rng),
        "test_normal": _cap(sorted(listing.test_normal), max_test_normal, rng),
        "test_abnormal": _cap(sorted(listing.test_abnormal), max_test_abnormal, rng),
    }
    test = pd.concat([_frame(parts["test_normal"], 0), _frame(parts["test_abnormal"], 1)])
    out = {"train": _frame(parts["train"], 0), "val": _frame(parts["val"], 0), "test": test}
    return {k: v.sort_values("image").reset_index(drop=True) for k, v in out.items()}


def _cap(names: list[str], cap: int | None, rng: np.random.Generator) -> list[str]:
    if cap is None or len(names) <= cap:
        return names
    keep = np.sort(rng.choice(len(names), size=int(cap), replace=False))
    return [names[i] for i in keep]
