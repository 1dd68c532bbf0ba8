"""Test-wide settings and helpers: tiny, fast, CPU-only, and nothing written outside tmp_path.

Helpers (import them from ``tests.conftest``):

- :data:`TINY_ARCH`, :func:`tiny_model`: tiny CPU-sized settings of every architecture;
- :func:`phantoms`, :func:`phantoms_uint8`: "chest" phantoms (a bright body, two dark lungs);
- :func:`make_params`: the repository's params.yaml, with an overlay, validated;
- :func:`tiny_workspace`: a copy of the repository with a tiny params.yaml, under git, for
  tests that run the real ``dvc repro``;
- the session fixture ``tiny_reproduced`` (that workspace with the default tiny params,
  reproduced once per session) and :func:`copy_workspace`, for tests that need a reproduced
  pipeline of their own to change.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
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


#: A tiny configuration of the whole DAG: 32² images, two short epochs per architecture.
TINY_RUN = {
    "data": {
        "image_size": 32,
        "max_test_normal": 50,
        "max_test_abnormal": 50,
        "synthetic": {"n_patients": 150, "image_size": 64},
    },
    "models": ["ae", "vae", "unet", "ra"],
    "train": {"epochs": 2, "batch_size": 32, "patience": 2, "num_threads": 2},
    "report": {"bootstrap": 40},
}


def tiny_workspace(ws: Path, overlay: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Copy the repository's tracked and new files (no data, models or reports) into ``ws``
    with :data:`TINY_RUN` params (then ``overlay``, e.g. ``{"models": ["ae"]}``), commit it,
    and return the environment to run it in."""
    from imgae_dx.config import apply_overlay

    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    for f in files:
        if (REPO / f).is_file() and not f.startswith(("data/", "models/", "reports/")):
            (ws / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, ws / f)
    (ws / "dvc.lock").unlink(missing_ok=True)
    params = apply_overlay(yaml.safe_load((REPO / "params.yaml").read_text()), TINY_RUN)
    for m in TINY_RUN["models"]:  # the test-wide tiny models, two short epochs each
        smoke = {**TINY_ARCH[m], "epochs": 2, "max_train_batches_per_epoch": 4}
        params["arch"][m] = apply_overlay(params["arch"].get(m) or {}, smoke)
    params["arch"]["ra"]["batch_size"] = 16
    params = apply_overlay(params, dict(overlay or {}))
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{ws / 'mlflow-test.db'}"
    for k, v in (("NAME", "ci"), ("EMAIL", "ci@example.invalid")):
        env.setdefault(f"GIT_AUTHOR_{k}", v)
        env.setdefault(f"GIT_COMMITTER_{k}", v)
    for args in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "tiny"]):
        run_checked(args, ws, env)
    return env


def run_checked(args: list[str], cwd: Path, env: dict, timeout: int = 900):
    """``subprocess.run`` that fails the test with the command's output if it fails."""
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
            f"{proc.stderr[-4000:]}"
        )
    return proc


def copy_workspace(src: Path, dst: Path, env: Mapping[str, str]) -> dict[str, str]:
    """Copy the workspace ``src`` (git, DVC cache and MLflow store included, file times kept)
    into ``dst`` and return ``env`` pointed at the copy's MLflow store. The store's paths
    (artifact locations) are moved to ``dst`` too, so that the copy never writes into ``src``."""
    shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True)
    db = dst / "mlflow-test.db"
    if db.is_file():
        old, new = str(src), str(dst)
        with sqlite3.connect(db) as con:
            tables = [
                r[0] for r in con.execute("select name from sqlite_master where type='table'")
            ]
            for table in tables:
                for col in con.execute(f"pragma table_info('{table}')").fetchall():
                    if col[2].upper().startswith(("VARCHAR", "TEXT")):
                        con.execute(
                            f'update "{table}" set "{col[1]}" = replace("{col[1]}", ?, ?) '
                            f'where "{col[1]}" like ?',
                            (old, new, f"%{old}%"),
                        )
        con.close()
    return {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{db}"}


@pytest.fixture(scope="session")
def tiny_reproduced(tmp_path_factory):
    """:func:`tiny_workspace` with the default :data:`TINY_RUN` params (four architectures,
    one seed), reproduced once per session: ``(ws, env, stdout of its dvc repro)``. Read it,
    never change it: a test that changes it works in its own :func:`copy_workspace`."""
    ws = tmp_path_factory.mktemp("tiny-reproduced")
    env = tiny_workspace(ws)
    out = run_checked([sys.executable, "-m", "dvc", "repro"], ws, env, timeout=1500).stdout
    return ws, env, out


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
