"""Read members of a remote zip with HTTP Range requests, without downloading the archive.

The Kaggle copy of NIH ChestX-ray14 is one ~42 GB zip (ZIP64: > 4 GB and > 65,535 entries).
Its central directory sits at the end: one suffix request for the last 128 KiB finds the
end-of-central-directory record (and the ZIP64 locator/record), one ranged request reads the
directory (~10 MB for the real archive), and then every needed member is fetched as the byte
range ``[local header, next member)``, decompressed locally and checked against the size and
CRC-32 the directory records. Members adjacent in the archive share one request (runs of at
most :data:`MAX_RUN_BYTES`), fetched by a bounded pool of workers.

Every member is written to a temporary name next to its destination and renamed only when its
size and CRC match, so a destination path exists only complete; a run interrupted midway
resumes at its first unfinished member.

Format reference: PKWARE APPNOTE.TXT 6.3.x, sections 4.3.7 (local header), 4.3.12 (central
directory header), 4.3.14-16 (ZIP64 end records), 4.5.3 (ZIP64 extra field).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import struct
import threading
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import requests

from imgae_dx.data.sources import http
from imgae_dx.data.sources.files import file_crc32, temp_name
from imgae_dx.errors import UserError
from imgae_dx.io import atomic_path

log = logging.getLogger(__name__)

EOCD_SIG = b"PK\x05\x06"
ZIP64_LOCATOR_SIG = b"PK\x06\x07"
ZIP64_EOCD_SIG = b"PK\x06\x06"
CENTRAL_SIG = b"PK\x01\x02"
LOCAL_SIG = b"PK\x03\x04"

_EOCD = struct.Struct("<4s4H2LH")  # 22 bytes
_ZIP64_LOCATOR = struct.Struct("<4sLQL")  # 20 bytes
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")  # 56 bytes
_CENTRAL = struct.Struct("<4s6H3L5H2L")  # 46 bytes
_LOCAL = struct.Struct("<4s5H3L2H")  # 30 bytes

#: Bytes read from the end of the archive: EOCD (22) + longest comment (65,535) + ZIP64
#: locator (20) + ZIP64 EOCD record (56), rounded up.
TAIL_BYTES = 128 * 1024
#: The first, optimistic read from the end (no archive comment: the usual case).
TAIL_FIRST = 16 * 1024
#: Adjacent members are fetched together up to this many bytes per request.
MAX_RUN_BYTES = 64 * 1024 * 1024
MAX_RUN_MEMBERS = 1024
STORED, DEFLATED = 0, 8


class ZipFormatError(UserError, ValueError):
    """The bytes are not a zip we can read (bad signature, encryption, unknown method...)."""


class RangeNotSupported(UserError, RuntimeError):
    """The server ignored a Range request (it would have sent the whole archive)."""


class FetchAborted(UserError, RuntimeError):
    """Stopped because another worker failed (its error is the one raised)."""


class ArchiveChanged(UserError, RuntimeError):
    """The remote archive's size changed while we were reading it."""


@dataclass(frozen=True)
class ZipEntry:
    name: str
    header_offset: int
    compressed_size: int
    size: int
    crc32: int
    method: int
    flags: int

    @property
    def is_dir(self) -> bool:
        return self.name.endswith("/")

    @property
    def raw_name(self) -> bytes:
        return self.name.encode("utf-8" if self.flags & 0x800 else "cp437")


@dataclass(frozen=True)
class DirectoryLocation:
    archive_size: int
    cd_offset: int
    cd_size: int
    n_entries: int
    zip64: bool
    #: sha256 of the end records: identifies the archive version cheaply.
    fingerprint: str


