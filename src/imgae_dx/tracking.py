"""MLflow logging, optional: it records runs and never changes a pipeline output.

The store defaults to an absolute SQLite URI in the repository (``<repo>/mlflow.db``), so the
stages of ``dvc exp run --queue`` (which run in a temporary copy of the repository) log to the
same store as the workspace. ``MLFLOW_TRACKING_URI`` overrides it; ``mlflow.enabled: false``
turns logging off.

A store that is down costs a stage seconds, never minutes (``docs/architecture.md``,
"Tracking"):

- :func:`start_run` probes the store once, before MLflow touches it: a local store with the
  standard library (a writable directory; an existing SQLite file must be a database that
  takes a write), a database server with one TCP connection, and then every store with one
  MLflow request of at most :data:`PROBE_TIMEOUT_S` seconds and no retry. An unusable store
  is one warning line naming it, and the stage runs without logging; with
  ``mlflow.required: true`` it is a :class:`~imgae_dx.errors.UserError` instead.
- During the stage MLflow's HTTP retries and timeouts are bounded (:data:`HTTP_LIMITS`), the
  log output of MLflow, alembic and SQLAlchemy is silenced, and the first failed call is one
  warning line; a store that stops answering ends logging for the rest of the stage.
- Every run is tagged with its host and pid (:data:`HOST_TAG`, :data:`PID_TAG`). A run left
  ``RUNNING`` by a process that is gone (a stage killed by SIGKILL, a crashed machine) is
  ended ``FAILED`` by the next stage that logs to the same experiment from the same host, and
  SIGTERM during a stage ends its run ``FAILED`` before the process exits.

The stage runs of one ``dvc repro`` or ``dvc exp run`` are nested under one parent run named
after the DVC experiment (:func:`pipeline_run_name`), found or created under a file lock so
that stages never make two. The experiment is marked as model training
(:data:`EXPERIMENT_KIND_TAG`), so MLflow 3's UI opens it on the runs table, and the split
manifests a stage read are logged as MLflow datasets with their MD5 as digest
(:meth:`Run.log_datasets`).

The runs go through :class:`mlflow.MlflowClient`, not the fluent ``mlflow.start_run``: no
process-wide active run or tracking URI that a failed call could leave behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import sqlite3
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit
from urllib.request import url2pathname

from imgae_dx import paths
from imgae_dx.config import Params, dotted_items
from imgae_dx.errors import UserError, redact
from imgae_dx.paths import repo_root

log = logging.getLogger(__name__)

#: Substrings of keys that are never logged (defence in depth: no secret belongs in params).
_SECRET_MARKERS = ("token", "key", "secret", "password", "credential")

#: Seconds the probe waits for a store (the request, the TCP connection, an SQLite lock).
PROBE_TIMEOUT_S = 3
#: MLflow's HTTP settings for the probe: one request, no retry.
_PROBE_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": str(PROBE_TIMEOUT_S),
    "MLFLOW_DATABRICKS_ENDPOINT_HTTP_RETRY_TIMEOUT": str(PROBE_TIMEOUT_S),
}
#: MLflow's HTTP settings during a stage, where the environment does not set them. MLflow's
#: defaults (7 retries with exponential backoff, 120 s per request) make each call to a server
#: that stopped answering cost minutes; with these it costs about 10 s, once per stage.
HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
    "MLFLOW_DATABRICKS_ENDPOINT_HTTP_RETRY_TIMEOUT": "15",
}
#: Loggers silenced during a stage: they report each retry of a failure, with tracebacks;
#: this module reports the failure once, on one line.
_QUIET_LOGGERS = ("mlflow", "alembic", "sqlalchemy", "urllib3")
#: Default ports of the database servers MLflow can use as a store.
_DB_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}

HOST_TAG, PID_TAG = "imgae_dx.host", "imgae_dx.pid"
#: The tag that names a parent run (its value: :func:`pipeline_run_name`).
PIPELINE_TAG = "imgae_dx.pipeline_run"
#: MLflow 3's experiment type: its UI opens ``custom_model_development`` experiments on the
#: runs table rather than the GenAI overview.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
#: Seconds a stage waits for another to finish creating the parent run.
PARENT_LOCK_TIMEOUT_S = 30
#: Tags of a stage's run that its parent does not carry.
_STAGE_TAGS = ("dvc.stage", HOST_TAG, PID_TAG)

_SERVER_FIX = "start the server or point MLFLOW_TRACKING_URI at a running one"
_LOCAL_FIX = "make it writable or point MLFLOW_TRACKING_URI elsewhere"
_AUTH_FIX = "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN"


def tracking_uri() -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(repo_root() / paths.MLFLOW_DB).as_posix()}"


def _is_secret(key: str) -> bool:
    low = key.lower()
    return any(m in low for m in _SECRET_MARKERS)


# ---- what is wrong with a store ------------------------------------------------------------------
class Problem(NamedTuple):
    """Why a store cannot be used: ``what`` went wrong, what to do, and whether the store is
    unreachable (then no later call of the stage can succeed either)."""

    what: str
    todo: str
    unreachable: bool = True


def _one_line(text: object, limit: int = 160) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    s = " ".join(lines[0].split()) if lines else type(text).__name__
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def describe_failure(exc: BaseException) -> Problem:
    """A one-line :class:`Problem` for an exception raised by MLflow or the probe."""
    import requests

    for e in _causes(exc):
        if isinstance(e, ConnectionRefusedError):
            return Problem("refused the connection (nothing listens there)", _SERVER_FIX)
        if isinstance(e, socket.gaierror):
            return Problem("host not found", _SERVER_FIX)
        if isinstance(e, (TimeoutError, requests.exceptions.Timeout)):
            return Problem("did not answer in time", _SERVER_FIX)
    for e in _causes(exc):
        if isinstance(e, (requests.exceptions.ConnectionError, ConnectionError)):
            return Problem("could not be reached (the connection failed)", _SERVER_FIX)
    status = _http_status(exc)
    if status in (401, 403):
        return Problem(f"rejected the credentials (HTTP {status})", _AUTH_FIX, False)
    if status is not None and (status == 429 or status >= 500):
        return Problem(f"answered HTTP {status} (failing or overloaded)", _SERVER_FIX)
    if status is not None or "not in a valid JSON format" in str(exc):
        what = f"HTTP {status}" if status is not None else "not JSON"
        return Problem(
            f"answered, but not as an MLflow tracking server ({what})",
            "check that MLFLOW_TRACKING_URI is the server's address",
        )
    if "MLFLOW_ALLOW_FILE_STORE" in str(exc):
        return Problem(
            "MLflow refuses file stores by default",
            "use a sqlite:/// store, or set MLFLOW_ALLOW_FILE_STORE=true",
        )
    return Problem(_one_line(exc), "check the store", False)


def shown_uri(uri: str) -> str:
    """``uri`` as printed: no user-info, no query string (:func:`~imgae_dx.errors.redact`
    would keep a "?…" that swallows the punctuation after it), no registered secret."""
    return redact(uri.split("?", 1)[0])


def _http_status(exc: BaseException) -> int | None:
    """The HTTP status of a response that was not an MLflow answer (MLflow's messages: a body
    that is not an MLflow error, or retries exhausted on that status)."""
    m = re.search(r"error code (\d{3}) != 200|too many (\d{3}) error responses", str(exc))
    return int(m.group(1) or m.group(2)) if m else None


def _writable_dir_problem(path: Path) -> Problem | None:
    """Why MLflow could not create files in ``path`` (created with its parents if missing)."""
    existing = next((d for d in (path, *path.parents) if d.exists()), Path("."))
    if not existing.is_dir():
        return Problem(f"{existing} is not a directory", _LOCAL_FIX)
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        return Problem(f"cannot write in {existing} ({(e.strerror or str(e)).lower()})", _LOCAL_FIX)
    return None


def _sqlite_problem(path: Path) -> Problem | None:
    """Why MLflow could not write the SQLite store ``path``, found with the standard library:
    SQLAlchemy would print a traceback per retry and retry for minutes."""
    if not path.exists():
        return _writable_dir_problem(path.parent)
    if not path.is_file():
        return Problem("not a file", _LOCAL_FIX)
    if (problem := _writable_dir_problem(path.parent)) is not None:
        return problem  # SQLite writes its journal next to the database
    uri = f"{path.resolve().as_uri()}?mode=rw"
    try:
        con = sqlite3.connect(uri, uri=True, timeout=PROBE_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error as e:
        return Problem(f"cannot open the file ({e})", _LOCAL_FIX)
    try:
        con.execute("SELECT count(*) FROM sqlite_master")
        # A write (the file and its journal next to it), rolled back by close().
        con.execute("BEGIN IMMEDIATE")
        con.execute("CREATE TABLE imgae_dx_probe (x INTEGER)")
    except sqlite3.Error as e:
        msg = str(e)
        if "locked" in msg or "busy" in msg:
            return None  # busy, not broken: MLflow waits for the lock
        if "not a database" in msg:
            return Problem(
                "the file is not an SQLite database",
                "move it away or point MLFLOW_TRACKING_URI elsewhere",
            )
        if "readonly" in msg:
            return Problem("the file is read-only", _LOCAL_FIX)
        return Problem(f"cannot write the file ({msg})", _LOCAL_FIX)
    finally:
        con.close()
    return None


def _tcp_problem(host: str, port: int) -> Problem | None:
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError as e:
        return describe_failure(e)
    return None


def local_problem(uri: str) -> Problem | None:
    """What is wrong with the store at ``uri``, found without MLflow: a local store's
    directory or SQLite file, a database server's port. None when nothing is (or for a store
    only an MLflow request can check)."""
    m = re.fullmatch(r"sqlite(?:\+\w+)?://(/?)([^?]*)(?:\?.*)?", uri, flags=re.IGNORECASE)
    if m:
        # sqlite:///rel.db is relative, sqlite:////abs.db absolute; sqlite:// is in memory.
        path = m.group(2)
        return _sqlite_problem(Path(path)) if m.group(1) and path not in ("", ":memory:") else None
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme == "file":
        return _writable_dir_problem(Path(url2pathname(parts.path)))
    if not scheme or len(scheme) == 1:  # a path (len 1: a Windows drive letter)
        return _writable_dir_problem(Path(uri))
    base = scheme.split("+")[0]
    if base in _DB_PORTS and parts.hostname:
        try:
            port = parts.port or _DB_PORTS[base]
        except ValueError:
            return Problem("has an invalid port", "fix MLFLOW_TRACKING_URI", False)
        return _tcp_problem(parts.hostname, port)
    return None


# ---- the stage's environment ---------------------------------------------------------------------
@contextlib.contextmanager
def _environ(values: Mapping[str, str], *, override: bool) -> Iterator[None]:
    """``values`` in ``os.environ`` for the block (MLflow reads them at each call); without
    ``override`` a variable the environment sets wins."""
    saved = {k: os.environ.get(k) for k in values}
    for k, v in values.items():
        if override or k not in os.environ:
            os.environ[k] = v
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _quiet_loggers() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in _QUIET_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


@contextlib.contextmanager
def _sigterm_ends_run() -> Iterator[None]:
    """SIGTERM raises ``SystemExit(143)`` in the block, so the run ends ``FAILED`` and the
    process exits as SIGTERM asked. A handler set by someone else (or SIG_IGN) is kept."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return

    def terminate(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


# ---- runs ----------------------------------------------------------------------------------------
class Run:
    """A handle over an open MLflow run; a failed call never breaks the stage.

    The first failure is one warning line; after a failure that says the store is
    unreachable, the remaining calls of the stage are skipped.
    """

    def __init__(
        self,
        client: Any | None,
        run_id: str | None = None,
        uri: str = "",
        parent_id: str | None = None,
    ):
        self._client, self.run_id, self._uri = client, run_id, uri
        self.parent_id = parent_id
        self._warned = False

    @property
    def active(self) -> bool:
        return self._client is not None

    def _call(self, what: str, fn: str, *args: Any, **kwargs: Any) -> bool:
        """``client.<fn>(run_id, ...)`` for :meth:`<what>`; whether it succeeded."""
        if self._client is None:
            return False
        try:
            getattr(self._client, fn)(self.run_id, *args, **kwargs)
            return True
        except Exception as e:  # logging must never break a stage
            problem = describe_failure(e)
            if problem.unreachable:
                self._client = None
            if not self._warned:
                self._warned = True
                rest = "; logging is off for the rest of this stage" if problem.unreachable else ""
                log.warning(
                    "MLflow store %s: %s failed: %s%s",
                    shown_uri(self._uri),
                    what,
                    problem.what,
                    rest,
                )
            return False

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat = [
            Param(k, ("null" if v is None else str(v))[:500])
            for k, v in dotted_items(params)
            if not _is_secret(k)
        ]
        if flat:
            self._call("log_params", "log_batch", params=flat)

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        flat = {}
        for k, v in dotted_items(metrics):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if v != v:  # NaN
                continue
            flat[k.replace("[", "_").replace("]", "")] = float(v)
        if flat:
            metrics = [Metric(k, v, now, step or 0) for k, v in flat.items()]
            self._call("log_metrics", "log_batch", metrics=metrics)

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        if Path(path).exists():
            self._call("log_artifact", "log_artifact", str(path), artifact_path=artifact_path)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        flat = [RunTag(k, str(v)) for k, v in tags.items() if v is not None]
        if flat:
            self._call("set_tags", "log_batch", tags=flat)

    def log_datasets(self, splits: Mapping[str, str | os.PathLike]) -> None:
        """Log split manifests (``{"train": "data/prepared/train.csv"}``) as the run's MLflow
        datasets, context = split; a missing file is skipped."""
        if self._client is None:
            return
        from mlflow.entities import DatasetInput, InputTag

        inputs = [
            DatasetInput(manifest_dataset(name, path), [InputTag("mlflow.data.context", name)])
            for name, path in splits.items()
            if Path(path).is_file()
        ]
        if inputs:
            self._call("log_datasets", "log_inputs", datasets=inputs)
        if inputs and self.parent_id is not None and self._client is not None:
            # the parent lists every split its stages read (MLflow keeps one input per digest)
            with contextlib.suppress(Exception):
                self._client.log_inputs(self.parent_id, datasets=inputs)

    def log_model(
        self, model_dir: str | os.PathLike, artifact_path: str, name: str, *,
        tags: Mapping[str, Any] | None = None, aliases: Sequence[str] = (),
    ) -> str | None:  # fmt: skip
        """Log the MLflow model directory ``model_dir`` under ``artifact_path`` and register it
        as a new version of model ``name`` with version ``tags``, moving each of ``aliases`` to
        it; the new version, or None when logging is off or a call failed."""
        if not self._call("log_model", "log_artifacts", str(model_dir), artifact_path):
            return None
        try:
            from mlflow.exceptions import MlflowException

            try:
                self._client.create_registered_model(name)
            except MlflowException as e:
                if e.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            source = f"runs:/{self.run_id}/{artifact_path}"
            vtags = {k: str(v) for k, v in (tags or {}).items()}
            mv = self._client.create_model_version(name, source, run_id=self.run_id, tags=vtags)
            for alias in aliases:
                self._client.set_registered_model_alias(name, alias, mv.version)
            return str(mv.version)
        except Exception as e:  # registering must never break a stage
            log.warning("MLflow store %s: registering %s failed: %s", shown_uri(self._uri),
                        name, describe_failure(e).what)  # fmt: skip
            return None

    def end(self, status: str) -> None:
        """Mark the run ``status``, and its parent with it (the parent shows how the latest
        stage ended); an unreachable store leaves it to the next start's clean-up."""
        self._call("end", "set_terminated", status)
        if self.parent_id is not None and self._client is not None:
            with contextlib.suppress(Exception):
                self._client.set_terminated(self.parent_id, status)


def manifest_dataset(name: str, path: str | os.PathLike) -> Any:
    """The MLflow dataset of a split manifest: ``name``, digest = the file's MD5 (as DVC
    hashes files), source = its path in the repository, schema and row count."""
    import hashlib

    import mlflow.data
    import pandas as pd
    from mlflow.entities import Dataset

    p = Path(path)
    digest = hashlib.md5(p.read_bytes()).hexdigest()
    with warnings.catch_warnings():  # MLflow's hint on integer columns is for model signatures
        warnings.simplefilter("ignore", UserWarning)
        ds = mlflow.data.from_pandas(pd.read_csv(p), source=p.as_posix(), name=name, digest=digest)
        return Dataset(**ds.to_dict())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def end_orphaned_runs(client: Any, experiment_id: str) -> list[str]:
    """End ``FAILED`` the runs of ``experiment_id`` still ``RUNNING`` whose process (by
    :data:`HOST_TAG` and :data:`PID_TAG`) is gone from this host; their names."""
    host = socket.gethostname()
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host}'",
        max_results=1000,
    )
    ended = []
    for r in runs:
        pid = r.data.tags.get(PID_TAG, "")
        if pid.isdigit() and not _pid_alive(int(pid)):
            client.set_terminated(r.info.run_id, "FAILED")
            ended.append(f"{r.info.run_name} (pid {pid})")
    return ended


