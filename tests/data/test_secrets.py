"""No credential reaches output, files or MLflow, even when the server echoes it back.

A misconfigured gateway (``fake_kaggle``'s ``echo`` fault) answers Kaggle API calls with the
request's ``Authorization`` header in its JSON body (as sent, decoded to ``user:key``,
URL-encoded, slashes escaped), in response headers and in the query string of a redirect. For
each kind of credential the fetch runs through the real entry points: in-process
(``kaggle.fetch``, every logger at DEBUG, warnings recorded) and as the ``fetch`` stage command
in a copy of the repository (with and without ``--debug``). The secret is then looked for, in
every form it can travel in, in everything the user sees and in every file written.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import traceback
import warnings
import zipfile
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
import yaml

from imgae_dx.config import KaggleParams
from imgae_dx.data.sources import credentials, http, kaggle
from imgae_dx.errors import redact, register_secret
from tests.conftest import REPO, TINY_ARCH
from tests.data.fake_kaggle import FakeKaggle, tiny_nih

pytestmark = pytest.mark.timeout(120)

# "/", "+", "=", "?", ">": the URL-encoded and JSON-escaped forms differ from the secret, and
# the base64 of "echo-user:<KEY>" that HTTP basic sends holds "/" and "+".
TOKEN = "KGAT_s3cr3t/t0k3n+echo=0123456789"
USER, KEY = "echo-user", "k3y=13f0fb?>29cc>eeb"
BASIC = base64.b64encode(f"{USER}:{KEY}".encode()).decode()
KINDS = ("token", "legacy_env", "legacy_file")
CLEARED = (
    "KAGGLE_API_TOKEN",
    "KAGGLE_USERNAME",
    "KAGGLE_KEY",
    "KAGGLE_CONFIG_DIR",
    "KAGGLE_API_ENVIRONMENT",
    "KAGGLE_IAP_TOKEN",
    "KAGGLE_KERNEL_RUN_TYPE",
    "XDG_CONFIG_HOME",
)
# (API method, status, count) answered with the echo. "survived": the listing fails once; the
# first metadata file answers 503 twice, then a redirect whose query string holds the header; the
# second is refused (400) and comes from the archive. Then a refused or rejected listing, and
# download links that fail until the retries run out.
SCENARIOS = {
    "survived": [
        ("ListDatasetFiles", 500, 1),
        ("DownloadDataset", 503, 2),
        ("DownloadDataset", 302, 1),
        ("DownloadDataset", 400, 1),
    ],
    "refused": [("ListDatasetFiles", 400, 1)],
    "rejected": [("ListDatasetFiles", 401, 1)],
    "exhausted": [("DownloadDataset", 500, 100)],
}


def secret_forms(kind: str) -> set[str]:
    """The secret as it may be leaked: what is sent, decoded, URL-encoded or JSON-escaped.

    Spelled out here, not taken from :mod:`imgae_dx.errors`, so a form the redaction forgets
    is still looked for.
    """
    sent = [TOKEN] if kind == "token" else [KEY, f"{USER}:{KEY}", BASIC]
    forms = set()
    for s in sent:
        forms |= {s, quote(s, safe=""), quote_plus(s), s.replace("/", "\\/")}
    return forms


def leaks(text: str | bytes, kind: str) -> list[str]:
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    return sorted(f for f in secret_forms(kind) if f in text)


def file_leaks(root: Path, kind: str) -> dict[str, list[str]]:
    """Every file under ``root`` with a form of the secret; zips (``.npz``, ``.pt``) member by
    member, decompressed."""
    found = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        texts = [p.read_bytes()]
        if zipfile.is_zipfile(p):
            with zipfile.ZipFile(p) as zf:
                texts += [zf.read(m) for m in zf.namelist()]
        if hit := sorted({f for t in texts for f in leaks(t, kind)}):
            found[str(p.relative_to(root))] = hit
    return found


def echo(srv: FakeKaggle, scenario: str) -> None:
    srv.clear_faults()
    for method, status, count in SCENARIOS[scenario]:
        srv.inject("api", "echo", status=status, count=count, api_method=method)


@pytest.fixture(scope="module")
def nih_files() -> dict[str, bytes]:
    return tiny_nih()


@pytest.fixture
def server(nih_files):
    with FakeKaggle(nih_files, token=TOKEN, username=USER, key=KEY) as srv:
        yield srv


def use_credentials(kind: str, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials of ``kind`` and nothing else, in a fresh ``home``."""
    (home / ".kaggle").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    for v in CLEARED:
        monkeypatch.delenv(v, raising=False)
    if kind == "token":
        monkeypatch.setenv("KAGGLE_API_TOKEN", TOKEN)
    elif kind == "legacy_env":
        monkeypatch.setenv("KAGGLE_USERNAME", USER)
        monkeypatch.setenv("KAGGLE_KEY", KEY)
    else:
        kj = home / ".kaggle" / "kaggle.json"
        kj.write_text(json.dumps({"username": USER, "key": KEY}))
        kj.chmod(0o600)


