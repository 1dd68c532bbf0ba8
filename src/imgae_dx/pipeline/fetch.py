"""DVC stage ``fetch``: ``data/raw`` from ``data.source``; ``stages/fetch.py`` calls it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from imgae_dx import paths
from imgae_dx.config import Params
from imgae_dx.data import sources
from imgae_dx.data import split as splitlib
from imgae_dx.io import atomic_dir


def fetch(params: Params) -> dict[str, Any]:
    """Fill ``data/raw`` from ``data.source``, swapped in atomically once complete.

    Sources that transfer data ask ``select`` which images the split needs, so they fetch
    nothing more. Malformed metadata rows are left out as ``split`` leaves them out (``split``
    lists them and applies ``data.max_bad_fraction``).
    """

    def select(metadata_dir: Path) -> list[str]:
        return splitlib.selection_for(metadata_dir, params.data, params.seed).images()

    t0 = time.time()
    with atomic_dir(paths.RAW) as tmp:
        info = sources.fetch(
            params.data, tmp, select=select, cache_dir=paths.CACHE / params.data.source
        )
    return {**(info or {}), "source": params.data.source, "seconds": round(time.time() - t0, 1)}
