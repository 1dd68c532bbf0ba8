"""Where raw images come from: a registry of sources, each writing an NIH-format mirror.

- ``synthetic``: generates a phantom dataset in the real formats (the embedded default).
- ``kaggle``: the Kaggle mirror ``nih-chest-xrays/data``, only the members the split needs.
- ``local``: an existing NIH download on disk (Kaggle layout or the official archives).

Each entry point takes the raw directory to fill plus the keyword arguments of its
``data.<source>`` block; the pipeline supplies the arguments named in :data:`PIPELINE_ARGS`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Arguments the pipeline provides itself; they are not params keys.
PIPELINE_ARGS = ("raw_dir", "select", "cache_dir")

_ENTRY_POINTS: dict[str, tuple[str, str]] = {
    "synthetic": ("imgae_dx.data.sources.synthetic", "generate"),
    "kaggle": ("imgae_dx.data.sources.kaggle", "fetch"),
    "local": ("imgae_dx.data.sources.local", "fetch"),
}


def list_sources() -> list[str]:
    return list(_ENTRY_POINTS)


def entry_point(name: str) -> Callable[..., Any]:
    if name not in _ENTRY_POINTS:
        raise ValueError(
            f"data.source: unknown source {name!r} (valid: {', '.join(_ENTRY_POINTS)})"
        )
    module, func = _ENTRY_POINTS[name]
    return getattr(importlib.import_module(module), func)


def fetch(
    name: str,
    raw_dir: Path,
    *,
    block: dict[str, Any],
    select: Callable[[Path], list[str]],
    cache_dir: Path,
) -> dict[str, Any]:
    """Fill ``raw_dir`` from source ``name`` with the kwargs ``block`` (its ``data.<name>`` params).

    ``select(metadata_dir)`` returns the image names the split needs; sources that transfer
    data use it to fetch nothing more.
    """
    func = entry_point(name)
    kwargs = dict(block)
    if name == "synthetic":
        return func(raw_dir, **kwargs) or {}
    return func(raw_dir, select=select, cache_dir=cache_dir, **kwargs) or {}