def _end_orphaned_runs_quietly(client: Any, experiment_id: str) -> None:
    """:func:`end_orphaned_runs`, one info line; a clean-up that fails leaves logging on."""
    try:
        ended = end_orphaned_runs(client, experiment_id)
    except Exception as e:
        log.debug("MLflow: ending orphaned runs failed: %s", _one_line(e))
        return
    if ended:
        log.info(
            "MLflow: marked FAILED %d run(s) left RUNNING by a process that is gone: %s",
            len(ended),
            ", ".join(ended),
        )


def _experiment_id(client: Any, name: str) -> str | Problem:
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name)
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            # Another stage created it in the meantime.
            experiment = client.get_experiment_by_name(name)
    if experiment.lifecycle_stage != "active":
        return Problem(
            f"experiment {name!r} is deleted",
            "restore it (mlflow experiments restore) or set mlflow.experiment",
            False,
        )
    if experiment.tags.get(EXPERIMENT_KIND_TAG) is None:
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return experiment.experiment_id


def pipeline_run_name() -> str:
    """The parent run of this ``dvc repro`` / ``dvc exp run``: the DVC experiment's name
    (``DVC_EXP_NAME``, set by ``dvc exp run``, queued or not), else ``<git rev>-workspace``
    (``workspace`` outside git), so every plain ``dvc repro`` of one commit shares a parent."""
    exp = os.environ.get("DVC_EXP_NAME")
    if exp:
        return exp.replace("'", "_")  # the name goes into a search filter
    import subprocess

    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        rev = ""
    return f"{rev}-workspace" if rev else "workspace"


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Serializes, per store and host, what two stages must not do at once: open a new SQLite
    store (MLflow creates its tables on first use), create the experiment, find or create a
    parent run. A stage that waits past :data:`PARENT_LOCK_TIMEOUT_S` goes on unlocked."""
    import hashlib

    from filelock import FileLock, Timeout

    key = hashlib.sha256(uri.encode()).hexdigest()[:16]
    lock = FileLock(Path(tempfile.gettempdir()) / f"imgae_dx-mlflow-{key}.lock")
    try:
        lock.acquire(timeout=PARENT_LOCK_TIMEOUT_S)
    except (Timeout, OSError) as e:  # busy, or another user's lock file
        log.debug("MLflow: store lock %s: %s; going on unlocked", lock.lock_file, e)
    try:
        yield
    finally:
        if lock.is_locked:
            lock.release()


def _find_or_create_parent(client: Any, experiment_id: str, name: str, tags: Mapping) -> str:
    """The id of the parent run ``name``, created if missing (under :func:`_store_lock`),
    marked RUNNING."""
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{PIPELINE_TAG}` = '{name}'",
        order_by=["attributes.start_time ASC"],
        max_results=1,
    )
    if found:
        client.update_run(found[0].info.run_id, status="RUNNING")
        return found[0].info.run_id
    run = client.create_run(experiment_id, run_name=name, tags={**tags, PIPELINE_TAG: name})
    return run.info.run_id


def _open(uri: str, experiment: str, run_name: str, tags: Mapping[str, Any]) -> Run | Problem:
    """Probe the store, then open the run (under :data:`HTTP_LIMITS`, loggers quiet)."""
    problem = local_problem(uri)
    if problem is not None:
        return problem
    try:
        from mlflow import MlflowClient
        from mlflow.tracking.context import registry as context_registry

        all_tags = context_registry.resolve_tags(
            {k: str(v) for k, v in tags.items() if v is not None}
        )
        parent_tags = {k: v for k, v in all_tags.items() if k not in _STAGE_TAGS}
        with _store_lock(uri):
            client = MlflowClient(uri)
            with _environ(_PROBE_LIMITS, override=True):
                # The probe: one request, no retry (a database store is opened here, once).
                client.get_experiment_by_name(experiment)
            experiment_id = _experiment_id(client, experiment)
            if isinstance(experiment_id, Problem):
                return experiment_id
            parent = _find_or_create_parent(client, experiment_id, pipeline_run_name(), parent_tags)
        _end_orphaned_runs_quietly(client, experiment_id)
        run = client.create_run(
            experiment_id, run_name=run_name, tags={**all_tags, "mlflow.parentRunId": parent}
        )
    except Exception as e:
        return describe_failure(e)
    return Run(client, run.info.run_id, uri, parent_id=parent)


@contextlib.contextmanager
def start_run(stage: str, params: Params, *, run_name: str | None = None) -> Iterator[Run]:
    """Open an MLflow run for DVC stage ``stage`` (tags: stage, DVC experiment name, git rev,
    host and pid), nested under the pipeline run's parent (:func:`pipeline_run_name`); it
    ends ``FINISHED``, or ``FAILED`` on an exception or SIGTERM, and its parent with it.

    An unusable store is one warning line and an inactive :class:`Run`, or, with
    ``mlflow.required: true``, a :class:`~imgae_dx.errors.UserError` before the block runs.
    """
    if not params.mlflow.enabled:
        yield Run(None)
        return
    uri = tracking_uri()
    tags = {
        "dvc.stage": stage,
        "dvc.exp_name": os.environ.get("DVC_EXP_NAME"),
        "dvc.exp_baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV"),
        "data.source": params.data.source,
        HOST_TAG: socket.gethostname(),
        PID_TAG: os.getpid(),
    }
    with contextlib.suppress(ImportError):
        import mlflow  # noqa: F401  (configures its loggers on import: before _quiet_loggers)
    with _quiet_loggers(), _environ(HTTP_LIMITS, override=False):
        opened = _open(uri, params.mlflow.experiment, run_name or stage, tags)
        if isinstance(opened, Problem):
            where = f"MLflow store {shown_uri(uri)}: {redact(opened.what)}"
            if params.mlflow.required:
                raise UserError(
                    f"{where}, and mlflow.required is true "
                    f"({opened.todo}, or set mlflow.required: false)"
                )
            log.warning(
                "%s; logging is off for this stage (%s, or set mlflow.enabled: false)",
                where,
                opened.todo,
            )
            yield Run(None)
            return
        status = "FINISHED"
        try:
            with _sigterm_ends_run():
                yield opened
        except BaseException:
            status = "FAILED"
            raise
        finally:
            opened.end(status)
