"""MLflow logging, optional: it records runs and never changes a pipeline output.

The store defaults to an absolute SQLite URI in the repository (``<repo>/mlflow.db``), so the
stages of ``dvc exp run --queue`` (which run in a temporary copy of the repository) log to the
same store as the workspace. ``MLFLOW_TRACKING_URI`` overrides it; ``mlflow.enabled: false``
turns logging off. Any MLflow failure is reported as a warning and the stage goes on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from imgae_dx import paths
from imgae_dx.config import Params, dotted_items
from imgae_dx.paths import repo_root

log = logging.getLogger(__name__)

#: Substrings of keys that are never logged (defence in depth: no secret belongs in params).
_SECRET_MARKERS = ("token", "key", "secret", "password", "credential")


def tracking_uri() -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(repo_root() / paths.MLFLOW_DB).as_posix()}"


def _is_secret(key: str) -> bool:
    low = key.lower()
    return any(m in low for m in _SECRET_MARKERS)


class Run:
    """A thin handle over an active MLflow run; every call swallows MLflow errors."""

    def __init__(self, mlflow_mod: Any | None):
        self._m = mlflow_mod

    @property
    def active(self) -> bool:
        return self._m is not None

    def _safe(self, fn: str, *args: Any, **kwargs: Any) -> None:
        if self._m is None:
            return
        try:
            getattr(self._m, fn)(*args, **kwargs)
        except Exception as e:  # logging must never break a stage
            warnings.warn(f"MLflow {fn} failed: {e}", stacklevel=3)

    def log_params(self, params: Mapping[str, Any]) -> None:
        flat = {
            k: ("null" if v is None else str(v))[:500]
            for k, v in dotted_items(params)
            if not _is_secret(k)
        }
        self._safe("log_params", flat)

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        flat = {}
        for k, v in dotted_items(metrics):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if v != v:  # NaN
                continue
            flat[k.replace("[", "_").replace("]", "")] = float(v)
        if flat:
            self._safe("log_metrics", flat, step=step)

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        if Path(path).exists():
            self._safe("log_artifact", str(path), artifact_path=artifact_path)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._safe("set_tags", {k: str(v) for k, v in tags.items() if v is not None})


@contextlib.contextmanager
def start_run(stage: str, params: Params, *, run_name: str | None = None) -> Iterator[Run]:
    """Open an MLflow run for DVC stage ``stage`` (tags: stage, DVC experiment name, git rev)."""
    if not params.mlflow.enabled:
        yield Run(None)
        return
    try:
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        import mlflow

        mlflow.set_tracking_uri(tracking_uri())
        mlflow.set_experiment(params.mlflow.experiment)
        active = mlflow.start_run(run_name=run_name or stage)
    except Exception as e:
        warnings.warn(f"MLflow disabled for this stage: {e}", stacklevel=2)
        yield Run(None)
        return
    run = Run(mlflow)
    run.set_tags(
        {
            "dvc.stage": stage,
            "dvc.exp_name": os.environ.get("DVC_EXP_NAME"),
            "dvc.exp_baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV"),
            "data.source": params.data.source,
        }
    )
    status = "FINISHED"
    try:
        yield run
    except BaseException:
        status = "FAILED"
        raise
    finally:
        try:
            mlflow.end_run(status=status)
        except Exception as e:
            warnings.warn(f"MLflow end_run failed: {e}", stacklevel=2)
        del active
