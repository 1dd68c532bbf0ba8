"""Where raw images come from: four sources, each writing a mirror into ``data/raw``.

- ``synthetic``: generates a phantom dataset in the real formats (the embedded default).
- ``kaggle``: the Kaggle mirror ``nih-chest-xrays/data``, only the members the split needs.
- ``local``: an existing NIH download on disk (Kaggle layout or the official archives).
- ``medianomaly``: MedIAnomaly's RSNA or VinDr-CXR benchmark split on disk (``data.json`` and
  ``images/``: not NIH-format; :mod:`imgae_dx.data.medianomaly`).

Each entry point takes the raw directory to fill and its validated ``data.<source>`` block
(:mod:`imgae_dx.config`); the two that transfer data also take ``select`` and ``cache_dir``.
``docs/architecture.md``, "Data sources", describes how they fit together.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from imgae_dx.config import DataParams

#: The module of each ``data.source`` value; each is imported only when chosen (the synthetic
#: default needs neither ``requests`` nor ``kagglesdk``).
_MODULES = {
    "synthetic": "imgae_dx.data.sources.synthetic",
    "kaggle": "imgae_dx.data.sources.kaggle",
    "local": "imgae_dx.data.sources.local",
    "medianomaly": "imgae_dx.data.sources.medianomaly",
}


def fetch(
    data: DataParams,
    raw_dir: Path,
    *,
    select: Callable[[Path], list[str]],
    cache_dir: Path,
) -> dict[str, Any]:
    """Fill ``raw_dir`` from ``data.source`` with its block ``data.<source>``; returns a summary.

    ``select(metadata_dir)`` returns the image names the split needs; sources that transfer
    data use it to fetch nothing more.
    """
    if data.source not in _MODULES:
        raise ValueError(
            f"data.source: unknown source {data.source!r} (valid: {', '.join(_MODULES)})"
        )
    module = importlib.import_module(_MODULES[data.source])
    block = getattr(data, data.source)
    if data.source == "synthetic":
        return module.generate(raw_dir, block)
    return module.fetch(raw_dir, block, select=select, cache_dir=cache_dir)
