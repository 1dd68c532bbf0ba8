"""data.source: kaggle against a fake Kaggle on loopback, with the real kagglesdk client."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import pytest
from pydantic import ValidationError

from imgae_dx.config import KaggleParams
from imgae_dx.data import nih, split
from imgae_dx.data.sources import credentials, http, kaggle
from tests.data.fake_kaggle import (
    DEFAULT_KEY,
    DEFAULT_REFRESH_TOKEN,
    DEFAULT_TOKEN,
    DEFAULT_USER,
    FakeKaggle,
    tiny_nih,
)

pytestmark = pytest.mark.timeout(60)

ENV_VARS = (
    "KAGGLE_API_TOKEN",
    "KAGGLE_USERNAME",
    "KAGGLE_KEY",
    "KAGGLE_CONFIG_DIR",
    "KAGGLE_API_ENVIRONMENT",
    "XDG_CONFIG_HOME",
    "KAGGLE_KERNEL_RUN_TYPE",
)


@pytest.fixture(scope="module")
def nih_files() -> dict[str, bytes]:
    return tiny_nih()


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A HOME with no Kaggle credentials: the real ~/.kaggle is never read."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("HOME", str(h))
    for v in ENV_VARS:
        monkeypatch.delenv(v, raising=False)
    return h


@pytest.fixture
def token(home, monkeypatch) -> str:
    monkeypatch.setenv("KAGGLE_API_TOKEN", DEFAULT_TOKEN)
    return DEFAULT_TOKEN


@pytest.fixture
def server(nih_files):
    with FakeKaggle(nih_files) as srv:
        yield srv


def selector(shards=("images_002",), **kw):
    def select(meta_dir: Path) -> list[str]:
        entries, tv, te, _ = split.load_metadata(meta_dir)
        sel = split.make_split(
            entries, train_val_list=tv, test_list=te, shards=list(shards), val_fraction=0.2, **kw
        )
        select.selection = sel
        return sel.images()

    return select


def fixed(names):
    return lambda meta_dir: list(names)


def run(tmp_path: Path, srv: FakeKaggle, select=None, name="raw", **kw) -> tuple[Path, dict]:
    raw = tmp_path / name
    kw.setdefault("max_backoff", 0.01)
    kw.setdefault("workers", 2)
    params = KaggleParams(endpoint=srv.endpoint, **kw)
    out = kaggle.fetch(raw, params, select=select or selector(), cache_dir=tmp_path / "cache")
    return raw, out


def assert_mirror(raw: Path, files: dict[str, bytes], names: list[str]) -> None:
    """raw holds the metadata and exactly ``names``' images, byte for byte, in the Kaggle layout."""
    for m in nih.METADATA_FILES:
        assert (raw / m).read_bytes() == files[m]
    got = sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*.png"))
    assert got == sorted(nih.image_relpath(n) for n in names)
    for rel in got:
        assert (raw / rel).read_bytes() == files[rel]
    assert not [p for p in raw.rglob("*") if p.name.startswith(".")], "temporary files in raw_dir"


def member_of_range(srv: FakeKaggle) -> dict[tuple[int, int], list[str]]:
    """Members whose local header lies in each ranged request (the reads of the end of the
    archive, for its directory, excepted)."""
    import io
    import zipfile

    infos = sorted(
        zipfile.ZipFile(io.BytesIO(srv.archive)).infolist(), key=lambda i: i.header_offset
    )
    out = {}
    for start, end in srv.member_ranges():
        if end == len(srv.archive):
            continue
        out[(start, end)] = [i.filename for i in infos if start <= i.header_offset < end]
    return out


