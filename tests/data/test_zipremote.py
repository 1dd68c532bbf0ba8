"""Remote zip reading: directory parsing (incl. ZIP64), member runs, checks, retries, redaction."""

from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib
from pathlib import Path

import pytest

from imgae_dx.data.sources import http
from imgae_dx.data.sources.zipremote import (
    MemberSink,
    RemoteZip,
    ZipEntry,
    ZipFormatError,
    locate_central_directory,
    parse_central_directory,
    plan_runs,
)
from tests.data.fake_kaggle import FakeKaggle

pytestmark = pytest.mark.timeout(60)


def _files(n: int = 12, size: int = 3000, seed: int = 1) -> dict[str, bytes]:
    rnd = __import__("random").Random(seed)
    out = {"README.txt": b"hello " * 200}
    for i in range(n):
        out[f"images_001/images/{i:08d}_000.png"] = bytes(rnd.getrandbits(8) for _ in range(size))
    return out


def _zip(
    files: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED, comment: bytes = b""
) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as zf:
        for k in sorted(files):
            zf.writestr(k, files[k])
        zf.comment = comment
    return buf.getvalue()


def _zip64(files: dict[str, bytes]) -> bytes:
    """A zip whose directory uses ZIP64 everywhere (extra fields + ZIP64 end records), as the
    real 42 GB archive must; stored members keep it simple."""
    out, central = bytearray(), bytearray()
    for name in sorted(files):
        data, raw = files[name], name.encode()
        crc, off = zlib.crc32(files[name]), len(out)
        out += struct.pack(
            "<4s5H3L2H", b"PK\x03\x04", 45, 0x800, 0, 0, 0, crc, len(data), len(data), len(raw), 0
        )
        out += raw + data
        extra = struct.pack("<HHQQQ", 1, 24, len(data), len(data), off)
        central += struct.pack(
            "<4s6H3L5H2L",
            b"PK\x01\x02",
            45,
            45,
            0x800,
            0,
            0,
            0,
            crc,
            0xFFFFFFFF,
            0xFFFFFFFF,
            len(raw),
            len(extra),
            0,
            0,
            0,
            0,
            0xFFFFFFFF,
        )
        central += raw + extra
    cd_off, n = len(out), len(files)
    out += central
    z64 = len(out)
    out += struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, n, n, len(central), cd_off)
    out += struct.pack("<4sLQL", b"PK\x06\x07", 0, z64, 1)
    out += struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return bytes(out)


def _entries_of(blob: bytes) -> list[ZipEntry]:
    loc = locate_central_directory(blob, 0, len(blob))
    return parse_central_directory(blob[loc.cd_offset : loc.cd_offset + loc.cd_size], loc.n_entries)


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
@pytest.mark.parametrize("comment", [b"", b"x" * 3000])
def test_directory_matches_zipfile(compression, comment):
    blob = _zip(_files(), compression, comment)
    ours = _entries_of(blob)
    ref = zipfile.ZipFile(io.BytesIO(blob)).infolist()
    assert [
        (e.name, e.header_offset, e.compressed_size, e.size, e.crc32, e.method) for e in ours
    ] == [
        (i.filename, i.header_offset, i.compress_size, i.file_size, i.CRC, i.compress_type)
        for i in ref
    ]


def test_zip64_directory():
    files = _files(5)
    blob = _zip64(files)
    ref = {i.filename: i for i in zipfile.ZipFile(io.BytesIO(blob)).infolist()}  # a valid zip
    loc = locate_central_directory(blob[-200:], len(blob) - 200, len(blob))
    assert loc.zip64 and loc.n_entries == len(files)
    entries = parse_central_directory(
        blob[loc.cd_offset : loc.cd_offset + loc.cd_size], loc.n_entries
    )
    for e in entries:
        assert (e.header_offset, e.size, e.crc32) == (
            ref[e.name].header_offset,
            ref[e.name].file_size,
            ref[e.name].CRC,
        )


