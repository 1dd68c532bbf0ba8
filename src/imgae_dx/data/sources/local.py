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

import errno
import json
import logging
import os
import posixpath
import re
import shutil
import tarfile
import threading
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any

from imgae_dx.data import nih
from imgae_dx.data.sources.zipremote import file_crc32, temp_name
from imgae_dx.io import write_text
from imgae_dx.progress import progress

log = logging.getLogger(__name__)

LINK_MODES = ("auto", "hardlink", "reflink", "copy")
MANIFEST = "fetch_manifest.json"
ARCHIVE_RE = re.compile(r"^images_(\d{2,3})\.(tar\.gz|tgz|tar)$")
#: The 2020 re-release of the metadata (same header, corrected ages) under another name.
DATA_ENTRY_ALIASES = ("Data_Entry_2017_v2020.csv",)
_FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)


class LocalSourceError(RuntimeError):
    """The local copy is missing something the selection needs, or is laid out unexpectedly."""


class UnsafeArchiveError(LocalSourceError):
    """An archive member has an absolute path, ``..`` or is not a regular file where one is needed."""


# -- placing files -------------------------------------------------------------------------------
class Linker:
    """Put a file at ``dst`` without a second copy where possible: hardlink → reflink → copy.

    ``mode="auto"`` falls through the three and remembers what failed per source device (so
    100,000 files do not try a failing syscall 100,000 times); an explicit mode fails loudly.
    Every method creates ``dst`` complete at once (link, or temp name + rename).
    """

    def __init__(self, mode: str = "auto"):
        if mode not in LINK_MODES:
            raise ValueError(f"link: unknown mode {mode!r} (valid: {', '.join(LINK_MODES)})")
        self.mode = mode
        self._broken: set[tuple[int, str]] = set()
        self._lock = threading.Lock()
        self.counts: dict[str, int] = defaultdict(int)

    def place(self, src: Path, dst: Path) -> str:
        dst.parent.mkdir(parents=True, exist_ok=True)
        order = ("hardlink", "reflink", "copy") if self.mode == "auto" else (self.mode,)
        dev = src.stat().st_dev
        last: OSError | None = None
        for how in order:
            if (dev, how) in self._broken:
                continue
            try:
                getattr(self, f"_{how}")(src, dst)
            except OSError as e:
                if self.mode != "auto" or how == "copy":
                    raise LocalSourceError(f"cannot {how} {src} to {dst}: {e}") from e
                if e.errno in (
                    errno.EXDEV,
                    errno.EPERM,
                    errno.EMLINK,
                    errno.EOPNOTSUPP,
                    errno.ENOTSUP,
                    errno.EINVAL,
                    errno.ENOTTY,
                    errno.EACCES,
                    errno.ENOSYS,
                    errno.EBADF,
                ):
                    with self._lock:
                        self._broken.add((dev, how))
                last = e
                continue
            with self._lock:
                self.counts[how] += 1
            return how
        raise LocalSourceError(f"cannot place {src} at {dst}: {last}")

    @staticmethod
    def _hardlink(src: Path, dst: Path) -> None:
        try:
            os.link(src, dst)
        except FileExistsError:
            if os.path.samefile(src, dst):
                return
            tmp = temp_name(dst)
            os.link(src, tmp)
            os.replace(tmp, dst)

    @staticmethod
    def _reflink(src: Path, dst: Path) -> None:
        try:
            import fcntl
        except ImportError as e:  # pragma: no cover - not POSIX
            raise OSError(errno.ENOTSUP, "reflink needs fcntl") from e
        tmp = temp_name(dst)
        try:
            with open(src, "rb") as s, open(tmp, "wb") as d:
                fcntl.ioctl(d.fileno(), _FICLONE, s.fileno())
            os.replace(tmp, dst)
        finally:
            tmp.unlink(missing_ok=True)

    @staticmethod
    def _copy(src: Path, dst: Path) -> None:
        tmp = temp_name(dst)
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
        finally:
            tmp.unlink(missing_ok=True)


def write_manifest(raw_dir: Path, header: dict[str, Any], files: Iterable[dict[str, Any]]) -> Path:
    """``raw_dir/fetch_manifest.json``: run header plus one JSON object per file and line."""
    head = json.dumps(header, indent=2, sort_keys=False)
    rows = ",\n".join(
        "    " + json.dumps(f, sort_keys=False) for f in sorted(files, key=lambda r: r["path"])
    )
    text = head[:-2] + ',\n  "files": [\n' + rows + ("\n  ]\n}\n" if rows else "]\n}\n")
    if not header:
        text = '{\n  "files": [\n' + rows + "\n  ]\n}\n"
    path = Path(raw_dir) / MANIFEST
    write_text(path, text)
    return path


def check_selection(names: object) -> list[str]:
    """``select``'s answer as a sorted, de-duplicated list of valid NIH image names."""
    if isinstance(names, (str, bytes)) or not isinstance(names, Iterable):
        raise TypeError(f"select() must return a list of image names, got {type(names).__name__}")
    out = set()
    for n in names:
        if not isinstance(n, str) or not nih.IMAGE_RE.match(n):
            raise ValueError(f"select() returned {n!r}, not an NIH image name (00000001_000.png)")
        out.add(n)
    return sorted(out)


def _crc_rows(rows: list[dict[str, Any]], paths: dict[str, Path], workers: int = 4) -> None:
    todo = [r for r in rows if r.get("crc32") is None]

    def one(r: dict[str, Any]) -> None:
        size, crc = file_crc32(paths[r["path"]])
        r["size"], r["crc32"] = size, f"{crc:08x}"

    if todo:
        with ThreadPoolExecutor(max_workers=max(1, min(workers, os.cpu_count() or 1))) as pool:
            list(pool.map(one, todo))


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
    *,
    select: Callable[[Path], list[str]],
    root: str | os.PathLike | None = None,
    cache_dir: Path | None = None,
    link: str = "auto",
) -> dict[str, Any]:
    """Fill ``raw_dir`` (Kaggle layout) with the metadata and the images ``select`` asks for.

    Returns a summary (counts, bytes, how files were placed); writes ``raw_dir/fetch_manifest.json``.
    """
    t0 = time.monotonic()
    if root is None or str(root).strip() == "":
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
    paths: dict[str, Path] = {}

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
        paths[name] = raw_dir / name

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
        paths[rel] = raw_dir / rel
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
                paths[rel] = raw_dir / rel
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

    _crc_rows(rows, paths)
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