def test_fetches_only_the_selected_shards_members(tmp_path, server, token, nih_files):
    select = selector(shards=("images_002",))
    raw, out = run(tmp_path, server, select, method="zip")
    names = select.selection.images()
    assert_mirror(raw, nih_files, names)
    # Selection on the real format: shard membership by file name (docs/architecture.md, "Data
    # sources"; patient 1335 spans images_001/002: only its _007, _008 are in images_002),
    # patients never in two splits, "No Finding" only in train/val.
    assert {nih.shard_of(n) for n in names} == {"images_002"}
    p1335 = [n for n in names if n.startswith("00001335_")]
    assert p1335 and all(n >= "00001335_007.png" for n in p1335)
    sel = select.selection
    assert not set(sel.train.patient_id) & set(sel.test.patient_id)
    assert not set(sel.val.patient_id) & set(sel.test.patient_id)
    assert set(sel.train.findings) | set(sel.val.findings) == {nih.NO_FINDING}
    # Only the needed members crossed the wire: every ranged request covers needed members only.
    needed = set(names and [nih.image_relpath(n) for n in names]) | set(nih.METADATA_FILES)
    covered = [m for ms in member_of_range(server).values() for m in ms]
    assert covered and set(covered) <= needed
    assert server.ranged_bytes("archive") < 0.3 * len(server.archive)
    assert out["bytes_transferred"] == server.ranged_bytes("archive")
    # The archive's signed URL came from the SDK's own download_dataset: one redirect followed,
    # the archive opened and closed after its headers, then only ranges of it.
    downloads = [r for r in server.requests("api") if r.get("api") == "DownloadDataset"]
    assert len(downloads) == 1 and downloads[0]["status"] == 302
    assert len(server.requests("archive", 200)) == 1
    # The real client library talked to the API; the download host never saw credentials.
    api = server.requests("api")
    assert {r["path"].rsplit("/", 1)[-1] for r in api} == {"ListDatasetFiles", "DownloadDataset"}
    assert all(r["authorization"] for r in api)
    assert not any(r["authorization"] for r in server.requests("archive"))


def provenance(tmp_path: Path) -> dict[str, dict]:
    """The cache's record of where each transferred file came from, by path."""
    log = tmp_path / "cache" / "nih-chest-xrays" / "data" / "latest" / "provenance.jsonl"
    return {r["path"]: r for r in map(json.loads, log.read_text().splitlines())}


def test_manifest_records_what_was_fetched(tmp_path, server, token, nih_files):
    raw, out = run(tmp_path, server, method="zip")
    man = json.loads((raw / "fetch_manifest.json").read_text())
    assert man["source"] == "kaggle" and man["dataset"] == "nih-chest-xrays/data"
    assert set(man) == {"source", "dataset", "version", "n_images", "files"}
    files = man["files"]
    assert len(files) == out["n_images"] + 4
    for row in files:
        data = nih_files[row["path"]]
        assert row["size"] == len(data) and row["crc32"] == f"{zlib.crc32(data):08x}"
        assert set(row) == {"path", "size", "crc32"}
    # How is the summary's and the cache's business: printed by the stage, logged in the cache.
    assert out["archive"]["size"] == len(server.archive) and out["method"] == "zip"
    for rel, rec in provenance(tmp_path).items():
        assert (
            rec["member"] == rel and "?" not in rec["source"] and "Signature" not in rec["source"]
        )
    runs = tmp_path / "cache" / "nih-chest-xrays" / "data" / "latest" / "fetches.jsonl"
    assert json.loads(runs.read_text().splitlines()[-1])["n_transferred"] == len(files)


def test_manifest_does_not_depend_on_how_the_files_came(tmp_path, home, token, nih_files):
    """Archive ranges, single files, or the cache: the same images give the same data/raw
    manifest, so a second machine that fetches them does not rerun what depends on them."""
    names = sorted(n.rsplit("/", 1)[-1] for n in nih_files if n.startswith("images_003/"))[:3]
    with FakeKaggle(nih_files) as srv:
        raw_zip, out_zip = run(tmp_path / "a", srv, fixed(names), method="zip")
        raw_files, out_files = run(tmp_path / "b", srv, fixed(names), method="files")
        raw_cache, out_cache = run(tmp_path / "b", srv, fixed(names), name="again")
    assert (out_zip["method"], out_files["method"], out_cache["n_transferred"]) == (
        "zip",
        "files",
        0,
    )
    manifests = {
        p.joinpath("fetch_manifest.json").read_bytes() for p in (raw_zip, raw_files, raw_cache)
    }
    assert len(manifests) == 1


