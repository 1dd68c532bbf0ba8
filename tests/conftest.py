"""Test-wide settings and helpers: tiny, fast, CPU-only, and nothing written outside tmp_path.

Helpers (import them from ``tests.conftest``):

- :data:`TINY_ARCH`, :func:`tiny_model`: tiny CPU-sized settings of every architecture;
- :func:`phantoms`, :func:`phantoms_uint8`: "chest" phantoms (a bright body, two dark lungs);
- :func:`make_params`: the repository's params.yaml, with an overlay, validated.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]

#: Tiny CPU settings per architecture (``arch.<name>`` blocks); a new architecture without an
#: entry is built with its defaults.
TINY_ARCH: dict[str, dict[str, Any]] = {
    "ae": {"channels": [4, 8], "latent_dim": 4, "hidden_dim": 32},
    "vae": {"channels": [4, 8], "latent_dim": 4, "hidden_dim": 32},
    "unet": {"depth": 2, "base_channels": 4},
    "ra": {"channels": [4, 8], "latent_dim": 8},
}


def tiny_model(name: str, size: int = 32, **extra: Any):
    """``build_model(name)`` with :data:`TINY_ARCH` settings at ``size``², seeded."""
    from imgae_dx.models import build_model

    torch.manual_seed(0)
    return build_model(name, image_size=size, **{**TINY_ARCH.get(name, {}), **extra})


def phantoms(n: int, seed: int, size: int = 32, texture: float = 0.0) -> torch.Tensor:
    """(n, 1, size, size) float32 in [0, 1]: jittered 'chest' phantoms -- a bright body and two
    dark lungs, lightly blurred -- plus i.i.d. texture of std ``texture`` (fine detail that an
    autoencoder cannot compress away, as in real radiographs)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    out = []
    for _ in range(n):
        cx, cy = (0.5 + 0.03 * torch.randn(2, generator=g)).tolist()
        img = 0.15 + 0.5 * ((((xx - cx) / 0.42) ** 2 + ((yy - cy) / 0.46) ** 2) < 1).float()
        for side in (-1, 1):
            lung = (((xx - cx - side * 0.19) / 0.13) ** 2 + ((yy - cy) / 0.3) ** 2) < 1
            img = img - 0.35 * lung.float()
        out.append(img)
    x = torch.nn.functional.avg_pool2d(torch.stack(out)[:, None], 3, 1, 1, count_include_pad=False)
    return (x + texture * torch.randn(x.shape, generator=g)).clamp(0, 1)


def phantoms_uint8(n: int, seed: int, size: int = 16, texture: float = 0.02) -> np.ndarray:
    """:func:`phantoms` as a prepared array: uint8 (n, size, size)."""
    x = phantoms(n, seed, size, texture)[:, 0].numpy()
    return np.round(x * 255).astype(np.uint8)


def make_params(overlay: Mapping[str, Any] | None = None, **dotted: Any):
    """The repository's params.yaml with ``overlay`` (nested) and ``dotted`` keys
    (``make_params(**{"train.epochs": 2})``) applied, validated into a ``Params``."""
    from imgae_dx import config

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw = config.apply_overlay(raw, dict(overlay or {}))
    for key, value in dotted.items():
        *head, last = key.split(".")
        nested: dict[str, Any] = {last: value}
        for part in reversed(head):
            nested = {part: nested}
        raw = config.apply_overlay(raw, nested)
    return config.validate(raw)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    # MLflow never touches the repository's store from a test.
    store = tmp_path_factory.mktemp("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
    torch.set_num_threads(2)
    yield


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)