def locate_central_directory(tail: bytes, tail_offset: int, archive_size: int) -> DirectoryLocation:
    """Find the central directory from the last bytes of an archive (``tail`` starts at ``tail_offset``)."""
    pos = tail.rfind(EOCD_SIG, max(0, len(tail) - (_EOCD.size + 65535)))
    while pos >= 0:
        # The comment length must reach exactly to the end of the archive.
        if pos + _EOCD.size <= len(tail):
            (_sig, disk, cd_disk, n_disk, n_total, cd_size, cd_offset, comment_len) = (
                _EOCD.unpack_from(tail, pos)
            )
            if pos + _EOCD.size + comment_len == len(tail):
                break
        pos = tail.rfind(EOCD_SIG, 0, pos)
    else:
        raise ZipFormatError(
            "no end-of-central-directory record in the last bytes: not a zip archive"
        )
    if disk != 0 or cd_disk != 0 or n_disk != n_total:
        raise ZipFormatError("multi-disk (spanned) zip archives are not supported")
    zip64 = False
    end_records_start = pos
    loc = pos - _ZIP64_LOCATOR.size
    if loc >= 0 and tail[loc : loc + 4] == ZIP64_LOCATOR_SIG:
        _sig, _disk, rec_offset, n_disks = _ZIP64_LOCATOR.unpack_from(tail, loc)
        if n_disks > 1:
            raise ZipFormatError("multi-disk (spanned) zip archives are not supported")
        rel = rec_offset - tail_offset
        if rel < 0 or rel + _ZIP64_EOCD.size > len(tail):
            raise ZipFormatError("ZIP64 end-of-central-directory record lies outside the tail read")
        if tail[rel : rel + 4] != ZIP64_EOCD_SIG:
            raise ZipFormatError("bad ZIP64 end-of-central-directory signature")
        (_sig, _rec_size, _vm, _vn, _d, _cdd, _nd, n_total, cd_size, cd_offset) = (
            _ZIP64_EOCD.unpack_from(tail, rel)
        )
        zip64 = True
        end_records_start = rel
    if cd_offset + cd_size > tail_offset + end_records_start:
        raise ZipFormatError(
            f"central directory [{cd_offset}, {cd_offset + cd_size}) overlaps the end records: "
            "prefixed or corrupt archive"
        )
    fp = hashlib.sha256(tail[end_records_start:]).hexdigest()
    return DirectoryLocation(archive_size, cd_offset, cd_size, n_total, zip64, fp)


def parse_central_directory(buf: bytes, n_expected: int | None = None) -> list[ZipEntry]:
    """Parse central directory headers (with ZIP64 extra fields) into :class:`ZipEntry` s."""
    out: list[ZipEntry] = []
    pos, n = 0, len(buf)
    while pos < n:
        if buf[pos : pos + 4] != CENTRAL_SIG:
            if buf[pos : pos + 4] in (ZIP64_EOCD_SIG, EOCD_SIG):
                break
            raise ZipFormatError(
                f"bad central directory header signature at directory offset {pos}"
            )
        if pos + _CENTRAL.size > n:
            raise ZipFormatError("truncated central directory")
        (
            _sig,
            _vm,
            _vn,
            flags,
            method,
            _t,
            _d,
            crc,
            csize,
            usize,
            name_len,
            extra_len,
            comment_len,
            disk,
            _ia,
            _ea,
            offset,
        ) = _CENTRAL.unpack_from(buf, pos)
        p = pos + _CENTRAL.size
        raw_name = buf[p : p + name_len]
        extra = buf[p + name_len : p + name_len + extra_len]
        pos = p + name_len + extra_len + comment_len
        if pos > n:
            raise ZipFormatError("truncated central directory")
        if usize == 0xFFFFFFFF or csize == 0xFFFFFFFF or offset == 0xFFFFFFFF or disk == 0xFFFF:
            usize, csize, offset = _zip64_extra(extra, usize, csize, offset, disk)
        name = raw_name.decode("utf-8" if flags & 0x800 else "cp437")
        out.append(ZipEntry(name, offset, csize, usize, crc, method, flags))
    if n_expected is not None and len(out) != n_expected:
        raise ZipFormatError(
            f"central directory lists {len(out)} entries, the end record says {n_expected}"
        )
    return out