def test_rerun_transfers_no_image_bytes(tmp_path, server, token, nih_files):
    select = selector()
    run(tmp_path, server, select, method="zip")
    server.reset_counters()
    raw2, out = run(tmp_path, server, select, name="raw2", method="zip")
    assert_mirror(raw2, nih_files, select.selection.images())
    assert out["n_transferred"] == 0 and server.member_ranges() == [
        (len(server.archive) - 16384, len(server.archive))
    ]
    assert (raw2 / "fetch_manifest.json").read_bytes() == (
        tmp_path / "raw" / "fetch_manifest.json"
    ).read_bytes()
    # A wider selection transfers only the new shard's members.
    server.reset_counters()
    wider = selector(shards=("images_002", "images_003"))
    raw3, out = run(tmp_path, server, wider, name="raw3", method="zip")
    assert_mirror(raw3, nih_files, wider.selection.images())
    fetched = {m for ms in member_of_range(server).values() for m in ms}
    assert fetched and all(m.startswith("images_003/") for m in fetched)


def test_small_selection_uses_single_files(tmp_path, home, token, nih_files):
    names = sorted(n.rsplit("/", 1)[-1] for n in nih_files if n.startswith("images_003/"))[:3]
    with FakeKaggle(nih_files, zipped_files=(nih.DATA_ENTRY,)) as srv:
        raw, out = run(tmp_path, srv, fixed(names))
        assert_mirror(raw, nih_files, names)  # Data_Entry came zipped and was unwrapped
        assert srv.requests("archive") == [] and len(srv.requests("files", 200)) == 4 + 3
        assert out["method"] == "files"


def test_single_file_404_falls_back_to_the_archive(tmp_path, home, token, nih_files):
    names = sorted(n.rsplit("/", 1)[-1] for n in nih_files if n.startswith("images_003/"))[:3]
    missing = nih.image_relpath(names[1])
    with FakeKaggle(nih_files, missing_files=(missing,)) as srv:
        raw, out = run(tmp_path, srv, fixed(names), method="files")
        assert_mirror(raw, nih_files, names)
        rows = provenance(tmp_path)
        assert rows[missing]["member"] == missing and "archive.zip" in rows[missing]["source"]
        assert rows[nih.image_relpath(names[0])]["member"] is None
        assert out["method"] == "files+zip"


def test_throttled_single_files_switch_to_the_archive(tmp_path, home, token, nih_files):
    names = sorted(n.rsplit("/", 1)[-1] for n in nih_files if n.startswith("images_004/"))[:8]
    with FakeKaggle(nih_files, per_file_quota=6) as srv:
        raw, out = run(tmp_path, srv, fixed(names), method="files", workers=1)
        assert_mirror(raw, nih_files, names)
        assert len(srv.requests("api", 429)) == 1  # one 429, then no more single-file requests
        assert len(srv.requests("files", 200)) == 6 and out["method"] == "files+zip"


def test_rate_limit_retry_after_is_honoured(tmp_path, server, token, nih_files, monkeypatch):
    slept: list[float] = []
    real_policy = http.RetryPolicy

    def recording_policy(*args, **kwargs) -> http.RetryPolicy:
        """The fetch's own policy, its sleeps recorded (and slept)."""

        def sleep(seconds: float) -> None:
            slept.append(seconds)
            time.sleep(seconds)

        return real_policy(*args, sleep=sleep, **kwargs)

    monkeypatch.setattr(http, "RetryPolicy", recording_policy)
    server.inject("archive", "status", status=429, retry_after="1", count=1)
    raw, out = run(tmp_path, server, method="zip")
    assert slept and max(slept) >= 1.0, slept  # max_backoff is 0.01: only Retry-After waits 1 s
    assert len(server.requests("archive", 429)) == 1 and out["retries"] == 1


