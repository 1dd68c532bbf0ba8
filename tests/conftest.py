"""Test-wide settings: tiny, fast, CPU-only, and nothing written outside tmp_path."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ["IMGAE_DX_PROGRESS"] = "0"


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    # MLflow never touches the repository's store from a test.
    store = tmp_path_factory.mktemp("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
    try:
        import torch

        torch.set_num_threads(2)
    except ImportError:  # pragma: no cover
        pass
    yield


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_gpu = False
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip_gpu)
