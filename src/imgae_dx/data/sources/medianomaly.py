"""``data.source: medianomaly``: MedIAnomaly's RSNA or VinDr-CXR split, already on disk.

``data.medianomaly.root`` is one dataset folder of MedIAnomaly-Data as their README lays it
out after ``tar -zxvf RSNA.tar.gz`` (or ``VinCXR.tar.gz``): ``<root>/data.json`` and
``<root>/images/<name>`` (format: :mod:`imgae_dx.data.medianomaly`). ``data/raw`` receives
``data.json`` and the selected images under ``images/``, hard-linked where the filesystem
allows, else reflinked, else copied (``link``), plus ``fetch_manifest.json``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from imgae_dx.config import MedianomalyParams
from imgae_dx.data import medianomaly
from imgae_dx.data.sources.files import Linker, fill_checksums, write_manifest
from imgae_dx.errors import UserError

log = logging.getLogger(__name__)


class MedianomalySourceError(UserError, RuntimeError):
    """The root is not MedIAnomaly's layout, or lacks an image the split needs."""


def check_root(root: str | None) -> Path:
    """``root`` as a folder holding data.json and images/; one line naming what is missing."""
    if root is None or not root.strip():
        raise MedianomalySourceError(
            "data.medianomaly.root is not set: point it at MedIAnomaly's RSNA or VinCXR folder "
            "(data.json and images/; docs/real-data.md)"
        )
    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        raise MedianomalySourceError(f"data.medianomaly.root: {path} is not a directory")
    for name in (medianomaly.DATA_JSON, medianomaly.IMAGES):
        if not (path / name).exists():
            raise MedianomalySourceError(
                f"data.medianomaly.root: {path} has no {name} (MedIAnomaly's layout: data.json "
                "next to images/; extract RSNA.tar.gz or VinCXR.tar.gz and point at that folder)"
            )
    return path


def fetch(
    raw_dir: Path,
    params: MedianomalyParams,
    *,
    select: Callable[[Path], list[str]],
    cache_dir: Path | None = None,  # unused: nothing is downloaded or extracted
) -> dict[str, Any]:
    """Fill ``raw_dir`` with data.json and the images ``select`` asks for; returns a summary."""
    t0 = time.monotonic()
    root = check_root(params.root)
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    linker, rows = Linker(params.link), []

    def place(rel: str) -> None:
        how = linker.place(root / rel, raw_dir / rel)
        rows.append({"path": rel, "source": rel, "size": None, "crc32": None, "method": how})

    place(medianomaly.DATA_JSON)
    names = sorted(set(select(raw_dir)))
    missing = [n for n in names if not (root / medianomaly.IMAGES / n).is_file()]
    if missing:
        raise MedianomalySourceError(
            f"data.medianomaly.root: {len(missing)} image(s) listed in data.json are not under "
            f"{root / medianomaly.IMAGES} (e.g. {', '.join(missing[:3])}): is the archive "
            "fully extracted?"
        )
    for n in names:
        place(f"{medianomaly.IMAGES}/{n}")
    fill_checksums(rows, raw_dir)
    # The manifest says what was placed, not from which folder of this machine nor how.
    manifest = write_manifest(raw_dir, {"source": "medianomaly", "n_images": len(names)}, rows)
    log.info("medianomaly: %d image(s) placed %s", len(names), dict(linker.counts))
    return {
        "source": "medianomaly",
        "root": str(root),
        "link": params.link,
        "n_images": len(names),
        "bytes_images": sum(int(r["size"]) for r in rows[1:]),
        "placed": dict(linker.counts),
        "seconds": round(time.monotonic() - t0, 3),
        "manifest": str(manifest),
    }
