"""Markdown cells and tables: how a number, an interval or a p-value is printed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from imgae_dx.report.results import Interval

DASH = "—"  # an undefined or missing value


def fmt(v: Any, nd: int = 3) -> str:
    if v is None:
        return DASH
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def fmt_p(p: float | None) -> str:
    if p is None:
        return DASH
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def interval(ci: Interval | None) -> str:
    """``[lo, hi]``, or a dash when an end is undefined."""
    if not ci or None in ci:
        return DASH
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def with_ci(v: float | None, ci: Interval | None) -> str:
    """``0.733 [0.694, 0.769]``; the value alone when the interval is undefined."""
    if v is None:
        return DASH
    return f"{v:.3f} {interval(ci)}" if ci and None not in ci else f"{v:.3f}"


def mean_sd(mean: float | None, sd: float | None, n: int) -> str:
    """``0.733 ± 0.012 (n=3)``; with one value, ``0.733 (n=1)``."""
    if mean is None:
        return DASH
    return f"{mean:.3f} ± {sd:.3f} (n={n})" if sd is not None else f"{mean:.3f} (n={n})"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def count_table(obj: Any, title: str) -> str:
    """A summary.json count block (a dict of numbers, or of dicts) as a table; "" if empty."""
    if not isinstance(obj, Mapping) or not obj:
        return ""
    if all(isinstance(v, Mapping) for v in obj.values()):
        cols = list(dict.fromkeys(c for v in obj.values() for c in v))
        rows = [[k] + [fmt(v.get(c)) for c in cols] for k, v in obj.items()]
        return table([title] + [str(c) for c in cols], rows)
    return table([title, "images"], [[k, fmt(v)] for k, v in obj.items()])
