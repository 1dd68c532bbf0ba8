"""Files on disk, shared by the sources: temporary names, checksums, linking, the manifest.

Every source writes a file under a temporary name next to its destination and renames it only
once it is complete and checked, so a destination path exists only whole; :func:`temp_name`
is that name and :func:`remove_stale_parts` clears the ones a killed run left behind.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import threading
import zlib
from collections import defaultdict
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from imgae_dx.data import nih
from imgae_dx.errors import UserError
from imgae_dx.io import write_text

log = logging.getLogger(__name__)

MANIFEST = "fetch_manifest.json"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)
_PART_RE = re.compile(r"^\..+\.\d+\.\d+\.part$")


class LinkError(UserError, RuntimeError):
    """A file cannot be placed at its destination (the message names both paths and why)."""


# -- temporary files -------------------------------------------------------------------------------
def temp_name(path: Path) -> Path:
    """Where ``path`` is written before it is complete (unique per process and thread)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.part")


def remove_stale_parts(root: Path) -> int:
    """Delete temporary ``.part`` files left by a killed run (call with the cache lock held)."""
    n = 0
    if not root.exists():
        return 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            if _PART_RE.match(f):
                try:
                    os.unlink(os.path.join(dirpath, f))
                    n += 1
                except FileNotFoundError:
                    pass
    return n


@contextlib.contextmanager
def cache_lock(path: Path) -> Iterator[None]:
    """One fetch at a time per cache (two would delete each other's temporary files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another fetch that uses %s", path.parent)
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


# -- checks ----------------------------------------------------------------------------------------
def file_crc32(path: Path, chunk: int = 1 << 20) -> tuple[int, int]:
    """``(size, crc32)`` of a file."""
    crc, n = 0, 0
    with open(path, "rb") as fh:
        while True:
            b = fh.read(chunk)
            if not b:
                return n, crc
            crc = zlib.crc32(b, crc)
            n += len(b)


def is_complete_png(path: Path) -> bool:
    """Whether ``path`` starts with the PNG signature and ends with the IEND chunk."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        fh.seek(max(0, size - len(PNG_IEND)))
        tail = fh.read()
    return head == PNG_SIGNATURE and tail == PNG_IEND


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


# -- placing files ---------------------------------------------------------------------------------
class Linker:
    """Put a file at ``dst`` without a second copy where possible: hardlink → reflink → copy.

    ``mode`` is a value of ``data.local.link`` (the schema checks it). ``"auto"`` falls through
    the three and remembers what failed per source device (so 100,000 files do not try a
    failing syscall 100,000 times); an explicit mode fails loudly. Every method creates ``dst``
    complete at once (link, or temp name + rename).
    """

    def __init__(self, mode: str = "auto"):
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
                    raise LinkError(f"cannot {how} {src} to {dst}: {e}") from e
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
        raise LinkError(f"cannot place {src} at {dst}: {last}")

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


# -- the manifest ----------------------------------------------------------------------------------
def fill_checksums(rows: list[dict[str, Any]], raw_dir: Path, workers: int = 4) -> None:
    """Set ``size`` and ``crc32`` of the manifest rows that lack them, from ``raw_dir/<path>``."""
    todo = [r for r in rows if r["crc32"] is None or r["size"] is None]

    def one(r: dict[str, Any]) -> None:
        size, crc = file_crc32(raw_dir / r["path"])
        r["size"], r["crc32"] = size, f"{crc:08x}"

    if todo:
        with ThreadPoolExecutor(max_workers=max(1, min(workers, os.cpu_count() or 1))) as pool:
            list(pool.map(one, todo))


#: What the manifest says of a file: its content, never how it arrived (transferred or from a
#: cache, archive or single-file download, linked or copied) nor from where (a signed URL, a
#: folder of this machine). ``data/raw`` is a DVC output: a manifest that depended on how the
#: files came would make a second machine that fetches the same images retrain everything
#: downstream. Sources report the how in their summary (and the Kaggle cache's log) instead.
MANIFEST_FIELDS = ("path", "size", "crc32")


def write_manifest(raw_dir: Path, header: dict[str, Any], files: Iterable[dict[str, Any]]) -> Path:
    """``raw_dir/fetch_manifest.json``: ``header`` (what was asked for: source, dataset,
    version, image count) and one :data:`MANIFEST_FIELDS` object per file and line, by path."""
    head = json.dumps(header, indent=2, sort_keys=False)
    rows = ",\n".join(
        "    " + json.dumps({k: f[k] for k in MANIFEST_FIELDS})
        for f in sorted(files, key=lambda r: r["path"])
    )
    text = head[:-2] + ',\n  "files": [\n' + rows + ("\n  ]\n}\n" if rows else "]\n}\n")
    if not header:
        text = '{\n  "files": [\n' + rows + "\n  ]\n}\n"
    path = Path(raw_dir) / MANIFEST
    write_text(path, text)
    return path