def test_not_a_zip_is_refused():
    with pytest.raises(ZipFormatError):
        locate_central_directory(b"\x00" * 1000, 0, 1000)
    blob = _zip(_files(2))
    loc = locate_central_directory(blob, 0, len(blob))
    with pytest.raises(ZipFormatError):
        parse_central_directory(b"garbage" + blob[loc.cd_offset : loc.cd_offset + loc.cd_size])


def test_plan_runs_groups_adjacent_members_only():
    entries = _entries_of(_zip(_files(10)))
    images = [e for e in entries if e.name.endswith(".png")]
    offsets = sorted(e.header_offset for e in entries)
    nxt = dict(zip(offsets, offsets[1:] + [10**9]))

    def end_of(e):
        return nxt[e.header_offset]

    runs = plan_runs([images[0], images[1], images[2], images[5], images[7], images[8]], end_of)
    assert [[e.name for e in r] for r in runs] == [
        [images[0].name, images[1].name, images[2].name],
        [images[5].name],
        [images[7].name, images[8].name],
    ]
    small = plan_runs(
        images[:4], end_of, max_bytes=2 * (end_of(images[0]) - images[0].header_offset)
    )
    assert all(len(r) <= 2 for r in small) and sum(map(len, small)) == 4


def test_member_sink_refuses_bad_crc_and_leaves_nothing(tmp_path):
    data = b"abc" * 1000
    good = ZipEntry("x", 0, len(data), len(data), zlib.crc32(data), 0, 0)
    bad = ZipEntry("x", 0, len(data), len(data), zlib.crc32(data) ^ 1, 0, 0)
    dest = tmp_path / "out" / "x.bin"
    sink = MemberSink(bad, dest)
    sink.write(data)
    with pytest.raises(http.TransferError, match="CRC"):
        sink.finish()
    sink.abort()
    assert not dest.exists() and os.listdir(dest.parent) == []
    sink = MemberSink(good, dest)
    sink.write(data)
    sink.finish()
    assert dest.read_bytes() == data
    with pytest.raises(ZipFormatError, match="encrypted"):
        MemberSink(ZipEntry("x", 0, 1, 1, 0, 0, 1), dest)


def _remote(server: FakeKaggle, tmp_path: Path, **kw) -> RemoteZip:
    policy = http.RetryPolicy(max_retries=kw.pop("max_retries", 4), max_backoff=0.01, timeout=5)
    return RemoteZip(
        lambda refresh: server.archive_url(), policy=policy, cache_dir=tmp_path / "zipcache", **kw
    )


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_remote_members_by_range(tmp_path, compression):
    files = _files(30, size=4000)
    with FakeKaggle(files, compression=compression) as srv:
        rz = _remote(srv, tmp_path, workers=3)
        entries = {e.name: e for e in rz.read_directory()}
        want = [f"images_001/images/{i:08d}_000.png" for i in (0, 1, 2, 10, 20, 21)]
        srv.reset_counters()
        rz.fetch([entries[w] for w in want], lambda e: tmp_path / "out" / e.name)
        for w in want:
            assert (tmp_path / "out" / w).read_bytes() == files[w]
        # Three runs of adjacent members, each exactly [first header, end of last member).
        assert len(srv.member_ranges()) == 3
        needed = sum(rz.end_of(entries[w]) - entries[w].header_offset for w in want)
        assert srv.bytes["archive"] == needed < len(srv.archive) / 4


def test_remote_survives_drops_and_corruption(tmp_path):
    files = _files(20, size=5000)
    with FakeKaggle(files, chunk=1024) as srv:
        rz = _remote(srv, tmp_path, workers=1)
        entries = [e for e in rz.read_directory() if e.name.endswith(".png")]
        srv.inject("archive", "drop", count=2, after_bytes=7000)
        srv.inject("archive", "corrupt", count=1)
        srv.inject("archive", "status", count=1, status=503)
        rz.fetch(entries, lambda e: tmp_path / "out" / e.name)
        for e in entries:
            assert (tmp_path / "out" / e.name).read_bytes() == files[e.name]
        assert rz.policy.retries == 4
        assert not list((tmp_path / "out").rglob("*.part"))