def _zip64_extra(
    extra: bytes, usize: int, csize: int, offset: int, disk: int
) -> tuple[int, int, int]:
    i = 0
    while i + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, i)
        if tag == 0x0001:
            data = extra[i + 4 : i + 4 + size]
            j = 0
            vals = []
            for field_value, wide in ((usize, 8), (csize, 8), (offset, 8), (disk, 4)):
                if field_value in (0xFFFFFFFF, 0xFFFF):
                    fmt = "<Q" if wide == 8 else "<L"
                    if j + wide > len(data):
                        raise ZipFormatError("truncated ZIP64 extra field")
                    vals.append(struct.unpack_from(fmt, data, j)[0])
                    j += wide
                else:
                    vals.append(field_value)
            return vals[0], vals[1], vals[2]
        i += 4 + size
    raise ZipFormatError("ZIP64 sizes announced but no ZIP64 extra field present")


def plan_runs(
    needed: Iterable[ZipEntry],
    end_of: Callable[[ZipEntry], int],
    max_bytes: int = MAX_RUN_BYTES,
    max_members: int = MAX_RUN_MEMBERS,
) -> list[list[ZipEntry]]:
    """Group members that are adjacent in the archive into runs fetched with one request."""
    runs: list[list[ZipEntry]] = []
    cur: list[ZipEntry] = []
    for e in sorted(needed, key=lambda x: x.header_offset):
        if cur and (
            end_of(cur[-1]) == e.header_offset
            and end_of(e) - cur[0].header_offset <= max_bytes
            and len(cur) < max_members
        ):
            cur.append(e)
        else:
            if cur:
                runs.append(cur)
            cur = [e]
    if cur:
        runs.append(cur)
    return runs


class MemberSink:
    """Decompress one member into a temporary file; rename it into place once size and CRC match."""

    def __init__(self, entry: ZipEntry, path: Path):
        if entry.flags & 0x1:
            raise ZipFormatError(f"{entry.name}: encrypted members are not supported")
        if entry.method not in (STORED, DEFLATED):
            raise ZipFormatError(
                f"{entry.name}: compression method {entry.method} is not supported"
            )
        self.entry, self.path = entry, path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = temp_name(path)
        self._fh = open(self.tmp, "wb")
        self._d = zlib.decompressobj(-15) if entry.method == DEFLATED else None
        self.crc, self.n = 0, 0

    def _emit(self, data: bytes) -> None:
        if not data:
            return
        self.n += len(data)
        if self.n > self.entry.size:
            raise http.TransferError(
                f"{self.entry.name}: more than the {self.entry.size} bytes the directory records"
            )
        self.crc = zlib.crc32(data, self.crc)
        self._fh.write(data)

    def write(self, comp: bytes) -> None:
        if self._d is None:
            self._emit(comp)
            return
        buf = comp
        try:
            while buf:
                self._emit(self._d.decompress(buf, 1 << 20))
                buf = self._d.unconsumed_tail
        except zlib.error as e:
            raise http.TransferError(f"{self.entry.name}: corrupt deflate data ({e})") from e

    def finish(self) -> None:
        if self._d is not None:
            try:
                self._emit(self._d.flush())
            except zlib.error as e:
                raise http.TransferError(f"{self.entry.name}: corrupt deflate data ({e})") from e
            if not self._d.eof:
                raise http.TransferError(f"{self.entry.name}: deflate stream incomplete")
        self._fh.close()
        if self.n != self.entry.size or self.crc != self.entry.crc32:
            raise http.TransferError(
                f"{self.entry.name}: got {self.n} bytes with CRC-32 {self.crc:08x}, the directory records "
                f"{self.entry.size} bytes with {self.entry.crc32:08x}"
            )
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self._fh.close()
        finally:
            self.tmp.unlink(missing_ok=True)


@dataclass
class Stats:
    requests: int = 0
    bytes: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def add(self, requests: int = 0, nbytes: int = 0) -> None:
        with self._lock:
            self.requests += requests
            self.bytes += nbytes


