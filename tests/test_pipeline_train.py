"""The ``train@<arch>-<seed>`` stage function on a tiny prepared data set, in a scratch directory."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch

from imgae_dx import checkpoint
from imgae_dx.pipeline import train as train_stage
from tests.conftest import make_params

PARAMS = make_params(
    {
        "data": {"image_size": 16},
        "models": ["ae"],
        "arch": {"ae": {"channels": [4, 8], "latent_dim": 4, "hidden_dim": 16, "epochs": 2}},
        "train": {"batch_size": 8, "lr": 1e-3, "num_threads": 1, "resume": True},
        "mlflow": {"enabled": False},
    }
)


@pytest.fixture()
def scratch(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    (tmp_path / "data/prepared").mkdir(parents=True)
    for name, n in (("train", 24), ("val", 8)):
        np.save(tmp_path / f"data/prepared/{name}.npy", rng.integers(0, 255, (n, 16, 16), np.uint8))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_stage_writes_model_and_curve_and_drops_the_resume_checkpoint(scratch):
    summary = train_stage.train(PARAMS, "ae", 0)
    ckpt = torch.load(scratch / "models/ae/seed0.pt", weights_only=True)
    assert ckpt["arch"] == "ae" and ckpt["initial_val_loss"] == summary["initial_val_loss"]
    curve = pd.read_csv(scratch / "reports/train/ae/seed0.csv")
    assert curve["epoch"].tolist() == [0, 1, 2]
    assert np.isnan(curve["train_loss"][0]) and curve["val_loss"][0] == pytest.approx(
        summary["initial_val_loss"], rel=1e-5
    )
    # A finished run leaves nothing to resume: the next run (say after a code change) trains
    # afresh instead of handing back the finished run's weights.
    assert not list((scratch / "models/.resume/ae").glob("seed0.*"))


def test_rerun_writes_the_same_bytes(scratch):
    """Same params, same code: DVC sees the same model and curve (no wall-clock columns), so
    nothing downstream reruns and dvc.lock does not change."""
    first = train_stage.train(PARAMS, "ae", 0)
    outs = ("models/ae/seed0.pt", "reports/train/ae/seed0.csv")
    before = {f: (scratch / f).read_bytes() for f in outs}
    second = train_stage.train(PARAMS, "ae", 0)
    assert {f: (scratch / f).read_bytes() for f in outs} == before
    header = before["reports/train/ae/seed0.csv"].decode().splitlines()[0].split(",")
    assert header[:4] == ["epoch", "train_loss", "val_loss", "lr"]
    assert "seconds" not in header and "images_per_s" not in header
    for s in (first, second):  # timing is still reported, outside the tracked files
        assert s["train_seconds"] > 0 and s["mean_images_per_s"] > 0


class Crash(RuntimeError):
    pass


def _interrupt_after_epoch_1(monkeypatch):
    """Make the stage die after its first epoch (its resume state is written by then)."""
    from imgae_dx import tracking

    def log_metrics(self, metrics, step=None):
        if step == 1:
            raise Crash

    monkeypatch.setattr(tracking.Run, "log_metrics", log_metrics)


def test_interrupted_stage_resumes_only_its_own_state(scratch, monkeypatch, caplog):
    resume = scratch / "models/.resume/ae/seed0.pt"
    resume.parent.mkdir(parents=True)
    resume.write_bytes(b"stale")  # unreadable: named in a warning, then replaced
    with caplog.at_level(logging.WARNING, logger="imgae_dx.checkpoint"):
        straight = train_stage.train(PARAMS, "ae", 0)
    assert "unreadable checkpoint" in caplog.text and not resume.exists()

    with monkeypatch.context() as m:  # interrupted, by other training code
        m.setattr(checkpoint, "training_code_digest", lambda package=None: "other code")
        _interrupt_after_epoch_1(m)
        with pytest.raises(Crash):
            train_stage.train(PARAMS, "ae", 0)
    assert resume.is_file()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="imgae_dx"):
        again = train_stage.train(PARAMS, "ae", 0)
    assert "differs in: code" in caplog.text and "resumed" not in caplog.text
    assert again == {**straight, **{k: again[k] for k in ("train_seconds", "mean_images_per_s")}}

    with monkeypatch.context() as m:  # interrupted, by this code: resumed exactly
        _interrupt_after_epoch_1(m)
        with pytest.raises(Crash):
            train_stage.train(PARAMS, "ae", 0)
    before = (scratch / "models/ae/seed0.pt").read_bytes()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="imgae_dx"):
        train_stage.train(PARAMS, "ae", 0)
    assert "resumed from" in caplog.text and "after epoch 1" in caplog.text
    assert (scratch / "models/ae/seed0.pt").read_bytes() == before


def test_training_code_digest_covers_models_and_loop(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "models").mkdir(parents=True)
    files = ("models/ae.py", "models/ra.py", "train.py", "device.py", "checkpoint.py", "report.py")
    for f in files:
        (pkg / f).write_text("x = 1\n")
    base = checkpoint.training_code_digest(pkg)
    assert base == checkpoint.training_code_digest(pkg) and len(base) == 16
    (pkg / "report.py").write_text("x = 2\n")  # not training code
    assert checkpoint.training_code_digest(pkg) == base
    for f in ("models/ra.py", "train.py", "checkpoint.py"):
        (pkg / f).write_text("x = 3\n")
        assert checkpoint.training_code_digest(pkg) != base, f
        (pkg / f).write_text("x = 1\n")
    assert len(checkpoint.training_code_digest()) == 16  # the installed package
