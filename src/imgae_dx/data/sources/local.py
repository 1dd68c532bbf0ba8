"""``data.source: local``: the images the split needs, taken from an NIH download already on disk.

``data.local.root`` is either

- the Kaggle layout: ``Data_Entry_2017.csv`` … and ``images_001/images/*.png`` …
  ``images_012/images/*.png`` (a flat ``images/*.png``, what extracting the official archives
  into one folder gives, works too); or
- the official NIH archives: ``images_01.tar.gz`` … ``images_12.tar.gz`` (members
  ``images/<name>.png``) next to the metadata files. They are read sequentially (``tarfile``
  stream mode) and only the needed members are written out; an archive is read only until
  its last needed member. Members with an absolute path or ``..`` are refused.

Files are hard-linked into ``raw_dir`` where the filesystem allows (no second copy), else
reflinked, else copied (``link``). Extracted archive members go to ``cache_dir`` first, so a
rerun with another selection does not decompress them again.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import tarfile
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from imgae_dx.config import LocalParams
from imgae_dx.data import nih
from imgae_dx.data.sources.files import (
    Linker,
    check_selection,
    fill_checksums,
    temp_name,
    write_manifest,
)
from imgae_dx.progress import progress

log = logging.getLogger(__name__)

ARCHIVE_RE = re.compile(r"^images_(\d{2,3})\.(tar\.gz|tgz|tar)$")
#: The 2020 re-release of the metadata (same header, corrected ages) under another name.
DATA_ENTRY_ALIASES = ("Data_Entry_2017_v2020.csv",)


class LocalSourceError(RuntimeError):
    """The local copy is missing something the selection needs, or is laid out unexpectedly."""


class UnsafeArchiveError(LocalSourceError):
    """An archive member has an absolute path, ``..`` or is not a regular file where one is needed."""


# -- archives ------------------------------------------------------------------------------------
def check_member(member: tarfile.TarInfo, archive: Path) -> None:
    """Refuse absolute paths and ``..`` (in the name, and in a link's target)."""
    for what, value in (
        ("path", member.name),
        ("link target", member.linkname if member.issym() or member.islnk() else ""),
    ):
        if not value:
            continue
        v = value.replace("\\", "/")
        if v.startswith("/") or re.match(r"^[A-Za-z]:", v) or ".." in PurePosixPath(v).parts:
            raise UnsafeArchiveError(
                f"{archive.name}: refusing member {member.name!r}: its {what} {value!r} is absolute or contains '..'"
            )


def _extract_needed(
    archive: Path,
    want: set[str],
    dest: Callable[[str], Path],
    on_done: Callable[[str, Path, int, int], None],
    stop_when_found: set[str] | None = None,
) -> bool:
    """Stream ``archive`` once, writing members whose base name is in ``want`` (removed as found).

    Stops as soon as ``want`` (or ``stop_when_found``, also emptied) is empty. Returns whether
    the archive was read to its end.
    """
    log.info("reading %s", archive.name)
    with tarfile.open(archive, mode="r|*") as tf:
        for member in tf:
            check_member(member, archive)
            base = posixpath.basename(member.name)
            if base not in want:
                continue
            if not member.isreg():
                raise UnsafeArchiveError(
                    f"{archive.name}: member {member.name!r} is not a regular file"
                )
            path = dest(base)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = temp_name(path)
            crc, n = 0, 0
            try:
                src = tf.extractfile(member)
                assert src is not None
                with open(tmp, "wb") as fh:
                    while True:
                        b = src.read(1 << 20)
                        if not b:
                            break
                        crc = zlib.crc32(b, crc)
                        n += len(b)
                        fh.write(b)
                if n != member.size:
                    raise LocalSourceError(
                        f"{archive.name}: {member.name}: read {n} of {member.size} bytes"
                    )
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            want.discard(base)
            if stop_when_found is not None:
                stop_when_found.discard(base)
            on_done(base, path, n, crc)
            if not want or (stop_when_found is not None and not stop_when_found):
                return False
    return True


def _archive_key(path: Path) -> str:
    st = path.stat()
    return f"{path.name}-{st.st_size}-{st.st_mtime_ns}"


# -- entry point ---------------------------------------------------------------------------------
def fetch(
    raw_dir: Path,
    params: LocalParams,
    *,
    select: Callable[[Path], list[str]],
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    """Fill ``raw_dir`` (Kaggle layout) with the metadata and the images ``select`` asks for.

    ``params`` is the ``data.local`` block. Without ``cache_dir``, archive members are
    extracted straight into ``raw_dir``. Returns a summary (counts, bytes, how files were
    placed); writes ``raw_dir/fetch_manifest.json``.
    """
    t0 = time.monotonic()
    root, link = params.root, params.link
    if root is None or root.strip() == "":
        raise LocalSourceError(
            "data.local.root is not set: point it at an NIH ChestX-ray14 download (the Kaggle "
            "layout with images_001/images/..., or the official images_NN.tar.gz archives)"
        )
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise LocalSourceError(f"data.local.root: {root} is not a directory")
    linker = Linker(link)
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []

    # 1. Metadata: everything the selection is decided from.
    for name in nih.METADATA_FILES:
        candidates = [root / name] + (
            [root / a for a in DATA_ENTRY_ALIASES] if name == nih.DATA_ENTRY else []
        )
        src = next((c for c in candidates if c.is_file()), None)
        if src is None:
            if name == nih.DATA_ENTRY:
                raise LocalSourceError(
                    f"data.local.root: {root} has no {nih.DATA_ENTRY}: it must hold the NIH metadata files "
                    f"({', '.join(nih.METADATA_FILES)}) next to the images"
                )
            log.warning("%s: no %s; the split goes on without it", root, name)
            continue
        how = linker.place(src, raw_dir / name)
        rows.append(
            {
                "path": name,
                "source": str(src.relative_to(root)),
                "size": None,
                "crc32": None,
                "method": how,
            }
        )

    # 2. The selection.
    names = check_selection(select(raw_dir))
    log.info("local: %d image(s) selected", len(names))

    # 3. Images already extracted: Kaggle layout, flat images/, or other shard folders.
    found: dict[str, Path] = {}
    missing: list[str] = []
    for n in names:
        rel = nih.image_relpath(n)
        for cand in (root / rel, root / "images" / n):
            if cand.is_file():
                found[n] = cand
                break
        else:
            missing.append(n)
    if missing:
        index: dict[str, Path] = {}
        for d in sorted(root.glob("images_*/images")):
            if d.is_dir():
                with os.scandir(d) as it:
                    for e in it:
                        if e.name.endswith(".png"):
                            index.setdefault(e.name, Path(e.path))
        found.update({n: index[n] for n in missing if n in index})
        missing = [n for n in missing if n not in index]

    bar = progress(total=len(names), desc="local", unit="img")
    for n, src in found.items():
        rel = nih.image_relpath(n)
        how = linker.place(src, raw_dir / rel)
        rows.append(
            {
                "path": rel,
                "source": str(src.relative_to(root)),
                "size": None,
                "crc32": None,
                "method": how,
            }
        )
        bar.update(1)

    # 4. The rest from the official archives, each read at most once and only as far as needed.
    archives = sorted(p for p in root.iterdir() if p.is_file() and ARCHIVE_RE.match(p.name))
    n_extracted = n_archive_cached = 0
    archives_read: list[str] = []
    if missing:
        if not archives:
            raise LocalSourceError(
                f"data.local.root: {len(missing)} selected image(s) are not under {root} "
                f"(e.g. {', '.join(missing[:3])}) and there are no images_NN.tar.gz archives there"
            )
        ext_root = Path(cache_dir) / "local" if cache_dir is not None else None
        lock = threading.Lock()

        def dest_for(archive: Path) -> Callable[[str], Path]:
            if ext_root is None:
                return lambda base: raw_dir / nih.image_relpath(base)
            key = _archive_key(archive)
            return lambda base: ext_root / key / base

        def record(
            archive: Path, base: str, path: Path, size: int, crc: int, extracted: bool
        ) -> None:
            nonlocal n_extracted, n_archive_cached
            rel = nih.image_relpath(base)
            how = "extract" if ext_root is None else linker.place(path, raw_dir / rel)
            with lock:
                rows.append(
                    {
                        "path": rel,
                        "source": f"{archive.name}:images/{base}",
                        "size": size,
                        "crc32": f"{crc:08x}" if crc is not None else None,
                        "method": how,
                        "from_cache": not extracted,
                    }
                )
                if extracted:
                    n_extracted += 1
                else:
                    n_archive_cached += 1
            bar.update(1)

        want = set(missing)
        dests = {a: dest_for(a) for a in archives}
        if ext_root is not None:  # members extracted by an earlier run
            for base in sorted(want):
                for a in archives:
                    p = dests[a](base)
                    if p.is_file():
                        record(a, base, p, p.stat().st_size, None, extracted=False)
                        want.discard(base)
                        break

        def on_done_for(archive: Path) -> Callable[[str, Path, int, int], None]:
            return lambda base, path, size, crc: record(
                archive, base, path, size, crc, extracted=True
            )

        def shard_of_archive(a: Path) -> str:
            return f"images_{int(ARCHIVE_RE.match(a.name).group(1)):03d}"

        # Pass 1: each image from its own shard's archive, read only up to its last needed member.
        read_to_end: set[Path] = set()
        for a in archives:
            expected = {n for n in want if nih.shard_of(n) == shard_of_archive(a)}
            if not expected:
                continue
            if _extract_needed(a, want, dests[a], on_done_for(a), stop_when_found=expected):
                read_to_end.add(a)
            archives_read.append(a.name)
        # Pass 2 (a non-standard packing): whatever is left, from any archive not yet read whole.
        if want:
            log.warning(
                "%d image(s) not in their shard's archive; searching all archives", len(want)
            )
            for a in archives:
                if not want:
                    break
                if a in read_to_end:
                    continue
                _extract_needed(a, want, dests[a], on_done_for(a))
                archives_read.append(a.name)
        if want:
            raise LocalSourceError(
                f"data.local.root: {len(want)} selected image(s) are in neither the folders nor the archives "
                f"under {root} (e.g. {', '.join(sorted(want)[:3])})"
            )
    bar.close()

    fill_checksums(rows, raw_dir)
    n_images = len(names)
    total = sum(int(r["size"]) for r in rows if r["path"].endswith(".png"))
    layout = (
        "archives"
        if n_extracted + n_archive_cached == n_images and n_images
        else ("folders" if not (n_extracted + n_archive_cached) else "folders+archives")
    )
    header = {
        "source": "local",
        "root": str(root),
        "layout": layout,
        "link": link,
        "n_images": n_images,
    }
    manifest = write_manifest(raw_dir, header, rows)
    summary = {
        **header,
        "bytes_images": total,
        "placed": dict(linker.counts),
        "n_extracted": n_extracted,
        "n_from_cache": n_archive_cached,
        "archives_read": archives_read,
        "seconds": round(time.monotonic() - t0, 3),
        "manifest": str(manifest),
    }
    log.info("local: %d image(s), %.1f MB, placed %s", n_images, total / 1e6, dict(linker.counts))
    return summary
