"""DVC stage ``fetch`` as an importable, testable function; ``stages/fetch.py`` calls it."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from imgae_dx.io import atomic_dir
from imgae_dx.pipeline.common import CACHE, RAW, select_split


def fetch(params: Mapping[str, Any]) -> dict[str, Any]:
    """``fetch``: fill ``data/raw`` from ``data.source`` (atomically swapped in when complete)."""
    from imgae_dx.data import sources

    data = params["data"]
    source = data["source"]
    seed = params["seed"]

    def select(metadata_dir: Path) -> list[str]:
        return select_split(metadata_dir, data, seed).images()

    t0 = time.time()
    with atomic_dir(RAW) as tmp:
        info = sources.fetch(
            source, tmp, block=dict(data.get(source) or {}), select=select, cache_dir=CACHE / source
        )
    info = dict(info or {})
    info.update({"source": source, "seconds": round(time.time() - t0, 1)})
    return info