def test_remote_refreshes_an_expired_url(tmp_path):
    files = _files(4)
    with FakeKaggle(files) as srv:
        calls = []

        def source(refresh: bool) -> str:
            calls.append(refresh)
            return srv.archive_url()

        policy = http.RetryPolicy(max_retries=3, max_backoff=0.01, timeout=5)
        rz = RemoteZip(source, policy=policy, workers=1)
        entries = rz.read_directory()
        srv.expire_urls()  # the URL handed out earlier now answers 403
        rz.fetch(entries, lambda e: tmp_path / e.name)
        assert calls == [False, True]
        assert (tmp_path / "README.txt").read_bytes() == files["README.txt"]


@pytest.mark.parametrize("status", [400, 410])
def test_cloud_storage_expired_token_gets_a_fresh_url(tmp_path, status):
    """Cloud Storage answers an expired signed URL with ``400 ExpiredToken``: ask for a new one."""
    files = _files(4)
    with FakeKaggle(files) as srv:
        calls = []

        def source(refresh: bool) -> str:
            calls.append(refresh)
            return srv.archive_url()

        rz = RemoteZip(source, policy=http.RetryPolicy(max_retries=3, max_backoff=0.01), workers=1)
        entries = rz.read_directory()
        srv.expire_urls(status)
        rz.fetch(entries, lambda e: tmp_path / e.name)
        assert calls == [False, True]
        assert srv.requests("archive", status)
        for e in entries:
            assert (tmp_path / e.name).read_bytes() == files[e.name]


def test_refreshes_have_no_lifetime_cap(tmp_path):
    """A long fetch outlives many signed URLs: every one that expires is replaced."""
    files = _files(12)
    with FakeKaggle(files) as srv:
        rz = RemoteZip(
            lambda refresh: srv.archive_url(),
            policy=http.RetryPolicy(max_retries=3, max_backoff=0.01),
            workers=1,
        )
        entries = sorted(rz.read_directory(), key=lambda e: e.header_offset)
        srv.expire_urls(400)
        srv.expire_every = 1  # each URL serves one range, then expires
        wanted = entries[::2]  # not adjacent: one range request each
        rz.fetch(wanted, lambda e: tmp_path / e.name)
        assert rz.refreshes >= len(wanted) > RemoteZip.MAX_FRESH_REFUSALS
        for e in wanted:
            assert (tmp_path / e.name).read_bytes() == files[e.name]


def test_a_fresh_url_refused_again_and_again_ends_the_fetch(tmp_path):
    files = _files(4)
    with FakeKaggle(files) as srv:
        stale = srv.archive_url()
        rz = RemoteZip(
            lambda refresh: stale,  # an API that keeps handing out a dead URL
            policy=http.RetryPolicy(max_retries=10, max_backoff=0.01),
            workers=1,
        )
        entries = rz.read_directory()
        srv.expire_urls(400)
        with pytest.raises((http.HTTPStatusError, http.RetriesExhausted), match="400"):
            rz.fetch(entries, lambda e: tmp_path / e.name)
        assert rz.refreshes == RemoteZip.MAX_FRESH_REFUSALS
        assert not any(tmp_path.iterdir())


def test_directory_is_cached_and_reused(tmp_path):
    with FakeKaggle(_files(200, size=100)) as srv:
        rz = _remote(srv, tmp_path)
        first = rz.read_directory()
        assert not rz.directory_from_cache
        srv.reset_counters()
        rz2 = _remote(srv, tmp_path)
        assert rz2.read_directory() == first and rz2.directory_from_cache
        assert [r["range"] for r in srv.requests("archive")] == [
            (len(srv.archive) - 16384, len(srv.archive))
        ]


def test_server_without_range_support_is_refused(tmp_path, monkeypatch):
    with FakeKaggle(_files(3)) as srv:
        rz = _remote(srv, tmp_path)
        monkeypatch.setattr(rz._session(), "get", lambda url, **kw: _Resp200())
        with pytest.raises(Exception, match="does not serve byte ranges"):
            rz.read_directory()


class _Resp200:
    status_code = 200
    headers = {"Content-Length": "42000000000"}
    url = "http://127.0.0.1/x.zip?sig=1"

    def close(self):
        pass
