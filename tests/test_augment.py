"""Training augmentation (``train.augment``): geometry, determinism, the loop and resume."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch

from imgae_dx import train as train_module
from imgae_dx.augment import (
    AffineFlip,
    apply_affine_flip,
    augment_batch,
    augment_generator,
    sample_affine_flip,
)
from imgae_dx.config import ConfigError, TrainParams
from imgae_dx.train import train_model
from tests.conftest import make_params, phantoms_uint8, tiny_model

SIZE = 16
DETERMINISTIC_COLUMNS = ["epoch", "train_loss", "val_loss", "lr"]


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return phantoms_uint8(48, seed=1, size=SIZE), phantoms_uint8(16, seed=2, size=SIZE)


def asymmetric(n: int = 1, size: int = 32) -> torch.Tensor:
    """uint8 (n, size, size): a bright block in the upper-left quadrant, nothing else."""
    x = torch.zeros(n, size, size, dtype=torch.uint8)
    x[:, 4:12, 3:9] = 200
    return x


def params(n: int, **kw) -> dict[str, torch.Tensor]:
    base = {"angle": 0.0, "tx": 0.0, "ty": 0.0, "scale": 1.0, "flip": False}
    base.update(kw)
    return {
        k: torch.full((n,), v, dtype=torch.bool if k == "flip" else torch.float64)
        for k, v in base.items()
    }


def centroid(img: torch.Tensor) -> tuple[float, float]:
    """(row, col) of the intensity-weighted centre of a (H, W) image."""
    w = img.double()
    rows, cols = torch.meshgrid(
        torch.arange(img.shape[0], dtype=torch.float64),
        torch.arange(img.shape[1], dtype=torch.float64),
        indexing="ij",
    )
    return float((w * rows).sum() / w.sum()), float((w * cols).sum() / w.sum())


# ---- the transform --------------------------------------------------------------------------
def test_shape_dtype_and_values_are_kept() -> None:
    x = torch.from_numpy(phantoms_uint8(8, seed=3, size=24))
    y = augment_batch(x, "affine_flip", seed=0, epoch=0, step=0)
    assert y.shape == x.shape and y.dtype == torch.uint8
    # nearest sampling with fill 0 copies pixel values: no new grey levels appear
    assert set(y.unique().tolist()) <= set(x.unique().tolist()) | {0}
    assert not torch.equal(y, x)


def test_off_is_the_identity() -> None:
    x = torch.from_numpy(phantoms_uint8(4, seed=3, size=SIZE))
    assert augment_batch(x, "off", seed=0, epoch=0, step=0) is x


def test_deterministic_per_seed_and_different_across_steps() -> None:
    x = torch.from_numpy(phantoms_uint8(16, seed=3, size=24))

    def aug(seed: int, epoch: int, step: int) -> torch.Tensor:
        return augment_batch(x, "affine_flip", seed=seed, epoch=epoch, step=step)

    assert torch.equal(aug(0, 1, 2), aug(0, 1, 2))
    for other in (aug(1, 1, 2), aug(0, 2, 2), aug(0, 1, 3)):  # seed, epoch, step
        assert not torch.equal(aug(0, 1, 2), other)


def test_rank_slices_augment_as_the_whole_batch() -> None:
    x = torch.from_numpy(phantoms_uint8(8, seed=3, size=24))
    whole = augment_batch(x, "affine_flip", seed=0, epoch=1, step=2)
    parts = [
        augment_batch(x[r * 2 : (r + 1) * 2], "affine_flip", seed=0, epoch=1, step=2, part=(r, 4))
        for r in range(4)
    ]
    assert torch.equal(torch.cat(parts), whole)


def test_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    augment_batch(asymmetric(4), "affine_flip", seed=0, epoch=0, step=0)
    assert torch.equal(torch.rand(3), expected)


def test_flip_mirrors_left_right() -> None:
    x = asymmetric()
    assert torch.equal(apply_affine_flip(x, params(1, flip=True)), x.flip(-1))
    assert torch.equal(apply_affine_flip(x, params(1)), x)  # all-zero parameters: unchanged


def test_rotation_and_translation_move_pixels_exactly() -> None:
    x = asymmetric()
    rotated = apply_affine_flip(x, params(1, angle=90.0))
    assert torch.equal(rotated, torch.rot90(x, 1, dims=(1, 2))) or torch.equal(
        rotated, torch.rot90(x, -1, dims=(1, 2))
    )
    moved = apply_affine_flip(x, params(1, tx=3.0, ty=-2.0))  # 3 right, 2 up, zero fill
    expected = torch.zeros_like(x)
    expected[:, :-2, 3:] = x[:, 2:, :-3]
    assert torch.equal(moved, expected)


def test_scale_about_the_centre() -> None:
    x = asymmetric()
    r0, c0 = centroid(x[0])
    r1, c1 = centroid(apply_affine_flip(x, params(1, scale=1.1))[0])
    centre = (x.shape[1] - 1) / 2
    assert r1 - centre == pytest.approx(1.1 * (r0 - centre), abs=0.6)
    assert c1 - centre == pytest.approx(1.1 * (c0 - centre), abs=0.6)


def test_draws_cover_the_reference_ranges() -> None:
    n, size = 2000, 64
    prm = sample_affine_flip(n, size, size, augment_generator(0, 0, 0))
    assert prm["angle"].abs().max() <= AffineFlip.degrees and prm["angle"].std() > 5
    assert prm["tx"].abs().max() <= 0.1 * size and torch.equal(prm["tx"], prm["tx"].round())
    assert set(prm["ty"].unique().tolist()) == set(range(-6, 7))
    assert 0.9 <= prm["scale"].min() and prm["scale"].max() <= 1.1
    assert 0.45 < prm["flip"].double().mean() < 0.55


def test_flips_and_rotations_happen_in_a_batch() -> None:
    x = asymmetric(64)
    y = augment_batch(x, "affine_flip", seed=0, epoch=0, step=0)
    cols = torch.tensor([centroid(img)[1] for img in y])
    flipped = cols > x.shape[-1] / 2  # the block moved to the right half
    assert 0.25 < flipped.double().mean() < 0.75
    # rotation: the block's edges are no longer axis-aligned in some images
    rows_per_col = [(img > 0).sum(0)[(img > 0).sum(0) > 0] for img in y]
    assert any(len(r.unique()) > 2 for r in rows_per_col)


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="train.augment"):
        augment_batch(asymmetric(), "rotate", seed=0, epoch=0, step=0)
    with pytest.raises(ValueError, match="uint8"):
        augment_batch(asymmetric().float(), "affine_flip", seed=0, epoch=0, step=0)


# ---- params ---------------------------------------------------------------------------------
def test_params_key_defaults_off_and_is_overridable_per_arch() -> None:
    assert TrainParams().augment == "off"
    p = make_params(**{"arch.ra.augment": "affine_flip"})
    assert p.train_for("ra").augment == "affine_flip" and p.train_for("ae").augment == "off"
    assert make_params(**{"train.augment": False}).train.augment == "off"  # YAML 1.1 `off`
    with pytest.raises(ConfigError, match="train.augment"):
        make_params(**{"train.augment": "flip"})
    with pytest.raises(ConfigError, match="arch.ra.augment"):
        make_params(**{"arch.ra.augment": True})


# ---- in the training loop -------------------------------------------------------------------
def run(data, *, checkpoint_path=None, on_epoch=None, name="ra", **kw):
    config = TrainParams(
        **{"patience": None, "grad_clip": None, "device": "cpu", "epochs": 3, "batch_size": 16,
           "lr": 3e-3, "augment": "affine_flip", **kw}
    )  # fmt: skip
    return train_model(
        tiny_model(name, SIZE), *data, config, seed=0,
        checkpoint_path=checkpoint_path, on_epoch=on_epoch,
    )  # fmt: skip


def test_only_training_batches_are_augmented(data, monkeypatch) -> None:
    seen: list[tuple[int, int, np.ndarray]] = []
    real = train_module.augment_batch

    def spy(batch, mode, *, seed, epoch, step, part):
        seen.append((epoch, step, batch.numpy().copy()))
        return real(batch, mode, seed=seed, epoch=epoch, step=step, part=part)

    monkeypatch.setattr(train_module, "augment_batch", spy)
    res = run(data, name="ae", epochs=2)
    assert [(e, s) for e, s, _ in seen] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    train_rows = {r.tobytes() for r in data[0]}
    assert all(r.tobytes() in train_rows for _, _, b in seen for r in b)  # never a val image
    # the recorded validation losses are those of unaugmented validation images
    best = tiny_model("ae", SIZE)
    best.load_state_dict(res.best_state_dict)
    assert res.best_val_loss == pytest.approx(
        train_module.validation_loss(best, data[1], device="cpu", amp=False)
    )


def test_augmentation_changes_training_and_is_deterministic(data) -> None:
    on1, on2 = run(data, name="ae", epochs=2), run(data, name="ae", epochs=2)
    off = run(data, name="ae", epochs=2, augment="off")
    for k in on1.best_state_dict:
        assert torch.equal(on1.best_state_dict[k], on2.best_state_dict[k]), k
    assert any(
        not torch.equal(on1.best_state_dict[k], off.best_state_dict[k]) for k in off.best_state_dict
    )
    assert off.initial_val_loss == on1.initial_val_loss  # validation is never augmented


class Crash(RuntimeError):
    pass


def test_resume_with_augmentation_is_exact(data, tmp_path, caplog) -> None:
    straight = run(data, checkpoint_path=tmp_path / "a.ckpt")

    def crash_after_one(row: dict) -> None:
        if row["epoch"] == 1:
            raise Crash

    with pytest.raises(Crash):
        run(data, checkpoint_path=tmp_path / "b.ckpt", on_epoch=crash_after_one)
    resumed = run(data, checkpoint_path=tmp_path / "b.ckpt")
    assert resumed.resumed_from_epoch == 1
    for k in straight.best_state_dict:
        assert torch.equal(straight.best_state_dict[k], resumed.best_state_dict[k]), k
    pd.testing.assert_frame_equal(
        straight.history[DETERMINISTIC_COLUMNS], resumed.history[DETERMINISTIC_COLUMNS]
    )
    # the fingerprint holds the setting: a state written with augmentation off is not resumed
    with caplog.at_level(logging.WARNING, logger="imgae_dx.checkpoint"):
        other = run(data, checkpoint_path=tmp_path / "a.ckpt", augment="off", epochs=3)
    assert other.resumed_from_epoch == 0 and "differs in: augment" in caplog.text