def test_server_errors_drops_and_corruption_are_survived(tmp_path, nih_files, token):
    select = selector()
    with FakeKaggle(nih_files, chunk=256) as srv:
        srv.inject("api", "status", status=503, count=1, api_method="DownloadDataset")
        srv.inject("archive", "status", status=500, count=2)
        srv.inject("archive", "drop", count=2, after_bytes=100, skip=2)
        srv.inject("archive", "corrupt", count=1, skip=3)
        raw, out = run(tmp_path, srv, select, method="zip", workers=1)
        assert_mirror(raw, nih_files, select.selection.images())
        assert out["retries"] == 6


def test_persistent_failure_is_reported_clearly(tmp_path, server, token, nih_files):
    run(tmp_path, server, method="zip", name="warm")  # metadata and directory cached
    server.inject("archive", "status", status=500, count=100, skip=1)
    with pytest.raises(
        http.RetriesExhausted, match=r"giving up after 3 attempt\(s\).*HTTP 500"
    ) as ei:
        run(tmp_path, server, selector(shards=("images_003",)), method="zip", max_retries=2)
    assert DEFAULT_TOKEN not in str(ei.value) and "Signature" not in str(ei.value)


def test_rejected_credentials_say_where_to_put_them(tmp_path, server, home, monkeypatch):
    monkeypatch.setenv("KAGGLE_API_TOKEN", "wrong-token-1234567")
    with pytest.raises(credentials.CredentialsError) as ei:
        run(tmp_path, server)
    msg = str(ei.value)
    assert "rejected" in msg and "KAGGLE_API_TOKEN" in msg and "~/.kaggle/access_token" in msg
    assert "kaggle.json" in msg and "wrong-token-1234567" not in msg
    assert "\n" not in msg and 'docs/real-data.md, "Credentials"' in msg
    assert [r["status"] for r in server.requests("api")] == [401]


def test_missing_credentials_stop_before_any_request(tmp_path, server, home):
    with pytest.raises(credentials.CredentialsError, match="No Kaggle credentials found") as ei:
        run(tmp_path, server)
    assert "KAGGLE_USERNAME" in str(ei.value) and server.log == []
    assert "\n" not in str(ei.value)


@pytest.mark.parametrize(
    "content", ['{"username": "u", "key": "not-json-secret-42"', '{"username": "u", "key": " "}']
)
def test_a_broken_key_file_is_named_and_never_echoed(tmp_path, server, home, content):
    (home / ".kaggle").mkdir()
    (home / ".kaggle" / "kaggle.json").write_text(content)
    with pytest.raises(credentials.CredentialsError, match=r"kaggle\.json: ") as ei:
        run(tmp_path, server)
    msg = str(ei.value)
    assert "\n" not in msg and "not-json-secret-42" not in msg and "KAGGLE_API_TOKEN" in msg
    assert server.log == []


@pytest.mark.parametrize("where", ["kaggle.json", "config_dir", "env", "access_token"])
def test_credentials_from_standard_places(tmp_path, server, home, monkeypatch, where, nih_files):
    kj = json.dumps({"username": DEFAULT_USER, "key": DEFAULT_KEY})
    if where == "kaggle.json":
        (home / ".kaggle").mkdir()
        (home / ".kaggle" / "kaggle.json").write_text(kj)
    elif where == "config_dir":
        (tmp_path / "conf").mkdir()
        (tmp_path / "conf" / "kaggle.json").write_text(kj)
        monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "conf"))
    elif where == "env":
        monkeypatch.setenv("KAGGLE_USERNAME", DEFAULT_USER)
        monkeypatch.setenv("KAGGLE_KEY", DEFAULT_KEY)
    else:
        (home / ".kaggle").mkdir()
        (home / ".kaggle" / "access_token").write_text(DEFAULT_TOKEN + "\n")
    names = sorted(n.rsplit("/", 1)[-1] for n in nih_files if n.startswith("images_003/"))[:2]
    raw, _ = run(tmp_path, server, fixed(names))
    assert_mirror(raw, nih_files, names)