class RemoteZip:
    """A zip archive behind a URL that answers Range requests.

    ``url_source(refresh)`` returns the current download URL; it is called with ``refresh=True``
    when the URL stops working (:func:`http.signed_url_expired`: 401/403/410, or Cloud Storage's
    ``400 ExpiredToken``) to obtain a fresh one. A multi-hour fetch outlives many signed URLs, so
    refreshes have no lifetime cap; only a fresh URL refused again and again before any range
    succeeds with it (``MAX_FRESH_REFUSALS`` in a row) ends the fetch.
    """

    MAX_FRESH_REFUSALS = 3

    def __init__(
        self,
        url_source: Callable[[bool], str],
        *,
        policy: http.RetryPolicy,
        cache_dir: Path | None = None,
        workers: int = 4,
    ):
        self._url_source = url_source
        self._url = url_source(False)
        self._url_lock = threading.Lock()
        self._refusals = 0  # fresh URLs refused in a row, without a range served in between
        self.refreshes = 0
        self.policy = policy
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.workers = workers
        self.stats = Stats()
        self._local = threading.local()
        self.location: DirectoryLocation | None = None
        self.entries: list[ZipEntry] = []
        self._end: dict[int, int] = {}
        self.directory_from_cache = False
        self._abort = threading.Event()

    # -- plumbing ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self._url

    @property
    def public_url(self) -> str:
        return http.public_url(self._url)

    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = http.new_session(self.workers)
        return s

    def _refresh_url(self, used: str, status: int) -> None:
        with self._url_lock:
            if self._url != used:
                return  # another worker already refreshed it
            if self._refusals >= self.MAX_FRESH_REFUSALS:
                raise http.HTTPStatusError(
                    status,
                    used,
                    detail=f"download URL refused {self._refusals} times in a row, each time just "
                    "after refreshing it",
                )
            self._refusals += 1
            self.refreshes += 1
            log.info("download URL answered HTTP %d; asking the API for a fresh one", status)
            self._url = self._url_source(True)

    def _get(
        self, start: int | None, end: int | None, *, suffix: int | None = None
    ) -> requests.Response:
        """Ranged GET ``[start, end)`` (or the last ``suffix`` bytes), checked to be a 206 of that range."""
        url = self._url
        rng = f"bytes=-{suffix}" if suffix is not None else f"bytes={start}-{end - 1}"
        try:
            resp = self._session().get(
                url,
                headers={"Range": rng},
                stream=True,
                timeout=self.policy.timeouts,
                allow_redirects=True,
            )
        except requests.RequestException:
            self.stats.add(requests=1)
            raise
        self.stats.add(requests=1)
        try:
            http.raise_for_status(resp, url)
        except http.HTTPStatusError as e:
            if http.signed_url_expired(e):
                self._refresh_url(url, e.status)
                raise http.TransferError(
                    f"download URL refused (HTTP {e.status}); retrying with a fresh one"
                ) from e
            raise
        resp.range_ = self._check_range(resp, url, start, end, suffix)  # type: ignore[attr-defined]
        self._refusals = 0  # this URL works: the next expiry may refresh again
        return resp

    def _check_range(
        self,
        resp: requests.Response,
        url: str,
        start: int | None,
        end: int | None,
        suffix: int | None,
    ) -> tuple[int, int, int | None]:
        """``(start, end, archive size)`` the server answered; closes ``resp`` and raises if it
        is not the range asked for, or the archive changed size."""
        if resp.status_code != 206:
            length = resp.headers.get("Content-Length")
            resp.close()
            raise RangeNotSupported(
                f"{http.public_url(url)} answered {resp.status_code} (length {length}) to a Range request; "
                "the server does not serve byte ranges (use method: files)"
            )
        cr = resp.headers.get("Content-Range", "")
        m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", cr.strip())
        if not m:
            resp.close()
            raise http.TransferError(f"bad Content-Range {cr!r} from {http.public_url(url)}")
        got_start, got_end = int(m.group(1)), int(m.group(2)) + 1
        total = int(m.group(3)) if m.group(3) != "*" else None
        if self.location is not None and total is not None and total != self.location.archive_size:
            resp.close()
            raise ArchiveChanged(
                f"{http.public_url(url)} is now {total} bytes, was {self.location.archive_size}: the dataset "
                "changed while fetching; rerun"
            )
        if suffix is None and (got_start != start or got_end != end):
            resp.close()
            raise http.TransferError(f"asked for bytes {start}-{end - 1}, got {cr!r}")
        return got_start, got_end, total

    def _read_body(self, resp: requests.Response, n: int) -> bytes:
        """All ``n`` bytes of ``resp``'s body (counted in :attr:`stats` even when cut short)."""
        reader = http.BodyReader(resp, expected=n)
        try:
            return reader.read_exact(n)
        finally:
            self.stats.add(nbytes=reader.consumed)

    def _read_range(self, start: int, end: int) -> bytes:
        def attempt() -> bytes:
            with self._get(start, end) as resp:
                return self._read_body(resp, end - start)

        return http.call(attempt, self.policy, f"bytes {start}-{end - 1} of {self.public_url}")

    def _read_tail(self, n: int) -> tuple[bytes, int, int]:
        """The last ``n`` bytes of the archive, the offset they start at, and its size."""

        def attempt() -> tuple[bytes, int, int]:
            with self._get(None, None, suffix=n) as resp:
                start, end, total = resp.range_  # type: ignore[attr-defined]
                if total is None:
                    raise RangeNotSupported("the server does not say how long the archive is")
                return self._read_body(resp, end - start), start, total

        return http.call(attempt, self.policy, f"end of {self.public_url}")

    # -- directory -----------------------------------------------------------------------------
    def read_directory(self) -> list[ZipEntry]:
        """Locate and parse the central directory (reusing the cached copy of the same archive)."""
        loc, tail, tail_start = self._locate()
        self.location = loc
        cd = self._cached_directory(loc)
        self.directory_from_cache = cd is not None
        if cd is None:
            if loc.cd_offset >= tail_start:
                cd = tail[loc.cd_offset - tail_start : loc.cd_offset - tail_start + loc.cd_size]
            else:
                cd = self._read_range(loc.cd_offset, loc.cd_offset + loc.cd_size)
            entries = parse_central_directory(cd, loc.n_entries)
            self._store_directory(loc, cd)
        else:
            entries = parse_central_directory(cd, loc.n_entries)
        self.entries = entries
        offsets = sorted({e.header_offset for e in entries})
        nxt = dict(zip(offsets, offsets[1:] + [loc.cd_offset]))
        self._end = {e.header_offset: nxt[e.header_offset] for e in entries}
        log.info(
            "%s: %d entries, %.1f GB%s",
            self.public_url,
            len(entries),
            loc.archive_size / 1e9,
            " (directory from cache)" if self.directory_from_cache else "",
        )
        return entries

    def _locate(self) -> tuple[DirectoryLocation, bytes, int]:
        """Where the central directory is, plus the tail read and the offset it starts at."""
        # Usually the end records (and often the directory) are in the last few kB; a long
        # archive comment needs the longer read.
        tail, tail_start, size = self._read_tail(TAIL_FIRST)
        try:
            return locate_central_directory(tail, tail_start, size), tail, tail_start
        except ZipFormatError:
            if tail_start == 0:
                raise
        tail, tail_start, size = self._read_tail(TAIL_BYTES)
        return locate_central_directory(tail, tail_start, size), tail, tail_start

    def _cached_directory(self, loc: DirectoryLocation) -> bytes | None:
        if self.cache_dir is None:
            return None
        meta, blob = self.cache_dir / "directory.json", self.cache_dir / "directory.bin"
        try:
            info = json.loads(meta.read_text(encoding="utf-8"))
            if (
                info.get("fingerprint") != loc.fingerprint
                or info.get("archive_size") != loc.archive_size
                or info.get("cd_size") != loc.cd_size
            ):
                return None
            data = blob.read_bytes()
        except (OSError, ValueError):
            return None
        if hashlib.sha256(data).hexdigest() != info.get("sha256"):
            return None
        return data

    def _store_directory(self, loc: DirectoryLocation, data: bytes) -> None:
        if self.cache_dir is None:
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.cache_dir / "directory.bin") as tmp:
            tmp.write_bytes(data)
        info = {
            "url": self.public_url,
            "archive_size": loc.archive_size,
            "cd_offset": loc.cd_offset,
            "cd_size": loc.cd_size,
            "n_entries": loc.n_entries,
            "zip64": loc.zip64,
            "fingerprint": loc.fingerprint,
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        with atomic_path(self.cache_dir / "directory.json") as tmp:
            tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")

    def end_of(self, entry: ZipEntry) -> int:
        """Offset where ``entry``'s local record (header, data, descriptor) ends."""
        return self._end[entry.header_offset]

    # -- members -------------------------------------------------------------------------------
    def fetch(
        self,
        entries: Iterable[ZipEntry],
        dest: Callable[[ZipEntry], Path],
        *,
        on_done: Callable[[ZipEntry, int], None] | None = None,
    ) -> None:
        """Fetch ``entries`` into ``dest(entry)``, ``workers`` runs at a time.

        ``on_done(entry, nbytes)`` is called (from a worker thread) after each member is in place.
        The first error that survives its retries cancels the runs not yet started and is raised.
        """
        runs = plan_runs(entries, self.end_of)
        if not runs:
            return
        self._abort.clear()
        with ThreadPoolExecutor(
            max_workers=min(self.workers, len(runs)), thread_name_prefix="zipfetch"
        ) as pool:
            futures = [pool.submit(self._fetch_run, run, dest, on_done) for run in runs]
            try:
                for f in as_completed(futures):
                    f.result()
            except BaseException:
                self._abort.set()
                for f in futures:
                    f.cancel()
                raise

    def _fetch_run(
        self,
        run: list[ZipEntry],
        dest: Callable[[ZipEntry], Path],
        on_done: Callable[[ZipEntry, int], None] | None,
    ) -> None:
        """One request for ``run``; a retry resumes at its first member not yet in place."""
        remaining = list(run)
        end = self.end_of(run[-1])

        def attempt() -> None:
            start = remaining[0].header_offset
            resp = self._get(start, end)
            with resp:
                reader = http.BodyReader(resp, expected=end - start)
                pos = start
                try:
                    while remaining:
                        if self._abort.is_set():
                            raise FetchAborted("another worker failed")
                        e = remaining[0]
                        if e.header_offset < pos:
                            raise ZipFormatError(f"{e.name}: overlaps the member before it")
                        reader.skip(e.header_offset - pos)
                        mark = reader.consumed
                        pos = _read_member(reader, e, dest)
                        remaining.pop(0)
                        if on_done is not None:
                            on_done(e, reader.consumed - mark)
                finally:
                    self.stats.add(nbytes=reader.consumed)

        what = (
            f"{len(run)} member(s) at bytes {run[0].header_offset}-{end - 1} of {self.public_url}"
        )
        http.call(attempt, self.policy, what)

    def verify(self, path: Path, entry: ZipEntry) -> bool:
        """Whether ``path`` holds exactly ``entry``'s content (size, then CRC-32)."""
        try:
            if path.stat().st_size != entry.size:
                return False
        except FileNotFoundError:
            return False
        return file_crc32(path)[1] == entry.crc32


def _read_member(reader: http.BodyReader, e: ZipEntry, dest: Callable[[ZipEntry], Path]) -> int:
    """Read ``e`` (local header, then data) from ``reader`` into ``dest(e)``; returns the archive
    offset where its data ends."""
    hdr = reader.read_exact(_LOCAL.size)
    sig, _v, _flags, _method, _t, _d, _crc, _cs, _us, name_len, extra_len = _LOCAL.unpack(hdr)
    if sig != LOCAL_SIG:
        raise http.TransferError(f"{e.name}: no local header at offset {e.header_offset}")
    raw_name = reader.read_exact(name_len)
    if raw_name != e.raw_name:  # garbled in transit, or a broken archive
        raise http.TransferError(
            f"local header at {e.header_offset} names {raw_name!r}, the directory {e.name!r}"
        )
    reader.skip(extra_len)
    sink = MemberSink(e, dest(e))
    try:
        for chunk in reader.iter_exact(e.compressed_size):
            sink.write(chunk)
        sink.finish()
    except BaseException:
        sink.abort()
        raise
    return e.header_offset + _LOCAL.size + name_len + extra_len + e.compressed_size
