"""Data-parallel training on two CPU processes (gloo) against one process with the same global
batch: the real train stage under torchrun, and the library loop's resume under a process
group (``imgae_dx.distributed``)."""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import yaml

from imgae_dx.checkpoint import fingerprint
from imgae_dx.config import TrainParams, apply_overlay, load_params
from imgae_dx.distributed import World
from imgae_dx.models.base import batch_randn, batch_shard
from imgae_dx.pipeline import train as train_stage
from imgae_dx.train import train_model
from tests.conftest import REPO, TINY_ARCH, make_params, phantoms_uint8, run_checked, tiny_model

SIZE = 16
OVERLAY = {
    "data": {"image_size": SIZE},
    # float32: the comparison below is at float32 rounding (bf16 autocast: tests/test_train.py)
    "train": {"epochs": 3, "batch_size": 8, "num_threads": 1, "device": "cpu", "cpu_bf16": False},
}


def _workspace(ws: Path, arch: str) -> Path:
    """params.yaml (tiny ``arch``, 3 epochs of 4 global batches of 8) and prepared arrays."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw = apply_overlay(raw, {**OVERLAY, "models": [arch]})
    raw["arch"][arch] = apply_overlay(
        raw["arch"].get(arch) or {}, {**TINY_ARCH[arch], "max_train_batches_per_epoch": 4}
    )
    ws.mkdir(parents=True)
    (ws / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    (ws / "data/prepared").mkdir(parents=True)
    np.save(ws / "data/prepared/train.npy", phantoms_uint8(40, 1, SIZE))
    np.save(ws / "data/prepared/val.npy", phantoms_uint8(12, 2, SIZE))
    return ws


def _torchrun(ws: Path, arch: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{ws / 'mlflow.db'}"
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    run_checked([*args, str(REPO / "stages/train.py"), arch, "0"], ws, env, timeout=600)


def _assert_same_model(a: dict, b: dict) -> None:
    """Same weights up to float rounding, and the same function on images.

    A bias right before a BatchNorm has a zero gradient up to rounding, which Adam scales to
    steps of size lr: those biases (and the running means that absorb them) agree to ~1e-4
    rather than ~1e-7. Measured on the tiny AE (12 steps): reconstructions differ by 2.4e-4
    at most; with BatchNorm left per process (the usual DDP mistake) by 3.3e-3.
    """
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-3, msg=k)


def _outputs(ckpt_path: Path) -> torch.Tensor:
    from imgae_dx.checkpoint import load_model

    model, _ = load_model(ckpt_path)
    x = torch.from_numpy(phantoms_uint8(12, 2, SIZE)).float()[:, None] / 255
    with torch.no_grad():
        return model(x)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["ae", "ra"])
def test_two_processes_train_the_single_process_model(arch, tmp_path, monkeypatch):
    single, dist = _workspace(tmp_path / "single", arch), _workspace(tmp_path / "dist", arch)
    monkeypatch.chdir(single)
    params = load_params(single / "params.yaml")
    train_stage.train(params, arch, 0)
    _torchrun(dist, arch)

    one = torch.load(single / f"models/{arch}/seed0.pt", weights_only=True)
    two = torch.load(dist / f"models/{arch}/seed0.pt", weights_only=True)
    assert one["best_epoch"] == two["best_epoch"]
    _assert_same_model(one["state_dict"], two["state_dict"])
    torch.testing.assert_close(
        _outputs(dist / f"models/{arch}/seed0.pt"), _outputs(single / f"models/{arch}/seed0.pt"),
        rtol=0, atol=1e-3,
    )  # fmt: skip
    # Rank 0 alone wrote: one model file, no resume state left, one curve, one MLflow run.
    models = [p.relative_to(dist / "models") for p in (dist / "models").rglob("*") if p.is_file()]
    assert [p.as_posix() for p in models] == [f"{arch}/seed0.pt"]
    curves = [
        p.relative_to(dist / "reports/train") for p in (dist / "reports/train").rglob("*.csv")
    ]
    assert [p.as_posix() for p in curves] == [f"{arch}/seed0.csv"]
    with sqlite3.connect(dist / "mlflow.db") as db:
        stage = "select run_uuid from tags where key = 'dvc.stage'"
        runs = db.execute(f"select name, status from runs where run_uuid in ({stage})").fetchall()
        n_all = db.execute("select count(*) from runs").fetchone()[0]
    assert runs == [(f"train@{arch}-0", "FINISHED")] and n_all == 2  # and its parent run


# ---- the library loop under a process group: resume --------------------------------------------
def _train_worker(rank: int, init: str, config: dict, ckpt: str, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        result = _train(TrainParams(**config), ckpt)
        if rank == 0:
            torch.save({"state": result.best_state_dict, "from": result.resumed_from_epoch}, out)
    finally:
        torch.distributed.destroy_process_group()


def _train(config: TrainParams, ckpt: str | None):
    train, val = phantoms_uint8(40, 1, SIZE), phantoms_uint8(12, 2, SIZE)
    return train_model(tiny_model("ra", SIZE), train, val, config, seed=3, checkpoint_path=ckpt)


def _spawn(tmp: Path, tag: str, config: dict, ckpt: Path) -> dict:
    init, out = f"file://{tmp / f'init-{tag}'}", tmp / f"{tag}.pt"
    mp.spawn(_train_worker, args=(init, config, str(ckpt), str(out)), nprocs=2, join=True)
    return torch.load(out, weights_only=True)


@pytest.mark.slow
@pytest.mark.parametrize("augment", ["off", "affine_flip"])
def test_two_processes_resume_like_one_uninterrupted_run(augment, tmp_path):
    # Constant schedule: ``epochs`` is then not part of the resume fingerprint, so a 2-epoch
    # run is a 4-epoch run interrupted after epoch 2. With augmentation each rank augments its
    # slice of the global batch with that slice's draws.
    base = {"batch_size": 8, "scheduler": "none", "patience": None, "num_threads": 1}
    base |= {"augment": augment}
    base |= {"device": "cpu", "max_train_batches_per_epoch": 3}
    ckpt = tmp_path / "resume.pt"
    _spawn(tmp_path, "first", {**base, "epochs": 2}, ckpt)
    assert ckpt.is_file()
    resumed = _spawn(tmp_path, "resumed", {**base, "epochs": 4}, ckpt)
    straight = _train(TrainParams(**base, epochs=4), None)
    assert resumed["from"] == 2
    _assert_same_model(resumed["state"], straight.best_state_dict)


# ---- the pieces, in one process -----------------------------------------------------------------
def test_shards_concatenate_to_the_sorted_global_batch():
    batches = [np.array([7, 3, 5, 1]), np.array([2, 8, 6, 0])]
    parts = [World(rank=r, size=2).shard(batches) for r in (0, 1)]
    for i, b in enumerate(batches):
        np.testing.assert_array_equal(np.concatenate([p[i] for p in parts]), np.sort(b))
    assert World().shard(batches) is batches
    with pytest.raises(ValueError, match="train.batch_size"):
        World(rank=0, size=3).shard(batches)


def test_batch_noise_slices_are_the_single_process_noise():
    torch.manual_seed(0)
    whole = torch.randn(6, 3)
    after = torch.randn(1)
    for rank in (0, 1):
        torch.manual_seed(0)
        with batch_shard(rank, 2):
            part = batch_randn((3, 3))
        torch.testing.assert_close(part, whole[3 * rank : 3 * rank + 3], rtol=0, atol=0)
        assert torch.equal(torch.randn(1), after)  # the generator moved as one process's


def test_a_torchrun_launcher_is_a_valid_param_and_anything_else_is_named():
    assert make_params(**{"train.launcher": "torchrun --standalone --nproc-per-node=2"})
    with pytest.raises(ValueError, match="train.launcher"):
        make_params(**{"train.launcher": "bash -c"})


def test_the_launcher_changes_neither_the_model_file_nor_the_resume_fingerprint():
    model = tiny_model("ae", SIZE)
    images = phantoms_uint8(4, 0, SIZE)
    prints = [
        fingerprint(model, TrainParams(launcher=launcher), torch.device("cpu"), seed=0,
                    train_images=images, val_images=images)
        for launcher in ("python", "torchrun --nproc-per-node=2")
    ]  # fmt: skip
    assert prints[0] == prints[1]
    params = make_params(**{"train.launcher": "torchrun --nproc-per-node=2"})
    assert (
        "launcher"
        not in train_stage._model_file(params, "ae", 0, _FakeResult(), 1)["params"]["train"]
    )


class _FakeResult:
    best_state_dict: dict = {}
    best_epoch, best_val_loss, initial_val_loss = 1, 0.0, 0.0


def test_unet_skip_dropout_slices_are_the_single_process_masks():
    model = tiny_model("unet", SIZE, skip_dropout=0.5).train()
    skip = torch.rand(4, 6, 2, 2)
    torch.manual_seed(0)
    whole = model._drop_skip(skip)
    parts = []
    for rank in (0, 1):
        torch.manual_seed(0)
        with batch_shard(rank, 2):
            parts.append(model._drop_skip(skip[2 * rank : 2 * rank + 2]))
    assert torch.equal(torch.cat(parts), whole)
    assert (whole == 0).any()  # some channels were dropped