@pytest.mark.parametrize("mode", ["token", "legacy"])
def test_secrets_never_reach_files_or_logs(
    tmp_path, server, home, monkeypatch, caplog, capfd, mode
):
    secret = DEFAULT_TOKEN if mode == "token" else DEFAULT_KEY
    if mode == "token":
        monkeypatch.setenv("KAGGLE_API_TOKEN", DEFAULT_TOKEN)
    else:
        monkeypatch.setenv("KAGGLE_USERNAME", DEFAULT_USER)
        monkeypatch.setenv("KAGGLE_KEY", DEFAULT_KEY)
    caplog.set_level(logging.DEBUG)
    server.inject("archive", "status", status=500, count=1)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    _, summary = run(out_dir, server, method="zip")
    with pytest.raises(credentials.CredentialsError):  # a rejection message neither
        server.token, server.key = "other", "other"
        run(out_dir, server, name="raw_rejected")
    captured = capfd.readouterr()
    assert secret not in caplog.text and secret not in captured.out + captured.err
    assert secret not in json.dumps(summary)
    for p in out_dir.rglob("*"):
        if p.is_file():
            assert secret.encode() not in p.read_bytes(), p


def test_wrong_dataset_or_version_is_clear(tmp_path, server, token):
    with pytest.raises(kaggle.KaggleFetchError, match="not found"):
        run(tmp_path, server, dataset="nih-chest-xrays/nope")
    with pytest.raises(kaggle.KaggleFetchError, match="v7 not found"):
        run(tmp_path, server, version=7)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("method", "torrent"),
        ("workers", 0),
        ("version", 0),
        ("endpoint", "ftp://127.0.0.1"),
        ("dataset", "nih-chest-xrays"),
    ],
)
def test_bad_params_are_refused_by_the_schema(key, value):
    with pytest.raises(ValidationError, match=key):
        KaggleParams(**{key: value})


CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from imgae_dx.config import KaggleParams
    from imgae_dx.data.sources import kaggle
    names = json.loads(Path(sys.argv[1]).read_text())
    params = KaggleParams(endpoint=sys.argv[4], method="zip", workers=1, max_backoff=0.01)
    kaggle.fetch(Path(sys.argv[2]), params, select=lambda d: names, cache_dir=Path(sys.argv[3]))
    """
)


def test_killed_fetch_resumes_without_refetching(tmp_path, token, nih_files):
    # Every other image of two shards: many separate runs, so the kill lands between runs.
    names = sorted(
        n.rsplit("/", 1)[-1] for n in nih_files if n.startswith(("images_002/", "images_003/"))
    )[::2]
    (tmp_path / "names.json").write_text(json.dumps(names))
    (tmp_path / "child.py").write_text(CHILD)
    cache, raw = tmp_path / "cache", tmp_path / "raw"
    with FakeKaggle(nih_files, chunk=64) as srv:
        # The archive opened for its signed URL (closed unread), its tail, 2 metadata runs and 4
        # image runs pass; the 5th image run stalls mid-body.
        srv.inject("archive", "stall", after_bytes=200, skip=8)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        proc = subprocess.Popen(
            [
                sys.executable,
                str(tmp_path / "child.py"),
                str(tmp_path / "names.json"),
                str(raw),
                str(cache),
                srv.endpoint,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        files_dir = cache / "nih-chest-xrays" / "data" / "latest" / "files"
        try:
            assert srv.stalled.wait(timeout=40), "the child never reached the stalled request"
            deadline = time.monotonic() + 20
            while not list(files_dir.rglob("*.part")) and time.monotonic() < deadline:
                time.sleep(0.02)  # until the child has written the first bytes of the member
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        done = {p.relative_to(files_dir).as_posix() for p in files_dir.rglob("*.png")}
        parts = [p for p in files_dir.rglob("*.part")]
        assert len(done) == 4 and len(parts) == 1  # four complete, one cut short under a temp name
        for rel in done:
            assert (files_dir / rel).read_bytes() == nih_files[rel]
        # raw_dir (a temp dir the pipeline swaps in) holds nothing partial either.
        for p in raw.rglob("*"):
            if p.is_file():
                assert p.read_bytes() == nih_files[p.relative_to(raw).as_posix()]

        srv.reset_counters()
        raw2, out = run(tmp_path, srv, fixed(names), name="raw2", method="zip")
        assert_mirror(raw2, nih_files, names)
        refetched = {m for ms in member_of_range(srv).values() for m in ms}
        assert not refetched & done and not refetched & set(nih.METADATA_FILES)
        assert out["n_transferred"] == len(names) - 4
        assert not list(files_dir.rglob("*.part"))


# -- OAuth: the login `kaggle auth login` leaves in ~/.kaggle/credentials.json ---------------------
def _oauth_file(home: Path, refresh_token: str = DEFAULT_REFRESH_TOKEN) -> Path:
    (home / ".kaggle").mkdir(exist_ok=True)
    path = home / ".kaggle" / "credentials.json"
    path.write_text(json.dumps({"refresh_token": refresh_token, "username": DEFAULT_USER}))
    path.chmod(0o600)
    return path


def test_oauth_login_is_used_and_its_tokens_never_printed(
    tmp_path, server, home, nih_files, caplog, capfd
):
    path = _oauth_file(home)
    caplog.set_level(logging.DEBUG)
    names = sorted(n.rsplit("/", 1)[-1] for n in nih_files if n.startswith("images_003/"))[:2]
    raw, out = run(tmp_path, server, fixed(names))
    assert_mirror(raw, nih_files, names)
    exchanges = [r for r in server.requests("api") if r.get("api") == "GenerateAccessToken"]
    assert len(exchanges) == 1 and not exchanges[0]["authorization"]
    saved = json.loads(path.read_text())  # kagglesdk keeps the access token, as the CLI does
    assert saved["access_token"] in server.oauth_tokens
    printed = caplog.text + "".join(capfd.readouterr()) + json.dumps(out)
    for d in (raw, tmp_path / "cache"):  # the manifest, the cache's logs
        printed += "".join(p.read_text(errors="replace") for p in d.rglob("*.json*"))
    for secret in (DEFAULT_REFRESH_TOKEN, saved["access_token"]):
        assert secret not in printed
    # A second fetch reuses the saved access token: no new exchange.
    server.reset_counters()
    run(tmp_path, server, fixed(names), name="raw2")
    assert not [r for r in server.requests("api") if r.get("api") == "GenerateAccessToken"]


def test_oauth_token_expiring_mid_fetch_is_renewed(tmp_path, home, nih_files):
    _oauth_file(home)
    select = selector()
    with FakeKaggle(nih_files) as srv:
        srv.oauth_expire_after = 2  # the token expires after ListDatasetFiles + one more call
        raw, _ = run(tmp_path, srv, select, method="files", workers=1)
        assert_mirror(raw, nih_files, select.selection.images())
        api = srv.requests("api")
        assert [r["status"] for r in api if r.get("api") == "GenerateAccessToken"] == [200, 200]
        assert len([r for r in api if r["status"] == 401]) == 1


def test_a_revoked_oauth_login_says_to_log_in_again(tmp_path, server, home):
    path = _oauth_file(home, refresh_token="KGRT_revoked_secret_42")
    with pytest.raises(credentials.CredentialsError) as ei:
        run(tmp_path, server)
    msg = str(ei.value)
    assert "kaggle auth login" in msg and str(path) in msg and "\n" not in msg
    assert "KGRT_revoked_secret_42" not in msg
    # The check stage finds the login without sending anything.
    server.reset_counters()
    found = credentials.find(server.endpoint, exchange=False)
    assert found.kind == "OAuth login" and server.log == []
    path.write_text('{"refresh_token": ')  # cut short
    with pytest.raises(credentials.CredentialsError, match="not a valid OAuth credentials file"):
        credentials.find(server.endpoint, exchange=False)
