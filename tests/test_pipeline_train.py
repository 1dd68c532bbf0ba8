"""The ``train@<arch>`` stage function on a tiny prepared data set, in a scratch directory."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from imgae_dx.pipeline import train as train_stage

PARAMS = {
    "seed": 0,
    "data": {"source": "synthetic", "image_size": 16, "views": ["PA"], "shards": "all"},
    "arch": {"ae": {"channels": [4, 8], "latent_dim": 4, "hidden_dim": 16}},
    "train": {"epochs": 2, "batch_size": 8, "lr": 1e-3, "num_threads": 1, "resume": True},
    "mlflow": {"enabled": False},
}


@pytest.fixture()
def scratch(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    (tmp_path / "data/prepared").mkdir(parents=True)
    for name, n in (("train", 24), ("val", 8)):
        np.save(tmp_path / f"data/prepared/{name}.npy", rng.integers(0, 255, (n, 16, 16), np.uint8))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_stage_writes_model_and_curve_and_drops_the_resume_checkpoint(scratch):
    summary = train_stage.train(PARAMS, "ae")
    ckpt = torch.load(scratch / "models/ae.pt", weights_only=True)
    assert ckpt["arch"] == "ae" and ckpt["initial_val_loss"] == summary["initial_val_loss"]
    curve = pd.read_csv(scratch / "reports/train/ae.csv")
    assert curve["epoch"].tolist() == [0, 1, 2]
    assert np.isnan(curve["train_loss"][0]) and curve["val_loss"][0] == pytest.approx(
        summary["initial_val_loss"], rel=1e-5
    )
    # A finished run leaves nothing to resume: the next run (say after a code change) trains
    # afresh instead of handing back the finished run's weights.
    assert not list((scratch / "models/.resume").glob("ae.*"))


def test_rerun_writes_the_same_bytes(scratch):
    """Same params, same code: DVC sees the same model and curve (no wall-clock columns), so
    nothing downstream reruns and dvc.lock does not change."""
    first = train_stage.train(PARAMS, "ae")
    outs = ("models/ae.pt", "reports/train/ae.csv")
    before = {f: (scratch / f).read_bytes() for f in outs}
    second = train_stage.train(PARAMS, "ae")
    assert {f: (scratch / f).read_bytes() for f in outs} == before
    header = before["reports/train/ae.csv"].decode().splitlines()[0].split(",")
    assert header[:4] == ["epoch", "train_loss", "val_loss", "lr"]
    assert "seconds" not in header and "images_per_s" not in header
    for s in (first, second):  # timing is still reported, outside the tracked files
        assert s["train_seconds"] > 0 and s["mean_images_per_s"] > 0


def test_checkpoint_of_other_code_or_settings_is_discarded(scratch, monkeypatch):
    resume = scratch / "models/.resume"
    resume.mkdir(parents=True)
    (resume / "ae.pt").write_bytes(b"stale")
    (resume / "ae.json").write_text(json.dumps({"fingerprint": "written-by-other-code"}))
    train_stage.train(PARAMS, "ae")  # would fail to load b"stale" if it tried to resume
    assert (scratch / "models/ae.pt").is_file()


def test_training_code_digest_covers_models_and_loop(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "models").mkdir(parents=True)
    for f in ("models/ae.py", "models/ra.py", "train.py", "device.py", "report.py"):
        (pkg / f).write_text("x = 1\n")
    base = train_stage._training_code(pkg)
    assert base == train_stage._training_code(pkg) and len(base) == 16
    (pkg / "report.py").write_text("x = 2\n")  # not training code
    assert train_stage._training_code(pkg) == base
    for f in ("models/ra.py", "train.py"):
        (pkg / f).write_text("x = 3\n")
        assert train_stage._training_code(pkg) != base, f
        (pkg / f).write_text("x = 1\n")
    assert len(train_stage._training_code()) == 16  # the installed package