@pytest.fixture(params=KINDS)
def kind(request, tmp_path, monkeypatch) -> str:
    """Each kind of credentials in turn, in a HOME outside the directories scanned for leaks."""
    use_credentials(request.param, tmp_path / "home", monkeypatch)
    return request.param


def test_the_secrets_have_forms_worth_testing():
    assert "/" in BASIC and "+" in BASIC
    assert all(quote(s, safe="") != s for s in (TOKEN, KEY, BASIC))


def test_every_form_of_a_registered_secret_is_masked():
    register_secret("s3cr/t+k=y-0042", user="someone")
    pair = "someone:s3cr/t+k=y-0042"
    b64 = base64.b64encode(pair.encode()).decode()
    for form in [pair, b64, quote(b64, safe=""), quote_plus(pair), b64.replace("/", "\\/")]:
        assert "s3cr" not in redact(f"x {form} y") and form not in redact(f"x {form} y")
    # The start of a longer body: a secret cut off at its end is masked too.
    assert redact("token: s3cr/t+k", truncated=True) == "token: ***"
    assert redact("token: s3cr/t+k") == "token: s3cr/t+k"
    err = http.HTTPStatusError(500, "http://h/x?sig=1", detail='{"a":\n "s3cr\\/t+k=y-0042"}')
    assert "\n" not in str(err) and "s3cr" not in str(err) and "sig" not in str(err)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_echoed_credentials_never_surface_in_process(
    tmp_path, server, kind, scenario, caplog, capfd, nih_files
):
    for name in (None, "urllib3", "requests", "kagglesdk", "imgae_dx"):  # every logger
        caplog.set_level(logging.DEBUG, logger=name)
    echo(server, scenario)
    out = tmp_path / "out"
    names = sorted(n.rsplit("/", 1)[-1] for n in nih_files if n.startswith("images_003/"))[:2]
    params = KaggleParams(endpoint=server.endpoint, workers=1, max_backoff=0.01, max_retries=2)
    error: BaseException | None = None
    summary: dict = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            summary = kaggle.fetch(
                out / "raw", params, select=lambda d: names, cache_dir=out / "cache"
            )
        except Exception as e:  # noqa: BLE001 - inspected below
            error = e
    assert [r for r in server.requests("api") if r.get("fault") == "echo"], "nothing was echoed"

    expected = {
        "survived": None,
        "refused": kaggle.KaggleFetchError,
        "rejected": credentials.CredentialsError,
        "exhausted": http.RetriesExhausted,
    }[scenario]
    if expected is None:
        assert error is None, error
        assert (out / "raw" / "fetch_manifest.json").is_file()
    else:
        assert isinstance(error, expected), error
        assert "\n" not in str(error)  # one line, whatever the server said
    seen = {
        "logs": caplog.text,
        "stdout+stderr": "".join(capfd.readouterr()),
        "warnings": "".join(
            f"{w.message}\n{warnings.formatwarning(w.message, w.category, w.filename, w.lineno)}"
            for w in caught
        ),
        "summary": json.dumps(summary),
        # The exception objects themselves, chain included, as any caller would print them.
        "exception": "".join(traceback.format_exception(error)) if error else "",
    }
    found = {where: hit for where, text in seen.items() if (hit := leaks(text, kind))}
    found.update(file_leaks(out, kind))
    assert not found, f"{kind} leaked: {found}"


