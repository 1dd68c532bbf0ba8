"""Bad data by policy: every repair and exclusion is one row of an issues table.

``split`` lists the malformed ``Data_Entry_2017.csv`` rows it left out, ``prepare`` the images
it repaired or left out; the report gathers both into ``reports/data_issues.csv``
(``docs/architecture.md``, "Bad data", gives the policy). A stage writes its issues file
first and then fails, with one line naming that file, when it excluded more than
``data.max_bad_fraction`` of what it read (:func:`check_fraction`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import pandas as pd

from imgae_dx.errors import UserError

#: The columns of every issues file, in order.
ISSUE_COLUMNS = ["stage", "split", "image", "line", "action", "problem", "reason"]
Action = Literal["repaired", "excluded"]


class BadDataError(UserError, ValueError):
    """More data was excluded than ``data.max_bad_fraction`` allows."""


@dataclass(frozen=True)
class Issue:
    """One repaired or excluded item: a metadata row (``line``) or an image of a split.

    ``problem`` is a short category the report counts by (``missing file``, ``16-bit``...);
    ``reason`` is one line naming the file, row and field, and what was done.
    """

    stage: str  # the stage that found it: split | prepare
    split: str  # train | val | test; "" when the row never reached a split
    image: str  # the image name ("" when unknown)
    line: int | None  # line of Data_Entry_2017.csv (metadata rows only)
    action: Action
    problem: str
    reason: str


def issues_frame(issues: Iterable[Issue]) -> pd.DataFrame:
    """The issues as a table with :data:`ISSUE_COLUMNS` (``line`` a nullable integer)."""
    rows = [dataclasses.astuple(i) for i in issues]
    df = pd.DataFrame.from_records(rows, columns=ISSUE_COLUMNS)
    df["line"] = df["line"].astype("Int64")
    return df


def read_issues(path: str | os.PathLike) -> pd.DataFrame:
    """An issues file as written by a stage (empty strings stay strings)."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in ISSUE_COLUMNS if c not in df.columns]
    if missing:
        raise UserError(f"{path}: missing columns {missing}; rerun the stage that writes it")
    return df[ISSUE_COLUMNS]


def check_fraction(
    n_excluded: int, n_total: int, limit: float, *, what: str, issues_path: str | os.PathLike
) -> None:
    """Raise :class:`BadDataError` when ``n_excluded / n_total`` exceeds ``limit``.

    ``what`` names the items, e.g. ``"test images"`` or ``"rows of data/raw/Data_Entry_2017.csv"``.
    """
    if n_total == 0 or n_excluded / n_total <= limit:
        return
    raise BadDataError(
        f"{issues_path}: {n_excluded} of {n_total} {what} excluded "
        f"({100 * n_excluded / n_total:.3g} %), more than data.max_bad_fraction = {limit}: "
        "read that file and fix what it lists, or raise data.max_bad_fraction in params.yaml"
    )
