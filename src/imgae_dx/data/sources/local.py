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
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from tqdm import tqdm

from imgae_dx.config import LocalParams
from imgae_dx.data import nih
from imgae_dx.data.sources.files import (
    Linker,
    check_selection,
    fill_checksums,
    temp_name,
    write_manifest,
)
from imgae_dx.errors import UserError

log = logging.getLogger(__name__)

ARCHIVE_RE = re.compile(r"^images_(\d{2,3})\.(tar\.gz|tgz|tar)$")
#: The 2020 re-release of the metadata (same header, corrected ages) under another name.
DATA_ENTRY_ALIASES = ("Data_Entry_2017_v2020.csv",)


class LocalSourceError(UserError, RuntimeError):
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
            n, crc = _write_member(tf, member, path, archive)
            want.discard(base)
            if stop_when_found is not None:
                stop_when_found.discard(base)
            on_done(base, path, n, crc)
            if not want or (stop_when_found is not None and not stop_when_found):
                return False
    return True


def _write_member(
    tf: tarfile.TarFile, member: tarfile.TarInfo, path: Path, archive: Path
) -> tuple[int, int]:
    """Copy ``member`` to ``path`` (temporary name, renamed once whole); ``(size, crc32)``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    crc, n = 0, 0
    try:
        src = tf.extractfile(member)
        assert src is not None
        with open(tmp, "wb") as fh:
            while b := src.read(1 << 20):
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
    return n, crc


def _archive_key(path: Path) -> str:
    st = path.stat()
    return f"{path.name}-{st.st_size}-{st.st_mtime_ns}"


def _shard_of_archive(archive: Path) -> str:
    return f"images_{int(ARCHIVE_RE.match(archive.name).group(1)):03d}"


# -- the fetch -----------------------------------------------------------------------------------
@dataclass
class _Mirror:
    """What :func:`fetch` has put into ``raw_dir`` so far: one manifest row per file."""

    root: Path
    raw_dir: Path
    linker: Linker
    rows: list[dict[str, Any]] = field(default_factory=list)
    n_extracted: int = 0
    n_from_cache: int = 0
    archives_read: list[str] = field(default_factory=list)

    def place(self, src: Path, rel: str) -> None:
        """A file under ``root`` into ``raw_dir/rel``."""
        how = self.linker.place(src, self.raw_dir / rel)
        self.rows.append(
            {
                "path": rel,
                "source": str(src.relative_to(self.root)),
                "size": None,
                "crc32": None,
                "method": how,
            }
        )


class _Archives:
    """The official ``images_NN.tar.gz`` under ``root``, each read at most once and only as far
    as needed. Members go to ``cache_dir/local/<archive>-<size>-<mtime>/`` and are linked from
    there, so a rerun with another selection decompresses nothing twice; without a cache they
    are extracted straight into ``raw_dir``."""

    def __init__(self, mirror: _Mirror, cache_dir: Path | None, bar: tqdm):
        self.mirror, self.bar = mirror, bar
        root = mirror.root
        self.paths = sorted(p for p in root.iterdir() if p.is_file() and ARCHIVE_RE.match(p.name))
        self.ext_root = Path(cache_dir) / "local" if cache_dir is not None else None
        self._keys = {a: _archive_key(a) for a in self.paths} if cache_dir is not None else {}

    def dest(self, archive: Path, base: str) -> Path:
        """Where the member ``base`` of ``archive`` is extracted to."""
        if self.ext_root is None:
            return self.mirror.raw_dir / nih.image_relpath(base)
        return self.ext_root / self._keys[archive] / base

    def record(
        self, archive: Path, base: str, path: Path, size: int, crc: int | None, extracted: bool
    ) -> None:
        """A member at ``path`` into the mirror: linked from the cache, or extracted in place."""
        m = self.mirror
        rel = nih.image_relpath(base)
        how = "extract" if self.ext_root is None else m.linker.place(path, m.raw_dir / rel)
        m.rows.append(
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
            m.n_extracted += 1
        else:
            m.n_from_cache += 1
        self.bar.update(1)

    def take_extracted_earlier(self, want: set[str]) -> None:
        """Members an earlier run extracted into the cache (removed from ``want``)."""
        if self.ext_root is None:
            return
        for base in sorted(want):
            for a in self.paths:
                p = self.dest(a, base)
                if p.is_file():
                    self.record(a, base, p, p.stat().st_size, None, extracted=False)
                    want.discard(base)
                    break

    def read(self, archive: Path, want: set[str], stop_when_found: set[str] | None = None) -> bool:
        """:func:`_extract_needed` from ``archive``; whether it was read to its end."""
        whole = _extract_needed(
            archive,
            want,
            lambda base: self.dest(archive, base),
            lambda base, path, size, crc: self.record(
                archive, base, path, size, crc, extracted=True
            ),
            stop_when_found=stop_when_found,
        )
        self.mirror.archives_read.append(archive.name)
        return whole

    def from_own_shards(self, want: set[str]) -> set[Path]:
        """Each image from its own shard's archive, read only up to its last needed member;
        returns the archives read to their end."""
        read_to_end: set[Path] = set()
        for a in self.paths:
            expected = {n for n in want if nih.shard_of(n) == _shard_of_archive(a)}
            if expected and self.read(a, want, stop_when_found=expected):
                read_to_end.add(a)
        return read_to_end

    def from_any(self, want: set[str], skip: set[Path]) -> None:
        """Whatever is left (a non-standard packing), from any archive not in ``skip``."""
        log.warning("%d image(s) not in their shard's archive; searching all archives", len(want))
        for a in self.paths:
            if not want:
                break
            if a not in skip:
                self.read(a, want)


def _check_root(root: str | None) -> Path:
    if root is None or root.strip() == "":
        raise LocalSourceError(
            "data.local.root is not set: point it at an NIH ChestX-ray14 download (the Kaggle "
            "layout with images_001/images/..., or the official images_NN.tar.gz archives)"
        )
    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        raise LocalSourceError(f"data.local.root: {path} is not a directory")
    return path


def _place_metadata(mirror: _Mirror) -> None:
    """Everything the selection is decided from."""
    root = mirror.root
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
        mirror.place(src, name)


def _find_extracted(root: Path, names: list[str]) -> tuple[dict[str, Path], list[str]]:
    """Images already extracted (Kaggle layout, flat images/, or another shard's folder), and
    the names found in none of them."""
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
    return found, missing


def _extract_from_archives(
    mirror: _Mirror, missing: list[str], cache_dir: Path | None, bar: tqdm
) -> None:
    """The images no folder holds, from the official archives."""
    archives = _Archives(mirror, cache_dir, bar)
    if not archives.paths:
        raise LocalSourceError(
            f"data.local.root: {len(missing)} selected image(s) are not under {mirror.root} "
            f"(e.g. {', '.join(missing[:3])}) and there are no images_NN.tar.gz archives there"
        )
    want = set(missing)
    archives.take_extracted_earlier(want)
    read_to_end = archives.from_own_shards(want)
    if want:
        archives.from_any(want, skip=read_to_end)
    if want:
        raise LocalSourceError(
            f"data.local.root: {len(want)} selected image(s) are in neither the folders nor the archives "
            f"under {mirror.root} (e.g. {', '.join(sorted(want)[:3])})"
        )


def _summary(mirror: _Mirror, link: str, n_images: int, t0: float) -> dict[str, Any]:
    """Write the manifest; the run's summary."""
    total = sum(int(r["size"]) for r in mirror.rows if r["path"].endswith(".png"))
    from_archives = mirror.n_extracted + mirror.n_from_cache
    layout = (
        "archives"
        if from_archives == n_images and n_images
        else ("folders" if not from_archives else "folders+archives")
    )
    # The manifest says what was placed, not from which folder of this machine nor how.
    header = {"source": "local", "n_images": n_images}
    manifest = write_manifest(mirror.raw_dir, header, mirror.rows)
    counts = dict(mirror.linker.counts)
    log.info("local: %d image(s), %.1f MB, placed %s", n_images, total / 1e6, counts)
    return {
        **header,
        "root": str(mirror.root),
        "layout": layout,
        "link": link,
        "bytes_images": total,
        "placed": counts,
        "n_extracted": mirror.n_extracted,
        "n_from_cache": mirror.n_from_cache,
        "archives_read": mirror.archives_read,
        "seconds": round(time.monotonic() - t0, 3),
        "manifest": str(manifest),
    }


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
    root = _check_root(params.root)
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    mirror = _Mirror(root, raw_dir, Linker(params.link))
    _place_metadata(mirror)
    names = check_selection(select(raw_dir))
    log.info("local: %d image(s) selected", len(names))
    with tqdm(total=len(names), desc="local", unit="img", disable=None, leave=False) as bar:
        found, missing = _find_extracted(root, names)
        for n, src in found.items():
            mirror.place(src, nih.image_relpath(n))
            bar.update(1)
        if missing:
            _extract_from_archives(mirror, missing, cache_dir, bar)
    fill_checksums(mirror.rows, raw_dir)
    return _summary(mirror, params.link, len(names), t0)