def _workspace(root: Path, endpoint: str) -> Path:
    """A copy of the stage scripts with a params.yaml that fetches from the fake Kaggle."""
    ws = root / "ws"
    shutil.copytree(REPO / "stages", ws / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO / "dvc.yaml", ws / "dvc.yaml")  # marks the repository root
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    data = params["data"]
    data.update(source="kaggle", shards=["images_002"], image_size=32)
    data.update(max_test_normal=10, max_test_abnormal=10)
    data["kaggle"].update(endpoint=endpoint, workers=1, max_backoff=0.01, max_retries=2)
    params["models"] = ["ae"]
    params["arch"]["ae"] = {**TINY_ARCH["ae"], "epochs": 1}
    params["train"].update(batch_size=8, num_threads=1)
    params["report"]["bootstrap"] = 10
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return ws


def _stage(ws: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{ws / 'mlflow.db'}"
    env.pop("IMGAE_DX_DEBUG", None)
    return subprocess.run(
        [sys.executable, *args], cwd=ws, env=env, capture_output=True, text=True, timeout=100
    )


# (scenario, --debug): failures with and without traces (before anything is cached: the
# exhausted run must ask for download links), then a fetch that survives the echoes.
RUNS = [("refused", False), ("refused", True), ("exhausted", True), ("survived", False)]


def test_echoed_credentials_never_surface_from_the_stage(tmp_path, server, kind):
    ws = _workspace(tmp_path, server.endpoint)
    found: dict[str, list[str]] = {}
    for scenario, debug in RUNS:
        echo(server, scenario)
        server.reset_counters()
        proc = _stage(ws, "stages/fetch.py", *(["--debug"] if debug else []))
        label = f"{scenario}{' --debug' if debug else ''}"
        assert [r for r in server.requests("api") if r.get("fault") == "echo"], label
        if scenario == "survived":
            assert proc.returncode == 0, proc.stderr[-2000:]
            assert json.loads(proc.stdout)["source"] == "kaggle"
        else:
            assert proc.returncode == 1, proc.stderr[-2000:]
            last = proc.stderr.strip().splitlines()[-1]
            assert last.startswith("error: "), proc.stderr[-2000:]
            if debug:
                assert "Traceback" in proc.stderr
            else:  # one line, and it is the whole of stderr
                assert proc.stderr.strip() == last
        for stream in ("stdout", "stderr"):
            if hit := leaks(getattr(proc, stream), kind):
                found[f"{label}: {stream}"] = hit
    found.update(file_leaks(ws, kind))
    assert (ws / "data" / "raw" / "fetch_manifest.json").is_file()
    assert not found, f"{kind} leaked: {found}"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_nothing_secret_reaches_the_mlflow_store(tmp_path, server, monkeypatch):
    """Every stage runs with the credentials in its environment (as under ``dvc repro``);
    MLflow's store, the reports and every other file stay clean."""
    kind = "legacy_env"
    use_credentials(kind, tmp_path / "home", monkeypatch)
    ws = _workspace(tmp_path, server.endpoint)
    echo(server, "survived")
    for stage in (
        ["fetch"],
        ["split"],
        ["prepare"],
        ["train", "ae", "0"],
        ["score", "ae", "0"],
        ["report"],
    ):
        proc = _stage(ws, f"stages/{stage[0]}.py", *stage[1:])
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert not leaks(proc.stdout + proc.stderr, kind), stage
    with sqlite3.connect(ws / "mlflow.db") as con:
        stage_runs = (
            "select count(*) from runs where run_uuid in "
            "(select run_uuid from tags where key = 'dvc.stage')"
        )
        assert con.execute(stage_runs).fetchone()[0] == 3  # train, score, report (and a parent)
    assert (ws / "reports" / "report.md").is_file()
    assert not file_leaks(ws, kind)
