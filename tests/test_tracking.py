from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from imgae_dx import tracking
from imgae_dx.errors import UserError
from imgae_dx.paths import repo_root
from tests.conftest import REPO, make_params


def test_repo_root_inside_a_queued_experiment_copy(tmp_path):
    run_dir = tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "tmpabc123"
    run_dir.mkdir(parents=True)
    assert repo_root(run_dir) == tmp_path / "repo"


def test_default_uri_is_absolute_sqlite_in_the_repo(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.chdir(tmp_path)
    uri = tracking.tracking_uri()
    assert uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"


def test_run_logs_stage_tags_params_and_metrics_without_secrets(monkeypatch, tmp_path):
    db = tmp_path / "m.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    monkeypatch.setenv("DVC_EXP_NAME", "exp-x")
    params = make_params(mlflow={"enabled": True, "experiment": "t"})
    with tracking.start_run("train@ae", params) as run:
        assert run.active
        run.log_params({"train": {"lr": 0.001}, "kaggle": {"api_token": "SECRET123"}})
        run.log_metrics({"auroc": 0.7, "ci": [0.6, 0.8], "nan": float("nan")}, step=1)
    con = sqlite3.connect(db)
    tags = dict(con.execute("select key, value from tags"))
    params_logged = dict(con.execute("select key, value from params"))
    metrics = {r[0] for r in con.execute("select key from metrics")}
    con.close()
    assert tags["dvc.stage"] == "train@ae" and tags["dvc.exp_name"] == "exp-x"
    assert params_logged["train.lr"] == "0.001"
    assert "SECRET123" not in str(params_logged)
    assert metrics == {"auroc"}


def test_disabled_tracking_writes_nothing(monkeypatch, tmp_path):
    db = tmp_path / "m.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    with tracking.start_run("report", make_params(mlflow={"enabled": False})) as run:
        assert not run.active
        run.log_metrics({"auroc": 0.5})
    assert not db.exists()


# ---- an unusable store is found out by one probe and one line ------------------------------------
# No timed assertion: what made a dead store cost minutes was MLflow retrying (7 HTTP retries with
# backoff, SQLAlchemy reconnecting); the tests count what the stage asked of the store instead.


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def blackhole():
    """A port whose connections are accepted (by the kernel's backlog) and never answered."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    yield f"http://127.0.0.1:{s.getsockname()[1]}"
    s.close()


class StoreCalls:
    """What a stage asked of its store, recorded by spies around the real functions: the
    probes of :func:`tracking.local_problem`, the MLflow client methods called, and the TCP
    connections opened (each HTTP attempt opens one: a retry is another)."""

    def __init__(self) -> None:
        self.probes: list[str] = []
        self.mlflow: list[str] = []
        self.connects: list[object] = []

    def connections_to(self, uri: str) -> int:
        parts = urlsplit(uri)
        return sum(a == (parts.hostname, parts.port) for a in self.connects)


@pytest.fixture
def store_calls(monkeypatch) -> StoreCalls:
    import mlflow

    calls = StoreCalls()
    real_probe, real_connect = tracking.local_problem, socket.socket.connect

    def probe(uri: str):
        calls.probes.append(uri)
        return real_probe(uri)

    def connect(sock: socket.socket, address) -> None:
        calls.connects.append(address)
        return real_connect(sock, address)

    class Client(mlflow.MlflowClient):
        def __init__(self, *args, **kwargs) -> None:
            calls.mlflow.append("MlflowClient")
            super().__init__(*args, **kwargs)

        def __getattribute__(self, name: str):
            attr = super().__getattribute__(name)
            if name.startswith("_") or not callable(attr):
                return attr

            def called(*args, **kwargs):
                calls.mlflow.append(name)
                return attr(*args, **kwargs)

            return called

    monkeypatch.setattr(tracking, "local_problem", probe)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(mlflow, "MlflowClient", Client)
    return calls


def _logged_run(params, caplog) -> tuple[tracking.Run, list[str]]:
    caplog.clear()
    with tracking.start_run("train@ae", params) as run:
        run.log_params({"train": {"lr": 0.001}})
        run.log_metrics({"auroc": 0.7}, step=1)
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    return run, warned


#: The MLflow calls of a probe: its client, then one request.
PROBE_REQUEST = ["MlflowClient", "get_experiment_by_name"]


def assert_one_probe_no_retry(calls: StoreCalls, uri: str, mlflow_calls: list[str]) -> None:
    """The store was probed once: ``mlflow_calls`` and nothing after (no logging call), over
    at most one connection (no retry)."""
    assert calls.probes == [uri]
    assert calls.mlflow == mlflow_calls
    expected = 1 if uri.startswith("http") else 0
    assert calls.connections_to(uri) == expected, calls.connects


def _sqlite_file_not_a_dir(tmp_path: Path) -> str:
    (tmp_path / "afile").write_text("x")
    return f"sqlite:///{tmp_path / 'afile' / 'mlflow.db'}"


def _sqlite_not_a_database(tmp_path: Path) -> str:
    (tmp_path / "mlflow.db").write_text("not a database, " * 100)
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _file_store_under_a_file(tmp_path: Path) -> str:
    (tmp_path / "afile").write_text("x")
    return f"file://{tmp_path / 'afile' / 'mlruns'}"


@pytest.mark.parametrize(
    ("make_uri", "mlflow_calls"),
    [
        pytest.param(
            lambda tmp_path: f"http://127.0.0.1:{_free_port()}", PROBE_REQUEST, id="dead-port"
        ),
        pytest.param(
            lambda tmp_path: f"http://user:s3cret-pw@127.0.0.1:{_free_port()}/?token=s3cret-q",
            PROBE_REQUEST,
            id="dead-port-with-secrets",
        ),
        # Found by the standard library: MLflow (and SQLAlchemy's retries) never touched.
        pytest.param(_sqlite_file_not_a_dir, [], id="sqlite-under-a-file"),
        pytest.param(_sqlite_not_a_database, [], id="sqlite-not-a-db"),
        pytest.param(_file_store_under_a_file, [], id="file-under-a-file"),
        pytest.param(
            lambda tmp_path: f"file://{tmp_path / 'mlruns'}",
            ["MlflowClient"],
            id="file-store-refused-by-mlflow",
        ),
    ],
)
def test_an_unusable_store_is_one_probe_one_warning_and_no_logging(
    make_uri, mlflow_calls, monkeypatch, tmp_path, caplog, capfd, store_calls
):
    uri = make_uri(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    run, warned = _logged_run(make_params(), caplog)
    assert_one_probe_no_retry(store_calls, uri, mlflow_calls)
    assert not run.active
    assert len(warned) == 1, warned
    shown = uri.replace("user:s3cret-pw@", "").split("?")[0]
    assert warned[0].startswith(f"MLflow store {shown}: ") and "logging is off" in warned[0]
    assert "s3cret" not in warned[0]
    assert "Traceback" not in capfd.readouterr().err


def test_a_server_that_never_answers_is_waited_for_once(
    blackhole, monkeypatch, caplog, store_calls
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", blackhole)
    run, warned = _logged_run(make_params(), caplog)
    assert_one_probe_no_retry(store_calls, blackhole, PROBE_REQUEST)
    assert not run.active
    assert warned == [
        f"MLflow store {blackhole}: did not answer in time; logging is off for this stage "
        "(start the server or point MLFLOW_TRACKING_URI at a running one, "
        "or set mlflow.enabled: false)"
    ]


def test_required_turns_an_unusable_store_into_a_user_error(monkeypatch, store_calls):
    port = _free_port()
    uri = f"http://me:s3cret-pw@127.0.0.1:{port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    params = make_params(mlflow={"required": True})
    entered = False
    with pytest.raises(UserError) as e:
        with tracking.start_run("score@ae", params):
            entered = True
    assert_one_probe_no_retry(store_calls, uri, PROBE_REQUEST)
    assert not entered
    msg = str(e.value)
    assert msg.startswith(f"MLflow store http://127.0.0.1:{port}: refused the connection")
    assert "mlflow.required" in msg and "s3cret" not in msg and "\n" not in msg


# Permissions need a real unprivileged process: root writes through them. As root the scenario
# runs without the capabilities that override file permissions (capsh, from libcap).
_UNPRIVILEGED_SCRIPT = """
import sys, yaml, mlflow
from imgae_dx import config, tracking
raw = yaml.safe_load(open(sys.argv[1]))
params = config.validate(config.apply_overlay(raw, {"mlflow": {"experiment": "t"}}))
probes, clients = [], []
real_probe = tracking.local_problem
def probe(uri):
    probes.append(uri)
    return real_probe(uri)
class Client(mlflow.MlflowClient):
    def __init__(self, *args, **kwargs):
        clients.append(args)
        super().__init__(*args, **kwargs)
tracking.local_problem, mlflow.MlflowClient = probe, Client
with tracking.start_run("train@ae", params) as run:
    run.log_metrics({"auroc": 0.7})
print(len(probes), len(clients), run.active)
"""


def _run_unprivileged(uri: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", _UNPRIVILEGED_SCRIPT, str(REPO / "params.yaml")]
    if os.geteuid() == 0:
        if shutil.which("capsh") is None:
            pytest.skip("running as root without capsh: file permissions cannot be tested")
        drop = "--drop=cap_dac_override,cap_dac_read_search,cap_fowner"
        cmd = ["capsh", drop, "--", "-c", 'exec "$@"', "unprivileged", *cmd]
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)


@pytest.mark.parametrize("case", ["read-only-directory", "read-only-file"])
def test_an_unwritable_sqlite_store_is_found_without_mlflow_and_one_line(case, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    db = store / "mlflow.db"
    if case == "read-only-file":
        sqlite3.connect(db).execute("create table t (x)").connection.close()
        db.chmod(0o444)
    else:
        store.chmod(0o555)
    uri = f"sqlite:///{db}"
    try:
        out = _run_unprivileged(uri)
    finally:
        store.chmod(0o755)
    assert out.returncode == 0, out.stderr
    # One probe by the standard library; MLflow (whose SQLAlchemy retries for minutes) untouched.
    probes, clients, active = out.stdout.split()
    assert (probes, clients, active) == ("1", "0", "False"), out.stdout
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"MLflow store {uri}: ") and "logging is off" in lines[0]
    assert (
        "is read-only" in lines[0] if case == "read-only-file" else "permission denied" in lines[0]
    )


# ---- runs end, even when their process does not --------------------------------------------------
def _runs(db: Path) -> dict[str, str]:
    """The stage runs (not their parents) of store ``db``: name -> status."""
    con = sqlite3.connect(db)
    parents = f"select run_uuid from tags where key = '{tracking.PIPELINE_TAG}'"
    rows = dict(con.execute(f"select name, status from runs where run_uuid not in ({parents})"))
    con.close()
    return rows


def test_a_run_left_running_by_a_dead_process_is_ended_failed(monkeypatch, tmp_path, caplog):
    import mlflow

    db = tmp_path / "m.db"
    uri = f"sqlite:///{db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("t")
    host = socket.gethostname()
    for name, tags in {
        "killed": {tracking.HOST_TAG: host, tracking.PID_TAG: gone.stdout.strip()},
        "alive": {tracking.HOST_TAG: host, tracking.PID_TAG: str(os.getpid())},
        "elsewhere": {tracking.HOST_TAG: host + "-other", tracking.PID_TAG: gone.stdout.strip()},
    }.items():
        client.create_run(exp, run_name=name, tags=tags)
    with caplog.at_level(logging.INFO, logger="imgae_dx.tracking"):
        with tracking.start_run("report", make_params(mlflow={"experiment": "t"})) as run:
            assert run.active
    assert _runs(db) == {
        "killed": "FAILED",
        "alive": "RUNNING",
        "elsewhere": "RUNNING",
        "report": "FINISHED",
    }
    assert [r.getMessage() for r in caplog.records if "marked FAILED" in r.getMessage()] == [
        "MLflow: marked FAILED 1 run(s) left RUNNING by a process that is gone: "
        f"killed (pid {gone.stdout.strip()})"
    ]


def test_sigterm_during_a_stage_ends_its_run_failed_and_exits(monkeypatch, tmp_path):
    db = tmp_path / "m.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    params = make_params(mlflow={"experiment": "t"})
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    with pytest.raises(SystemExit) as e:
        with tracking.start_run("train@ae", params):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(100):  # the handler runs between two bytecodes of the main thread
                time.sleep(0.05)
    assert e.value.code == 128 + signal.SIGTERM
    assert _runs(db) == {"train@ae": "FAILED"}
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_http_limits_hold_during_the_stage_only_and_the_environment_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'm.db'}")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
    with tracking.start_run("report", make_params()):
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "60"
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ


class _DeadClient:
    """An MLflow client whose server went away mid-stage."""

    calls = 0

    def __getattr__(self, name):
        def call(*args, **kwargs):
            _DeadClient.calls += 1
            raise ConnectionRefusedError(111, "Connection refused")

        return call


def test_a_store_that_dies_mid_stage_is_one_warning_and_no_more_calls(caplog):
    run = tracking.Run(_DeadClient(), "run-id", "http://u:pw@host:5000/?token=abc")
    for step in range(5):
        run.log_metrics({"loss": 1.0}, step=step)
    run.end("FINISHED")
    assert _DeadClient.calls == 1 and not run.active
    assert [r.getMessage() for r in caplog.records] == [
        "MLflow store http://host:5000/: log_metrics failed: refused the connection "
        "(nothing listens there); logging is off for the rest of this stage"
    ]


# ---- one parent run per pipeline run, the experiment type, the data --------------------------
def _stage(params, stage: str, manifests: dict | None = None) -> None:
    with tracking.start_run(stage, params, run_name=stage) as run:
        assert run.active
        run.log_datasets(manifests or {})


def test_stage_runs_of_one_experiment_share_a_parent_named_after_it(monkeypatch, tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    params = make_params(mlflow={"experiment": "t"})
    for exp, stages in (("exp-a", ["train@ae", "report"]), ("exp-b", ["train@ae"])):
        monkeypatch.setenv("DVC_EXP_NAME", exp)
        for stage in stages:
            _stage(params, stage)
    monkeypatch.setenv("DVC_EXP_NAME", "exp-a")  # a rerun of exp-a finds its parent again
    _stage(params, "score@ae")
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("t")
    assert experiment.tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    runs = client.search_runs([experiment.experiment_id])
    parents = {r.info.run_name: r.info.run_id for r in runs if tracking.PIPELINE_TAG in r.data.tags}
    assert set(parents) == {"exp-a", "exp-b"}
    children = {}
    for r in runs:
        if tracking.PIPELINE_TAG not in r.data.tags:
            children.setdefault(r.data.tags["mlflow.parentRunId"], set()).add(r.info.run_name)
    assert children == {
        parents["exp-a"]: {"train@ae", "report", "score@ae"},
        parents["exp-b"]: {"train@ae"},
    }
    assert {r.info.status for r in runs} == {"FINISHED"}


def test_a_plain_repro_is_grouped_under_the_git_rev(monkeypatch, tmp_path):
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert tracking.pipeline_run_name() == "workspace"  # not a git repository
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid"}
    env |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    for args in (["init", "-q"], ["commit", "-q", "--allow-empty", "-m", "x"]):
        subprocess.run(["git", *args], cwd=tmp_path, env=env, check=True)
    rev = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=tmp_path, capture_output=True, text=True
    ).stdout.strip()
    assert tracking.pipeline_run_name() == f"{rev}-workspace"


_CONCURRENT_STAGE = """
import pathlib, sys, time
import mlflow
from imgae_dx import tracking
from tests.conftest import make_params
pathlib.Path(sys.argv[1] + ".ready").touch()
while not pathlib.Path("go").exists():  # start together, once every process has imported
    time.sleep(0.01)
with tracking.start_run(sys.argv[1], make_params(mlflow={"experiment": "t"})) as run:
    assert run.active
"""


def test_concurrent_stages_find_one_parent(monkeypatch, tmp_path):
    """Four stages of one experiment start at the same moment: one parent, four children,
    no lock error (queued experiments run stages of different experiments at once)."""
    db = tmp_path / "m.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{db}", "DVC_EXP_NAME": "exp-c"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO)])
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CONCURRENT_STAGE, f"train@m{i}"],
            cwd=tmp_path,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(4)
    ]
    while len(list(tmp_path.glob("*.ready"))) < 4 and all(p.poll() is None for p in procs):
        time.sleep(0.05)
    (tmp_path / "go").touch()
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors
    assert not any("locked" in e or "warning" in e.lower() for e in errors), errors
    con = sqlite3.connect(db)
    parents = con.execute(
        f"select value from tags where key = '{tracking.PIPELINE_TAG}'"
    ).fetchall()
    linked = con.execute("select distinct value from tags where key = 'mlflow.parentRunId'")
    n_linked = len(linked.fetchall())
    con.close()
    assert parents == [("exp-c",)] and n_linked == 1
    assert set(_runs(db)) == {f"train@m{i}" for i in range(4)}


def test_split_manifests_are_logged_as_datasets_with_their_md5(monkeypatch, tmp_path):
    import hashlib

    import mlflow

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    manifests = {}
    for name, n in (("train", 3), ("val", 2)):
        manifests[name] = tmp_path / f"{name}.csv"
        rows = "".join(f"img{i}.png,{i},0\n" for i in range(n))
        manifests[name].write_text("image,patient_id,label\n" + rows)
    _stage(make_params(mlflow={"experiment": "t"}), "train@ae", manifests)
    client = mlflow.MlflowClient(uri)
    (run,) = [r for r in client.search_runs([client.get_experiment_by_name("t").experiment_id])
              if r.info.run_name == "train@ae"]  # fmt: skip
    logged = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(logged) == {"train", "val"}
    for name, path in manifests.items():
        ds = logged[name]
        assert ds.dataset.digest == hashlib.md5(path.read_bytes()).hexdigest()
        assert json.loads(ds.dataset.profile)["num_rows"] == (3 if name == "train" else 2)
        assert [(t.key, t.value) for t in ds.tags] == [("mlflow.data.context", name)]
